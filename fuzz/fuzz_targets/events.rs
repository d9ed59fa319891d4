//! The three agent CLIs' event parsers and their renderer: any output a CLI (or a hostile
//! workload posing as one) prints is parsed without a panic.
#![no_main]

use berth_events::Cli;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for cli in [Cli::Claude, Cli::Codex, Cli::Gemini] {
        for record in berth_events::parse_all(cli, &text) {
            let _ = berth_events::render(&record);
        }
    }
});
