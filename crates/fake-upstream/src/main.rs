//! A stand-in for the internet behind berth's egress gateway, used only by berth's tests and
//! benchmarks. It makes its own CA and a certificate for every name it is given, writes the
//! CA to `--out DIR/ca.pem` (the gateway is told to trust it), and serves HTTPS on 443 and
//! HTTP on 80:
//!
//! | path | answer |
//! | --- | --- |
//! | `/echo` | JSON of what arrived: method, Host, path, every header (so a test sees whether a secret or its placeholder crossed) |
//! | `/bytes/N` | N bytes, streamed (throughput) |
//! | `/v1/messages` | a scripted Messages API: to a request offering the `Bash` tool it answers with one `Bash` call (`$PROOF_COMMAND`), to the tool's result with text, streamed as SSE when asked; with `$EXPECT_KEY` set, any other `x-api-key` gets 401 |
//! | anything else | 404 with an Anthropic-style JSON error |
//!
//! Every request is logged on stdout as one JSON line (path, host, `x-api-key`,
//! `authorization`), which is how tests learn what the upstream saw.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

const DEFAULT_PROOF: &str = "echo berth-real-claude > /workspace/proof.txt && id -u";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let names: Vec<String> = value("--names")
        .unwrap_or_else(|| "localhost".into())
        .split(',')
        .map(String::from)
        .collect();
    let out = value("--out").unwrap_or_else(|| "/out".into());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fake-upstream: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = runtime.block_on(serve(names, out)) {
        eprintln!("fake-upstream: {e}");
        std::process::exit(1);
    }
}

fn tls_config(names: &[String], out: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fake-upstream test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(30);
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::write(format!("{out}/ca.pem"), ca_cert.pem()).map_err(|e| e.to_string())?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let mut leaf = CertificateParams::new(names.to_vec()).map_err(err)?;
    leaf.not_before = now - time::Duration::days(1);
    leaf.not_after = now + time::Duration::days(30);
    let cert = leaf.signed_by(&key, &issuer).map_err(err)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A marker so the test knows the CA file is complete.
    std::fs::write(format!("{out}/ready"), b"ok").map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

async fn serve(names: Vec<String>, out: String) -> Result<(), String> {
    let https = TcpListener::bind("0.0.0.0:443")
        .await
        .map_err(|e| format!("binding 443: {e}"))?;
    let http = TcpListener::bind("0.0.0.0:80")
        .await
        .map_err(|e| format!("binding 80: {e}"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(&names, &out)?);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = http.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(serve_connection(TokioIo::new(tcp)));
        }
    });
    loop {
        let Ok((tcp, _)) = https.accept().await else {
            continue;
        };
        // As real servers do (nginx's tcp_nodelay): no Nagle delay on small responses.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                serve_connection(TokioIo::new(tls)).await;
            }
        });
    }
}

async fn serve_connection<I>(io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(|req| async move { Ok::<_, Infallible>(answer(req).await) });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn json_response(status: u16, value: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn answer(req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let log = json!({
        "path": path,
        "host": header(&req, "host"),
        "x_api_key": header(&req, "x-api-key"),
        "authorization": header(&req, "authorization"),
    });
    println!("{log}");
    if path == "/echo" {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        return json_response(
            200,
            &json!({"method": req.method().as_str(), "path": path, "host": header(&req, "host"), "headers": headers}),
        );
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        let frames = stream::unfold(total, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(chunk.len() as u64);
                let piece = chunk.slice(..usize::try_from(n).unwrap_or(0));
                Some((Ok::<_, Infallible>(Frame::data(piece)), left - n))
            }
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
        r.headers_mut().insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(total),
        );
        return r;
    }
    if path == "/v1/messages" {
        return messages(req).await;
    }
    json_response(
        404,
        &json!({"type": "error", "error": {"type": "not_found_error", "message": format!("fake-upstream has no {path}")}}),
    )
}

/// The scripted Messages API.
async fn messages(req: Request<Incoming>) -> Response<Body> {
    if let Ok(expected) = std::env::var("EXPECT_KEY") {
        if header(&req, "x-api-key").as_deref() != Some(expected.as_str()) {
            return json_response(
                401,
                &json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
            );
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request["model"]
        .as_str()
        .unwrap_or("claude-fake")
        .to_string();
    let offers_bash = request["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|tool| tool["name"] == "Bash"));
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    let tool_result = last["content"].as_array().and_then(|blocks| {
        blocks
            .iter()
            .find(|b| b["type"] == "tool_result")
            .map(|b| match &b["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            })
    });
    let block = match (&tool_result, offers_bash) {
        (Some(result), _) => {
            json!({"type": "text", "text": format!("PROOF-DONE; the tool said: {result}")})
        }
        (None, true) => {
            let command = std::env::var("PROOF_COMMAND").unwrap_or_else(|_| DEFAULT_PROOF.into());
            json!({"type": "tool_use", "id": "toolu_fake_1", "name": "Bash",
                   "input": {"command": command, "description": "write the proof file"}})
        }
        (None, false) => json!({"type": "text", "text": "ok"}),
    };
    let stop = if block["type"] == "tool_use" {
        "tool_use"
    } else {
        "end_turn"
    };
    let usage = json!({"input_tokens": 20, "output_tokens": 7});
    if request["stream"] != json!(true) {
        return json_response(
            200,
            &json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage}),
        );
    }
    let (start, delta) = if block["type"] == "tool_use" {
        (
            json!({"type": "tool_use", "id": block["id"], "name": "Bash", "input": {}}),
            json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
        )
    } else {
        (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": block["text"]}),
        )
    };
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": start}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 7}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let text: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    let mut r = Response::new(Full::new(Bytes::from(text)).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r
}
