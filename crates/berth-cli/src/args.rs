//! The command line, as clap sees it. Defaults shown in `--help` are the hardening policy.

use std::path::PathBuf;
use std::time::Duration;

use berth_spec::{
    parse_env, EgressPolicy, EnvVar, HostPattern, Limits, MountSpec, NetworkMode, SandboxSpec,
    SecretSpec, Security, SpecError, UserSpec, DEFAULT_CPUS, DEFAULT_IMAGE, DEFAULT_MEMORY,
    DEFAULT_PIDS, DEFAULT_TIMEOUT, DEFAULT_TMP_SIZE,
};
use clap::{Args, Parser, Subcommand};

/// Run commands and coding agents in hardened Docker sandboxes.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about,
    after_help = "Examples:\n  berth doctor\n  berth image build\n  berth run -- echo hello\n  berth run --workspace . --timeout 30s --memory 1g --cpus 2 -- sh -c 'make test'\n  berth run --json -- ls /\n  id=$(berth create --workspace .)\n  berth exec $id -- sh -c 'make test'\n  berth exec -it $id -- sh\n  berth cp $id:/workspace/out ./out\n  berth rm -f $id\n  berth gc --dry-run"
)]
pub struct Cli {
    /// More log output on stderr (--verbose info, twice debug); BERTH_LOG overrides.
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Go through this berth server (http://HOST:PORT) instead of the local engine, with the
    /// key in BERTH_API_KEY: every sandbox and agent verb (doctor, gc, image and server act on
    /// this machine).
    #[arg(long, global = true, env = "BERTH_SERVER", value_name = "URL")]
    pub server: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command once in a fresh hardened sandbox, then remove it.
    #[command(
        after_help = "Exit codes: the command's own; 124 timed out; 125 berth or the engine failed; \
126 command not executable; 127 command not found; 137 killed (OOM is named); 130/143 interrupted.\n\n\
Examples:\n  berth run -- echo hello\n  berth run --workspace . --timeout 30s --memory 1g --cpus 2 -- sh -c 'make test'\n  \
berth run --workspace ./repo:ro --network isolated -- ls /workspace\n  berth run --json -- ls /\n  \
berth run --receipt run.json --env API_TOKEN -- ./job.sh\n  \
berth run --allow-host pypi.org --allow-host files.pythonhosted.org -- pip download requests\n  \
berth run --secret GITHUB_TOKEN@api.github.com -- sh -c 'curl -H \"Authorization: Bearer $GITHUB_TOKEN\" https://api.github.com/user'"
    )]
    Run(Box<RunArgs>),
    /// Create a long-lived sandbox with berth's agent inside; prints its id.
    #[command(
        after_help = "The sandbox runs the image's own entrypoint and command (or COMMAND) as its main \
process; it lives until `berth stop`/`berth rm`, whatever the main process does.\n\n\
Examples:\n  id=$(berth create --workspace . --memory 1g)\n  berth create --name dev --network isolated --image berth/debian\n  \
berth create --json -- sh -c 'echo main process running; sleep infinity'\n  \
berth create --allow-host api.openai.com   # egress to that host only; `berth inspect` shows the policy"
    )]
    Create(Box<CreateArgs>),
    /// Run a command in a sandbox through its agent.
    #[command(
        after_help = "Exit codes: the command's own; 124 timed out (its whole process tree is killed); \
125 berth failed or the sandbox is not running; 126 not executable; 127 not found.\n\n\
Examples:\n  berth exec $id -- python3 -c 'print(1)'\n  berth exec -it $id -- sh\n  \
berth exec --timeout 5s --env A=1 --cwd /tmp $id -- ./long-job\n  echo data | berth exec -i $id -- wc -c\n  \
berth exec -d --tag build $id -- make\n  berth exec --attach build $id"
    )]
    Exec(ExecArgs),
    /// List a sandbox's background processes (started with `berth exec -d`).
    #[command(after_help = "Examples:\n  berth top $id\n  berth top --json $id")]
    Top(TopArgs),
    /// Send a signal to a sandbox's background process (its whole process group).
    #[command(
        after_help = "Examples:\n  berth signal $id build\n  berth signal --signal INT $id build"
    )]
    Signal(SignalArgs),
    /// Copy files and directories between the host and a sandbox (one side is SANDBOX:PATH).
    #[command(
        after_help = "Examples:\n  berth cp ./data.tar $id:/workspace/\n  berth cp $id:/workspace/out ./out\n  berth cp ./src dev:/tmp/src"
    )]
    Cp(CpArgs),
    /// Files in a sandbox: list, stat, mkdir -p, remove, rename (paths cannot escape it).
    #[command(
        after_help = "Examples:\n  berth fs ls $id /workspace\n  berth fs stat --json $id /workspace/out\n  \
berth fs mkdir $id /workspace/a/b\n  berth fs mv $id /workspace/a /workspace/b\n  berth fs rm -r $id /workspace/b"
    )]
    Fs {
        #[command(subcommand)]
        command: FsCommand,
    },
    /// List sandboxes.
    #[command(after_help = "Examples:\n  berth ps\n  berth ps --json")]
    Ps(PsArgs),
    /// Show a sandbox's settings and state as JSON.
    Inspect(SandboxRef),
    /// Show a sandbox's main-process output (the container log).
    #[command(after_help = "Examples:\n  berth logs $id\n  berth logs -f $id")]
    Logs(LogsArgs),
    /// Stop sandboxes (SIGTERM to every process, SIGKILL after the grace period).
    Stop(StopArgs),
    /// Start stopped sandboxes and wait until their agents answer.
    Start(SandboxRefs),
    /// Freeze every process of sandboxes (`docker pause`); calls into one say it is paused.
    #[command(after_help = "Examples:\n  berth pause $id\n  berth unpause $id")]
    Pause(SandboxRefs),
    /// Thaw paused sandboxes.
    #[command(
        visible_alias = "resume",
        after_help = "Examples:\n  berth unpause $id"
    )]
    Unpause(SandboxRefs),
    /// Remove sandboxes (with -f also running ones): container, network and local record.
    Rm(RmArgs),
    /// Check that this machine can run berth, and say what to fix if not.
    #[command(after_help = "Examples:\n  berth doctor\n  berth doctor --json")]
    Doctor(DoctorArgs),
    /// Remove containers and networks that berth left behind (owner process gone).
    #[command(after_help = "Examples:\n  berth gc --dry-run\n  berth gc\n  berth gc --all --json")]
    Gc(GcArgs),
    /// Run coding-agent CLIs (Claude Code, Codex, Gemini CLI) in sandboxes.
    #[command(
        after_help = "Examples:\n  berth agent run --workspace ./repo --prompt \"fix the failing test\"\n  \
berth agent run --cli codex --workspace ./repo --prompt-file task.md --json\n  \
berth agent run --name reviewer --keep --workspace . --prompt \"review\"\n  \
berth agent run --name reviewer --resume <session> --prompt \"and now the docs\"\n  \
berth agent session start --name pair --workspace .\n  berth agent send pair \"what does main.rs do?\"\n  \
berth agent events --cli claude < run.jsonl"
    )]
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Manage berth's sandbox images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Serve berth's HTTP API to many users (API keys, tenants, lifetimes, audit).
    #[command(
        after_help = "Run `berth server init` once first. The server keeps its database in the state directory (BERTH_STATE_DIR); on every start it reconciles it with the engine, so it may be killed at any moment. SIGTERM or Ctrl-C stops it gracefully (requests in flight finish; sandboxes keep running and are adopted by the next start).\n\nExamples:\n  berth serve --listen 127.0.0.1:7777\n  berth serve --listen unix:/run/berth.sock\n  berth serve --listen 0.0.0.0:7777 --workspace-root /srv/workspaces --max-upload 1g\n  berth serve --threads 4                       # many concurrent callers on a big host\n  curl -H \"Authorization: Bearer $KEY\" localhost:7777/v1/sandboxes"
    )]
    Serve(ServeArgs),
    /// Set up the server and manage its API keys.
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen: HOST:PORT (port 0 picks a free one) or unix:PATH.
    #[arg(long, default_value = "127.0.0.1:7777", value_name = "ADDR")]
    pub listen: String,
    /// Let API callers mount host directories under DIR (and nowhere else) as /workspace.
    #[arg(long, value_name = "DIR")]
    pub workspace_root: Option<PathBuf>,
    /// The largest file or archive upload accepted (default 1g).
    #[arg(long, value_name = "SIZE", default_value = "1g", value_parser = size_arg, allow_hyphen_values = true)]
    pub max_upload: String,
    /// Threads that answer API calls (1-64). One answers each call sooner (no wake-ups across
    /// threads); more serve more concurrent calls where the control plane's own CPU is the limit.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = threads_arg)]
    pub threads: usize,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Create the server's database in the state directory and its first admin key.
    #[command(
        after_help = "Prints only the admin key on stdout (everything else goes to stderr), once: it is stored hashed and cannot be shown again.\n\nExamples:\n  KEY=$(berth server init)\n  BERTH_STATE_DIR=/var/lib/berth berth server init"
    )]
    Init,
    /// API keys: each is a tenant that sees only its own sandboxes.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a key; prints only the key on stdout, once (it is stored hashed).
    #[command(
        after_help = "Examples:\n  ALICE=$(berth server key create --name alice)\n  berth server key create --name ops --admin"
    )]
    Create {
        /// The key's (tenant's) name: letters, digits, '_', '.', '-'.
        #[arg(long)]
        name: String,
        /// An admin key sees every tenant's sandboxes and the audit log.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (names, never values).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a key: it stops working at once (its sandboxes stay, visible to admins).
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub sandbox: SandboxFlags,
    /// A name to refer to the sandbox by (besides its id): letters, digits, '_', '.', '-'.
    #[arg(long, value_parser = name_arg)]
    pub name: Option<String>,
    /// How the agent gets in: mount (read-only bind mount; needs an engine on this machine) or
    /// archive (copied in before start; any engine, not with --read-only). Default: mount for a
    /// local engine, archive for a remote one.
    #[arg(long, value_name = "HOW", value_parser = ["mount", "archive"])]
    pub agent_delivery: Option<String>,
    /// Print the sandbox as JSON instead of just its id.
    #[arg(long)]
    pub json: bool,
    /// Main process (default: the image's entrypoint and command).
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Pass stdin to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Run in a pseudo-terminal whose size follows yours.
    #[arg(short, long)]
    pub tty: bool,
    /// Kill the command's whole process tree after this long (90s, 2m); 0: no limit.
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = duration_arg, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Set NAME=VALUE, or pass NAME from your environment (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME[=VALUE]", value_parser = spec_arg(parse_env))]
    pub env: Vec<EnvVar>,
    /// Working directory (default: the sandbox's).
    #[arg(long = "cwd", short = 'w', value_name = "DIR")]
    pub cwd: Option<String>,
    /// UID[:GID] to run as (default: the sandbox's user); 0 runs as root without capabilities.
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Run in the background; prints its tag. Output is kept (last 1 MiB) for --attach.
    #[arg(short, long, conflicts_with_all = ["interactive", "tty", "attach"])]
    pub detach: bool,
    /// Tag of a background process (default: chosen by the agent).
    #[arg(long, requires = "detach", value_name = "TAG", value_parser = tag_arg)]
    pub tag: Option<String>,
    /// Re-attach to a background process: replay its kept output, then follow it to its exit.
    #[arg(long, value_name = "TAG", conflicts_with_all = ["interactive", "tty"])]
    pub attach: Option<String>,
    /// Sandbox id, name or unique id prefix.
    pub sandbox: String,
    /// The command and its arguments, after `--`. No shell is added.
    #[arg(
        required_unless_present = "attach",
        trailing_var_arg = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Sandbox id, name or unique id prefix.
    pub sandbox: String,
}

fn signal_arg(value: &str) -> Result<i32, String> {
    let upper = value.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        other => other.parse().map_err(|_| {
            format!("unknown signal {value:?}: use a name such as TERM, INT, KILL, HUP, USR1 or a number")
        })?,
    };
    if (1..=64).contains(&number) {
        Ok(number)
    } else {
        Err(format!("signal {value} is out of range 1-64"))
    }
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    /// Signal name or number.
    #[arg(long, short, default_value = "TERM", value_parser = signal_arg)]
    pub signal: i32,
    /// Sandbox id, name or unique id prefix.
    pub sandbox: String,
    /// Tag of the background process.
    pub tag: String,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a host path or SANDBOX:PATH.
    pub source: String,
    /// Destination: a host path or SANDBOX:PATH.
    pub destination: String,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print only the sandbox ids, one per line (e.g. `berth rm -f $(berth ps -q)`).
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SandboxRef {
    /// Sandbox id, name or unique id prefix.
    pub sandbox: String,
}

#[derive(Debug, Args)]
pub struct SandboxRefs {
    /// Sandbox ids, names or unique id prefixes.
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the log until the sandbox stops.
    #[arg(short, long)]
    pub follow: bool,
    /// Sandbox id, name or unique id prefix.
    pub sandbox: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10, value_parser = seconds_arg)]
    pub grace: u64,
    /// Sandbox ids, names or unique id prefixes.
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove running sandboxes too (they are killed).
    #[arg(short, long)]
    pub force: bool,
    /// Sandbox ids, names or unique id prefixes.
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build berth's images offline: berth/base from the host's static busybox, or with
    /// --debian a fuller Debian image (bash, coreutils, python3, git) made with debootstrap.
    #[command(
        after_help = "Examples:\n  berth image build\n  berth image build --debian\n  berth image build --debian --mirror http://deb.debian.org/debian"
    )]
    Build(ImageBuildArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Build berth/debian (debootstrap, needs root and a Debian mirror) instead of berth/base.
    #[arg(long)]
    pub debian: bool,
    /// Debian mirror for --debian.
    #[arg(
        long,
        default_value = "http://deb.debian.org/debian",
        value_name = "URL"
    )]
    pub mirror: String,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// List what would be removed; remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Also remove kept sandboxes and those of running berth processes.
    #[arg(long)]
    pub all: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn size_arg(value: &str) -> Result<String, String> {
    berth_spec::parse_size(value)
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

fn threads_arg(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n @ 1..=64) => Ok(n),
        _ => Err(format!(
            "expected a number of threads from 1 to 64, e.g. --threads 4 (got {value:?})"
        )),
    }
}

