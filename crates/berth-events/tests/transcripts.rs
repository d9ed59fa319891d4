//! Every transcript in `fixtures/agent-transcripts/` parses into the expected events: real
//! Claude Code output, and Codex and Gemini samples written from their documented formats.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::PathBuf;

use berth_events::{parse_all, render, Cli, Event, Record, Summary};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/agent-transcripts")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn kinds(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            serde_json::to_value(&r.event).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn every_fixture_parses_without_malformed_lines_and_ends_in_a_result() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/agent-transcripts");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".jsonl") {
            continue;
        }
        let cli: Cli = name.split('-').next().unwrap().parse().unwrap();
        let records = parse_all(cli, &std::fs::read_to_string(&path).unwrap());
        let summary: Summary = records.iter().collect();
        assert!(summary.malformed_lines.is_empty(), "{name}");
        assert!(summary.result.is_some(), "{name} has no result");
        assert!(summary.session_id.is_some(), "{name} has no session id");
        for r in &records {
            assert!(r.raw.is_some(), "{name}: line {} lost its raw JSON", r.line);
        }
        seen += 1;
    }
    assert!(seen >= 8, "expected all fixtures, saw {seen}");
}

#[test]
fn claude_basic() {
    let records = parse_all(
        Cli::Claude,
        &fixture("claude-streamjson-basic-v2.1.7.jsonl"),
    );
    assert_eq!(
        kinds(&records),
        ["session_started", "assistant_text", "usage", "result"]
    );
    match &records[0].event {
        Event::SessionStarted {
            session_id,
            model,
            tools,
            ..
        } => {
            assert_eq!(
                session_id.as_deref(),
                Some("1d1e46f9-35c7-4834-b529-846d5bb82288")
            );
            assert_eq!(model.as_deref(), Some("claude-opus-4-5-20251101"));
            assert!(tools.contains(&"Bash".to_string()));
        }
        other => panic!("{other:?}"),
    }
    let summary: Summary = records.iter().collect();
    let result = summary.result.as_ref().unwrap();
    assert!(summary.success());
    assert_eq!(result.text.as_deref(), Some("4"));
    assert_eq!(result.num_turns, Some(1));
    assert_eq!(result.cost_usd, Some(0.1354875));
    assert_eq!(result.duration_ms, Some(2360));
}

#[test]
fn claude_tool_use_maps_calls_and_results_with_their_ids() {
    let records = parse_all(
        Cli::Claude,
        &fixture("claude-streamjson-tooluse-bash-v2.1.3.assembled.jsonl"),
    );
    assert_eq!(
        kinds(&records),
        [
            "session_started",
            "tool_call",
            "tool_result",
            "usage",
            "result"
        ]
    );
    let Event::ToolCall { id, name, input } = &records[1].event else {
        panic!()
    };
    assert_eq!(name, "Bash");
    assert_eq!(input["command"], "ls -la");
    let Event::ToolResult {
        id: rid,
        output,
        is_error,
    } = &records[2].event
    else {
        panic!()
    };
    assert_eq!(id, rid);
    assert!(output.starts_with("total 1976"));
    assert!(!is_error);
    assert_eq!(render(&records[1]).unwrap(), "→ Bash ls -la\n");
}

#[test]
fn claude_repeated_message_id_gives_one_event_per_block() {
    let records = parse_all(
        Cli::Claude,
        &fixture("claude-streamjson-tooluse-ls-v1.0.x.jsonl"),
    );
    assert_eq!(
        kinds(&records),
        [
            "session_started",
            "assistant_text",
            "tool_call",
            "tool_result",
            "usage",
            "result"
        ]
    );
    let summary: Summary = records.iter().collect();
    assert_eq!(summary.tool_calls, 1);
    assert_eq!(summary.result.unwrap().num_turns, Some(3));
}

#[test]
fn claude_error_subtypes_are_failures() {
    let text = r#"{"type":"result","subtype":"error_max_turns","is_error":false,"num_turns":2,"session_id":"s1","total_cost_usd":0.01}"#;
    let summary: Summary = parse_all(Cli::Claude, text).iter().collect();
    assert!(!summary.success());
    assert_eq!(summary.result.unwrap().subtype, "error_max_turns");
    let text = r#"{"type":"result","subtype":"success","is_error":true,"session_id":"s1"}"#;
    let summary: Summary = parse_all(Cli::Claude, text).iter().collect();
    assert!(!summary.success(), "is_error wins over the subtype");
}

