//! The offline audit tools on the real binary, as an auditor runs them on another machine:
//! `payshim audit verify` and `payshim audit pending` need only the audit key (from
//! `--key-file`, `PAYSHIM__AUDIT__KEY` or a config's `[audit]` table) and never the rest of
//! the shop's config; `audit pending` lists every `forwarded` record without its
//! `completed` record across rotated files, as a table or JSON, with exit 0 (none),
//! 3 (some) or 2 (the chain does not verify).
//!
//! The chains are written by the real writer (`AuditLog`) with a small rotation size, so
//! the pairs span files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use secrecy::SecretSlice;
use serde_json::Value;
use tempfile::TempDir;

use payshim::audit::{AuditEvent, AuditLog, AuditRecord, AuditSettings, CardSummary, KeyId};
use payshim::outcome::Outcome;

const BIN: &str = env!("CARGO_BIN_EXE_payshim");
const AUDIT_KEY: &str = "audit-cli-test-key-4f1e2d3c4b5a69788796a5b4c3d2e1f0";
const OTHER_KEY: &str = "another-audit-key-0000000000000000000000000000000000";
/// A card fingerprint: it must never be shown by the tools.
const FINGERPRINT: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
const ORDER: &str = "7d3c1a52-9e4f-4b8a-8c6d-2e5f4a3b1c0d";

/// An audit directory with a chain in it.
struct Chain {
    dir: TempDir,
}

impl Chain {
    /// Writes `records` with the real writer, rotating after about every record.
    async fn write(records: Vec<AuditRecord>) -> Chain {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = AuditLog::start(AuditSettings {
            path: dir.path().join("payshim.jsonl"),
            key: SecretSlice::from(AUDIT_KEY.as_bytes().to_vec()),
            previous_keys: Vec::new(),
            max_file_bytes: 400,
        });
        for record in records {
            log.append(record).await.expect("audit append");
        }
        log.shutdown().await;
        Chain { dir }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("payshim.jsonl")
    }

    fn files(&self) -> Vec<PathBuf> {
        payshim::audit::chain_files(&self.log()).expect("list chain")
    }

    /// A file in the chain's directory.
    fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// A config with only an `[audit]` table (the key optional).
    fn audit_only_config(&self, key: Option<&str>) -> PathBuf {
        let mut text = format!("[audit]\npath = {}\n", toml_str(&self.log()));
        if let Some(key) = key {
            text.push_str(&format!("key = \"{key}\"\n"));
        }
        self.write_file("audit-only.toml", &text)
    }

    /// A shop's production config whose other secrets and TLS files are not on this
    /// machine: the proxy itself would refuse to start with it.
    fn shop_config(&self) -> PathBuf {
        let text = format!(
            r#"[server]
listen = "0.0.0.0:8443"
cert = "/etc/payshim/tls/missing-chain.pem"
key = "/etc/payshim/tls/missing-key.pem"

[upstream]
url = "https://api.moltin.com"

[upstream.auth]
client_id = "store-client"

[[clients]]
id = "browser"
public_id = "pk-browser"

[audit]
path = {}
max_file_size = "64MiB"
"#,
            toml_str(&self.log())
        );
        self.write_file("shop.toml", &text)
    }
}

fn toml_str(p: &Path) -> String {
    serde_json::to_string(p.to_str().expect("UTF-8 path")).expect("string")
}

/// Runs the binary in an empty directory (so no default config is found) with only the
/// given `PAYSHIM__*` variables.
fn payshim(args: &[&str], env: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().expect("cwd");
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd.path()).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("PAYSHIM__") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run payshim")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_exit(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn payment(event: AuditEvent, request_id: &str, outcome: Outcome) -> AuditRecord {
    let mut r = AuditRecord::new(event, request_id, "web-eu", "127.0.0.1:50000", outcome);
    r.order_id = Some(ORDER.into());
    r.gateway = Some("card_connect".into());
    r.method = Some("purchase".into());
    r.card = Some(CardSummary {
        brand: "visa".into(),
        bin: "411111".into(),
        last4: "1111".into(),
        fingerprint: FINGERPRINT.into(),
    });
    r
}

