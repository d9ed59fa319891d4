//! Egress by domain: the sandbox on an internal network, its one way out a gateway of its own.
//!
//! A sandbox with an egress policy (`--allow-host`, `--secret`) is planned onto a berth-made
//! *internal* network with no host-side address: nothing routes out of it, to the internet or
//! to the host. [`start`] then makes the sandbox's gateway — `berth-gateway` in its own image,
//! as unprivileged and limited as a sandbox — on that network and on Docker's `bridge`, hands
//! it the policy and the secrets' values over the engine's exec channel (stdin of
//! `berth-gateway configure`: never its environment, command line or a file), and points the
//! sandbox at it: `HTTP(S)_PROXY` to the gateway's name, the gateway's CA in the trust
//! variables, a placeholder in each secret's variable.
//!
//! One gateway per sandbox, not one per host: its lifetime, labels and cleanup are the
//! sandbox's (same `berth.id`, owner and keep labels, so `berth rm`, a run's cleanup and
//! `berth gc` treat both alike); a secret's value is only in the memory of the gateway of the
//! sandbox it belongs to; no connection has to be mapped back to the sandbox it came from;
//! and a crash takes one sandbox's egress with it. The gateway has no restart policy: when it
//! dies, the sandbox loses egress (its proxy no longer answers) and never gains any.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use berth_engine::{BindMount, ContainerPlan, Engine, NetworkPlan, Output};
use berth_spec::egress::{GatewayConfig, GatewayReply, GatewaySecret, GatewayStats, PROXY_PORT};
use berth_spec::{labels, EgressPolicy, HostPattern, NetworkMode, SecretValue, SpecError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::error::SandboxError;
use crate::plan::{object_labels, HostFacts};

/// Where the sandbox finds the gateway's CA: `ca.pem` (the CA alone, for
/// `NODE_EXTRA_CA_CERTS`) and `bundle.pem` (the host's trusted roots plus the CA).
pub const CA_DIR: &str = "/.berth-egress";
/// The CA alone, in [`CA_DIR`]; written last, so its presence means the gateway is
/// configured.
pub const CA_FILE: &str = "ca.pem";
/// Test only: `name=ip,name=ip` — the gateway resolves these names to these addresses and
/// dials them even when they are private (the tests' upstreams live on Docker networks).
pub const TEST_RESOLVE_ENV: &str = "BERTH_EGRESS_TEST_RESOLVE";
/// Test only: a PEM file of a CA the gateway also trusts for upstreams.
pub const TEST_UPSTREAM_CA_ENV: &str = "BERTH_EGRESS_TEST_UPSTREAM_CA";
/// The host's bundle of trusted roots, copied into the sandbox's bundle when present.
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A DNS server address that nothing on the internal network answers: the engine's resolver
/// forwards names it does not know there, from the sandbox's namespace, and they go nowhere
/// (instead of through the host's resolver, as engines before 26.0 could do; CVE-2024-29018).
const DEAD_DNS: &str = "192.0.2.53";

/// The gateway half of a sandbox plan.
#[derive(Debug, Clone)]
pub struct EgressPlan {
    /// The gateway container (its image is filled in by [`start`]).
    pub gateway: ContainerPlan,
    /// The internal network both are on.
    pub network: String,
    pub allow: Vec<HostPattern>,
    /// Secrets with their values and placeholders (`Debug` redacts the values).
    pub secrets: Vec<GatewaySecret>,
}

/// What a sandbox's record keeps of its egress: enough to restart and reconfigure the
/// gateway, never a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRecord {
    pub gateway_name: String,
    pub network: String,
    pub allow: Vec<HostPattern>,
    /// Each secret's name, placeholder and hosts.
    pub secrets: Vec<SecretRecord>,
}

