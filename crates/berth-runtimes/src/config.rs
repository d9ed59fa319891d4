//! `berth.toml`: named agents, so that `berth agent run --name X` needs only the prompt.
//!
//! ```toml
//! [agents.reviewer]
//! cli = "claude"                 # claude, codex or gemini
//! image = "berth/claude-code"
//! workspace = "."                # relative to this file; ".:ro" for review-only agents
//! memory = "2g"
//! cpus = 2
//! pids = 512
//! secrets = ["ANTHROPIC_API_KEY"] # kept out of the sandbox; egress: only the CLI's API host
//! allow_hosts = ["pypi.org"]     # more hosts the agent may reach through the gateway
//! permission_mode = "acceptEdits" # the CLI's own mode (default: act without asking)
//! env = ["RUST_LOG=debug"]       # names passed from your environment (or NAME=VALUE)
//! credentials = ["~/.claude/.credentials.json:/home/berth/.claude/.credentials.json"]
//! timeout = "30m"
//! keep = true
//! max_containers = 2
//! model = "sonnet"
//! max_turns = 20
//! ```
//!
//! Every value is checked when the file is read; a mistake is reported with the file, line
//! and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_events::Cli;
use berth_spec::{parse_env, HostPattern, MountSpec, NetworkMode, SecretSpec};
use serde::Deserialize;
use toml::Spanned;

use crate::settings::AgentSettings;

/// The file berth looks for in the current directory when no `--config` is given.
pub const DEFAULT_FILE: &str = "berth.toml";

/// A mistake in a config file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    /// Dotted key, e.g. `agents.reviewer.memory`.
    pub key: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    agents: BTreeMap<String, Spanned<AgentTable>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AgentTable {
    cli: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    workspace: Option<Spanned<String>>,
    read_only: Option<bool>,
    memory: Option<Spanned<String>>,
    cpus: Option<Spanned<toml::Value>>,
    pids: Option<Spanned<i64>>,
    network: Option<Spanned<String>>,
    env: Option<Vec<Spanned<String>>>,
    credentials: Option<Vec<Spanned<String>>>,
    timeout: Option<Spanned<String>>,
    keep: Option<bool>,
    max_containers: Option<Spanned<i64>>,
    model: Option<String>,
    max_turns: Option<Spanned<i64>>,
    secrets: Option<Vec<Spanned<String>>>,
    allow_hosts: Option<Vec<Spanned<String>>>,
    permission_mode: Option<Spanned<String>>,
}

/// A parsed config file: settings per agent name.
#[derive(Debug, Default)]
pub struct Config {
    pub path: Option<PathBuf>,
    pub agents: BTreeMap<String, AgentSettings>,
}