fn refund(event: AuditEvent, request_id: &str, outcome: Outcome) -> AuditRecord {
    let mut r = AuditRecord::new(event, request_id, "back-office", "10.0.0.7:41000", outcome);
    r.order_id = Some(ORDER.into());
    r.transaction_id = Some("0b6a4b52-3c4f-4d1e-9a57-1f0e7c7f1a10".into());
    r.action = Some("refund".into());
    r
}

/// Every pair complete but for `req-lost` (a payment) and `req-refund` (a refund), whose
/// forwarded records sit in early rotated files while later pairs span files.
fn crash_records() -> Vec<AuditRecord> {
    use AuditEvent::*;
    vec![
        payment(PaymentForwarded, "req-paid", Outcome::Forwarded),
        payment(PaymentForwarded, "req-lost", Outcome::Forwarded),
        payment(PaymentRejected, "req-rejected", Outcome::Rejected),
        refund(TransactionForwarded, "req-refund", Outcome::Forwarded),
        payment(PaymentCompleted, "req-paid", Outcome::Approved),
        refund(TransactionForwarded, "req-refund-done", Outcome::Forwarded),
        refund(TransactionCompleted, "req-refund-done", Outcome::Approved),
        payment(PaymentForwarded, "req-declined", Outcome::Forwarded),
        payment(PaymentCompleted, "req-declined", Outcome::Declined),
    ]
}

fn complete_records() -> Vec<AuditRecord> {
    use AuditEvent::*;
    vec![
        payment(PaymentForwarded, "req-1", Outcome::Forwarded),
        payment(PaymentRejected, "req-2", Outcome::Rejected),
        payment(PaymentCompleted, "req-1", Outcome::Approved),
        refund(TransactionForwarded, "req-3", Outcome::Forwarded),
        refund(TransactionCompleted, "req-3", Outcome::Approved),
    ]
}

// ---------------------------------------------------------------------------------------
// audit verify with only the key

#[tokio::test]
async fn verify_needs_only_the_audit_key_of_a_shop_config() {
    let chain = Chain::write(complete_records()).await;
    assert!(chain.files().len() >= 3, "rotated: {:?}", chain.files());
    let config = chain.shop_config();
    let out = payshim(
        &["audit", "verify", "--config", path(&config)],
        &[("PAYSHIM__AUDIT__KEY", AUDIT_KEY)],
    );
    let (stdout, _) = assert_exit(&out, 0);
    assert!(stdout.contains("OK: 5 records in"), "{stdout}");
    assert!(stdout.contains("chain intact"), "{stdout}");
}

#[tokio::test]
async fn verify_with_an_audit_only_config_env_key_or_key_file() {
    let chain = Chain::write(complete_records()).await;
    // The key in the [audit] table.
    let config = chain.audit_only_config(Some(AUDIT_KEY));
    let out = payshim(&["audit", "verify", "--config", path(&config)], &[]);
    let (stdout, _) = assert_exit(&out, 0);
    assert!(stdout.contains("OK: 5 records"), "{stdout}");

    // The key from the environment, the path from the table.
    let config = chain.audit_only_config(None);
    let out = payshim(
        &["audit", "verify", "--config", path(&config)],
        &[("PAYSHIM__AUDIT__KEY", AUDIT_KEY)],
    );
    assert_exit(&out, 0);

    // No config at all: a key file and the files themselves.
    let key_file = chain.write_file("audit.key", &format!("{AUDIT_KEY}\n"));
    let mut args = vec!["audit", "verify", "--key-file", path(&key_file)];
    let files = chain.files();
    args.extend(files.iter().map(|f| path(f)));
    let out = payshim(&args, &[]);
    let (stdout, _) = assert_exit(&out, 0);
    assert!(stdout.contains("OK: 5 records"), "{stdout}");

    // The path from the environment.
    let log = chain.log();
    let out = payshim(
        &["audit", "verify", "--key-file", path(&key_file)],
        &[("PAYSHIM__AUDIT__PATH", path(&log))],
    );
    let (stdout, _) = assert_exit(&out, 0);
    assert!(stdout.contains("OK: 5 records"), "{stdout}");
}

