//! `berth agent …`: coding-agent CLIs in sandboxes (the work is in `berth-runtimes`; this
//! module turns flags and `berth.toml` into settings and renders what comes back).

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use berth_engine::docker::DockerEngine;
use berth_engine::{Engine, ImageInfo};
use berth_events::{render, Cli, Parser, Record};
use berth_runtimes::config::Config;
use berth_runtimes::launch::{self, Host, Progress, RunReport, RunRequest};
use berth_runtimes::profile::PromptDelivery;
use berth_runtimes::session::{self, SendOutcome};
use berth_runtimes::settings::{default_image, AgentSettings};
use berth_sandbox::sandbox::{self, AgentDelivery};
use tokio::signal::unix::{signal, SignalKind};

use crate::args::{
    AgentCommand, AgentEventsArgs, AgentFlags, AgentLsArgs, AgentRmArgs, AgentRunArgs,
    AgentSendArgs, SessionCommand, SessionStartArgs,
};

pub async fn run(command: AgentCommand) -> anyhow::Result<ExitCode> {
    match command {
        AgentCommand::Run(args) => agent_run(*args).await,
        AgentCommand::Session {
            command: SessionCommand::Start(args),
        } => session_start(*args).await,
        AgentCommand::Session {
            command: SessionCommand::Stop(args),
        } => {
            let engine = DockerEngine::connect().await?;
            if session::stop(&engine, &super::store(), &super::agents(), &args.name).await? {
                eprintln!("berth: stopped the session of agent {:?}", args.name);
            } else {
                eprintln!("berth: agent {:?} has no running session", args.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Send(args) => send(args).await,
        AgentCommand::Events(args) => events(args),
        AgentCommand::Ls(args) => ls(args),
        AgentCommand::Rm(args) => rm(args).await,
    }
}

/// Flags over the agent's `berth.toml` entry.
pub(crate) fn settings(flags: &AgentFlags) -> anyhow::Result<AgentSettings> {
    let config = Config::load(flags.config.as_deref())?;
    let base = match &flags.name {
        Some(name) => config.agents.get(name).cloned().unwrap_or_default(),
        None => AgentSettings::default(),
    };
    let given = AgentSettings {
        cli: flags.cli.as_deref().map(str::parse::<Cli>).transpose()?,
        image: flags.image.clone(),
        workspace: flags.workspace.clone(),
        read_only: flags.read_only.then_some(true),
        memory: flags.memory.clone(),
        cpus: flags.cpus.clone(),
        pids: flags.pids_limit,
        network: flags.network,
        env: flags.env.clone(),
        credentials: flags.credentials.clone(),
        timeout: flags.timeout,
        keep: None,
        max_containers: None,
        model: flags.model.clone(),
        max_turns: flags.max_turns,
        secrets: crate::args::secret_specs(&flags.secrets)?,
        allow_hosts: flags.allow_hosts.clone(),
        permission_mode: flags.permission_mode.clone(),
    };
    let mut settings = given.over(&base);
    // The caller's environment is read here, at the edge, for `NAME`s without a value.
    super::resolve_env(&mut settings.env);
    super::resolve_secrets(&mut settings.secrets);
    for mount in settings
        .workspace
        .iter_mut()
        .chain(settings.credentials.iter_mut())
    {
        super::absolute_host_path(mount);
    }
    // Every value is checked before anything is looked up or made.
    settings.sandbox_spec()?;
    berth_runtimes::profile::permission_args(settings.cli(), settings.permission_mode.as_deref())?;
    if settings.network == Some(berth_spec::NetworkMode::Bridge) && !settings.secrets.is_empty() {
        let names: Vec<&str> = settings.secrets.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "berth: warning: with --network bridge there is no egress gateway: {} will be inside the sandbox, where any tool the agent runs can read it and send it anywhere (egress is open). Drop --network bridge to keep it out.",
            names.join(", ")
        );
    }
    for name in settings.shadowed_env() {
        eprintln!(
            "berth: warning: -e {name} ignored: {name} is a --secret, so the sandbox gets a placeholder and the gateway the value"
        );
    }
    Ok(settings)
}

async fn host(engine: &DockerEngine) -> anyhow::Result<Host> {
    let socket = engine.endpoint().socket_path();
    Ok(Host {
        agent_binary: sandbox::agent_binary()?,
        delivery: if socket.is_some() {
            AgentDelivery::Mount
        } else {
            AgentDelivery::Archive
        },
        engine_socket: socket,
        store: super::store(),
        agents: super::agents(),
    })
}

/// The agent's image; berth's default agent images are never pulled from a registry.
async fn image(engine: &DockerEngine, settings: &AgentSettings) -> anyhow::Result<ImageInfo> {
    let reference = settings.image();
    berth_spec::check_image(&reference)?;
    if let Some(info) = engine.image_inspect(&reference).await? {
        return Ok(info);
    }
    if reference == default_image(settings.cli()) {
        bail!(
            "image {reference} (with the {cli} CLI) is not present: build it with \
             `docker build -t {reference} images/{cli}` (needs a registry and the npm registry), \
             or pass --image IMAGE with the CLI installed",
            cli = settings.cli()
        );
    }
    super::ensure_image(engine, &reference).await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Prints events as they come: rendered for a human, or as JSON lines.
fn printer(json: bool) -> impl FnMut(Progress<'_>) + Send {
    move |p| match p {
        Progress::Sandbox { id, reused } => {
            if !json {
                let how = if reused { "reusing" } else { "in" };
                eprintln!("berth: {how} sandbox {id}");
            }
        }
        Progress::Event(record) => print_event(record, json),
        Progress::Stderr(bytes) => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(bytes);
        }
    }
}

pub(crate) fn print_event(record: &Record, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        if let Ok(line) = serde_json::to_string(record) {
            let _ = writeln!(out, "{line}");
        }
    } else if let Some(text) = render(record) {
        let _ = out.write_all(text.as_bytes());
    }
    let _ = out.flush();
}

/// The final summary: a JSON line, or a few lines on stderr.
pub(crate) fn finish(report: &RunReport, json: bool) -> ExitCode {
    for name in &report.missing_env {
        eprintln!("berth: warning: --env {name} is not set here, so it was not passed");
    }
    for problem in &report.problems {
        eprintln!("berth: {problem}");
    }
    if json {
        let mut value = serde_json::to_value(report).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("type".into(), "summary".into());
            map.insert("success".into(), report.success().into());
            map.insert("clean".into(), report.clean().into());
            map.insert("permission_denied".into(), report.denials().into());
            map.insert("exit_code".into(), report.exit_code().into());
        }
        println!("{value}");
    } else {
        let result = report.summary.result.as_ref();
        let denials = report.denials();
        let status = if report.success() && denials > 0 {
            format!(
                "finished, but not cleanly: the CLI's permission mode denied {denials} tool call{} ({}), so part of the task was not done; pass --permission-mode to change the mode, --fail-on-denial to exit 1",
                if denials == 1 { "" } else { "s" },
                report
                    .summary
                    .permission_denials
                    .iter()
                    .map(|d| d.tool.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if report.success() {
            "succeeded".to_string()
        } else if report.timed_out {
            "timed out (its process tree was killed)".to_string()
        } else if report.interrupted {
            "interrupted".to_string()
        } else {
            match result {
                Some(r) => format!("failed ({})", r.subtype),
                None => "failed (no result)".to_string(),
            }
        };
        let mut parts = vec![format!("agent {status}")];
        if let Some(n) = result.and_then(|r| r.num_turns) {
            parts.push(format!("{n} turn{}", if n == 1 { "" } else { "s" }));
        }
        if let Some(c) = result.and_then(|r| r.cost_usd) {
            parts.push(format!("${c:.4}"));
        }
        parts.push(format!("{:.1}s", report.duration_ms as f64 / 1000.0));
        if let Some(s) = &report.session_id {
            parts.push(format!("session {s}"));
        }
        if let Some(errors) = result.map(|r| &r.errors).filter(|e| !e.is_empty()) {
            parts.push(errors.join("; "));
        }
        eprintln!("berth: {}", parts.join(" · "));
    }
    ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(1))
}

/// The prompt of a run (from --prompt, --prompt-file or stdin for `-`), and how it reaches the CLI.
pub fn prompt(args: &AgentRunArgs) -> anyhow::Result<(String, PromptDelivery)> {
    Ok(match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => (p.clone(), PromptDelivery::Argv),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the prompt from standard input")?;
            (text, PromptDelivery::Stdin)
        }
        (None, Some(path)) => (
            std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the prompt file {}: {}; give a readable text file, e.g. --prompt-file task.md (or - for stdin)",
                    path.display(),
                    berth_sandbox::io_reason(&e)
                )
            })?,
            PromptDelivery::Stdin,
        ),
        (None, None) => {
            bail!("give a prompt: --prompt \"fix the failing test\" or --prompt-file task.md")
        }
    })
}

