//! The alert rules in `deploy/prometheus/` (issue 16, item 5): `promtool check rules` and
//! `promtool test rules` pass, every alert has a test case that fires and one that stays
//! silent, and the unit tests catch a broken rule. The dashboard's expressions parse too
//! (checked as recording rules).
//!
//! promtool comes with the Debian package `prometheus` (`scripts/test.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::promql::{DASHBOARD, RULES, dashboard_exprs};

const RULE_TESTS: &str = "deploy/prometheus/payshim-rules.test.yml";

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// `promtool ARGS`, failing the test with install advice when promtool is missing.
fn promtool(args: &[&Path]) -> Output {
    Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install the Debian package `prometheus` \
                 (scripts/test.sh does)"
            )
        })
}

fn described(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `promtool check rules FILE` / `promtool test rules FILE`.
fn rules(command: &str, file: &Path) -> Output {
    promtool(&[Path::new(command), Path::new("rules"), file])
}

/// The names after `- alert:` in the rules file.
fn alert_names(rules_text: &str) -> Vec<String> {
    rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_string())
        .collect()
}

/// For each `alertname:` of the test file, whether its `exp_alerts` is empty (silent)
/// or lists alerts (fires): (name, fires).
fn rule_test_cases(tests_text: &str) -> Vec<(String, bool)> {
    let mut cases = Vec::new();
    let mut current: Option<String> = None;
    for line in tests_text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts after an alertname");
            cases.push((name, expected.trim() != "[]"));
        }
    }
    cases
}

#[test]
fn promtool_checks_the_rules() {
    let out = rules("check", &repo_file(RULES));
    assert!(
        out.status.success(),
        "promtool check rules: {}",
        described(&out)
    );
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let out = rules("test", &repo_file(RULE_TESTS));
    assert!(
        out.status.success(),
        "promtool test rules: {}",
        described(&out)
    );
}

#[test]
fn every_alert_has_a_firing_and_a_silent_case() {
    let rules_text = std::fs::read_to_string(repo_file(RULES)).expect("read the rules");
    let tests_text = std::fs::read_to_string(repo_file(RULE_TESTS)).expect("read the tests");
    let names = alert_names(&rules_text);
    assert!(names.len() >= 9, "alerts found: {names:?}");
    let cases = rule_test_cases(&tests_text);
    let mut missing = Vec::new();
    for name in &names {
        for (fires, what) in [(true, "fires"), (false, "stays silent")] {
            if !cases.iter().any(|(n, f)| n == name && *f == fires) {
                missing.push(format!("{name}: no case where it {what}"));
            }
        }
    }
    for (name, _) in &cases {
        assert!(
            names.contains(name),
            "the tests name an unknown alert {name}"
        );
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The unit tests are strict enough to catch a broken rule: the same tests against a copy
/// of the rules with one threshold changed must fail, naming that alert.
#[test]
fn the_rule_tests_fail_for_a_broken_rule() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules_text = std::fs::read_to_string(repo_file(RULES)).expect("read the rules");
    let broken_pairs = [
        ("> 0.05", "> 0.5", "PayshimHigh5xxRatio"),
        (
            "< 14 * 86400",
            "< 7 * 86400",
            "PayshimCertificateExpiringSoon",
        ),
        (
            "payshim_ready == 0",
            "payshim_ready == 1",
            "PayshimNotReady",
        ),
    ];
    for (from, to, alert) in broken_pairs {
        assert_eq!(
            rules_text.matches(from).count(),
            1,
            "{from:?} once in the rules"
        );
        let broken = rules_text.replace(from, to);
        std::fs::write(dir.path().join("payshim-rules.yml"), broken).expect("write rules");
        std::fs::copy(
            repo_file(RULE_TESTS),
            dir.path().join("payshim-rules.test.yml"),
        )
        .expect("copy the tests");
        let out = rules("test", &dir.path().join("payshim-rules.test.yml"));
        let text = described(&out);
        assert!(
            !out.status.success(),
            "{from:?} -> {to:?} still passes: {text}"
        );
        assert!(text.contains(alert), "the failure names {alert}: {text}");
    }
}

/// Every PromQL expression of the dashboard, with Grafana's variables replaced, is valid:
/// promtool parses each as a recording rule.
#[test]
fn promtool_parses_every_dashboard_expression() {
    let json = std::fs::read_to_string(repo_file(DASHBOARD)).expect("read the dashboard");
    let exprs = dashboard_exprs(&json);
    assert!(exprs.len() >= 20, "dashboard expressions: {exprs:?}");
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        if expr.starts_with("label_values(") {
            continue; // Grafana's own query function, not PromQL.
        }
        let promql = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        assert!(!promql.contains('$'), "an unknown variable in {expr}");
        // A JSON string is a valid YAML double-quoted scalar.
        let quoted = serde_json::to_string(&promql).expect("quote");
        yaml.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, yaml).expect("write the rules");
    let out = rules("check", &file);
    assert!(
        out.status.success(),
        "dashboard PromQL: {}",
        described(&out)
    );
}

#[test]
fn case_parser_reads_silent_and_firing_cases() {
    let text = "      - eval_time: 2m\n        alertname: A\n        exp_alerts: []\n\
                - eval_time: 5m\n        alertname: A\n        exp_alerts:\n          - exp_labels: {}\n";
    assert_eq!(
        rule_test_cases(text),
        vec![("A".to_string(), false), ("A".to_string(), true)]
    );
    assert_eq!(alert_names("  - alert: X\n    expr: up\n"), vec!["X"]);
}
