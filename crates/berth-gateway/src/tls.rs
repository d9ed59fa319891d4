//! TLS for the gateway: the per-sandbox CA and the leaf certificates it signs for a secret's
//! hosts, the upstream client configuration (verified, webpki roots), and reading the
//! ClientHello that follows a CONNECT without consuming it (so a tunnel that is not
//! terminated can forward those bytes unchanged).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The sandbox's CA: made when the gateway starts, its key only in this process's memory.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl Ca {
    pub fn generate() -> Result<Self, String> {
        let key = KeyPair::generate().map_err(|e| format!("generating the CA key: {e}"))?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "berth egress gateway CA (one sandbox)");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (start, end) = validity(3650);
        params.not_before = start;
        params.not_after = end;
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("signing the CA: {e}"))?;
        Ok(Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// A server configuration presenting a certificate for `host`, signed by this CA.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        if let Some(c) = self.leaves.lock().ok().and_then(|l| l.get(host).cloned()) {
            return Ok(c);
        }
        let key = KeyPair::generate().map_err(|e| format!("generating a key for {host}: {e}"))?;
        let mut params = CertificateParams::new(vec![host.to_string()])
            .map_err(|e| format!("a certificate for {host}: {e}"))?;
        params.distinguished_name.push(DnType::CommonName, host);
        let (start, end) = validity(30);
        params.not_before = start;
        params.not_after = end;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("signing a certificate for {host}: {e}"))?;
        let chain = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("a TLS configuration for {host}: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if let Ok(mut leaves) = self.leaves.lock() {
            leaves.insert(host.to_string(), config.clone());
        }
        Ok(config)
    }
}

/// From a day ago to `days` from now.
fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::days(1),
        now + time::Duration::days(days),
    )
}

/// The upstream side: real, verified TLS against the webpki roots (plus a test CA).
pub fn client_config(extra_ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        use rustls::pki_types::pem::PemObject;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("the upstream CA is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the upstream CA is not a certificate: {e}"))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a client may take to send its ClientHello after the CONNECT.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the client's first TLS flight until rustls has parsed the ClientHello; returns the
/// server name it asked for and every byte read (to replay).
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<(Option<String>, Bytes), String> {
    let read = async {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut seen = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = io
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading the ClientHello: {e}"))?;
            if n == 0 {
                return Err("the client closed the tunnel before a TLS ClientHello".to_string());
            }
            seen.extend_from_slice(&chunk[..n]);
            let mut rest = &chunk[..n];
            while !rest.is_empty() {
                match acceptor.read_tls(&mut rest) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(format!("not a TLS ClientHello: {e}")),
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let sni = accepted.client_hello().server_name().map(str::to_string);
                    return Ok((sni, Bytes::from(seen)));
                }
                Ok(None) => continue,
                Err((e, _)) => return Err(format!("not a TLS ClientHello: {e}")),
            }
        }
    };
    match tokio::time::timeout(HELLO_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err("no TLS ClientHello within 10 s of the CONNECT".to_string()),
    }
}

/// A stream that first yields `prefix` (bytes already read from `inner`), then `inner`.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }

    /// The prefix not read yet, and the stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_hello_is_read_whole_replayed_and_terminated_with_the_sandbox_ca() {
        let ca = Ca::generate().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
            .unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (client_io, mut server_io) = tokio::io::duplex(64 << 10);
        let client = tokio::spawn(async move {
            let name = rustls::pki_types::ServerName::try_from("secret.test").unwrap();
            let mut tls = match tokio_rustls::TlsConnector::from(Arc::new(client_config))
                .connect(name, client_io)
                .await
            {
                Ok(t) => t,
                Err(e) => panic!("client: {e}"),
            };
            tls.write_all(b"ping").await.unwrap();
            let mut answer = [0u8; 4];
            tls.read_exact(&mut answer).await.unwrap();
            answer
        });
        let (sni, hello) = read_client_hello(&mut server_io).await.unwrap();
        assert_eq!(sni.as_deref(), Some("secret.test"));
        assert!(!hello.is_empty());
        let config = ca.server_config("secret.test").unwrap();
        let accepted = tokio_rustls::TlsAcceptor::from(config)
            .accept(Prefixed::new(hello, server_io))
            .await;
        let mut tls = match accepted {
            Ok(t) => t,
            Err(e) => panic!("server: {e}; client: {:?}", client.await),
        };
        let mut got = [0u8; 4];
        tls.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        tls.write_all(b"pong").await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(&client.await.unwrap(), b"pong");
    }

    #[tokio::test]
    async fn plain_bytes_after_a_connect_are_not_a_hello() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let e = read_client_hello(&mut b).await.unwrap_err();
        assert!(e.contains("not a TLS ClientHello"), "{e}");
    }
}
