//! The log pipeline as `main` builds it ([`subscriber`]): the JSON lines our formatter
//! writes, compared with tracing-subscriber's own JSON, card data masked, the sandbox mark
//! and the start-up canary. Here rather than in `json.rs` because they go through the
//! module's entry point, which `json.rs` sits below; `json.rs` keeps the tests of its own
//! writers.

use std::fmt;
use std::time::SystemTime;

use serde_json::{Value, json};
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;

use super::subscriber;
use crate::config::{LogConfig, LogFormat};
use crate::redact::{CaptureWriter, ScrubbingMakeWriter, canary_check};

/// The production JSON pipeline (new formatter, scrubbing writer) at `trace`.
fn new_subscriber(capture: CaptureWriter) -> Box<dyn Subscriber + Send + Sync> {
    let log = LogConfig {
        format: LogFormat::Json,
        level: "trace".into(),
        flush_interval: std::time::Duration::ZERO,
        sandbox: false,
    };
    subscriber(&log, capture)
}

/// The pipeline as it was before our own JSON formatter (`json.rs`): tracing-subscriber's JSON formatter.
fn old_subscriber(capture: CaptureWriter) -> Box<dyn Subscriber + Send + Sync> {
    Box::new(
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("trace"))
            .with_writer(ScrubbingMakeWriter::new(capture))
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .finish(),
    )
}

/// Runs `emit` under the subscriber `make` builds and returns the lines written.
fn capture_lines<S>(make: impl FnOnce(CaptureWriter) -> S, emit: impl FnOnce()) -> Vec<String>
where
    S: Subscriber + Send + Sync + 'static,
{
    let capture = CaptureWriter::new();
    tracing::subscriber::with_default(make(capture.clone()), emit);
    let out = capture.contents();
    assert!(out.ends_with('\n'), "line not newline-terminated: {out:?}");
    out.lines().map(str::to_owned).collect()
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn without_timestamp(line: &str) -> Value {
    let mut value = parse(line);
    value.as_object_mut().unwrap().remove("timestamp");
    value
}

/// The keys of a JSON object in the order they appear (serde_json's map may sort them).
fn key_order(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(KeysVisitor)
        }
    }
    struct KeysVisitor;
    impl<'de> serde::de::Visitor<'de> for KeysVisitor {
        type Value = Keys;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
            let mut keys = Vec::new();
            while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(key);
            }
            Ok(Keys(keys))
        }
    }
    serde_json::from_str::<Keys>(line).unwrap().0
}

