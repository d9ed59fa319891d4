//! An agent's settings as the user gave them — flags over `berth.toml` over berth's defaults —
//! and the hardened sandbox spec they turn into.

use std::time::Duration;

use berth_events::Cli;
use berth_spec::{
    EgressPolicy, EnvVar, HostPattern, Limits, MountSpec, NetworkMode, SandboxSpec, SecretSpec,
    SpecError, DEFAULT_CPUS, DEFAULT_MEMORY, DEFAULT_PIDS, DEFAULT_TMP_SIZE,
};

/// Where an agent CLI's home is mounted (a berth-managed volume; `HOME` points here).
pub const AGENT_HOME: &str = "/home/berth";
/// How long an agent may run when nobody says otherwise.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The image berth uses for a CLI when none is given (see `images/` for the recipes).
pub fn default_image(cli: Cli) -> String {
    format!("berth/{}-cli:latest", cli.name())
}

/// Every setting of an agent; `None` means "not given here".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSettings {
    pub cli: Option<Cli>,
    pub image: Option<String>,
    pub workspace: Option<MountSpec>,
    /// Read-only root file system (the home, workspace and /tmp stay writable).
    pub read_only: Option<bool>,
    pub memory: Option<String>,
    pub cpus: Option<String>,
    pub pids: Option<i64>,
    pub network: Option<NetworkMode>,
    /// Variables for the CLI (added to the config's).
    pub env: Vec<EnvVar>,
    /// Files mounted read-only (added to the config's).
    pub credentials: Vec<MountSpec>,
    pub timeout: Option<Duration>,
    pub keep: Option<bool>,
    pub max_containers: Option<usize>,
    pub model: Option<String>,
    pub max_turns: Option<u64>,
    /// Secrets kept out of the sandbox (added to the config's).
    pub secrets: Vec<SecretSpec>,
    /// Hosts reachable through the egress gateway besides the CLI's API host.
    pub allow_hosts: Vec<HostPattern>,
    /// The CLI's own permission mode (default: the one that acts without asking).
    pub permission_mode: Option<String>,
}

/// The host a CLI's API lives on: a secret goes there unless told otherwise, and it is what
/// an agent with a secret may reach by default.
pub fn api_host(cli: Cli) -> &'static str {
    match cli {
        Cli::Claude => "api.anthropic.com",
        Cli::Codex => "api.openai.com",
        Cli::Gemini => "generativelanguage.googleapis.com",
    }
}

impl AgentSettings {
    /// These settings, with `base` filling what they leave open.
    pub fn over(self, base: &AgentSettings) -> AgentSettings {
        let base = base.clone();
        AgentSettings {
            cli: self.cli.or(base.cli),
            image: self.image.or(base.image),
            workspace: self.workspace.or(base.workspace),
            read_only: self.read_only.or(base.read_only),
            memory: self.memory.or(base.memory),
            cpus: self.cpus.or(base.cpus),
            pids: self.pids.or(base.pids),
            network: self.network.or(base.network),
            env: base.env.into_iter().chain(self.env).collect(),
            credentials: base
                .credentials
                .into_iter()
                .chain(self.credentials)
                .collect(),
            timeout: self.timeout.or(base.timeout),
            keep: self.keep.or(base.keep),
            max_containers: self.max_containers.or(base.max_containers),
            model: self.model.or(base.model),
            max_turns: self.max_turns.or(base.max_turns),
            secrets: base.secrets.into_iter().chain(self.secrets).collect(),
            allow_hosts: base
                .allow_hosts
                .into_iter()
                .chain(self.allow_hosts)
                .collect(),
            permission_mode: self.permission_mode.or(base.permission_mode),
        }
    }

    /// The options that become CLI flags.
    pub fn cli_options(&self) -> crate::profile::CliOptions {
        crate::profile::CliOptions {
            model: self.model.clone(),
            max_turns: self.max_turns,
            permission_mode: self.permission_mode.clone(),
        }
    }

    pub fn cli(&self) -> Cli {
        self.cli.unwrap_or_default()
    }

