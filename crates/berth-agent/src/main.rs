//! `berth-agent`: the process berth injects into every long-lived sandbox as PID 1.
//!
//! It reaps every zombie, forwards SIGTERM/SIGINT, runs the image's own entrypoint as the
//! sandbox's main process, and serves berth's protocol (`berth-protocol`) on a unix socket in
//! the bind-mounted `/.berth` directory: exec with separate streams, timeouts that end the whole
//! process tree, background processes, and files. It must run in any image (no shell, no
//! `/tmp`), so it is one static binary with no runtime dependencies.
//!
//! Usage (set up by berth, not by hand): `berth-agent init [-- MAIN_COMMAND...]`.

use berth_agent::{server, spawn};

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("init") => {
            let main_command = match args.iter().position(|a| a == "--") {
                Some(i) => args[i + 1..].to_vec(),
                None => Vec::new(),
            };
            run_init(main_command)
        }
        Some("dial-stdio") => dial_stdio(),
        Some("version") => {
            println!(
                "berth-agent {} ({})",
                env!("CARGO_PKG_VERSION"),
                berth_protocol::PROTOCOL
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: berth-agent init [-- MAIN_COMMAND...] | berth-agent dial-stdio | berth-agent version"
            );
            ExitCode::from(2)
        }
    }
}

/// Proxies stdin/stdout to the running agent's socket: berth's fallback channel, started with
/// `docker exec <sandbox> /.berth-agent dial-stdio` where a unix socket cannot cross the
/// engine's bind mounts. The protocol (and its token) is the same on both channels.
fn dial_stdio() -> ExitCode {
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::from(1);
    };
    let socket = std::path::Path::new(berth_protocol::SANDBOX_DIR)
        .join(berth_protocol::SOCKET_SUBDIR)
        .join(berth_protocol::SOCKET_NAME);
    let result = runtime.block_on(async {
        let mut agent = tokio::net::UnixStream::connect(&socket).await?;
        let mut stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        tokio::io::copy_bidirectional(&mut stdio, &mut agent).await
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-agent: dial-stdio to {}: {e}", socket.display());
            ExitCode::from(1)
        }
    }
}

/// Builds a tokio runtime, saying why on stderr if it cannot.
fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("berth-agent: cannot start: {e}");
            None
        }
    }
}

fn run_init(main_command: Vec<String>) -> ExitCode {
    // Capabilities are per thread: empty the bounding set before the runtime starts any, so
    // every thread, and every process any of them starts, inherits the empty set.
    if let Err(e) = spawn::empty_bounding_set() {
        eprintln!("berth-agent: {e}");
        return ExitCode::from(1);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).thread_stack_size(256 * 1024);
    let Some(runtime) = runtime(&mut builder) else {
        return ExitCode::from(1);
    };
    match runtime.block_on(server::serve(main_command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("berth-agent: {e}");
            ExitCode::from(1)
        }
    }
}
