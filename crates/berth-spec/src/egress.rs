//! Egress by domain: which hosts a sandbox may reach through berth's egress gateway, and which
//! secrets the gateway adds to requests for which hosts.
//!
//! This is the policy as the user wrote it (`--allow-host`, `--secret`) and the few rules
//! both ends need: the host side (which plans the sandbox) and the gateway (which enforces
//! the policy) share [`HostPattern`] matching and the [`GatewayConfig`] handed to the gateway
//! at run time. A secret's value lives in [`SecretValue`], whose `Debug` never shows it and
//! which is never serialized into anything but that hand-over.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// The port the gateway's proxy listens on, on the sandbox's internal network.
pub const PROXY_PORT: u16 = 3128;

/// One allowed host: an exact name (`pypi.org`), or every subdomain of a name
/// (`*.github.com`, which does not match `github.com` itself), optionally on one port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPattern {
    /// Lower-case name, without the `*.` of a wildcard.
    pub name: String,
    /// `*.name`: any subdomain of `name`.
    pub wildcard: bool,
    /// Only this port; `None` means the web's ports, 80 and 443.
    pub port: Option<u16>,
}

impl HostPattern {
    /// Parses `host`, `*.suffix`, `host:port` or an IP address.
    pub fn parse(value: &str) -> Result<Self, SpecError> {
        let err = |reason: &'static str| SpecError::AllowHost {
            value: value.to_string(),
            reason,
        };
        let trimmed = value.trim().to_ascii_lowercase();
        if trimmed.contains("://") || trimmed.contains('/') {
            return Err(err("give a host name, not a URL"));
        }
        let (host, port) = match trimmed.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| err("the port is not a number from 1 to 65535"))?;
                (h.to_string(), Some(port))
            }
            _ => (trimmed.clone(), None),
        };
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, host),
        };
        if name.is_empty() {
            return Err(err("the host name is empty"));
        }
        if name.contains('*') {
            return Err(err(
                "a wildcard is only allowed as a leading *. (e.g. *.github.com)",
            ));
        }
        let valid = name.parse::<IpAddr>().is_ok()
            || name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(err("not a valid host name"));
        }
        if wildcard && !name.contains('.') {
            return Err(err(
                "a wildcard needs a domain with at least two labels (e.g. *.example.com)",
            ));
        }
        Ok(Self {
            name,
            wildcard,
            port,
        })
    }

    /// Whether `host` (any case, without a trailing dot) on `port` is covered.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        };
        if !port_ok {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.name.len()
                && host.ends_with(&self.name)
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
        } else {
            host == self.name
        }
    }

    /// Whether the same host names are covered, ignoring the port.
    pub fn covers_name(&self, host: &str) -> bool {
        self.matches(host, self.port.unwrap_or(443))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A secret's value. Its `Debug` and `Display` print `<redacted>`; it is serialized only
/// inside the [`GatewayConfig`] handed to the gateway over its control channel.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The value itself: only the gateway's hand-over and the header rewrite read it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `--secret NAME[=VALUE][@HOST[,HOST…]]` as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretSpec {
    /// The environment variable the sandbox sees (holding a placeholder).
    pub name: String,
    /// The value; `None`: taken from the caller's environment when the sandbox is made.
    #[serde(skip)]
    pub value: Option<SecretValue>,
    /// Hosts whose requests get the value; empty: the caller's default (the agent CLI's API
    /// host for `berth agent run`; required elsewhere).
    pub hosts: Vec<HostPattern>,
}

impl SecretSpec {
    /// Parses `NAME`, `NAME=VALUE`, `NAME@HOST,HOST` or `NAME=VALUE@HOST`. A value runs to
    /// the last `@`, so a value containing `@` needs `@HOST` after it (or the environment).
    pub fn parse(value: &str) -> Result<Self, SpecError> {
        let err = |reason: &'static str| SpecError::Secret {
            value: redact_value(value),
            reason,
        };
        let (head, hosts) = match value.rsplit_once('@') {
            Some((head, hosts)) => (head, Some(hosts)),
            None => (value, None),
        };
        let (name, secret) = match head.split_once('=') {
            Some((n, v)) => (n, Some(SecretValue::new(v.to_string()))),
            None => (head, None),
        };
        let name_ok = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(err(
                "the name must be an environment variable name (letters, digits, _)",
            ));
        }
        let hosts = match hosts {
            None => Vec::new(),
            Some(list) => {
                let mut out = Vec::new();
                for h in list.split(',') {
                    out.push(
                        HostPattern::parse(h)
                            .map_err(|_| err("a host after @ is not a valid host name"))?,
                    );
                }
                out
            }
        };
        Ok(Self {
            name: name.to_string(),
            value: secret,
            hosts,
        })
    }
}

/// `NAME=…` with the value hidden, for error messages.
fn redact_value(value: &str) -> String {
    match value.split_once('=') {
        Some((name, rest)) => match rest.rsplit_once('@') {
            Some((_, hosts)) => format!("{name}=<redacted>@{hosts}"),
            None => format!("{name}=<redacted>"),
        },
        None => value.to_string(),
    }
}

