//! `berth.toml`: any text is a config or an error naming the file and line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = berth_runtimes::config::parse(text, "berth.toml", std::path::Path::new("/w")) {
        assert!(e.to_string().starts_with("berth.toml:"), "{e}");
    }
});
