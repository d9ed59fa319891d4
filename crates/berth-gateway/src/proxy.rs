//! The proxy: HTTP/1.1 from the sandbox (hyper), CONNECT tunnels and plain requests.
//!
//! - `CONNECT host:port`: policy and address checks first (403/502 with a body that names the
//!   host and the policy), then `200`, then the ClientHello: its SNI must name the CONNECT
//!   host. A host without secrets gets the client's own TLS forwarded byte for byte; a
//!   secret's host gets TLS terminated here ([`mitm`]).
//! - `GET http://host/…` (absolute form): checked the same way and forwarded. Secrets are
//!   never added to plain HTTP: the value would cross the network in clear.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Mutex};

use crate::state::{Denial, Gateway};
use crate::tls::{read_client_hello, Prefixed};

type Body = BoxBody<Bytes, hyper::Error>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The one port whose tunnels must carry TLS for the CONNECT host (and may be terminated).
const HTTPS_PORT: u16 = 443;
/// At most this many connections at once (each may hold two copy buffers): beyond it, new
/// ones wait in the kernel's backlog, so a sandbox cannot run its gateway out of memory.
const MAX_CONNECTIONS: usize = 512;
/// Kernel buffers of both of a tunnel's sockets, fixed instead of autotuned: a download
/// crossing the gateway's two hops was a little faster in most runs with it (berth-bench
/// egress, 2-core machine: ~0.79× of direct against ~0.76×; runs vary by ±0.05), and it
/// bounds what one connection can queue. The kernel caps it at `net.core.[rw]mem_max`.
const SOCKET_BUFFER: usize = 4 << 20;
/// Each direction's copy buffer in a tunnel.
const TUNNEL_BUFFER: usize = 128 << 10;

/// Headers that belong to one hop (the sandbox's connection to the proxy), never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

