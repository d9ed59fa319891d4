//! Which addresses the gateway never dials: the sandbox must not reach the host, its
//! metadata service or anything on a private network through the gateway (no SSRF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, or `None` when it is a public address.
pub fn forbidden(ip: IpAddr, host_addrs: &[IpAddr]) -> Option<&'static str> {
    let special = match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    };
    special.or_else(|| {
        host_addrs
            .contains(&ip)
            .then_some("one of the host's own addresses")
    })
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (where cloud metadata services live)")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_broadcast() || ip.is_multicast() {
        Some("a broadcast or multicast address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if (a == 192 && b == 0 && c == 0) || (a == 198 && (b == 18 || b == 19)) || a >= 240 {
        Some("a reserved address")
    } else {
        // The documentation ranges (TEST-NET-1..3) are not routed on the internet, but some
        // networks do use them for real services (this project's build machines reach their
        // package registries there); nothing about them is private to the host.
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_unique_local() {
        Some("a private (unique local) address")
    } else if ip.is_unicast_link_local() || (first & 0xffc0) == 0xfec0 {
        Some("a link-local address")
    } else if ip.to_ipv4().is_some() {
        // ::a.b.c.d (deprecated IPv4-compatible) and the NAT64 forms smuggle IPv4 addresses.
        Some("an IPv4-compatible address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        forbidden(text.parse().unwrap(), &[]).is_some()
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.17.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(refused(a), "{a} must be refused");
        }
        for a in ["1.1.1.1", "151.101.0.223", "2606:4700::1111"] {
            assert!(!refused(a), "{a} is public");
        }
        let host: IpAddr = "203.0.114.7".parse().unwrap();
        assert!(forbidden(host, &[host]).is_some());
    }
}
