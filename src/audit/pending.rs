//! Payments to reconcile (`payshim audit pending`): every `forwarded` record without
//! its `completed` record, across the chain's files.
//!
//! A `forwarded` record is durable before the upstream call, its `completed` record
//! after the answer; a crash (or a lost `completed`) in between leaves a payment the
//! API may or may not have processed. This is the list a shop checks against the API
//! after a crash, so nothing is silently lost. Records are paired by `request_id`
//! within their kind: `payment.forwarded` with `payment.completed`,
//! `transaction.forwarded` with `transaction.completed`.
//!
//! Cards appear only as brand, first six and last four: the record holds no more, and
//! the fingerprint is not read.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::segment::Lines;

/// A card as shown in the list: never more than the audit record's summary holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedCard {
    pub brand: String,
    pub bin: String,
    pub last4: String,
}

impl MaskedCard {
    /// `visa 411111...1111`.
    pub fn masked(&self) -> String {
        format!("{} {}...{}", self.brand, self.bin, self.last4)
    }
}

/// One forwarded payment or transaction action with no completed record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub seq: u64,
    /// When the forwarded record was written (UTC, RFC 3339).
    pub ts: String,
    /// `payment.forwarded` or `transaction.forwarded`.
    pub event: String,
    pub request_id: String,
    #[serde(rename = "client_id")]
    pub client: String,
    pub order_id: Option<String>,
    pub transaction_id: Option<String>,
    /// `capture`, `refund` or `cancel` for a transaction action.
    pub action: Option<String>,
    pub gateway: Option<String>,
    pub method: Option<String>,
    pub card: Option<MaskedCard>,
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingReport {
    /// Oldest first (by `seq`).
    pub pending: Vec<Pending>,
    /// Complete lines read.
    pub records: u64,
    /// Complete lines that are not audit records: left out of the pairing. Always 0 on
    /// a chain that verifies.
    pub unreadable: u64,
}