impl EgressRecord {
    /// The policy as receipts and `berth inspect` show it, with the gateway's counts.
    pub fn report(&self, stats: Option<GatewayStats>) -> crate::receipt::EgressReport {
        crate::receipt::EgressReport {
            policy: self.clone(),
            stats,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub name: String,
    pub placeholder: String,
    pub hosts: Vec<HostPattern>,
}

impl EgressPlan {
    pub fn record(&self) -> EgressRecord {
        EgressRecord {
            gateway_name: self.gateway.name.clone(),
            network: self.network.clone(),
            allow: self.allow.clone(),
            secrets: self
                .secrets
                .iter()
                .map(|s| SecretRecord {
                    name: s.name.clone(),
                    placeholder: s.placeholder.clone(),
                    hosts: s.hosts.clone(),
                })
                .collect(),
        }
    }
}

/// Where the value of a secret known only by its name comes from: the front end's answer,
/// never this library's. A gateway that restarted lost its secrets with its memory, and the
/// record keeps only names; the daemonless CLI answers from its user's environment, a server
/// (whose own environment is not its callers') with nothing.
pub type SecretLookup<'a> = dyn Fn(&str) -> Option<SecretValue> + Send + Sync + 'a;

/// A lookup that knows no value (a server's).
pub fn no_secrets(_: &str) -> Option<SecretValue> {
    None
}

/// A fresh placeholder for secret `name`: unique per sandbox, and shaped like a token so
/// tools pass it along as they would the real value.
fn placeholder(name: &str) -> String {
    let mut random = [0u8; 12];
    // An all-zero placeholder is still unique enough to be replaced; never fail over it.
    let _ = getrandom::fill(&mut random);
    format!(
        "berth-placeholder-{}-{}",
        name.to_ascii_lowercase(),
        hex::encode(random)
    )
}

/// The container name of sandbox `id`'s gateway (also its host name on the internal network).
pub fn gateway_name(id: &str) -> String {
    format!("berth-gw-{id}")
}

/// The egress half of [`crate::plan::plan_sandbox`]: the internal network, the gateway's
/// container, the secrets' values (from the spec or the caller's environment), and what the
/// sandbox container needs that is known before the gateway runs.
pub fn plan(
    policy: &EgressPolicy,
    network_mode: NetworkMode,
    id: &str,
    host: &HostFacts,
    owned: bool,
    sandbox: &mut ContainerPlan,
) -> Result<(NetworkPlan, EgressPlan), SandboxError> {
    if network_mode == NetworkMode::Bridge {
        return Err(SpecError::EgressWithBridge.into());
    }
    let mut secrets = Vec::new();
    for s in &policy.secrets {
        if s.hosts.is_empty() {
            return Err(SandboxError::Input(format!(
                "--secret {} names no host its value may go to: add them, e.g. --secret {}@api.example.com",
                s.name, s.name
            )));
        }
        // The front end resolved what it could (the CLI: from its user's environment).
        let Some(value) = s.value.clone() else {
            return Err(SandboxError::Input(format!(
                "--secret {}: {} is not set in your environment; export it, or give the value (--secret {}=VALUE@HOST)",
                s.name, s.name, s.name
            )));
        };
        secrets.push(GatewaySecret {
            name: s.name.clone(),
            placeholder: placeholder(&s.name),
            value,
            hosts: s.hosts.clone(),
        });
    }
    let network = format!("berth-egress-{id}");
    let network_plan = crate::plan::internal_network(network.clone(), id, host, owned);
    let gateway = ContainerPlan {
        name: gateway_name(id),
        image: String::new(),
        entrypoint: None,
        cmd: vec!["serve".to_string()],
        user: "65534:65534".to_string(),
        workdir: None,
        env: Vec::new(),
        labels: object_labels(id, labels::KIND_GATEWAY, host, owned),
        memory_bytes: 256 << 20,
        memory_swap_bytes: 256 << 20,
        nano_cpus: 1_000_000_000,
        pids_limit: 128,
        cap_drop: vec!["ALL".to_string()],
        cap_add: Vec::new(),
        security_opt: vec!["no-new-privileges".to_string()],
        read_only_rootfs: true,
        tmpfs: BTreeMap::from([(
            "/tmp".to_string(),
            "rw,noexec,nosuid,nodev,mode=1777,size=1m".to_string(),
        )]),
        binds: Vec::new(),
        network: network.clone(),
        open_stdin: false,
        tty: false,
        stop_timeout: Some(1),
        oom_score_adj: None,
        dns: Vec::new(),
        dns_options: Vec::new(),
        runtime: None,
    };
    let allow = policy.allowed_hosts();

    let proxy = format!("http://{}:{PROXY_PORT}", gateway.name);
    let no_proxy = "localhost,127.0.0.1,::1";
    let bundle = format!("{CA_DIR}/bundle.pem");
    let vars = [
        ("HTTP_PROXY", proxy.as_str()),
        ("HTTPS_PROXY", proxy.as_str()),
        ("http_proxy", proxy.as_str()),
        ("https_proxy", proxy.as_str()),
        ("NO_PROXY", no_proxy),
        ("no_proxy", no_proxy),
        ("SSL_CERT_FILE", bundle.as_str()),
        ("REQUESTS_CA_BUNDLE", bundle.as_str()),
        ("CURL_CA_BUNDLE", bundle.as_str()),
        ("GIT_SSL_CAINFO", bundle.as_str()),
        ("PIP_CERT", bundle.as_str()),
        ("NODE_EXTRA_CA_CERTS", &format!("{CA_DIR}/ca.pem")),
    ];
    let mut env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(
        secrets
            .iter()
            .map(|s| format!("{}={}", s.name, s.placeholder)),
    );
    let overridden: Vec<&str> = vars
        .iter()
        .map(|(k, _)| *k)
        .chain(secrets.iter().map(|s| s.name.as_str()))
        .collect();
    sandbox
        .env
        .retain(|e| !overridden.contains(&e.split('=').next().unwrap_or("")));
    sandbox.env.extend(env);
    sandbox.network = network.clone();
    sandbox.dns = vec![DEAD_DNS.to_string()];
    // A lookup that can only fail (anything but the gateway's name) fails in a second, not ten.
    sandbox.dns_options = vec!["timeout:1".to_string(), "attempts:1".to_string()];
    sandbox.labels.insert(
        labels::EGRESS_ALLOW.to_string(),
        allow
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    if !secrets.is_empty() {
        sandbox.labels.insert(
            labels::EGRESS_SECRETS.to_string(),
            secrets
                .iter()
                .map(|s| {
                    let hosts: Vec<String> = s.hosts.iter().map(|h| h.to_string()).collect();
                    format!("{}@{}", s.name, hosts.join(","))
                })
                .collect::<Vec<_>>()
                .join(";"),
        );
    }
    Ok((
        network_plan,
        EgressPlan {
            gateway,
            network,
            allow,
            secrets,
        },
    ))
}

/// Mounts the CA directory into the sandbox (the files are written by [`start`]).
/// `dir` is the sandbox's CA directory ([`crate::host_dirs::ca_dir`]): beside its socket
/// directory, so the mount table names nothing of the host's.
pub fn mount_ca(dir: &Path, sandbox: &mut ContainerPlan) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
    sandbox.binds.push(BindMount {
        source: dir.display().to_string(),
        target: CA_DIR.to_string(),
        read_only: true,
    });
    Ok(())
}

/// The gateway's image (found or built from the gateway binary): asked for before anything of
/// the sandbox is made, so a missing gateway leaves nothing to clean up.
pub async fn image<E: Engine>(engine: &E) -> Result<String, SandboxError> {
    let binary = crate::sandbox::gateway_binary()?;
    crate::images::ensure_gateway(engine, &binary).await
}

/// A running, configured gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub container_id: String,
    pub address: String,
}

/// Makes, starts and configures the sandbox's gateway; the internal network must exist.
/// Returns once the gateway listens, so the sandbox can start right after.
pub async fn start<E: Engine>(
    engine: &E,
    id: &str,
    egress: &EgressPlan,
    image: &str,
    ca_dir: &Path,
) -> Result<Gateway, SandboxError> {
    let mut plan = egress.gateway.clone();
    plan.image = image.to_string();
    let container_id = engine.container_create(&plan).await?;
    engine.network_connect("bridge", &container_id).await?;
    engine.container_start(&container_id).await?;
    configure(
        engine,
        id,
        &container_id,
        &egress.network,
        &egress.allow,
        &egress.secrets,
        ca_dir,
    )
    .await
}

/// Hands the gateway its policy and secrets (again, after a restart or for a reused
/// sandbox) and writes the CA files the sandbox trusts into `ca_dir`.
pub async fn configure<E: Engine>(
    engine: &E,
    id: &str,
    container_id: &str,
    network: &str,
    allow: &[HostPattern],
    secrets: &[GatewaySecret],
    ca_dir: &Path,
) -> Result<Gateway, SandboxError> {
    let state = engine.container_inspect(container_id).await?;
    let address = state.ip_addresses.get(network).cloned().ok_or_else(|| {
        SandboxError::Input(format!(
            "the egress gateway of sandbox {id} has no address on {network} (did it stop? `docker logs {}` says why); `berth rm -f {id}` and make the sandbox again",
            gateway_name(id)
        ))
    })?;
    let config = GatewayConfig {
        sandbox_id: id.to_string(),
        listen: format!("{address}:{PROXY_PORT}"),
        allow: allow.to_vec(),
        secrets: secrets.to_vec(),
        deny_addrs: host_addresses(),
        resolve: test_resolve()?,
        upstream_ca_pem: test_upstream_ca()?,
    };
    let input = serde_json::to_vec(&config).map_err(|e| {
        SandboxError::io(
            "encoding the gateway's configuration",
            std::io::Error::other(e),
        )
    })?;
    let reply = gateway_call(engine, container_id, "configure", Some(&input)).await?;
    let reply: GatewayReply = serde_json::from_slice(&reply).map_err(|e| {
        SandboxError::Input(format!(
            "the egress gateway of sandbox {id} answered nonsense: {e}"
        ))
    })?;
    if let Some(e) = reply.error {
        return Err(SandboxError::Input(format!(
            "the egress gateway of sandbox {id} refused its configuration: {e}"
        )));
    }
    write_ca(ca_dir, &reply.ca_pem)?;
    Ok(Gateway {
        container_id: container_id.to_string(),
        address,
    })
}

/// What the gateway counted (allowed, denied, injected).
pub async fn stats<E: Engine>(
    engine: &E,
    container_id: &str,
) -> Result<GatewayStats, SandboxError> {
    let reply = gateway_call(engine, container_id, "stats", None).await?;
    serde_json::from_slice(&reply)
        .map_err(|e| SandboxError::Input(format!("the egress gateway answered nonsense: {e}")))
}

/// Runs `berth-gateway VERB` in the gateway container with `input` on stdin; its stdout.
async fn gateway_call<E: Engine>(
    engine: &E,
    container_id: &str,
    verb: &str,
    input: Option<&[u8]>,
) -> Result<Vec<u8>, SandboxError> {
    let argv = vec!["/berth-gateway".to_string(), verb.to_string()];
    let (mut output, mut stdin) = engine.container_exec_attached(container_id, &argv).await?;
    if let Some(bytes) = input {
        stdin
            .write_all(bytes)
            .await
            .map_err(|e| SandboxError::io("configuring the egress gateway", e))?;
    }
    let _ = stdin.shutdown().await;
    drop(stdin);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(chunk) = output.next().await {
        match chunk? {
            Output::Stdout(b) => out.extend_from_slice(&b),
            Output::Stderr(b) => err.extend_from_slice(&b),
        }
    }
    if out.is_empty() {
        return Err(SandboxError::Input(format!(
            "the egress gateway ({container_id}) did not answer `{verb}`: {} (`docker logs {container_id}` shows what it did)",
            String::from_utf8_lossy(&err).trim()
        )));
    }
    Ok(out)
}

fn write_ca(dir: &Path, ca_pem: &str) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
    let mut bundle = std::fs::read_to_string(HOST_BUNDLE).unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca_pem);
    for (name, content) in [("bundle.pem", bundle.as_str()), (CA_FILE, ca_pem)] {
        // Written aside and renamed: a reader never sees half a file. The sandbox sees the
        // directory through a bind mount, so a restarted gateway's new CA reaches it too.
        let path = dir.join(name);
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, content)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

