//! Tampering: any edited, deleted, swapped or repeated line of a finished log makes
//! `payshim audit verify` fail (exit 2) naming that line, and `verify_files` agrees.

use std::path::Path;

use super::{invalid_payment, payment, payment_request};
use crate::support;
use support::cards::audit_verify;
use support::payshim::{AUDIT_KEY, Payshim, base_config};
use support::{HttpVersion, TestPki, Upstream, moltin_like};

/// Writes `lines` (each without its newline) as a file and runs `payshim audit verify` on it:
/// it must fail (exit 2) naming `line`; `verify_files` must agree.
fn assert_verify_fails_at(config: &Path, dir: &Path, name: &str, lines: &[String], line: u64) {
    let file = dir.join(format!("{name}.jsonl"));
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&file, text).unwrap();
    let out = audit_verify(config, std::slice::from_ref(&file));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{name}: audit verify must fail; stdout {} stderr {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let needle = format!("FAILED: {}: line {line}:", file.display());
    assert!(
        stderr.contains(&needle),
        "{name}: expected {needle:?} in {stderr:?}"
    );
    let err = payshim::audit::verify_files(std::slice::from_ref(&file), AUDIT_KEY.as_bytes())
        .expect_err(name);
    assert_eq!(err.line(), line, "{name}: {err}");
}

#[tokio::test]
async fn edited_deleted_or_reordered_lines_are_named_by_audit_verify() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let audit_path = audit_dir.join("payshim.jsonl");
    let config = base_config(&pki, &upstream.url(), &audit_dir);
    let payshim = Payshim::start(&config).await;
    let client = payshim.client(HttpVersion::Http1);
    for k in 0..12u64 {
        let body = if k % 3 == 2 {
            invalid_payment(k)
        } else {
            payment(k).1
        };
        let resp = client
            .send(payment_request(&payshim.url(""), &body))
            .await
            .unwrap();
        assert!(resp.status == 201 || resp.status == 400, "{}", resp.text());
    }
    payshim.stop().await;
    let config_path = dir.path().join("payshim.toml");
    std::fs::write(&config_path, &config).unwrap();

    let original: Vec<String> = payshim::audit::read_records(&audit_path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let n = original.len();
    assert_eq!(
        n,
        1 + 8 * 2 + 4 + 1,
        "start, 8 forwarded + completed, 4 rejected, stop"
    );
    // Untouched, it verifies.
    let out = audit_verify(&config_path, std::slice::from_ref(&audit_path));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("OK: {n} records")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // One byte changed (a hex digit of the request id, so the line is still valid JSON).
    let edit = |lines: &[String], k: usize| -> Vec<String> {
        let mut out = lines.to_vec();
        let at = out[k].find("\"request_id\":\"").unwrap() + "\"request_id\":\"".len();
        let mut bytes = out[k].clone().into_bytes();
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        out[k] = String::from_utf8(bytes).unwrap();
        out
    };
    let d = dir.path();
    // Lines 1 and n are the start and stop records, which have no request id.
    for k in [1, 6, n / 2, n - 2] {
        assert_verify_fails_at(
            &config_path,
            d,
            &format!("edit-{k}"),
            &edit(&original, k),
            k as u64 + 1,
        );
    }
    // One byte of the mac itself.
    let mut mac_edit = original.clone();
    let line = &mut mac_edit[4];
    let at = line.len() - 3;
    let replacement = if &line[at..at + 1] == "a" { "b" } else { "a" };
    line.replace_range(at..at + 1, replacement);
    assert_verify_fails_at(&config_path, d, "edit-mac-5", &mac_edit, 5);
    // A line deleted: the line now in its place fails.
    for k in [0, 3, n / 2, n - 2] {
        let mut deleted = original.clone();
        deleted.remove(k);
        assert_verify_fails_at(
            &config_path,
            d,
            &format!("delete-{k}"),
            &deleted,
            k as u64 + 1,
        );
    }
    // Two lines swapped: the first of them fails.
    for k in [0, 7, n - 2] {
        let mut swapped = original.clone();
        swapped.swap(k, k + 1);
        assert_verify_fails_at(
            &config_path,
            d,
            &format!("swap-{k}"),
            &swapped,
            k as u64 + 1,
        );
    }
    // Two distant lines swapped.
    let mut far = original.clone();
    far.swap(2, n - 3);
    assert_verify_fails_at(&config_path, d, "swap-far", &far, 3);
    // A line repeated (a replayed record).
    let mut repeated = original.clone();
    repeated.insert(9, original[8].clone());
    assert_verify_fails_at(&config_path, d, "repeat-9", &repeated, 10);
}
