//! The gateway's state: the policy berth handed it, its CA, and what it counted. Every
//! decision goes through [`Gateway::check`] and is logged (with the sandbox id, never a
//! secret) and counted.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use berth_spec::egress::{GatewayConfig, GatewaySecret, GatewayStats};
use serde_json::json;

use crate::tls::Ca;

/// How many refusals `stats` keeps.
const RECENT_DENIALS: usize = 20;

/// A refused request: the HTTP status the client gets and why.
#[derive(Debug)]
pub struct Denial {
    pub status: u16,
    pub reason: String,
}

pub struct Gateway {
    config: RwLock<Arc<GatewayConfig>>,
    pub ca: Ca,
    upstream_tls: RwLock<Arc<rustls::ClientConfig>>,
    allowed: AtomicU64,
    denied: AtomicU64,
    injected: AtomicU64,
    recent: Mutex<VecDeque<String>>,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Result<Self, String> {
        config
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| format!("bad listen address {:?}: {e}", config.listen))?;
        eprintln!(
            "berth-gateway: sandbox {}: serving the sandbox's network at {}",
            config.sandbox_id, config.listen
        );
        let upstream = crate::tls::client_config(config.upstream_ca_pem.as_deref())?;
        Ok(Self {
            config: RwLock::new(Arc::new(config)),
            ca: Ca::generate()?,
            upstream_tls: RwLock::new(upstream),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// Takes a new policy and secrets (berth re-sends them when a sandbox is reused).
    pub fn reconfigure(&self, config: GatewayConfig) -> Result<(), String> {
        let upstream = crate::tls::client_config(config.upstream_ca_pem.as_deref())?;
        if let Ok(mut c) = self.upstream_tls.write() {
            *c = upstream;
        }
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(config);
        }
        Ok(())
    }

    /// Whether a connection that arrived at `local` came in on the sandbox's network (and not
    /// on the outside one, where other containers could reach the port).
    pub fn on_sandbox_network(&self, local: SocketAddr) -> bool {
        self.config()
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|l| l.ip() == local.ip())
    }

    pub fn config(&self) -> Arc<GatewayConfig> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn upstream_tls(&self) -> Arc<rustls::ClientConfig> {
        match self.upstream_tls.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The secrets whose values go into requests for `host`.
    pub fn secrets_for(&self, host: &str) -> Vec<GatewaySecret> {
        self.config()
            .secrets
            .iter()
            .filter(|s| s.hosts.iter().any(|h| h.covers_name(host)))
            .cloned()
            .collect()
    }

    /// Decides whether `host:port` may be reached and returns the addresses to dial.
    pub async fn check(&self, host: &str, port: u16, how: &str) -> Result<Vec<SocketAddr>, Denial> {
        let result = self.decide(host, port).await;
        match &result {
            Ok(addrs) => {
                self.allowed.fetch_add(1, Ordering::Relaxed);
                self.log(
                    "allow",
                    host,
                    port,
                    how,
                    &format!("dialing {}", addrs[0].ip()),
                );
            }
            Err(d) => self.deny(host, port, how, &d.reason),
        }
        result
    }

    /// Records a refusal decided after [`Gateway::check`] (a mismatched SNI, a bad Host).
    pub fn deny(&self, host: &str, port: u16, how: &str, reason: &str) {
        self.denied.fetch_add(1, Ordering::Relaxed);
        self.log("deny", host, port, how, reason);
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_DENIALS {
                recent.pop_front();
            }
            recent.push_back(format!("{host}:{port}: {reason}"));
        }
    }

    pub fn note_injected(&self, host: &str, names: &[String]) {
        self.injected.fetch_add(1, Ordering::Relaxed);
        self.log(
            "inject",
            host,
            443,
            "https",
            &format!("secrets {}", names.join(",")),
        );
    }