/// What a sandbox may reach and which secrets its requests get. Empty: no gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct EgressPolicy {
    /// Hosts the sandbox may reach (a secret's hosts are added to these).
    pub allow: Vec<HostPattern>,
    pub secrets: Vec<SecretSpec>,
}

impl EgressPolicy {
    /// Whether the sandbox needs the egress gateway at all.
    pub fn enabled(&self) -> bool {
        !self.allow.is_empty() || !self.secrets.is_empty()
    }

    /// Every allowed host, the secrets' hosts included, without duplicates.
    pub fn allowed_hosts(&self) -> Vec<HostPattern> {
        let mut all: Vec<HostPattern> = self
            .allow
            .iter()
            .chain(self.secrets.iter().flat_map(|s| &s.hosts))
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// A secret as the gateway uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySecret {
    pub name: String,
    /// The string the sandbox holds instead of the value (unique per sandbox).
    pub placeholder: String,
    pub value: SecretValue,
    pub hosts: Vec<HostPattern>,
}

/// What berth hands the gateway over its control channel when the sandbox starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// berth's id of the sandbox (every log line names it).
    pub sandbox_id: String,
    /// Where to listen: the gateway's address on the sandbox's internal network.
    pub listen: String,
    pub allow: Vec<HostPattern>,
    pub secrets: Vec<GatewaySecret>,
    /// The host's own addresses: refused like private ones.
    #[serde(default)]
    pub deny_addrs: Vec<IpAddr>,
    /// Test only (`BERTH_EGRESS_TEST_RESOLVE`): names resolved to these addresses, which are
    /// then not checked against the private ranges.
    #[serde(default)]
    pub resolve: BTreeMap<String, IpAddr>,
    /// Test only (`BERTH_EGRESS_TEST_UPSTREAM_CA`): an extra CA (PEM) trusted for upstreams.
    #[serde(default)]
    pub upstream_ca_pem: Option<String>,
}

/// The gateway's answer to a [`GatewayConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayReply {
    /// `None` when the configuration was taken.
    pub error: Option<String>,
    /// The CA (PEM) the sandbox must trust for the hosts whose requests get a secret.
    pub ca_pem: String,
}

/// What the gateway counted so far.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GatewayStats {
    /// Connections and requests let through.
    pub allowed: u64,
    /// Connections and requests refused.
    pub denied: u64,
    /// Requests whose headers got a secret's value.
    pub injected: u64,
    /// The last refusals (host and reason), newest last.
    pub recent_denials: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_hosts() {
        let p = HostPattern::parse("PyPI.org").unwrap();
        assert!(p.matches("pypi.org", 443));
        assert!(p.matches("pypi.org.", 80));
        assert!(!p.matches("pypi.org", 8080));
        assert!(!p.matches("evilpypi.org", 443));
        assert!(!p.matches("files.pypi.org", 443));
        let w = HostPattern::parse("*.github.com").unwrap();
        assert!(w.matches("api.github.com", 443));
        assert!(w.matches("a.b.github.com", 443));
        assert!(!w.matches("github.com", 443));
        assert!(!w.matches("evilgithub.com", 443));
        let port = HostPattern::parse("example.com:8443").unwrap();
        assert!(port.matches("example.com", 8443));
        assert!(!port.matches("example.com", 443));
        assert_eq!(port.to_string(), "example.com:8443");
        assert_eq!(w.to_string(), "*.github.com");
    }

    #[test]
    fn bad_hosts_say_why() {
        for bad in [
            "",
            "https://x.com",
            "a*.b.com",
            "*.com",
            "x..y",
            "x.com:0",
            "x.com:http",
        ] {
            let e = HostPattern::parse(bad).unwrap_err();
            assert!(e.to_string().contains("--allow-host"), "{bad}: {e}");
        }
        assert!(HostPattern::parse("10.0.0.1").is_ok());
    }

    #[test]
    fn secrets_parse_and_never_show_their_value() {
        let s = SecretSpec::parse("GITHUB_TOKEN@api.github.com,*.github.com").unwrap();
        assert_eq!(s.name, "GITHUB_TOKEN");
        assert!(s.value.is_none());
        assert_eq!(s.hosts.len(), 2);
        let s = SecretSpec::parse("K=p@ss@word@api.x.com").unwrap();
        assert_eq!(s.value.as_ref().unwrap().expose(), "p@ss@word");
        assert_eq!(s.hosts[0].name, "api.x.com");
        assert!(!format!("{s:?}").contains("p@ss"));
        assert!(!serde_json::to_string(&s).unwrap().contains("p@ss"));
        let e = SecretSpec::parse("1BAD=hunter2").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(SecretSpec::parse("K=v@not a host").is_err());
    }

    #[test]
    fn a_secret_allows_its_hosts() {
        let policy = EgressPolicy {
            allow: vec![HostPattern::parse("pypi.org").unwrap()],
            secrets: vec![SecretSpec::parse("T@api.x.com").unwrap()],
        };
        assert!(policy.enabled());
        let names: Vec<String> = policy
            .allowed_hosts()
            .iter()
            .map(|h| h.to_string())
            .collect();
        assert_eq!(names, ["api.x.com", "pypi.org"]);
        assert!(!EgressPolicy::default().enabled());
    }
}