async fn agent_run(args: AgentRunArgs) -> anyhow::Result<ExitCode> {
    let mut settings = settings(&args.agent)?;
    if args.keep {
        settings.keep = Some(true);
    }
    if args.max_containers.is_some() {
        settings.max_containers = args.max_containers;
    }
    let (prompt, delivery) = prompt(&args)?;
    let engine = DockerEngine::connect().await?;
    let host = host(&engine).await?;
    let image = image(&engine, &settings).await?;
    let request = RunRequest {
        settings,
        name: args.agent.name.clone(),
        prompt,
        delivery,
        resume: args.resume.clone(),
        fork: args.fork,
    };
    let mut print = printer(args.json);
    let mut report =
        launch::run(&engine, &host, &image, &request, &mut print, interrupted()).await?;
    report.fail_on_denial = args.fail_on_denial;
    Ok(finish(&report, args.json))
}

async fn session_start(args: SessionStartArgs) -> anyhow::Result<ExitCode> {
    let Some(name) = args.agent.name.clone() else {
        bail!("a session belongs to a named agent: berth agent session start --name pair --workspace .");
    };
    let settings = settings(&args.agent)?;
    let engine = DockerEngine::connect().await?;
    let host = host(&engine).await?;
    let image = image(&engine, &settings).await?;
    let (session_id, sandbox_id) = session::start(
        &engine,
        &host,
        &image,
        &settings,
        &name,
        args.resume.as_deref(),
    )
    .await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"agent": name, "session_id": session_id, "sandbox_id": sandbox_id})
        );
    } else {
        println!("{session_id}");
        eprintln!("berth: agent {name:?} is listening in sandbox {sandbox_id}; send it turns with `berth agent send {name} \"…\"`");
    }
    Ok(ExitCode::SUCCESS)
}