/// One event with every kind of value the proxy logs.
fn sample_event() {
    let err = std::io::Error::other("disk \"full\"");
    let missing: Option<&str> = None;
    tracing::info!(
        target: "payshim::proxy",
        name = "alice",
        count = 42u64,
        delta = -7i64,
        ok = true,
        ratio = 0.25f64,
        whole = 3.0f64,
        present = Some("yes"),
        missing,
        path = ?std::path::Path::new("/a\tb"),
        error = &err as &(dyn std::error::Error + 'static),
        "said \"hi\"\nthen\\left\u{1}"
    );
}

#[test]
fn sample_event_has_expected_fields() {
    let lines = capture_lines(new_subscriber, sample_event);
    assert_eq!(lines.len(), 1);
    let expected = json!({
        "level": "INFO",
        "message": "said \"hi\"\nthen\\left\u{1}",
        "name": "alice",
        "count": 42,
        "delta": -7,
        "ok": true,
        "ratio": 0.25,
        "whole": 3.0,
        "present": "yes",
        "path": "\"/a\\tb\"",
        "error": "disk \"full\"",
        "target": "payshim::proxy",
    });
    assert_eq!(without_timestamp(&lines[0]), expected);
}

#[test]
fn keys_are_in_contract_order() {
    let lines = capture_lines(new_subscriber, sample_event);
    let order = [
        "timestamp",
        "level",
        "message",
        "name",
        "count",
        "delta",
        "ok",
        "ratio",
        "whole",
        "present",
        "path",
        "error",
        "target",
    ];
    assert_eq!(key_order(&lines[0]), order);
}

#[test]
fn message_recorded_late_still_comes_first() {
    let lines = capture_lines(new_subscriber, || {
        tracing::warn!(a = 1u64, message = "late", b = 2u64);
    });
    assert_eq!(
        key_order(&lines[0]),
        ["timestamp", "level", "message", "a", "b", "target"]
    );
    assert_eq!(parse(&lines[0])["message"], "late");
}

#[test]
fn event_without_message() {
    let lines = capture_lines(new_subscriber, || tracing::debug!(a = 1u64));
    assert_eq!(key_order(&lines[0]), ["timestamp", "level", "a", "target"]);
}

#[test]
fn timestamp_is_rfc3339_micros_utc() {
    let lines = capture_lines(new_subscriber, sample_event);
    let old = capture_lines(old_subscriber, sample_event);
    let new_ts = parse(&lines[0])["timestamp"].as_str().unwrap().to_owned();
    let old_ts = parse(&old[0])["timestamp"].as_str().unwrap().to_owned();
    // Same shape as tracing-subscriber's timer: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    assert_eq!(new_ts.len(), 27, "{new_ts}");
    assert_eq!(new_ts.len(), old_ts.len(), "{new_ts} vs {old_ts}");
    assert!(new_ts.ends_with('Z'));
    let at = humantime::parse_rfc3339(&new_ts).unwrap();
    let age = SystemTime::now().duration_since(at).unwrap();
    assert!(age.as_secs() < 60, "{new_ts}");
}

#[test]
fn same_object_as_tracing_subscriber_json() {
    fn events() {
        sample_event();
        tracing::trace!(target: "payshim::x", "plain");
        tracing::debug!(n = 0u64, "d");
        tracing::warn!(a = 1u64, message = "late", b = ?"q\"");
        tracing::error!(
            big = 1u64 << 40,
            small = -(1i64 << 40),
            neg = -0.5f64,
            bytes = &b"ab"[..]
        );
        tracing::info!(text = %"display \u{7f} \u{e9} \u{1f600}", "ctl \u{0}\u{8}\u{c}\r\t");
    }
    let new = capture_lines(new_subscriber, events);
    let old = capture_lines(old_subscriber, events);
    assert_eq!(new.len(), 6);
    assert_eq!(new.len(), old.len());
    for (new, old) in new.iter().zip(&old) {
        assert_eq!(
            without_timestamp(new),
            without_timestamp(old),
            "\n{new}\n{old}"
        );
    }
}

/// Where the brief for our JSON formatter chose differently from tracing-subscriber's JSON:
/// non-finite floats as strings (not `null`), 128-bit integers as numbers (not strings).
/// No payshim event logs such values today. Raw identifiers lose `r#` in both.
#[test]
fn value_kinds_the_old_formatter_wrote_differently() {
    fn event() {
        tracing::info!(
            nan = f64::NAN,
            inf = f64::NEG_INFINITY,
            big = 123_456_789u128,
            neg = -123_456_789i128,
            r#type = "raw"
        );
    }
    let new = parse(&capture_lines(new_subscriber, event)[0]);
    let old = parse(&capture_lines(old_subscriber, event)[0]);
    assert_eq!(
        (
            &new["nan"],
            &new["inf"],
            &new["big"],
            &new["neg"],
            &new["type"]
        ),
        (
            &json!("NaN"),
            &json!("-inf"),
            &json!(123_456_789),
            &json!(-123_456_789),
            &json!("raw")
        )
    );
    assert_eq!(
        (
            &old["nan"],
            &old["inf"],
            &old["big"],
            &old["neg"],
            &old["type"]
        ),
        (
            &Value::Null,
            &Value::Null,
            &json!("123456789"),
            &json!("-123456789"),
            &json!("raw")
        )
    );
}

#[test]
fn card_number_in_field_is_masked() {
    let lines = capture_lines(new_subscriber, || {
        tracing::info!(
            note = "card 4111 1111 1111 1111 here",
            "pay 4111111111111111"
        );
    });
    let line = &lines[0];
    assert!(!line.contains("4111 1111 1111 1111"), "{line}");
    assert!(!line.contains("4111111111111111"), "{line}");
    assert!(line.contains("[PAN ****1111]"), "{line}");
    parse(line);
}

#[test]
fn start_up_canary_passes() {
    let log = LogConfig {
        format: LogFormat::Json,
        level: "off,payshim::canary=error".into(),
        flush_interval: std::time::Duration::ZERO,
        sandbox: false,
    };
    canary_check(|capture| subscriber(&log, capture)).unwrap();
}

#[test]
fn sandbox_mode_marks_every_line_in_both_formats() {
    for (format, sandbox) in [
        (LogFormat::Json, true),
        (LogFormat::Json, false),
        (LogFormat::Pretty, true),
        (LogFormat::Pretty, false),
    ] {
        let log = LogConfig {
            format,
            level: "info".into(),
            flush_interval: std::time::Duration::ZERO,
            sandbox,
        };
        let capture = CaptureWriter::new();
        let subscriber = subscriber(&log, capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(status = 201u16, "request");
            tracing::warn!("something else");
        });
        let out = capture.contents();
        assert_eq!(out.lines().count(), 2, "{out}");
        for line in out.lines() {
            let marked = match format {
                LogFormat::Json => {
                    let v: Value = serde_json::from_str(line).expect(line);
                    v.get("sandbox") == Some(&json!(true))
                }
                LogFormat::Pretty => line.starts_with("sandbox=true "),
            };
            assert!(
                !line.contains('\x1b'),
                "colour codes in a log line: {line:?}"
            );
            assert_eq!(marked, sandbox, "{format:?} sandbox={sandbox}: {line}");
        }
    }
}