/// The host's own addresses, which the gateway refuses like private ones.
fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(address) = a.address else { continue };
            if let Some(v4) = address.as_sockaddr_in() {
                out.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = address.as_sockaddr_in6() {
                out.push(IpAddr::V6(v6.ip()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn test_resolve() -> Result<BTreeMap<String, IpAddr>, SandboxError> {
    let Ok(text) = std::env::var(TEST_RESOLVE_ENV) else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let parsed = pair.split_once('=').and_then(|(name, ip)| {
            Some((name.trim().to_ascii_lowercase(), ip.trim().parse().ok()?))
        });
        match parsed {
            Some((name, ip)) => {
                out.insert(name, ip);
            }
            None => {
                return Err(SandboxError::Input(format!(
                "{TEST_RESOLVE_ENV}: {pair:?} is not NAME=IP (e.g. api.anthropic.com=172.17.0.5)"
            )))
            }
        }
    }
    Ok(out)
}

fn test_upstream_ca() -> Result<Option<String>, SandboxError> {
    match std::env::var_os(TEST_UPSTREAM_CA_ENV) {
        None => Ok(None),
        Some(path) => {
            let path = Path::new(&path);
            std::fs::read_to_string(path).map(Some).map_err(|e| {
                SandboxError::io(
                    format!("{TEST_UPSTREAM_CA_ENV}: reading {}", path.display()),
                    e,
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::SecretSpec;

    fn host() -> HostFacts {
        HostFacts {
            engine_socket: None,
            owner: "h:1:2".into(),
            created: "t".into(),
        }
    }

    #[test]
    fn the_sandbox_gets_a_placeholder_the_proxy_and_a_dead_dns() {
        let policy = EgressPolicy {
            allow: vec![HostPattern::parse("pypi.org").unwrap()],
            secrets: vec![SecretSpec::parse("TOKEN=s3cr3t-value@api.x.com").unwrap()],
        };
        let mut sandbox = ContainerPlan {
            env: vec!["TOKEN=leaked".into(), "HOME=/tmp".into()],
            ..Default::default()
        };
        let (net, egress) = plan(
            &policy,
            NetworkMode::None,
            "abc",
            &host(),
            true,
            &mut sandbox,
        )
        .unwrap();
        assert!(net.internal && !net.host_reachable);
        assert_eq!(sandbox.network, net.name);
        assert_eq!(egress.gateway.network, net.name);
        assert_eq!(sandbox.dns, [DEAD_DNS]);
        let token: Vec<&String> = sandbox
            .env
            .iter()
            .filter(|e| e.starts_with("TOKEN="))
            .collect();
        assert_eq!(token.len(), 1);
        assert!(
            token[0].starts_with("TOKEN=berth-placeholder-token-"),
            "{token:?}"
        );
        assert!(sandbox
            .env
            .contains(&"HTTPS_PROXY=http://berth-gw-abc:3128".to_string()));
        let everything = format!("{sandbox:?} {egress:?} {:?}", egress.record());
        assert!(!everything.contains("s3cr3t"), "{everything}");
        assert_eq!(egress.secrets[0].value.expose(), "s3cr3t-value");
        assert_eq!(sandbox.labels[labels::EGRESS_ALLOW], "api.x.com,pypi.org");
        assert_eq!(sandbox.labels[labels::EGRESS_SECRETS], "TOKEN@api.x.com");
        assert_eq!(egress.gateway.labels[labels::ID], "abc");
        assert_eq!(egress.gateway.labels[labels::OWNER], "h:1:2");
        assert_eq!(egress.gateway.cap_drop, ["ALL"]);
        assert!(egress.gateway.read_only_rootfs);
        assert!(
            egress.gateway.env.is_empty(),
            "no secret in the gateway's configuration"
        );
    }

    #[test]
    fn two_sandboxes_get_different_placeholders() {
        let policy = EgressPolicy {
            allow: vec![],
            secrets: vec![SecretSpec::parse("T=v@a.com").unwrap()],
        };
        let a = plan(
            &policy,
            NetworkMode::None,
            "a",
            &host(),
            true,
            &mut ContainerPlan::default(),
        )
        .unwrap()
        .1;
        let b = plan(
            &policy,
            NetworkMode::None,
            "b",
            &host(),
            true,
            &mut ContainerPlan::default(),
        )
        .unwrap()
        .1;
        assert_ne!(a.secrets[0].placeholder, b.secrets[0].placeholder);
    }

    #[test]
    fn bridge_a_missing_value_and_a_hostless_secret_are_refused() {
        let refusal = |allow: &str, secret: Option<&str>, mode| {
            let policy = EgressPolicy {
                allow: vec![HostPattern::parse(allow).unwrap()],
                secrets: secret
                    .map(|s| SecretSpec::parse(s).unwrap())
                    .into_iter()
                    .collect(),
            };
            plan(
                &policy,
                mode,
                "a",
                &host(),
                true,
                &mut ContainerPlan::default(),
            )
            .unwrap_err()
            .to_string()
        };
        let e = refusal("a.com", None, NetworkMode::Bridge);
        assert!(e.contains("--network bridge"), "{e}");
        let e = refusal(
            "a.com",
            Some("BERTH_TEST_SURELY_UNSET_SECRET@a.com"),
            NetworkMode::None,
        );
        assert!(e.contains("not set in your environment"), "{e}");
        let e = refusal("a.com", Some("T=v"), NetworkMode::None);
        assert!(e.contains("names no host"), "{e}");
    }
}