async fn send(args: AgentSendArgs) -> anyhow::Result<ExitCode> {
    let flags = AgentFlags {
        name: Some(args.name.clone()),
        config: args.config.clone(),
        ..AgentFlags::default()
    };
    let mut settings = settings(&flags)?;
    // The fallback must land in the same sandbox: the one the session was started with.
    if let Some(record) = super::agents().load(&args.name)? {
        settings.cli = Some(record.cli);
        if let Some(i) = &record.interactive {
            if let Ok(sb) = sandbox::find(&super::store(), &i.sandbox_id) {
                settings.image.get_or_insert(sb.image.clone());
            }
        }
    }
    let engine = DockerEngine::connect().await?;
    let host = host(&engine).await?;
    let mut print = printer(args.json);
    let image_settings = settings.clone();
    let fallback_image = async {
        image(&engine, &image_settings)
            .await
            .map_err(|e| berth_runtimes::RuntimeError::Input(format!("{e:#}")))
    };
    let outcome = session::send(
        &engine,
        &host,
        fallback_image,
        &settings,
        session::SendRequest {
            name: &args.name,
            message: &args.message,
            timeout: args.timeout,
        },
        &mut print,
    )
    .await?;
    let report = match outcome {
        SendOutcome::Turn(report) => report,
        SendOutcome::FellBack { why, report } => {
            eprintln!("berth: {why}; answered with a one-shot run that resumed the session");
            report
        }
    };
    Ok(finish(&report, args.json))
}

fn events(args: AgentEventsArgs) -> anyhow::Result<ExitCode> {
    let cli: Cli = args.cli.parse()?;
    let input: Box<dyn Read> = match &args.file {
        Some(path) => Box::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ),
        None => Box::new(std::io::stdin()),
    };
    let reader = std::io::BufReader::new(input);
    let mut parser = Parser::new(cli);
    let mut summary = berth_events::Summary::default();
    for line in reader.split(b'\n') {
        let line = line.context("reading the event stream")?;
        for record in parser.line(&String::from_utf8_lossy(&line)) {
            summary.add(&record);
            print_event(&record, args.json);
        }
    }
    for line in &summary.malformed_lines {
        eprintln!("berth: line {line} is not a JSON event (kept going)");
    }
    if !args.json {
        if let Some(r) = &summary.result {
            eprintln!(
                "berth: result {} · {} turns · session {}",
                r.subtype,
                r.num_turns.unwrap_or(0),
                summary.session_id.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(if summary.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn ls(args: AgentLsArgs) -> anyhow::Result<ExitCode> {
    let store = super::store();
    let agents = super::agents().list();
    let rows: Vec<serde_json::Value> = agents
        .iter()
        .map(|a| {
            let sandboxes: Vec<String> = launch::agent_sandboxes(&store, &a.name)
                .into_iter()
                .map(|r| r.id)
                .collect();
            serde_json::json!({
                "name": a.name,
                "cli": a.cli,
                "sessions": a.sessions,
                "last_session": a.last_session(),
                "interactive": a.interactive,
                "sandboxes": sandboxes,
            })
        })
        .collect();
    print_agents(&rows, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `berth agent ls`'s output, local or remote: the rows as JSON, or a table.
pub(crate) fn print_agents(rows: &[serde_json::Value], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<9} {:<38} SANDBOXES",
        "NAME", "CLI", "SESSIONS", "LAST SESSION"
    );
    for a in rows {
        let sandboxes: Vec<&str> = a["sandboxes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .collect();
        println!(
            "{:<20} {:<8} {:<9} {:<38} {}",
            a["name"].as_str().unwrap_or("-"),
            a["cli"].as_str().unwrap_or("-"),
            a["sessions"].as_array().map_or(0, Vec::len),
            a["last_session"].as_str().unwrap_or("-"),
            sandboxes.join(",")
        );
    }
    Ok(())
}

async fn rm(args: AgentRmArgs) -> anyhow::Result<ExitCode> {
    let engine = DockerEngine::connect().await?;
    for name in &args.names {
        let n = session::remove_agent(&engine, &super::store(), &super::agents(), name).await?;
        eprintln!("berth: removed agent {name:?} ({n} sandbox(es), its home volume and sessions)");
    }
    Ok(ExitCode::SUCCESS)
}