    async fn decide(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Denial> {
        let config = self.config();
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let allowed: Vec<String> = config.allow.iter().map(|h| h.to_string()).collect();
        let policy = if allowed.is_empty() {
            "nothing".to_string()
        } else {
            allowed.join(", ")
        };
        let literal: Option<IpAddr> = host.trim_matches(['[', ']']).parse().ok();
        if !config.allow.iter().any(|p| p.matches(&host, port)) {
            let suggestion = if port == 80 || port == 443 {
                host.clone()
            } else {
                format!("{host}:{port}")
            };
            let reason = if literal.is_some() {
                format!("raw IP addresses are not on the policy (name the host instead); this sandbox may reach: {policy}")
            } else {
                format!("{host}:{port} is not on this sandbox's egress policy, which allows: {policy} (add it with --allow-host {suggestion})")
            };
            return Err(Denial {
                status: 403,
                reason,
            });
        }
        if let Some(ip) = config.resolve.get(&host) {
            // Test-only override (BERTH_EGRESS_TEST_RESOLVE): trusted as given.
            return Ok(vec![SocketAddr::new(*ip, port)]);
        }
        let addrs: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(found) => found.collect(),
                Err(e) => {
                    return Err(Denial {
                        status: 502,
                        reason: format!("cannot resolve {host}: {e}"),
                    })
                }
            },
        };
        if addrs.is_empty() {
            return Err(Denial {
                status: 502,
                reason: format!("{host} has no address"),
            });
        }
        for a in &addrs {
            if let Some(why) = crate::addr::forbidden(a.ip(), &config.deny_addrs) {
                let what = match literal {
                    Some(_) => format!("{host} is {why}"),
                    None => format!("{host} resolves to {}, {why}", a.ip()),
                };
                return Err(Denial {
                    status: 403,
                    reason: format!(
                        "{what}; the gateway never dials loopback, private, link-local or host addresses"
                    ),
                });
            }
        }
        Ok(addrs)
    }

    fn log(&self, decision: &str, host: &str, port: u16, how: &str, detail: &str) {
        let line = json!({
            "sandbox": self.config().sandbox_id,
            "decision": decision,
            "host": host,
            "port": port,
            "via": how,
            "detail": detail,
        });
        eprintln!("{line}");
    }

    pub fn stats(&self) -> GatewayStats {
        GatewayStats {
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            injected: self.injected.load(Ordering::Relaxed),
            recent_denials: self
                .recent
                .lock()
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use berth_spec::HostPattern;

    fn gateway(allow: &[&str], resolve: &[(&str, &str)]) -> Gateway {
        Gateway::new(GatewayConfig {
            sandbox_id: "t1".into(),
            listen: "10.0.0.2:3128".into(),
            allow: allow
                .iter()
                .map(|a| HostPattern::parse(a).unwrap())
                .collect(),
            secrets: Vec::new(),
            deny_addrs: vec!["8.8.4.4".parse().unwrap()],
            resolve: resolve
                .iter()
                .map(|(n, ip)| (n.to_string(), ip.parse().unwrap()))
                .collect(),
            upstream_ca_pem: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn every_decision_names_its_reason_and_is_counted() {
        let g = gateway(
            &["ok.test", "10.1.2.3", "8.8.4.4", "*.wild.test"],
            &[("ok.test", "203.0.113.9"), ("a.wild.test", "203.0.113.10")],
        );
        let addrs = g.check("OK.test.", 443, "t").await.unwrap();
        assert_eq!(addrs[0].to_string(), "203.0.113.9:443");
        assert!(g.check("a.wild.test", 80, "t").await.is_ok());
        let refuse = |r: Result<Vec<SocketAddr>, Denial>| r.unwrap_err();
        let d = refuse(g.check("denied.test", 443, "t").await);
        assert_eq!(d.status, 403);
        assert!(
            d.reason.contains("--allow-host denied.test"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("ok.test, *.wild.test") || d.reason.contains("ok.test"));
        let d = refuse(g.check("ok.test", 22, "t").await);
        assert!(d.reason.contains("--allow-host ok.test:22"), "{}", d.reason);
        let d = refuse(g.check("wild.test", 443, "t").await);
        assert!(
            d.reason.contains("not on this sandbox's egress policy"),
            "{}",
            d.reason
        );
        let d = refuse(g.check("1.2.3.4", 443, "t").await);
        assert!(d.reason.contains("raw IP"), "{}", d.reason);
        let d = refuse(g.check("10.1.2.3", 443, "t").await);
        assert!(
            d.reason.contains("10.1.2.3 is a private address"),
            "{}",
            d.reason
        );
        let d = refuse(g.check("8.8.4.4", 443, "t").await);
        assert!(d.reason.contains("host's own"), "{}", d.reason);
        let stats = g.stats();
        assert_eq!((stats.allowed, stats.denied), (2, 6));
        assert_eq!(stats.recent_denials.len(), 6);
    }

    #[test]
    fn only_connections_on_the_sandbox_network_are_served() {
        let g = gateway(&["ok.test"], &[]);
        assert!(g.on_sandbox_network("10.0.0.2:3128".parse().unwrap()));
        assert!(!g.on_sandbox_network("172.17.0.5:3128".parse().unwrap()));
    }
}
