//! Which live process owns a berth object, and fresh sandbox ids.
//!
//! A one-shot run labels its container and network with `host:pid:start-ticks` of the berth
//! process. If that process is gone (crash, SIGKILL, reboot), `berth gc` may remove them. The
//! start time guards against pid reuse.

use berth_spec::labels;

/// A new random 12-hex-digit sandbox id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: fall back to time and pid, still unique enough for names.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mixed = nanos ^ (u128::from(std::process::id()) << 64);
        bytes.copy_from_slice(&mixed.to_le_bytes()[..6]);
    }
    hex::encode(bytes)
}

/// This machine's host name (for owner labels).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// The start time of a process in clock ticks since boot, from `/proc/PID/stat`.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at field 3; starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The owner label value for the current process.
pub fn current_owner() -> String {
    let pid = std::process::id();
    let ticks = process_start_ticks(pid).unwrap_or(0);
    format!("{}:{pid}:{ticks}", hostname())
}

/// Whether an object's owner is still alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The owning process runs on this host.
    Alive,
    /// The owner is gone (or the object has no owner label).
    Gone,
    /// Owned by a process on another host: cannot tell from here.
    OtherHost,
}

/// Decides whether the owner named by an object's labels is alive.
pub fn owner_liveness(object_labels: &std::collections::BTreeMap<String, String>) -> Liveness {
    let Some(owner) = object_labels.get(labels::OWNER) else {
        return Liveness::Gone;
    };
    let mut parts = owner.rsplitn(3, ':');
    let (Some(ticks), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return Liveness::Gone;
    };
    if host != hostname() {
        return Liveness::OtherHost;
    }
    let (Ok(pid), Ok(ticks)) = (pid.parse::<u32>(), ticks.parse::<u64>()) else {
        return Liveness::Gone;
    };
    match process_start_ticks(pid) {
        Some(now) if now == ticks => Liveness::Alive,
        _ => Liveness::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_hex() {
        let a = new_id();
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_gone() {
        let mut l = std::collections::BTreeMap::new();
        l.insert(labels::OWNER.to_string(), current_owner());
        assert_eq!(owner_liveness(&l), Liveness::Alive);
        // Same pid, different start time: a reused pid is not the owner.
        let pid = std::process::id();
        l.insert(labels::OWNER.to_string(), format!("{}:{pid}:1", hostname()));
        assert_eq!(owner_liveness(&l), Liveness::Gone);
        l.insert(labels::OWNER.to_string(), "elsewhere:1:1".to_string());
        assert_eq!(owner_liveness(&l), Liveness::OtherHost);
        l.clear();
        assert_eq!(owner_liveness(&l), Liveness::Gone);
    }
}