fn text(status: u16, message: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn refusal(d: Denial) -> Response<Body> {
    text(
        d.status,
        format!("berth egress gateway: refused: {}", d.reason),
    )
}

/// How long a connection that arrives before the configuration waits for it.
const CONFIG_WAIT: Duration = Duration::from_secs(30);

/// Accepts connections until the process ends; each waits for the configuration, and is
/// served only if it arrived on the sandbox's network.
pub async fn serve(configured: watch::Receiver<Option<Arc<Gateway>>>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("berth-gateway: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SOCKET_BUFFER);
        let _ = socket2::SockRef::from(&stream).set_recv_buffer_size(SOCKET_BUFFER);
        let mut configured = configured.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let ready = tokio::time::timeout(CONFIG_WAIT, async {
                configured
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|g| g.as_ref().cloned())
            })
            .await;
            let Ok(Some(gateway)) = ready else { return };
            let local = match stream.local_addr() {
                Ok(l) => l,
                Err(_) => return,
            };
            if !gateway.on_sandbox_network(local) {
                gateway.deny(
                    &peer.ip().to_string(),
                    local.port(),
                    "accept",
                    "a connection from outside the sandbox's network",
                );
                return;
            }
            let service = hyper::service::service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(handle(gateway, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn split_authority(uri: &Uri, default_port: u16) -> Option<(String, u16)> {
    let authority = uri.authority()?;
    let host = authority
        .host()
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    Some((host, authority.port_u16().unwrap_or(default_port)))
}

async fn handle(
    gateway: Arc<Gateway>,
    _peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() == Method::CONNECT {
        let Some((host, port)) = split_authority(req.uri(), 443) else {
            return text(400, "berth egress gateway: CONNECT needs host:port".into());
        };
        let addrs = match gateway.check(&host, port, "connect").await {
            Ok(a) => a,
            Err(d) => return refusal(d),
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => tunnel(gateway, host, port, addrs, upgraded).await,
                Err(e) => eprintln!("berth-gateway: CONNECT upgrade failed: {e}"),
            }
        });
        return Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        );
    }
    match req.uri().scheme_str() {
        Some("http") => plain(gateway, req).await,
        Some(_) => text(
            400,
            "berth egress gateway: use CONNECT for https (set HTTPS_PROXY), not an absolute https:// URL".into(),
        ),
        None => text(
            400,
            "berth egress gateway: this is the sandbox's HTTP(S) proxy, not a web server; send requests through it (HTTP_PROXY/HTTPS_PROXY)".into(),
        ),
    }
}

async fn dial(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }?;
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER as u32);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER as u32);
        match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(*addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

/// After `200` to a CONNECT: check the SNI, then forward raw TLS or terminate it. The
/// sandbox's socket is taken back from hyper (no upgrade wrapper in the way of the copy).
async fn tunnel(
    gateway: Arc<Gateway>,
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    upgraded: hyper::upgrade::Upgraded,
) {
    // `serve` hands hyper a `TokioIo<TcpStream>`, so this is what comes back.
    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
        eprintln!("berth-gateway: {host}:{port}: the upgraded connection is not a TCP socket");
        return;
    };
    let mut client = Prefixed::new(parts.read_buf, parts.io.into_inner());
    if port != HTTPS_PORT {
        // Not HTTPS (plain HTTP on 80, or a port allowed as host:port, where the server may
        // speak first, as SSH does): the gateway dialed the allowed name itself, so the bytes
        // can only reach that host; there is no TLS to check or terminate.
        forward(&host, port, &addrs, client).await;
        return;
    }
    let (sni, hello) = match read_client_hello(&mut client).await {
        Ok(h) => h,
        Err(e) => {
            gateway.deny(&host, port, "connect", &e);
            return;
        }
    };
    // What was read (the ClientHello) goes first, then whatever hyper had buffered and the
    // hello reader did not take.
    let (rest, client) = client.into_parts();
    let mut first = bytes::BytesMut::from(&hello[..]);
    first.extend_from_slice(&rest);
    let hello = first.freeze();
    let host_is_ip = host.parse::<std::net::IpAddr>().is_ok();
    match sni.as_deref().map(str::to_ascii_lowercase) {
        Some(name) if name.trim_end_matches('.') == host => {}
        None if host_is_ip => {}
        other => {
            let reason = format!(
                "the TLS server name {:?} does not match the CONNECT host {host}",
                other.unwrap_or_default()
            );
            gateway.deny(&host, port, "connect", &reason);
            return;
        }
    }
    let client = Prefixed::new(hello, client);
    if !host_is_ip && !gateway.secrets_for(&host).is_empty() {
        mitm(gateway, host, addrs, client).await;
        return;
    }
    forward(&host, port, &addrs, client).await;
}

/// Dials the host and copies both ways, starting with the bytes already read from the client.
async fn forward<S>(host: &str, port: u16, addrs: &[SocketAddr], client: Prefixed<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut upstream = match dial(addrs).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth-gateway: {host}:{port}: {e}");
            return;
        }
    };
    let (hello, mut client) = client.into_parts();
    if upstream.write_all(&hello).await.is_err() {
        return;
    }
    // Large buffers: a download crosses in a few hundred system calls. (Measured against
    // splice(2) through a pipe on this kind of machine: this was faster; berth-bench egress.)
    let _ = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        TUNNEL_BUFFER,
        TUNNEL_BUFFER,
    )
    .await;
}

