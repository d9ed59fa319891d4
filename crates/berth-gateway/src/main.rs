//! berth's egress gateway: a static program in its own image, one per sandbox that has an
//! egress policy (`--allow-host`, `--secret`).
//!
//! The sandbox sits on an internal network with no route out; the gateway is on that network
//! and on an outside one, and is the sandbox's HTTP/HTTPS proxy. It lets a CONNECT or a plain
//! request through only to hosts on the policy, after checking that the TLS SNI names the
//! CONNECT host and that the name does not resolve to a loopback, private, link-local or host
//! address. For a secret's hosts it terminates TLS with a certificate from a CA it made for
//! this sandbox (the key never leaves its memory), puts the secret's value where the request
//! headers hold its placeholder, and forwards over verified TLS.
//!
//! It starts with nothing: `berth-gateway serve` waits for its configuration — the policy,
//! the secrets' values — on a unix socket in its own `/tmp`, written by `berth-gateway
//! configure` which berth runs in the container over the engine's exec channel with the
//! configuration on stdin. So no secret is ever in the container's configuration.
//!
//! | subcommand | what it does |
//! | --- | --- |
//! | `serve` | the gateway (the container's main process) |
//! | `configure` | reads a `GatewayConfig` JSON on stdin, hands it to `serve`, prints the reply |
//! | `stats` | prints what `serve` counted (allowed, denied, injected) as JSON |

mod addr;
mod control;
mod proxy;
mod state;
mod tls;

use std::process::ExitCode;

/// Where `serve` listens for its configuration (inside the gateway's private tmpfs).
const CONTROL_SOCKET: &str = "/tmp/berth-gateway.sock";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth-gateway: cannot start its runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let socket = std::env::var("BERTH_GATEWAY_CONTROL").unwrap_or_else(|_| CONTROL_SOCKET.into());
    let result = match args.first().map(String::as_str) {
        Some("serve") => runtime.block_on(control::serve(&socket)),
        Some("configure") => runtime.block_on(control::client(&socket, "configure")),
        Some("stats") => runtime.block_on(control::client(&socket, "stats")),
        _ => Err("usage: berth-gateway serve | configure (config JSON on stdin) | stats".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-gateway: {e}");
            ExitCode::from(1)
        }
    }
}