/// A file of the chain could not be read.
#[derive(thiserror::Error, Debug)]
pub enum PendingError {
    #[error("{}: cannot read: {source}", .file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The fields pairing needs; everything else in a line is skipped. System events (start,
/// stop, reload, key rotation) have no `request_id`.
#[derive(Deserialize)]
struct Line {
    event: String,
    request_id: Option<String>,
}

/// Scans `paths` (oldest first, as [`chain_files`](super::chain_files) lists them).
/// Does not verify the chain: see [`verify_files`](super::verify_files).
pub fn pending_in(paths: &[PathBuf]) -> Result<PendingReport, PendingError> {
    let mut open: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut by_request: HashMap<(String, String), u64> = HashMap::new();
    let mut report = PendingReport {
        pending: Vec::new(),
        records: 0,
        unreadable: 0,
    };
    for path in paths {
        for_each_line(path, |line| {
            report.records += 1;
            if pair(line, &mut open, &mut by_request).is_none() {
                report.unreadable += 1;
            }
        })?;
    }
    report.pending = open.into_values().collect();
    Ok(report)
}

/// Applies one line to the open set; `None` when it is not an audit record.
fn pair(
    line: &[u8],
    open: &mut BTreeMap<u64, Pending>,
    by_request: &mut HashMap<(String, String), u64>,
) -> Option<()> {
    let head: Line = serde_json::from_slice(line).ok()?;
    let (kind, step) = head.event.split_once('.')?;
    if kind != "payment" && kind != "transaction" {
        // A system event: nothing to pair.
        return Some(());
    }
    let key = (kind.to_string(), head.request_id?);
    match step {
        "forwarded" => {
            let record: Pending = serde_json::from_slice(line).ok()?;
            by_request.insert(key, record.seq);
            open.insert(record.seq, record);
        }
        "completed" => {
            if let Some(seq) = by_request.remove(&key) {
                open.remove(&seq);
            }
        }
        _ => {}
    }
    Some(())
}

/// Calls `f` with every complete record line of `path` (without its `\n`). The unwritten
/// tail (padding, or an incomplete record left by a crash mid-write, never acknowledged, so
/// its payment was never sent) is skipped, as `verify_files` does.
fn for_each_line(path: &Path, mut f: impl FnMut(&[u8])) -> Result<(), PendingError> {
    let io_error = |source| PendingError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut lines = Lines::new(File::open(path).map_err(io_error)?);
    while let Some(line) = lines.next_line().map_err(io_error)? {
        f(line);
    }
    Ok(())
}

/// The list as an aligned text table, one row per pending record, with a header.
pub fn pending_table(pending: &[Pending]) -> String {
    const HEADER: [&str; 8] = [
        "TIME",
        "EVENT",
        "REQUEST ID",
        "ORDER ID",
        "CLIENT",
        "GATEWAY",
        "METHOD",
        "CARD",
    ];
    let rows: Vec<[String; 8]> = pending.iter().map(row).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    push_row(&mut out, &HEADER.map(str::to_string), &widths);
    for row in &rows {
        push_row(&mut out, row, &widths);
    }
    out
}

fn row(p: &Pending) -> [String; 8] {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    [
        p.ts.clone(),
        p.event.clone(),
        p.request_id.clone(),
        or_dash(&p.order_id),
        p.client.clone(),
        or_dash(&p.gateway),
        or_dash(&p.method.clone().or_else(|| p.action.clone())),
        p.card
            .as_ref()
            .map_or_else(|| "-".to_string(), MaskedCard::masked),
    ]
}

fn push_row(out: &mut String, cells: &[String; 8], widths: &[usize; 8]) {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        let _ = write!(line, "{cell:<width$}  ");
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(seq: u64, event: &str, request_id: &str) -> String {
        let mut v = json!({
            "seq": seq, "ts": format!("2026-01-01T00:00:{seq:02}.000000Z"), "event": event,
            "request_id": request_id, "client_id": "web-eu", "remote_addr": "127.0.0.1:1",
            "order_id": "7d3c1a52-9e4f-4b8a-8c6d-2e5f4a3b1c0d", "outcome": "forwarded",
            "prev": "00", "mac": "00",
        });
        if event.starts_with("payment") {
            v["gateway"] = json!("card_connect");
            v["method"] = json!("purchase");
            v["card"] = json!({"brand": "visa", "bin": "411111", "last4": "1111",
                               "fingerprint": "ab".repeat(32)});
        } else {
            v["action"] = json!("refund");
            v["transaction_id"] = json!("0b6a4b52-3c4f-4d1e-9a57-1f0e7c7f1a10");
        }
        v.to_string()
    }

    #[test]
    fn replayed_records_are_neither_pending_nor_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "a",
            &[
                line(1, "payment.forwarded", "r1"),
                line(2, "payment.completed", "r1"),
                line(3, "payment.replayed", "r2"),
                line(4, "transaction.replayed", "r3"),
            ],
        );
        let report = pending_in(&[file]).unwrap();
        assert!(report.pending.is_empty());
        assert_eq!(report.records, 4);
        assert_eq!(report.unreadable, 0);
    }

    fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    #[test]
    fn forwarded_without_completed_across_files_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let old = write(
            dir.path(),
            "a.1",
            &[
                line(1, "payment.forwarded", "r1"),
                line(2, "payment.forwarded", "r2"),
                line(3, "transaction.forwarded", "r3"),
                line(4, "payment.rejected", "r4"),
            ],
        );
        let new = write(
            dir.path(),
            "a",
            &[
                line(5, "payment.completed", "r1"),
                // Same id, other kind: does not complete the payment r2.
                line(6, "transaction.completed", "r2"),
                line(7, "payment.forwarded", "r5"),
                line(8, "payment.completed", "r5"),
            ],
        );
        let report = pending_in(&[old, new]).unwrap();
        let ids: Vec<_> = report
            .pending
            .iter()
            .map(|p| p.request_id.as_str())
            .collect();
        assert_eq!(ids, ["r2", "r3"]);
        assert_eq!(report.records, 8);
        assert_eq!(report.unreadable, 0);
        let card = report.pending[0].card.as_ref().unwrap();
        assert_eq!(card.masked(), "visa 411111...1111");
        assert_eq!(report.pending[1].action.as_deref(), Some("refund"));
    }

    #[test]
    fn the_table_and_json_show_no_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "a", &[line(1, "payment.forwarded", "r1")]);
        let report = pending_in(&[file]).unwrap();
        let text = pending_table(&report.pending);
        assert!(text.starts_with("TIME"), "{text}");
        assert!(text.contains("visa 411111...1111"), "{text}");
        let json = serde_json::to_string(&report.pending).unwrap();
        assert!(!json.contains("abab"), "{json}");
        assert!(!text.contains("abab"), "{text}");
    }

    #[test]
    fn a_torn_tail_and_foreign_lines_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let torn = line(2, "payment.forwarded", "r2");
        let text = format!(
            "{}\nnot json\n{}",
            line(1, "payment.forwarded", "r1"),
            &torn[..torn.len() / 2]
        );
        std::fs::write(&path, text).unwrap();
        let report = pending_in(&[path]).unwrap();
        assert_eq!(report.pending.len(), 1);
        assert_eq!(report.records, 2);
        assert_eq!(report.unreadable, 1);
        let missing = pending_in(&[dir.path().join("none")]);
        assert!(matches!(missing, Err(PendingError::Io { .. })));
    }
}
