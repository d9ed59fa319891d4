//! The control channel: a unix socket in the gateway's own `/tmp`, reached only from inside
//! its container (berth runs `berth-gateway configure` / `stats` there through the engine's
//! exec API). One JSON line in, one JSON line out.
//!
//! `serve` listens on the proxy port from its first instant (so a sandbox started at the
//! same time never finds it missing) but serves no connection before its first
//! configuration, and then only connections that arrived on the sandbox's network: until
//! then the sandbox simply has no way out.

use std::sync::Arc;

use berth_spec::egress::{GatewayConfig, GatewayReply};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::state::Gateway;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ControlRequest {
    Configure(Box<GatewayConfig>),
    Stats,
}

/// The gateway's main loop: the control socket, and the proxy once configured.
pub async fn serve(socket: &str) -> Result<(), String> {
    let proxy = TcpListener::bind(("0.0.0.0", berth_spec::egress::PROXY_PORT))
        .await
        .map_err(|e| format!("listening on the proxy port: {e}"))?;
    let (configured, watch) = tokio::sync::watch::channel(None);
    tokio::spawn(crate::proxy::serve(watch, proxy));
    let _ = std::fs::remove_file(socket);
    let control = UnixListener::bind(socket).map_err(|e| format!("binding {socket}: {e}"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600));
    }
    eprintln!("berth-gateway: waiting for its configuration on {socket}");
    let mut gateway: Option<Arc<Gateway>> = None;
    loop {
        let (stream, _) = control
            .accept()
            .await
            .map_err(|e| format!("control socket: {e}"))?;
        if let Some(gw) = answer(stream_request(stream).await, &mut gateway).await {
            let _ = configured.send(Some(gw));
        }
    }
}

/// The gateway, when a request configured it for the first time.
type Started = Option<Arc<Gateway>>;

async fn stream_request(stream: UnixStream) -> (UnixStream, Result<ControlRequest, String>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // One request at a time: a client that never finishes its line must not block the next.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read_line(&mut line),
    )
    .await;
    let parsed = match read {
        Ok(Ok(_)) => serde_json::from_str(&line).map_err(|e| format!("bad control request: {e}")),
        Ok(Err(e)) => Err(format!("reading the control request: {e}")),
        Err(_) => Err("no control request within 10 s".to_string()),
    };
    (reader.into_inner(), parsed)
}

async fn answer(
    (mut stream, request): (UnixStream, Result<ControlRequest, String>),
    gateway: &mut Option<Arc<Gateway>>,
) -> Started {
    let mut started = None;
    let reply = match request {
        Err(e) => serde_json::json!({ "error": e }),
        Ok(ControlRequest::Stats) => match gateway {
            Some(g) => serde_json::to_value(g.stats()).unwrap_or_default(),
            None => serde_json::json!({ "error": "not configured yet" }),
        },
        Ok(ControlRequest::Configure(config)) => {
            let result = match gateway {
                Some(g) => g.reconfigure(*config).map(|()| g.ca.pem.clone()),
                None => match Gateway::new(*config) {
                    Ok(g) => {
                        let g = Arc::new(g);
                        let pem = g.ca.pem.clone();
                        *gateway = Some(g.clone());
                        started = Some(g);
                        Ok(pem)
                    }
                    Err(e) => Err(e),
                },
            };
            let reply = match result {
                Ok(ca_pem) => GatewayReply {
                    error: None,
                    ca_pem,
                },
                Err(e) => GatewayReply {
                    error: Some(e),
                    ca_pem: String::new(),
                },
            };
            serde_json::to_value(reply).unwrap_or_default()
        }
    };
    let mut text = reply.to_string();
    text.push('\n');
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
    started
}

/// `configure` (stdin → socket) and `stats`: print the reply; fail if it carries an error.
pub async fn client(socket: &str, verb: &str) -> Result<(), String> {
    let request = if verb == "configure" {
        let mut input = String::new();
        tokio::io::stdin()
            .read_to_string(&mut input)
            .await
            .map_err(|e| format!("reading the configuration from stdin: {e}"))?;
        let config: GatewayConfig =
            serde_json::from_str(&input).map_err(|e| format!("bad configuration: {e}"))?;
        ControlRequest::Configure(Box::new(config))
    } else {
        ControlRequest::Stats
    };
    let mut stream = connect_retrying(socket).await?;
    let mut line = serde_json::to_string(&request).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("writing to {socket}: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .await
        .map_err(|e| format!("reading from {socket}: {e}"))?;
    print!("{reply}");
    let value: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| format!("bad reply: {e}"))?;
    match value.get("error").and_then(|e| e.as_str()) {
        Some(e) => Err(e.to_string()),
        None => Ok(()),
    }
}

/// The gateway may still be starting when berth configures it: retry for a few seconds.
async fn connect_retrying(socket: &str) -> Result<UnixStream, String> {
    let mut last = String::new();
    for _ in 0..500 {
        match UnixStream::connect(socket).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(format!("the gateway is not answering on {socket}: {last}"))
}