impl Config {
    /// Reads `path`, or `./berth.toml` when `path` is `None` and that file exists.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let default = PathBuf::from(DEFAULT_FILE);
                if !default.exists() {
                    return Ok(Self::default());
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            key: String::new(),
            message: format!("cannot read it: {e}"),
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = parse(&text, &path.display().to_string(), &base)?;
        config.path = Some(path);
        Ok(config)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a config's text; `base` is the directory relative workspaces resolve against.
pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
    let parsed: File = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_string(),
        line: e.span().map_or(0, |s| line_of(text, s.start)),
        key: "(file)".to_string(),
        message: e.message().trim().to_string(),
    })?;
    let mut agents = BTreeMap::new();
    for (name, table) in parsed.agents {
        let at = |key: &str, span: std::ops::Range<usize>, message: String| ConfigError {
            file: file.to_string(),
            line: line_of(text, span.start),
            key: format!("agents.{name}.{key}"),
            message,
        };
        crate::store::validate_name(&name).map_err(|e| at("", table.span(), e.to_string()))?;
        let t = table.into_inner();
        let mut s = AgentSettings::default();
        if let Some(v) = t.cli {
            s.cli = Some(
                v.get_ref()
                    .parse::<Cli>()
                    .map_err(|e| at("cli", v.span(), e.to_string()))?,
            );
        }
        if let Some(v) = t.image {
            berth_spec::check_image(v.get_ref())
                .map_err(|e| at("image", v.span(), e.to_string()))?;
            s.image = Some(v.into_inner());
        }
        if let Some(v) = t.workspace {
            let raw = v.get_ref().clone();
            let mut mount = MountSpec::parse_workspace(&raw)
                .map_err(|e| at("workspace", v.span(), e.to_string()))?;
            let host = Path::new(&mount.host);
            if host.is_relative() {
                mount.host = base.join(host).display().to_string();
            }
            s.workspace = Some(mount);
        }
        s.read_only = t.read_only;
        if let Some(v) = t.memory {
            berth_spec::parse_size(v.get_ref())
                .map_err(|e| at("memory", v.span(), e.to_string()))?;
            s.memory = Some(v.into_inner());
        }
        if let Some(v) = t.cpus {
            let text = match v.get_ref() {
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::String(s) => s.clone(),
                other => {
                    return Err(at(
                        "cpus",
                        v.span(),
                        format!("expected a number, got {other}"),
                    ))
                }
            };
            berth_spec::parse_cpus(&text).map_err(|e| at("cpus", v.span(), e.to_string()))?;
            s.cpus = Some(text);
        }
        if let Some(v) = t.pids {
            if *v.get_ref() <= 0 {
                return Err(at(
                    "pids",
                    v.span(),
                    "must be a positive number, e.g. pids = 512".into(),
                ));
            }
            s.pids = Some(v.into_inner());
        }
        if let Some(v) = t.network {
            s.network = Some(
                NetworkMode::parse(v.get_ref())
                    .map_err(|e| at("network", v.span(), e.to_string()))?,
            );
        }
        for v in t.env.unwrap_or_default() {
            s.env
                .push(parse_env(v.get_ref()).map_err(|e| at("env", v.span(), e.to_string()))?);
        }
        for v in t.secrets.unwrap_or_default() {
            let secret = SecretSpec::parse(v.get_ref())
                .map_err(|e| at("secrets", v.span(), e.to_string()))?;
            if secret.value.is_some() {
                return Err(at(
                    "secrets",
                    v.span(),
                    format!("a value written in berth.toml is a secret in a file: name it only (secrets = [\"{}\"]) and export it in your environment", secret.name),
                ));
            }
            s.secrets.push(secret);
        }
        for v in t.allow_hosts.unwrap_or_default() {
            s.allow_hosts.push(
                HostPattern::parse(v.get_ref())
                    .map_err(|e| at("allow_hosts", v.span(), e.to_string()))?,
            );
        }
        if let Some(v) = t.permission_mode {
            // With the CLI named here, its modes are known now (else when the run starts).
            if let Some(cli) = s.cli {
                crate::profile::permission_args(cli, Some(v.get_ref()))
                    .map_err(|e| at("permission_mode", v.span(), e.to_string()))?;
            }
            s.permission_mode = Some(v.into_inner());
        }
        for v in t.credentials.unwrap_or_default() {
            s.credentials.push(
                crate::settings::parse_credentials(v.get_ref())
                    .map_err(|e| at("credentials", v.span(), e.to_string()))?,
            );
        }
        if let Some(v) = t.timeout {
            s.timeout = Some(
                berth_spec::parse_duration(v.get_ref())
                    .map_err(|e| at("timeout", v.span(), e.to_string()))?,
            );
        }
        s.keep = t.keep;
        if let Some(v) = t.max_containers {
            let n = usize::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    at(
                        "max_containers",
                        v.span(),
                        "must be 1 or more, e.g. max_containers = 2".into(),
                    )
                })?;
            s.max_containers = Some(n);
        }
        s.model = t.model;
        if let Some(v) = t.max_turns {
            let n = u64::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    at(
                        "max_turns",
                        v.span(),
                        "must be 1 or more, e.g. max_turns = 20".into(),
                    )
                })?;
            s.max_turns = Some(n);
        }
        agents.insert(name, s);
    }
    Ok(Config { path: None, agents })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse(text, "berth.toml", Path::new("/proj")).unwrap_err()
    }

    #[test]
    fn a_full_agent_parses_and_relative_workspaces_follow_the_file() {
        let c = parse(
            "[agents.reviewer]\ncli = \"codex\"\nworkspace = \"repo:ro\"\nmemory = \"2g\"\ncpus = 1.5\n\
             env = [\"OPENAI_API_KEY\", \"A=1\"]\ntimeout = \"2m\"\nkeep = true\nmax_containers = 2\n",
            "berth.toml",
            Path::new("/proj"),
        )
        .unwrap();
        let r = &c.agents["reviewer"];
        assert_eq!(r.cli, Some(Cli::Codex));
        let ws = r.workspace.as_ref().unwrap();
        assert_eq!(ws.host, "/proj/repo");
        assert!(ws.read_only);
        assert_eq!(r.cpus.as_deref(), Some("1.5"));
        assert_eq!(r.env.len(), 2);
        assert_eq!(r.timeout, Some(std::time::Duration::from_secs(120)));
        assert_eq!(r.max_containers, Some(2));
    }

    #[test]
    fn mistakes_name_the_file_line_and_key() {
        let e = err("[agents.a]\ncli = \"claude\"\nmemory = \"lots\"\n");
        assert_eq!((e.line, e.key.as_str()), (3, "agents.a.memory"));
        assert!(
            e.to_string().starts_with("berth.toml:3: agents.a.memory:"),
            "{e}"
        );

        let e = err("[agents.a]\ncli = \"cursor\"\n");
        assert_eq!((e.line, e.key.as_str()), (2, "agents.a.cli"));

        let e = err("[agents.a]\n\nmemroy = \"1g\"\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("memroy"), "{e}");

        let e = err("[agents.a]\ntimeout = \"soon\"\n");
        assert_eq!(e.key, "agents.a.timeout");

        let e = err("[agents.a\n");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn secrets_are_names_only_and_hosts_and_modes_are_read() {
        let text = "[agents.a]\nsecrets = [\"ANTHROPIC_API_KEY\", \"GH@api.github.com\"]\nallow_hosts = [\"pypi.org\"]\npermission_mode = \"plan\"\n";
        let c = parse(text, "berth.toml", Path::new("/proj")).unwrap();
        let a = &c.agents["a"];
        assert_eq!(a.secrets.len(), 2);
        assert_eq!(a.secrets[1].hosts[0].name, "api.github.com");
        assert_eq!(a.allow_hosts[0].name, "pypi.org");
        assert_eq!(a.permission_mode.as_deref(), Some("plan"));
        let e = err("[agents.a]\nsecrets = [\"K=hunter2\"]\n");
        let text = e.to_string();
        assert!(
            text.contains("berth.toml:2") && text.contains("a value written in berth.toml"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}
