//! The size, CPU and duration parsers: any text is a value or an error naming it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match berth_spec::parse_size(text) {
        Ok(bytes) => {
            let shown = berth_spec::format_bytes(bytes);
            assert!(!shown.is_empty());
        }
        Err(e) => assert!(e.to_string().contains("e.g."), "{e}"),
    }
    if let Err(e) = berth_spec::parse_duration(text) {
        assert!(e.to_string().contains("e.g."), "{e}");
    }
    match berth_spec::parse_cpus(text) {
        Ok(nano) => assert!(nano > 0, "{text:?} gave 0 CPUs"),
        Err(e) => assert!(e.to_string().contains("e.g."), "{e}"),
    }
});
