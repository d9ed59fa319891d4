//! `berth`: run commands and coding agents in hardened Docker sandboxes.
//!
//! The first stop on berth's data path (**CLI** → spec → engine → container). This binary only
//! parses flags into a `SandboxSpec`, wires signals and output, and prints results; the logic
//! lives in `berth-sandbox` and `berth-engine`.

mod args;
mod commands;
mod progress;
mod signals;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, ImageCommand};

/// berth's own failure (bad flags, engine errors), as `docker run` uses it.
pub const EXIT_BERTH: u8 = 125;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => EXIT_BERTH,
            };
            let _ = e.print();
            return ExitCode::from(if code == 0 && !e.use_stderr() {
                0
            } else {
                code
            });
        }
    };
    init_tracing(cli.verbose);
    // One thread answers a call sooner than several (no wake-ups across threads: `berth exec`
    // is about a millisecond faster, an exec through `berth serve` about 0.2 ms); a server may
    // be given more (`--threads`). Blocking work (tar, file reads) has its own threads.
    let runtime = if let Command::Serve(args) = &cli.command {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_BERTH);
        }
    };
    let result = runtime.block_on(async move {
        let remote = match commands::remote::Remote::configured(cli.server.as_deref()) {
            Ok(remote) => remote,
            Err(e) => return Err(e),
        };
        if let Some(remote) = remote {
            return remote_command(remote, cli.command).await;
        }
        match cli.command {
            Command::Run(args) => commands::run::run(*args).await,
            Command::Create(args) => commands::sandbox::create(*args).await,
            Command::Exec(args) => commands::exec::run(args).await,
            Command::Top(args) => commands::exec::top(args).await,
            Command::Signal(args) => commands::exec::signal(args).await,
            Command::Cp(args) => commands::cp::run(args).await,
            Command::Fs { command } => commands::fs::run(command).await,
            Command::Ps(args) => commands::sandbox::ps(args).await,
            Command::Inspect(args) => commands::sandbox::inspect(args).await,
            Command::Logs(args) => commands::sandbox::logs(args).await,
            Command::Stop(args) => commands::sandbox::stop(args).await,
            Command::Start(args) => commands::sandbox::start(args).await,
            Command::Pause(args) => commands::sandbox::pause(args).await,
            Command::Unpause(args) => commands::sandbox::unpause(args).await,
            Command::Rm(args) => commands::sandbox::rm(args).await,
            Command::Doctor(args) => commands::doctor::run(args).await,
            Command::Gc(args) => commands::gc::run(args).await,
            Command::Agent { command } => commands::agent::run(command).await,
            Command::Image {
                command: ImageCommand::Build(args),
            } => commands::image::build(args).await,
            Command::Serve(args) => commands::server::serve(args).await,
            Command::Server { command } => commands::server::run(command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {}", say(&e));
            // An operation's error kind decides the code (one mapping, shared with the
            // server's HTTP statuses); anything else is berth's own failure.
            let code = e
                .downcast_ref::<berth_service::ServiceError>()
                .map_or(EXIT_BERTH, |s| s.kind.exit_code());
            ExitCode::from(code)
        }
    }
}

/// The verbs that go through a server in remote mode; the others say they do not.
async fn remote_command(
    remote: commands::remote::Remote,
    command: Command,
) -> anyhow::Result<ExitCode> {
    use commands::remote;
    match command {
        Command::Run(args) => remote::run(remote, *args).await,
        Command::Create(args) => remote::create(remote, *args).await,
        Command::Top(args) => remote::top(remote, args).await,
        Command::Signal(args) => remote::signal(remote, args).await,
        Command::Fs { command } => remote::fs(remote, command).await,
        Command::Exec(args) => remote::exec(remote, args).await,
        Command::Cp(args) => remote::cp(remote, args).await,
        Command::Ps(args) => remote::ps(remote, args).await,
        Command::Inspect(args) => remote::inspect(remote, args).await,
        Command::Logs(args) => remote::logs(remote, args).await,
        Command::Stop(args) => remote::stop(remote, args).await,
        Command::Start(args) => remote::start(remote, args).await,
        Command::Pause(args) => remote::lifecycle(remote, args, "pause").await,
        Command::Unpause(args) => remote::lifecycle(remote, args, "resume").await,
        Command::Rm(args) => remote::rm(remote, args).await,
        Command::Agent {
            command: args::AgentCommand::Run(args),
        } => remote::agent_run(remote, *args).await,
        Command::Agent {
            command: args::AgentCommand::Ls(args),
        } => remote::agent_ls(remote, args).await,
        Command::Agent {
            command:
                args::AgentCommand::Session {
                    command: args::SessionCommand::Start(args),
                },
        } => remote::session_start(remote, *args).await,
        Command::Agent {
            command:
                args::AgentCommand::Session {
                    command: args::SessionCommand::Stop(args),
                },
        } => remote::session_stop(remote, args).await,
        Command::Agent {
            command: args::AgentCommand::Send(args),
        } => remote::send(remote, args).await,
        Command::Agent {
            command: args::AgentCommand::Rm(args),
        } => remote::agent_rm(remote, args).await,
        // Reading a saved stream needs no sandbox, local or remote.
        Command::Agent {
            command: args::AgentCommand::Events(args),
        } => commands::agent::run(args::AgentCommand::Events(args)).await,
        Command::Serve(_) | Command::Server { .. } => anyhow::bail!(
            "`berth serve` and `berth server` act on this machine: unset BERTH_SERVER (or drop --server) to run them"
        ),
        Command::Doctor(_) | Command::Gc(_) | Command::Image { .. } => anyhow::bail!(
            "`berth doctor`, `berth gc` and `berth image` act on this machine's engine (a server checks, collects and builds its own): unset BERTH_SERVER (or drop --server) to run them here"
        ),
    }
}

/// An error as the CLI says it: a service error's way out in the CLI's own verbs.
fn say(e: &anyhow::Error) -> String {
    use berth_service::Remedy;
    match e.downcast_ref::<berth_service::ServiceError>() {
        Some(s) => match &s.remedy {
            Some(Remedy::Start { id }) => {
                format!("{}; start it with `berth start {id}`", s.message)
            }
            Some(Remedy::Resume { id }) => {
                format!("{}; resume it with `berth unpause {id}`", s.message)
            }
            None => s.message.clone(),
        },
        None => describe(e),
    }
}

/// An error and its causes, without repeating a cause already in the message.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
