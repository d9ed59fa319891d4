//! Every value a user types into a sandbox spec: volumes, workspaces, env, users, images,
//! names, allowed hosts and secrets. An error names the value; a secret's never shows it.
#![no_main]

use berth_spec::{MountSpec, SecretSpec, UserSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = MountSpec::parse_volume(text);
    let _ = MountSpec::parse_workspace(text);
    let _ = berth_spec::parse_env(text);
    let _ = UserSpec::parse(text);
    let _ = berth_spec::check_image(text);
    let _ = berth_spec::HostPattern::parse(text);
    if berth_spec::names::is_valid(text) {
        assert!(!text.contains('/') && !text.is_empty() && text.len() <= 64);
    }
    let _ = berth_spec::spec::Security::parse_capability(text);
    let _ = SecretSpec::parse(text);
    // A secret's value, marked, never appears in an error, whatever the name and hosts.
    let mut parts = text.splitn(3, '\n');
    let (name, value, hosts) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if !name.contains("Zq9") && !hosts.contains("Zq9") {
        let secret = format!("{name}=Zq9{value}@{hosts}");
        if let Err(e) = SecretSpec::parse(&secret) {
            assert!(
                !e.to_string().contains("Zq9"),
                "a secret's value leaked into {e}"
            );
        }
    }
});