/// Terminates the sandbox's TLS with this sandbox's CA, serves its HTTP/1.1 requests, puts
/// secrets into their headers and sends them on over verified TLS.
async fn mitm<S>(gateway: Arc<Gateway>, host: String, addrs: Vec<SocketAddr>, client: Prefixed<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let config = match gateway.ca.server_config(&host) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-gateway: {e}");
            return;
        }
    };
    let tls = match tokio_rustls::TlsAcceptor::from(config).accept(client).await {
        Ok(t) => t,
        Err(e) => {
            gateway.deny(
                &host,
                443,
                "https",
                &format!(
                    "TLS handshake with the sandbox failed: {e} (does it trust the sandbox CA?)"
                ),
            );
            return;
        }
    };
    let upstream: Arc<Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>> =
        Arc::new(Mutex::new(None));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (gateway, host, addrs, upstream) = (
            gateway.clone(),
            host.clone(),
            addrs.clone(),
            upstream.clone(),
        );
        async move {
            Ok::<_, Infallible>(forward_secret_host(gateway, host, addrs, upstream, req).await)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

async fn forward_secret_host(
    gateway: Arc<Gateway>,
    host: String,
    addrs: Vec<SocketAddr>,
    upstream: Arc<Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    if let Some(given) = req.headers().get(HOST).and_then(|h| h.to_str().ok()) {
        let name = given
            .rsplit_once(':')
            .map_or(given, |(h, _)| h)
            .to_ascii_lowercase();
        if name != host {
            let reason =
                format!("the Host header {given:?} does not match the tunnel's host {host}");
            gateway.deny(&host, 443, "https", &reason);
            return text(403, format!("berth egress gateway: refused: {reason}"));
        }
    }
    let mut injected = Vec::new();
    for secret in gateway.secrets_for(&host) {
        for value in req.headers_mut().values_mut() {
            let Ok(text) = value.to_str() else { continue };
            if text.contains(&secret.placeholder) {
                let replaced = text.replace(&secret.placeholder, secret.value.expose());
                if let Ok(v) = HeaderValue::from_str(&replaced) {
                    let mut v = v;
                    v.set_sensitive(true);
                    *value = v;
                    if !injected.contains(&secret.name) {
                        injected.push(secret.name.clone());
                    }
                }
            }
        }
    }
    if !injected.is_empty() {
        gateway.note_injected(&host, &injected);
    }
    strip_hop_by_hop(req.headers_mut());
    let mut guard = upstream.lock().await;
    let ready = match guard.as_mut() {
        Some(sender) => sender.ready().await.is_ok(),
        None => false,
    };
    if !ready {
        match connect_tls(&gateway, &host, &addrs).await {
            Ok(sender) => *guard = Some(sender),
            Err(e) => {
                return text(
                    502,
                    format!("berth egress gateway: cannot reach {host}: {e}"),
                )
            }
        }
    }
    let Some(sender) = guard.as_mut() else {
        return text(502, format!("berth egress gateway: cannot reach {host}"));
    };
    match sender.send_request(req).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(e) => {
            *guard = None;
            text(
                502,
                format!("berth egress gateway: {host} did not answer: {e}"),
            )
        }
    }
}

async fn connect_tls(
    gateway: &Gateway,
    host: &str,
    addrs: &[SocketAddr],
) -> Result<hyper::client::conn::http1::SendRequest<Incoming>, String> {
    let tcp = dial(addrs).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(gateway.upstream_tls())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {host}: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A plain `http://` request: checked, then forwarded on a fresh connection.
async fn plain(gateway: Arc<Gateway>, mut req: Request<Incoming>) -> Response<Body> {
    let Some((host, port)) = split_authority(req.uri(), 80) else {
        return text(
            400,
            "berth egress gateway: the request URL has no host".into(),
        );
    };
    let addrs = match gateway.check(&host, port, "http").await {
        Ok(a) => a,
        Err(d) => return refusal(d),
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    *req.uri_mut() = match path.parse() {
        Ok(u) => u,
        Err(_) => return text(400, "berth egress gateway: bad request path".into()),
    };
    strip_hop_by_hop(req.headers_mut());
    // The request goes to the host it named in its URL, and says so: a different Host header
    // would let it reach another site served from the same address.
    let authority = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    match HeaderValue::from_str(&authority) {
        Ok(v) => {
            req.headers_mut().insert(HOST, v);
        }
        Err(_) => return text(400, "berth egress gateway: bad host".into()),
    }
    let tcp = match dial(&addrs).await {
        Ok(s) => s,
        Err(e) => {
            return text(
                502,
                format!("berth egress gateway: cannot reach {host}:{port}: {e}"),
            )
        }
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
            Ok(pair) => pair,
            Err(e) => return text(502, format!("berth egress gateway: {host}:{port}: {e}")),
        };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    match sender.send_request(req).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(e) => text(
            502,
            format!("berth egress gateway: {host}:{port} did not answer: {e}"),
        ),
    }
}