#[tokio::test]
async fn verify_with_a_wrong_key_fails_as_before() {
    let chain = Chain::write(complete_records()).await;
    let config = chain.audit_only_config(None);
    let first = chain.files()[0].clone();
    // Every record names its key: the first one needs a key that was not given.
    let needle = format!(
        "FAILED: {}: line 1: signed by key id {}, which was not given",
        first.display(),
        KeyId::of(AUDIT_KEY.as_bytes())
    );

    let out = payshim(
        &["audit", "verify", "--config", path(&config)],
        &[("PAYSHIM__AUDIT__KEY", OTHER_KEY)],
    );
    let (_, stderr) = assert_exit(&out, 2);
    assert!(stderr.contains(&needle), "{stderr}");

    let key_file = chain.write_file("wrong.key", OTHER_KEY);
    let out = payshim(
        &[
            "audit",
            "verify",
            "--config",
            path(&config),
            "--key-file",
            path(&key_file),
        ],
        &[("PAYSHIM__AUDIT__KEY", AUDIT_KEY)],
    );
    let (_, stderr) = assert_exit(&out, 2);
    assert!(stderr.contains(&needle), "the key file wins: {stderr}");
}

#[tokio::test]
async fn a_missing_or_short_key_is_named_and_never_echoed() {
    let chain = Chain::write(complete_records()).await;
    let config = chain.audit_only_config(None);
    let out = payshim(&["audit", "verify", "--config", path(&config)], &[]);
    let (_, stderr) = assert_exit(&out, 1);
    assert!(stderr.contains("`audit.key`: missing"), "{stderr}");

    let short = "short-audit-key-0123456789abcde";
    let key_file = chain.write_file("short.key", &format!("{short}\n"));
    let out = payshim(
        &[
            "audit",
            "verify",
            "--config",
            path(&config),
            "--key-file",
            path(&key_file),
        ],
        &[],
    );
    let (stdout, stderr) = assert_exit(&out, 1);
    assert!(stderr.contains("`--key-file`: too short"), "{stderr}");
    assert!(
        !stderr.contains(short) && !stdout.contains(short),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// audit pending

#[tokio::test]
async fn pending_lists_forwarded_without_completed_across_rotated_files() {
    let chain = Chain::write(crash_records()).await;
    assert!(chain.files().len() >= 3, "rotated: {:?}", chain.files());
    let config = chain.shop_config();
    let out = payshim(
        &["audit", "pending", "--config", path(&config)],
        &[("PAYSHIM__AUDIT__KEY", AUDIT_KEY)],
    );
    let (stdout, _) = assert_exit(&out, 3);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{stdout}");
    for column in [
        "REQUEST ID",
        "ORDER ID",
        "CLIENT",
        "GATEWAY",
        "METHOD",
        "CARD",
    ] {
        assert!(lines[0].contains(column), "{column}: {stdout}");
    }
    assert!(lines[1].contains("payment.forwarded"), "{stdout}");
    assert!(lines[1].contains("req-lost"), "{stdout}");
    for cell in [
        ORDER,
        "web-eu",
        "card_connect",
        "purchase",
        "visa 411111...1111",
    ] {
        assert!(lines[1].contains(cell), "{cell}: {stdout}");
    }
    assert!(lines[2].contains("transaction.forwarded"), "{stdout}");
    assert!(lines[2].contains("req-refund "), "{stdout}");
    assert!(
        lines[2].contains("back-office") && lines[2].contains("refund"),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("2 forwarded without a completed record"),
        "{stdout}"
    );
    assert!(lines[3].contains("chain intact"), "{stdout}");
    for done in [
        "req-paid",
        "req-rejected",
        "req-refund-done",
        "req-declined",
    ] {
        assert!(!stdout.contains(done), "{done} is not pending: {stdout}");
    }
    assert!(!stdout.contains(FINGERPRINT), "{stdout}");
}

#[tokio::test]
async fn pending_as_json() {
    let chain = Chain::write(crash_records()).await;
    let key_file = chain.write_file("audit.key", &format!("{AUDIT_KEY}\n"));
    let log = chain.log();
    let out = payshim(
        &[
            "audit",
            "pending",
            "--key-file",
            path(&key_file),
            "--format",
            "json",
        ],
        &[("PAYSHIM__AUDIT__PATH", path(&log))],
    );
    let (stdout, _) = assert_exit(&out, 3);
    let v: Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["records"], 9, "{v}");
    assert_eq!(v["files"], chain.files().len(), "{v}");
    let pending = v["pending"].as_array().expect("pending array");
    assert_eq!(pending.len(), 2, "{v}");
    let lost = &pending[0];
    assert_eq!(lost["event"], "payment.forwarded");
    assert_eq!(lost["request_id"], "req-lost");
    assert_eq!(lost["order_id"], ORDER);
    assert_eq!(lost["client_id"], "web-eu");
    assert_eq!(lost["gateway"], "card_connect");
    assert_eq!(lost["method"], "purchase");
    assert_eq!(
        lost["card"],
        serde_json::json!({"brand": "visa", "bin": "411111", "last4": "1111"})
    );
    assert!(
        lost["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{lost}"
    );
    assert_eq!(pending[1]["request_id"], "req-refund");
    assert_eq!(pending[1]["action"], "refund");
    assert!(pending[1]["card"].is_null());
    assert!(!stdout.contains(FINGERPRINT), "{stdout}");
}

#[tokio::test]
async fn nothing_pending_is_exit_0() {
    let chain = Chain::write(complete_records()).await;
    let config = chain.audit_only_config(Some(AUDIT_KEY));
    let out = payshim(&["audit", "pending", "--config", path(&config)], &[]);
    let (stdout, _) = assert_exit(&out, 0);
    assert!(
        stdout.starts_with("OK: no forwarded record without its completed record (5 records"),
        "{stdout}"
    );
    let out = payshim(
        &[
            "audit",
            "pending",
            "--config",
            path(&config),
            "--format",
            "json",
        ],
        &[],
    );
    let (stdout, _) = assert_exit(&out, 0);
    let v: Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(v["pending"], serde_json::json!([]));
}

#[tokio::test]
async fn pending_on_a_chain_that_does_not_verify_is_exit_2_and_still_listed() {
    let chain = Chain::write(crash_records()).await;
    // An edited record (a decline turned into an approval) breaks the chain.
    let log = chain.log();
    let original = std::fs::read_to_string(&log).expect("read log");
    let edited = original.replace("\"outcome\":\"declined\"", "\"outcome\":\"approved\"");
    assert_ne!(original, edited, "the last file holds the decline");
    std::fs::write(&log, edited).expect("edit log");

    let config = chain.audit_only_config(Some(AUDIT_KEY));
    let out = payshim(&["audit", "pending", "--config", path(&config)], &[]);
    let (stdout, stderr) = assert_exit(&out, 2);
    let needle = format!("FAILED: {}: line", log.display());
    assert!(stderr.contains(&needle), "{stderr}");
    assert!(stderr.contains("cannot be trusted"), "{stderr}");
    assert!(
        stdout.contains("req-lost") && stdout.contains("req-refund"),
        "{stdout}"
    );

    let out = payshim(
        &[
            "audit",
            "pending",
            "--config",
            path(&config),
            "--format",
            "json",
        ],
        &[("PAYSHIM__AUDIT__KEY", OTHER_KEY)],
    );
    let (stdout, _) = assert_exit(&out, 2);
    let v: Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(v["verified"], false, "{v}");
    let error = v["verify_error"].as_str().unwrap_or_default();
    assert!(error.contains("line 1: signed by key id"), "{v}");
    assert_eq!(v["pending"].as_array().map(Vec::len), Some(2), "{v}");
}

#[tokio::test]
async fn pending_on_a_missing_file_is_exit_2() {
    let chain = Chain::write(complete_records()).await;
    let config = chain.audit_only_config(Some(AUDIT_KEY));
    let missing = chain.dir.path().join("payshim.jsonl.9");
    let out = payshim(
        &[
            "audit",
            "pending",
            "--config",
            path(&config),
            path(&missing),
        ],
        &[],
    );
    let (_, stderr) = assert_exit(&out, 2);
    assert!(
        stderr.contains(&format!("FAILED: {}", missing.display())),
        "{stderr}"
    );
}