#[test]
fn codex_sample() {
    let records = parse_all(Cli::Codex, &fixture("codex-exec-json-sample.jsonl"));
    assert_eq!(
        kinds(&records),
        [
            "session_started",
            "other",
            "reasoning",
            "tool_call",
            "tool_result",
            "tool_call",
            "tool_result",
            "other",
            "assistant_text",
            "usage",
            "result"
        ]
    );
    let summary: Summary = records.iter().collect();
    let result = summary.result.clone().unwrap();
    assert!(summary.success());
    assert_eq!(
        result.session_id.as_deref(),
        Some("0199a213-81c0-7800-8aa1-bbab2a035a53")
    );
    assert!(result.text.unwrap().starts_with("The repo has"));
    assert_eq!(summary.tool_calls, 2);
}

#[test]
fn codex_failed_turn_is_a_failure() {
    let summary: Summary = parse_all(Cli::Codex, &fixture("codex-exec-json-failed.jsonl"))
        .iter()
        .collect();
    assert!(!summary.success());
    assert_eq!(summary.errors, ["stream disconnected before completion"]);
}

#[test]
fn gemini_sample_joins_deltas_into_the_result() {
    let records = parse_all(Cli::Gemini, &fixture("gemini-stream-json-sample.jsonl"));
    assert_eq!(
        kinds(&records),
        [
            "session_started",
            "other",
            "tool_call",
            "tool_result",
            "assistant_text",
            "assistant_text",
            "usage",
            "result"
        ]
    );
    let summary: Summary = records.iter().collect();
    let result = summary.result.unwrap();
    assert!(result.success);
    assert_eq!(
        result.text.as_deref(),
        Some("Here are the files: README.md and src.")
    );
    assert_eq!(result.duration_ms, Some(3000));
    let errors: Summary = parse_all(Cli::Gemini, &fixture("gemini-stream-json-error.jsonl"))
        .iter()
        .collect();
    assert!(!errors.success());
    assert_eq!(errors.result.unwrap().errors, ["Reached max session turns"]);
}

#[test]
fn malformed_lines_are_reported_with_their_number_and_the_stream_goes_on() {
    let text = format!(
        "{}\nnot json at all\n\n[1,2]\n{}",
        r#"{"type":"system","subtype":"init","session_id":"s"}"#,
        r#"{"type":"result","subtype":"success","is_error":false,"session_id":"s"}"#
    );
    let records = parse_all(Cli::Claude, &text);
    let summary: Summary = records.iter().collect();
    assert_eq!(summary.malformed_lines, [2, 4]);
    assert!(summary.success());
    assert_eq!(records.last().unwrap().line, 5);
}

#[test]
fn unknown_types_and_fields_are_kept() {
    let line = r#"{"type":"brand_new","payload":{"x":1},"session_id":"s"}"#;
    let records = parse_all(Cli::Claude, line);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].event,
        Event::Other {
            kind: "brand_new".into()
        }
    );
    assert_eq!(records[0].raw.as_ref().unwrap()["payload"]["x"], 1);
    // Unknown fields on a known type survive in `raw` too.
    let line = r#"{"type":"system","subtype":"init","session_id":"s","future_field":[1]}"#;
    let records = parse_all(Cli::Claude, line);
    assert_eq!(records[0].raw.as_ref().unwrap()["future_field"][0], 1);
}

#[test]
fn json_lines_are_stable() {
    let records = parse_all(
        Cli::Claude,
        &fixture("claude-streamjson-basic-v2.1.7.jsonl"),
    );
    let mut first = serde_json::to_value(&records[1]).unwrap();
    first.as_object_mut().unwrap().remove("raw");
    assert_eq!(
        first,
        serde_json::json!({"cli":"claude","line":2,"type":"assistant_text","text":"4"})
    );
    let back: Record = serde_json::from_str(&serde_json::to_string(&records[3]).unwrap()).unwrap();
    assert_eq!(back, records[3]);
}

#[test]
fn claude_permission_denial_is_counted_once_and_rendered() {
    // Real Claude Code 2.1.332 output without a permission mode: the write is refused, and
    // the result still says `success`.
    let records = parse_all(
        Cli::Claude,
        &fixture("claude-streamjson-permission-denied-v2.1.332.jsonl"),
    );
    assert!(kinds(&records).contains(&"permission_denied".to_string()));
    let summary: Summary = records.iter().collect();
    assert_eq!(
        summary.permission_denials.len(),
        1,
        "{:?}",
        summary.permission_denials
    );
    let denial = &summary.permission_denials[0];
    assert_eq!(denial.tool, "Bash");
    assert_eq!(denial.id.as_deref(), Some("toolu_lab0001"));
    assert!(denial
        .message
        .as_deref()
        .unwrap()
        .contains("needs approval"));
    let result = summary.result.as_ref().unwrap();
    assert!(result.success, "the CLI calls it a success");
    assert_eq!(result.permission_denials.len(), 1);
    let shown: String = records.iter().filter_map(render).collect();
    assert!(
        shown.contains("✗ denied: Bash — Output redirection"),
        "{shown}"
    );
}