    pub fn image(&self) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| default_image(self.cli()))
    }

    /// The sandbox these settings describe: berth's hardening with the agent's limits, the
    /// workspace and credential files. Environment variables are not part of it: they go to
    /// each CLI process, so secrets never sit in the container's configuration.
    pub fn sandbox_spec(&self) -> Result<SandboxSpec, SpecError> {
        let mut spec = SandboxSpec::new(Vec::new());
        spec.image = self.image();
        spec.workspace = self.workspace.clone();
        spec.volumes = self.credentials.clone();
        spec.limits = Limits::parse(
            self.memory.as_deref().unwrap_or(DEFAULT_MEMORY),
            self.cpus.as_deref().unwrap_or(DEFAULT_CPUS),
            self.pids.unwrap_or(DEFAULT_PIDS),
            DEFAULT_TMP_SIZE,
        )?;
        spec.network = self.network.unwrap_or(NetworkMode::None);
        if spec.network == NetworkMode::Bridge && !self.allow_hosts.is_empty() {
            // A secret with bridge is allowed (the CLI gets it, berth warns); a host list is
            // meaningless when everything is open.
            return Err(SpecError::EgressWithBridge);
        }
        spec.egress = self.egress();
        spec.security.read_only_rootfs = self.read_only.unwrap_or(false);
        spec.timeout = None;
        Ok(spec)
    }

    /// Whether the agent goes through berth's egress gateway: it has a secret or an allowed
    /// host, and nobody asked for open networking (`--network bridge`, where a secret is
    /// handed to the CLI as a plain variable instead).
    pub fn uses_gateway(&self) -> bool {
        (!self.secrets.is_empty() || !self.allow_hosts.is_empty())
            && self.network != Some(NetworkMode::Bridge)
    }

    /// `-e NAME`s that are also secrets behind the gateway: passing them would hand the CLI
    /// the value after all, so they are left out (and the CLI says so).
    pub fn shadowed_env(&self) -> Vec<&str> {
        if !self.uses_gateway() {
            return Vec::new();
        }
        self.env
            .iter()
            .filter(|v| self.secrets.iter().any(|s| s.name == v.name))
            .map(|v| v.name.as_str())
            .collect()
    }

    /// The egress policy: the CLI's API host plus `allow_hosts`; a secret without hosts goes
    /// to the API host.
    pub fn egress(&self) -> EgressPolicy {
        if !self.uses_gateway() {
            return EgressPolicy::default();
        }
        let api = HostPattern {
            name: api_host(self.cli()).to_string(),
            wildcard: false,
            port: None,
        };
        let mut allow = vec![api.clone()];
        allow.extend(self.allow_hosts.iter().cloned());
        let secrets = self
            .secrets
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if s.hosts.is_empty() {
                    s.hosts = vec![api.clone()];
                }
                s
            })
            .collect();
        EgressPolicy { allow, secrets }
    }
}

/// Parses a credentials mount `HOST:PATH`; it is always read-only. A relative sandbox path is
/// taken inside the agent's home (`~/.claude/.credentials.json:.claude/.credentials.json`).
pub fn parse_credentials(value: &str) -> Result<MountSpec, SpecError> {
    let absolute = match value.split_once(':') {
        Some((host, target)) if !target.starts_with('/') && !target.is_empty() => {
            format!("{host}:{AGENT_HOME}/{target}")
        }
        _ => value.to_string(),
    };
    let absolute = absolute
        .strip_suffix(":ro")
        .map(String::from)
        .unwrap_or(absolute);
    let mut mount = MountSpec::parse_volume(&absolute)?;
    mount.read_only = true;
    Ok(mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_lists_add_up() {
        let config = AgentSettings {
            cli: Some(Cli::Codex),
            memory: Some("2g".into()),
            env: vec![berth_spec::parse_env("A").unwrap()],
            ..Default::default()
        };
        let flags = AgentSettings {
            memory: Some("3g".into()),
            env: vec![berth_spec::parse_env("B=1").unwrap()],
            ..Default::default()
        };
        let s = flags.over(&config);
        assert_eq!(s.cli(), Cli::Codex);
        assert_eq!(s.memory.as_deref(), Some("3g"));
        assert_eq!(s.env.len(), 2);
        assert_eq!(s.image(), "berth/codex-cli:latest");
    }

    #[test]
    fn the_sandbox_is_hardened_by_default() {
        let spec = AgentSettings::default().sandbox_spec().unwrap();
        assert_eq!(spec.network, NetworkMode::None);
        assert!(spec.security.no_new_privileges);
        assert!(spec.env.is_empty());
    }

    #[test]
    fn a_secret_means_the_gateway_unless_the_network_is_open() {
        let secret = |s: &str| berth_spec::SecretSpec::parse(s).unwrap();
        let mut s = AgentSettings {
            secrets: vec![secret("ANTHROPIC_API_KEY")],
            env: vec![berth_spec::parse_env("ANTHROPIC_API_KEY").unwrap()],
            ..Default::default()
        };
        let spec = s.sandbox_spec().unwrap();
        assert_eq!(spec.egress.allow[0].name, "api.anthropic.com");
        assert_eq!(spec.egress.secrets[0].hosts[0].name, "api.anthropic.com");
        assert_eq!(s.shadowed_env(), ["ANTHROPIC_API_KEY"]);
        s.network = Some(NetworkMode::Bridge);
        assert!(
            !s.sandbox_spec().unwrap().egress.enabled(),
            "bridge: no gateway"
        );
        assert!(
            s.shadowed_env().is_empty(),
            "bridge: the CLI gets the value"
        );
        s.allow_hosts = vec![HostPattern::parse("pypi.org").unwrap()];
        assert_eq!(s.sandbox_spec().unwrap_err(), SpecError::EgressWithBridge);
    }

    #[test]
    fn credentials_are_read_only_and_relative_targets_go_home() {
        let m = parse_credentials("/h/creds.json:.claude/.credentials.json").unwrap();
        assert!(m.read_only);
        assert_eq!(m.target, "/home/berth/.claude/.credentials.json");
        let m = parse_credentials("/h/key:/run/key:rw").unwrap();
        assert!(m.read_only, "credentials are never writable");
    }
}