fn cpus_arg(value: &str) -> Result<String, String> {
    berth_spec::parse_cpus(value)
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

fn seconds_arg(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number of seconds, e.g. --time 10"))
}

fn runtime_arg(value: &str) -> Result<String, String> {
    berth_spec::names::check("runtime", value, "--runtime runsc").map(|_| value.to_string())
}

fn tag_arg(value: &str) -> Result<String, String> {
    berth_spec::names::check("tag", value, "--tag build-1").map(|_| value.to_string())
}

fn name_arg(value: &str) -> Result<String, String> {
    berth_spec::names::check("name", value, "--name web-1").map(|_| value.to_string())
}

fn image_arg(value: &str) -> Result<String, String> {
    berth_spec::check_image(value)
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

fn duration_arg(value: &str) -> Result<Duration, String> {
    berth_spec::parse_duration(value).map_err(|e| e.to_string())
}

/// Parses `--secret` values; an error never shows the value.
/// `--secret` values as specs, a value not given taken from the caller's environment (the
/// edge: no library reads it).
pub fn secret_specs(values: &[String]) -> Result<Vec<SecretSpec>, SpecError> {
    let mut specs = values
        .iter()
        .map(|v| SecretSpec::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    crate::commands::resolve_secrets(&mut specs);
    Ok(specs)
}

fn spec_arg<T>(
    parse: fn(&str) -> Result<T, SpecError>,
) -> impl Fn(&str) -> Result<T, String> + Clone {
    move |value| parse(value).map_err(|e| e.to_string())
}

/// The hardening and resource flags shared by `run` and `create`.
#[derive(Debug, Args)]
pub struct SandboxFlags {
    /// Image to run (berth/base is built offline on first use; others are pulled).
    #[arg(long, default_value = DEFAULT_IMAGE, value_parser = image_arg)]
    pub image: String,

    /// Mount DIR at /workspace (DIR:ro for read-only); the command starts there.
    #[arg(long, short = 'w', value_name = "DIR[:ro]", value_parser = spec_arg(MountSpec::parse_workspace))]
    pub workspace: Option<MountSpec>,

    /// Bind a host path into the sandbox (repeatable). The Docker socket is always refused.
    #[arg(long = "volume", short = 'v', value_name = "HOST:PATH[:ro]", value_parser = spec_arg(MountSpec::parse_volume))]
    pub volumes: Vec<MountSpec>,

    /// Set NAME=VALUE, or pass NAME from your environment (repeatable). Nothing else leaks in.
    #[arg(long = "env", short = 'e', value_name = "NAME[=VALUE]", value_parser = spec_arg(parse_env))]
    pub env: Vec<EnvVar>,

    /// Working directory inside the sandbox (default /workspace with --workspace).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// User to run as: auto (the workspace owner, or 1000:1000 if root owns it), UID[:GID],
    /// or root (weakens isolation).
    #[arg(long, short = 'u', default_value = "auto", value_parser = spec_arg(UserSpec::parse))]
    pub user: UserSpec,

    /// Memory limit; swap is set equal (no swap).
    #[arg(long, short = 'm', default_value = DEFAULT_MEMORY, value_name = "SIZE", value_parser = size_arg, allow_hyphen_values = true)]
    pub memory: String,

    /// CPU quota, in CPUs.
    #[arg(long, default_value = DEFAULT_CPUS, value_name = "N", value_parser = cpus_arg, allow_hyphen_values = true)]
    pub cpus: String,

    /// Maximum number of processes (fork bombs stop here).
    #[arg(long, default_value_t = DEFAULT_PIDS, value_name = "N", allow_negative_numbers = true)]
    pub pids_limit: i64,

    /// Size of the writable tmpfs at /tmp (counts against --memory).
    #[arg(long, default_value = DEFAULT_TMP_SIZE, value_name = "SIZE", value_parser = size_arg, allow_hyphen_values = true)]
    pub tmp_size: String,

    /// none (only loopback), isolated (a private network with no egress, made and removed by
    /// berth), or bridge (egress; weakens isolation).
    #[arg(long, default_value = "none", value_name = "MODE", value_parser = spec_arg(NetworkMode::parse))]
    pub network: NetworkMode,

    /// Let the sandbox reach HOST (pypi.org, *.github.com, host:8443) through berth's egress
    /// gateway (repeatable). Anything else, and every tool that ignores HTTP(S)_PROXY, has no
    /// network.
    #[arg(long = "allow-host", value_name = "HOST", value_parser = spec_arg(HostPattern::parse))]
    pub allow_hosts: Vec<HostPattern>,

    /// NAME[=VALUE]@HOST[,HOST…]: the sandbox sees a placeholder in $NAME; the gateway puts the
    /// value (from your environment unless given) into requests to HOST only (repeatable).
    // Parsed later (`spec`), so that a bad value is never echoed back by the parser.
    #[arg(long = "secret", value_name = "NAME[=VALUE]@HOST")]
    pub secrets: Vec<String>,

    /// Mount the root file system read-only (only /tmp, the workspace and volumes are writable).
    #[arg(long)]
    pub read_only: bool,

    /// Add a capability back after dropping all (repeatable; weakens isolation).
    #[arg(long = "cap-add", value_name = "CAP", value_parser = spec_arg(Security::parse_capability))]
    pub cap_add: Vec<String>,

    /// Allow setuid programs to gain privileges (turns off no-new-privileges; weakens isolation).
    #[arg(long)]
    pub allow_privilege_escalation: bool,

    /// OCI runtime registered with the engine, e.g. runsc (gVisor: a user-space kernel, a
    /// stronger boundary than namespaces; `berth doctor` says whether the engine has it).
    #[arg(long, value_name = "NAME", value_parser = runtime_arg)]
    pub runtime: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub sandbox: SandboxFlags,

    /// Kill the command after this long (90s, 2m, 1h30m); 0 disables.
    #[arg(long, short = 't', default_value = DEFAULT_TIMEOUT, value_name = "DURATION", value_parser = duration_arg, allow_hyphen_values = true)]
    pub timeout: Duration,

    /// Keep the stopped container instead of removing it (`berth gc --all` removes it).
    #[arg(long)]
    pub keep: bool,

    /// Capture the output and print only a JSON receipt on stdout.
    #[arg(long)]
    pub json: bool,

    /// Also write the JSON receipt to FILE (output still streams live).
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,

    /// With --json: how much of each stream to include in the receipt.
    #[arg(long, default_value = "1m", value_name = "SIZE", value_parser = size_arg, allow_hyphen_values = true)]
    pub capture_limit: String,

    /// The command and its arguments, after `--`. No shell is added: use `sh -c '…'` for one.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl RunArgs {
    /// The sandbox spec these flags describe.
    pub fn spec(&self) -> Result<SandboxSpec, SpecError> {
        let mut spec = self.sandbox.spec(self.command.clone())?;
        spec.timeout = (!self.timeout.is_zero()).then_some(self.timeout);
        Ok(spec)
    }
}

impl SandboxFlags {
    /// The sandbox spec these flags describe, running `command`.
    pub fn spec(&self, command: Vec<String>) -> Result<SandboxSpec, SpecError> {
        let mut spec = SandboxSpec::new(command);
        spec.image = self.image.clone();
        spec.workspace = self.workspace.clone();
        spec.volumes = self.volumes.clone();
        for mount in spec.workspace.iter_mut().chain(spec.volumes.iter_mut()) {
            crate::commands::absolute_host_path(mount);
        }
        spec.env = self.env.clone();
        crate::commands::resolve_env(&mut spec.env);
        spec.workdir = self.workdir.clone();
        spec.user = self.user.clone();
        spec.limits = Limits::parse(&self.memory, &self.cpus, self.pids_limit, &self.tmp_size)?;
        spec.network = self.network;
        spec.egress = EgressPolicy {
            allow: self.allow_hosts.clone(),
            secrets: secret_specs(&self.secrets)?,
        };
        spec.security = Security {
            cap_add: self.cap_add.clone(),
            no_new_privileges: !self.allow_privilege_escalation,
            read_only_rootfs: self.read_only,
            runtime: self.runtime.clone(),
        };
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_are_hardened() {
        let cli = Cli::try_parse_from(["berth", "run", "--", "echo", "-n", "hi"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.command, ["echo", "-n", "hi"]);
        let spec = args.spec().unwrap();
        assert_eq!(spec, {
            let mut s = SandboxSpec::new(vec!["echo".into(), "-n".into(), "hi".into()]);
            s.image = DEFAULT_IMAGE.into();
            s
        });
    }

    #[test]
    fn bad_values_name_the_flag_and_value() {
        let e = Cli::try_parse_from(["berth", "run", "--memory", "12x", "--", "true"]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--memory") && msg.contains("12x") && msg.contains("512m"),
            "{msg}"
        );
        assert!(Cli::try_parse_from(["berth", "run", "--timeout", "soon", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["berth", "run", "--",]).is_err());
    }

    #[test]
    fn timeout_zero_disables() {
        let cli = Cli::try_parse_from(["berth", "run", "--timeout", "0", "--", "true"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.spec().unwrap().timeout, None);
    }
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run an agent CLI once on a prompt, headless, and report its events and result.
    #[command(
        after_help = "The prompt goes to the CLI as one argument (or on stdin with --prompt-file), never \
through a shell. Only the variables you name with --env reach the CLI. With --secret, the CLI sees \
a placeholder and reaches only its API host (and --allow-host ones) through berth's egress gateway, \
which adds the key; otherwise the network is none unless you give --network bridge (open egress). \
By default the CLI acts without asking (the sandbox is the boundary); --permission-mode picks its \
own modes, and denied tool calls are counted and never a clean success.\n\n\
Exit codes: 0 the agent succeeded (also with denials, unless --fail-on-denial); 1 it failed (an \
error result such as error_max_turns, or no result, or a denial with --fail-on-denial); the CLI's \
own code when it died; 124 timed out; 130 interrupted; 125 berth itself failed.\n\n\
Examples:\n  berth agent run --workspace ./repo --secret ANTHROPIC_API_KEY --prompt \"fix the failing test\"\n  \
berth agent run --permission-mode plan --workspace . --prompt \"review only\"\n  \
berth agent run --cli codex --workspace ./repo --prompt-file task.md --json\n  \
berth agent run --name reviewer --keep --workspace .:ro --prompt \"review\"\n  \
berth agent run --name reviewer --resume <session> --fork --prompt \"try another approach\""
    )]
    Run(Box<AgentRunArgs>),
    /// Long-running interactive sessions (one CLI process that takes turns).
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Send one turn to an agent's session; streams the reply and returns at the end of the turn.
    #[command(
        after_help = "If the session's process has died, berth says so and answers with a one-shot run \
that resumes the session.\n\nExamples:\n  berth agent send pair \"what does main.rs do?\"\n  \
berth agent send --timeout 2m pair \"now add a test\""
    )]
    Send(AgentSendArgs),
    /// Render (or with --json normalize) a saved event stream of an agent CLI.
    #[command(
        after_help = "Examples:\n  berth agent events --cli claude < run.jsonl\n  berth agent events --cli codex --json codex.jsonl"
    )]
    Events(AgentEventsArgs),
    /// List named agents, their sessions and sandboxes.
    Ls(AgentLsArgs),
    /// Remove named agents: their sandboxes, home volumes and session records.
    Rm(AgentRmArgs),
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a named agent's interactive CLI process in its kept sandbox; prints the session id.
    #[command(after_help = "Examples:\n  berth agent session start --name pair --workspace .")]
    Start(Box<SessionStartArgs>),
    /// End a named agent's interactive process.
    Stop(AgentNameArg),
}

/// Settings of an agent; each overrides the agent's entry in berth.toml.
#[derive(Debug, Args, Clone, Default)]
pub struct AgentFlags {
    /// Agent name: a persistent home (and with --keep a sandbox) and its recorded sessions;
    /// also picks [agents.NAME] from berth.toml.
    #[arg(long, value_parser = name_arg)]
    pub name: Option<String>,
    /// Config file with named agents (default: ./berth.toml if present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Agent CLI: claude (default), codex or gemini.
    #[arg(long, value_name = "CLI")]
    pub cli: Option<String>,
    /// Image with the CLI installed (default berth/<cli>-cli; see images/README.md).
    #[arg(long, value_parser = image_arg)]
    pub image: Option<String>,
    /// Mount DIR at /workspace (DIR:ro for a review-only agent); the CLI starts there.
    #[arg(long, short = 'w', value_name = "DIR[:ro]", value_parser = spec_arg(MountSpec::parse_workspace))]
    pub workspace: Option<MountSpec>,
    /// Pass NAME from your environment, or set NAME=VALUE, for the CLI (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME[=VALUE]", value_parser = spec_arg(parse_env))]
    pub env: Vec<EnvVar>,
    /// Mount a credentials file read-only: HOST:PATH (a relative PATH is inside the home).
    #[arg(long = "credentials", value_name = "HOST:PATH", value_parser = spec_arg(berth_runtimes::settings::parse_credentials))]
    pub credentials: Vec<MountSpec>,
    /// Memory limit (default 1g).
    #[arg(long, short = 'm', value_name = "SIZE", value_parser = size_arg, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// CPU quota (default 1).
    #[arg(long, value_name = "N", value_parser = cpus_arg, allow_hyphen_values = true)]
    pub cpus: Option<String>,
    /// Maximum number of processes (default 512).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// none (default), isolated, or bridge (egress, so the CLI can reach its API; weakens isolation).
    #[arg(long, value_name = "MODE", value_parser = spec_arg(NetworkMode::parse))]
    pub network: Option<NetworkMode>,
    /// Read-only root file system (home, workspace and /tmp stay writable).
    #[arg(long)]
    pub read_only: bool,
    /// Keep a secret out of the sandbox: NAME[=VALUE][@HOST,…] (default host: the CLI's API
    /// host). The CLI sees a placeholder; berth's egress gateway adds the value to requests
    /// for HOST. Without --network, egress is then only the CLI's API host (repeatable).
    // Parsed later (`secret_specs`), so that a bad value is never echoed back by the parser.
    #[arg(long = "secret", value_name = "NAME[=VALUE][@HOST]")]
    pub secrets: Vec<String>,
    /// Let the agent reach HOST too, through the egress gateway (repeatable).
    #[arg(long = "allow-host", value_name = "HOST", value_parser = spec_arg(HostPattern::parse))]
    pub allow_hosts: Vec<HostPattern>,
    /// The CLI's own permission mode (default: the one that acts without asking, since the
    /// sandbox is the boundary: Claude bypassPermissions, Codex bypass, Gemini yolo).
    #[arg(long, value_name = "MODE")]
    pub permission_mode: Option<String>,
    /// End the agent's whole process tree after this long (default 30m).
    #[arg(long, short = 't', value_name = "DURATION", value_parser = duration_arg, allow_hyphen_values = true)]
    pub timeout: Option<Duration>,
    /// Model, passed to the CLI.
    #[arg(long)]
    pub model: Option<String>,
    /// Maximum agentic turns (Claude).
    #[arg(long, value_name = "N")]
    pub max_turns: Option<u64>,
}

#[derive(Debug, Args)]
pub struct AgentRunArgs {
    #[command(flatten)]
    pub agent: AgentFlags,
    /// The prompt (passed as one argument: any character survives).
    #[arg(
        long,
        short = 'p',
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from FILE (sent on stdin); - for standard input.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Keep the agent's sandbox for its next run (needs --name).
    #[arg(long)]
    pub keep: bool,
    /// With --keep: how many sandboxes of this agent to keep (oldest removed; default 1).
    #[arg(long, value_name = "N")]
    pub max_containers: Option<usize>,
    /// Continue this session of the agent (needs --name).
    #[arg(long, value_name = "SESSION")]
    pub resume: Option<String>,
    /// With --resume: branch into a new session instead of continuing.
    #[arg(long, requires = "resume")]
    pub fork: bool,
    /// Print normalized events as JSON lines, then a summary line.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when the CLI reports any denied tool call (by default a run with denials
    /// exits 0 but its summary says it was not clean).
    #[arg(long)]
    pub fail_on_denial: bool,
}

#[derive(Debug, Args)]
pub struct SessionStartArgs {
    #[command(flatten)]
    pub agent: AgentFlags,
    /// Continue this session of the agent instead of starting a new one.
    #[arg(long, value_name = "SESSION")]
    pub resume: Option<String>,
    /// Print the session as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AgentSendArgs {
    /// How long to wait for the end of the turn; the session's process is ended after it.
    #[arg(long, short = 't', default_value = "10m", value_name = "DURATION", value_parser = duration_arg, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Print normalized events as JSON lines, then a summary line.
    #[arg(long)]
    pub json: bool,
    /// Config file (for the fallback run; default ./berth.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The agent's name.
    pub name: String,
    /// The message.
    pub message: String,
}

#[derive(Debug, Args)]
pub struct AgentEventsArgs {
    /// Which CLI wrote the stream: claude, codex or gemini.
    #[arg(long, default_value = "claude")]
    pub cli: String,
    /// Print normalized events as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// The saved stream (default: standard input).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentLsArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AgentNameArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct AgentRmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// List a directory.
    Ls(FsPathArgs),
    /// Show one path: kind, size, mode, owner, modification time.
    Stat(FsPathArgs),
    /// Create a directory and its parents (given to the sandbox user).
    Mkdir(FsPathArgs),
    /// Remove a file, or with -r a directory tree.
    Rm(FsRmArgs),
    /// Rename or move a path inside the sandbox.
    Mv(FsMvArgs),
}

#[derive(Debug, Args)]
pub struct FsPathArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Sandbox id, name or unique id prefix.
    pub sandbox: String,
    /// Absolute path inside the sandbox.
    pub path: String,
}

#[derive(Debug, Args)]
pub struct FsRmArgs {
    /// Remove directories and their contents.
    #[arg(short, long)]
    pub recursive: bool,
    pub sandbox: String,
    pub path: String,
}

#[derive(Debug, Args)]
pub struct FsMvArgs {
    pub sandbox: String,
    pub from: String,
    pub to: String,
}
