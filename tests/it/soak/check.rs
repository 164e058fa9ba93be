//! The soak's checker: what must hold after every fault, however the run went.
//!
//! - every payment (and capture / refund) the client saw answered 2xx reached the upstream
//!   exactly once and has its `forwarded` and `completed` records, but for one whose
//!   `completed` record fell into an audit-write fault: that one must be listed by
//!   `payshim audit pending`; nothing reached the upstream twice, and no refused body or
//!   bad credential reached it at all;
//! - `payshim audit pending` lists exactly the `forwarded` records without `completed`;
//! - no request sent after Redis died (deny mode) or after the audit log became
//!   unwritable, and answered before that ended, was forwarded or answered 2xx;
//! - the chain verifies across every restart and rotation;
//! - no PAN (plain, spaced, dashed) and no CVV next to its key in stdout, stderr, the
//!   audit files, the responses, /metrics or Redis (`SCAN` + a read of every key);
//! - resident memory and open descriptors come back near their baseline once idle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::Proc;
use super::traffic::{Kind, Shot};
use crate::support::Recorded;
use crate::support::cards::BIN;

/// Descriptors the process may hold beyond its baseline once idle.
const FD_MARGIN: usize = 16;
/// How long the process may take to come back to its baseline once idle.
const SETTLE: Duration = Duration::from_secs(40);

/// A time span during which a fault was in effect.
pub struct Window {
    pub what: &'static str,
    pub from: Instant,
    pub to: Instant,
}

impl Window {
    /// A window from `from` to now.
    pub fn new(what: &'static str, from: Instant) -> Window {
        Window {
            what,
            from,
            to: Instant::now(),
        }
    }
}

/// Everything the run collected.
#[derive(Default)]
pub struct Evidence {
    pub shots: Vec<Shot>,
    pub upstream: Vec<Recorded>,
    pub windows: Vec<Window>,
    pub faults: BTreeMap<String, usize>,
    /// Searched for card data: /metrics snapshots, Redis contents.
    pub haystacks: Vec<(String, Vec<u8>)>,
    /// stdout and stderr of every payshim process of the run.
    pub outputs: Vec<(PathBuf, PathBuf)>,
    pub readyz_in_audit_fault: Vec<u16>,
    /// When each SIGKILL was sent.
    pub kills: Vec<Instant>,
    /// ((RSS, fds) at the baseline, (RSS, fds) once idle) of the last process.
    pub usage: Option<((u64, usize), (u64, usize))>,
    pub min_cards: u64,
    /// payshim logged at trace level: its output must show it.
    pub trace: bool,
}

impl Evidence {
    pub fn haystack(&mut self, name: &str, bytes: Vec<u8>) {
        self.haystacks.push((name.to_string(), bytes));
    }
}

/// The most resident memory allowed once idle: twice the baseline plus 64 MiB (the
/// allocator keeps some of what the load used; a leak grows without bound).
fn rss_limit(baseline: u64) -> u64 {
    baseline * 2 + (64 << 20)
}

/// Waits (at most `SETTLE`) until `proc` is back near `baseline`; returns its usage then.
pub async fn settle(proc: &Proc, baseline: (u64, usize)) -> (u64, usize) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = proc.usage();
        let back = now.0 <= rss_limit(baseline.0) && now.1 <= baseline.1 + FD_MARGIN;
        if back || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The audit records of the chain, by request id: the events each one got.
fn audit_events(files: &[PathBuf]) -> HashMap<String, Vec<String>> {
    let mut by_request: HashMap<String, Vec<String>> = HashMap::new();
    for file in files {
        let text = payshim::audit::read_records(file).expect("read audit file");
        for line in text.lines() {
            let record: Value = serde_json::from_str(line).expect("audit line is JSON");
            // System records (start, stop) belong to no request.
            let Some(id) = record["request_id"].as_str().map(str::to_string) else {
                continue;
            };
            let event = record["event"].as_str().expect("event").to_string();
            by_request.entry(id).or_default().push(event);
        }
    }
    by_request
}

/// `payshim audit SUBCOMMAND --key-file KEY ARGS... FILES...`: (exit code, stdout, stderr).
fn audit_cli(sub: &str, key_file: &Path, args: &[&str], files: &[PathBuf]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("audit")
        .arg(sub)
        .arg("--key-file")
        .arg(key_file)
        .args(args)
        .args(files)
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("PAYSHIM__") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().expect("run payshim audit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// How many times each card number and each transaction id reached the upstream.
fn upstream_counts(upstream: &[Recorded]) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let mut pans = HashMap::new();
    let mut transactions = HashMap::new();
    for req in upstream {
        if req.path.ends_with("/payments") {
            let number = req.json()["data"]["number"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *pans.entry(number).or_insert(0) += 1;
        } else if let Some(rest) = req.path.split("/transactions/").nth(1) {
            let id = rest.split('/').next().unwrap_or_default().to_string();
            *transactions.entry(id).or_insert(0) += 1;
        }
    }
    (pans, transactions)
}

/// Times a request reached the upstream.
fn reached(shot: &Shot, pans: &HashMap<String, usize>, txns: &HashMap<String, usize>) -> usize {
    match shot.kind {
        Kind::Capture | Kind::Refund => shot.transaction.as_ref().and_then(|t| txns.get(t)),
        _ => shot.pan.as_ref().and_then(|p| pans.get(p)),
    }
    .copied()
    .unwrap_or(0)
}

/// Runs every check (panicking with the failures) and returns the run's figures.
pub fn check(ev: Evidence, audit_path: &Path, dir: &Path, audit_key: &str) -> String {
    let mut failures: Vec<String> = Vec::new();
    let mut figures = String::new();
    let (pans_up, txns_up) = upstream_counts(&ev.upstream);
    let files = payshim::audit::chain_files(audit_path).expect("chain files");
    let events = audit_events(&files);
    let key_file = dir.join("audit.key");
    std::fs::write(&key_file, format!("{audit_key}\n")).expect("write key file");

    // The chain verifies, offline with the key only, across restarts and rotations.
    let (code, out) = audit_cli("verify", &key_file, &[], &files);
    if code != 0 {
        failures.push(format!("audit verify exit {code}: {out}"));
    }
    let report = payshim::audit::verify_files(&files, audit_key.as_bytes())
        .unwrap_or_else(|e| panic!("audit chain: {e}"));
    if files.len() < 2 {
        failures.push(format!("no rotation happened ({} audit file)", files.len()));
    }

    // Reconciliation: the list is exactly the forwarded records without completed.
    let orphans: HashSet<String> = events
        .iter()
        .filter(|(_, e)| {
            let has = |suffix: &str| e.iter().any(|ev| ev.ends_with(suffix));
            has(".forwarded") && !has(".completed")
        })
        .map(|(id, _)| id.clone())
        .collect();
    let (code, out) = audit_cli("pending", &key_file, &["--format", "json"], &files);
    let expected_code = if orphans.is_empty() { 0 } else { 3 };
    if code != expected_code {
        failures.push(format!(
            "audit pending exit {code}, expected {expected_code}: {out}"
        ));
    }
    let listed: HashSet<String> = serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| {
            let items = v["pending"].as_array()?.iter();
            Some(
                items
                    .filter_map(|p| p["request_id"].as_str().map(str::to_string))
                    .collect(),
            )
        })
        .unwrap_or_default();
    if listed != orphans {
        failures.push(format!(
            "audit pending lists {} requests, the records have {} forwarded without completed",
            listed.len(),
            orphans.len()
        ));
    }

    // Exactly once, with both records.
    let audit_faults: Vec<&Window> = ev
        .windows
        .iter()
        .filter(|w| w.what.starts_with("audit"))
        .collect();
    let mut checked = 0usize;
    let mut excused = 0usize;
    for shot in &ev.shots {
        let times = reached(shot, &pans_up, &txns_up);
        if times > 1 {
            failures.push(format!(
                "{:?} reached the upstream {times} times",
                shot.kind
            ));
        }
        match shot.kind {
            Kind::InvalidBody | Kind::BadCredential if times > 0 || shot.ok() => {
                failures.push(format!("{:?} was forwarded or accepted", shot.kind))
            }
            Kind::Payment | Kind::Capture | Kind::Refund if shot.ok() => {
                checked += 1;
                if times != 1 {
                    failures.push(format!(
                        "a 2xx {:?} reached the upstream {times} times",
                        shot.kind
                    ));
                }
                let id = shot.request_id.clone().unwrap_or_default();
                let got = events.get(&id).cloned().unwrap_or_default();
                let has = |suffix: &str| got.iter().any(|e| e.ends_with(suffix));
                let straddles = audit_faults
                    .iter()
                    .any(|w| shot.sent < w.from && shot.answered > w.from);
                let completed = has(".completed");
                if !has(".forwarded") {
                    failures.push(format!("2xx {:?} {id}: no forwarded record", shot.kind));
                } else if !completed && straddles && listed.contains(&id) {
                    excused += 1;
                } else if !completed {
                    let before_kill = ev
                        .kills
                        .iter()
                        .filter(|k| **k >= shot.answered)
                        .map(|k| k.duration_since(shot.answered))
                        .min();
                    failures.push(format!(
                        "2xx {:?} {id}: no completed record (answered {before_kill:?} before \
                         a SIGKILL; listed as pending: {})",
                        shot.kind,
                        listed.contains(&id)
                    ));
                }
            }
            _ => {}
        }
    }

    // Nothing forwarded while Redis was down (deny) or the audit log unwritable.
    let mut in_windows: BTreeMap<&str, usize> = BTreeMap::new();
    for w in &ev.windows {
        let inside = ev.shots.iter().filter(|s| {
            matches!(s.kind, Kind::Payment | Kind::Capture | Kind::Refund)
                && s.sent > w.from
                && s.answered < w.to
        });
        for shot in inside {
            *in_windows.entry(w.what).or_default() += 1;
            if shot.ok() || reached(shot, &pans_up, &txns_up) > 0 {
                failures.push(format!(
                    "{:?} forwarded or accepted while {} (status {:?})",
                    shot.kind, w.what, shot.status
                ));
            }
        }
    }
    for what in ["redis down", "audit unwritable"] {
        if !in_windows.contains_key(what) {
            failures.push(format!(
                "no payment was sent while {what}: the check proved nothing"
            ));
        }
    }
    if !ev.readyz_in_audit_fault.contains(&503) {
        failures.push(format!(
            "/readyz never failed while the audit log was unwritable: {:?}",
            ev.readyz_in_audit_fault
        ));
    }

    // Card data.
    let leaks = super::leaks::search(&ev, &files, &pans_up, &mut figures);
    failures.extend(leaks);

    // The traffic was what it claims.
    let mut by_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for shot in &ev.shots {
        let entry = by_kind.entry(format!("{:?}", shot.kind)).or_default();
        entry.0 += 1;
        entry.1 += usize::from(shot.ok());
    }
    for kind in ["Payment", "Capture", "Refund", "Read", "Token"] {
        if by_kind.get(kind).is_none_or(|(_, ok)| *ok == 0) {
            failures.push(format!("no {kind} succeeded: {by_kind:?}"));
        }
    }

    // Memory and descriptors.
    let ((rss0, fds0), (rss1, fds1)) = ev.usage.expect("usage measured");
    if rss1 > rss_limit(rss0) || fds1 > fds0 + FD_MARGIN {
        failures.push(format!(
            "not back near the baseline when idle: RSS {} -> {} MiB, fds {fds0} -> {fds1}",
            rss0 >> 20,
            rss1 >> 20
        ));
    }

    let _ = write!(
        figures,
        "; {} requests (kind: sent/2xx {by_kind:?}); faults {:?}; {} processes; {checked} 2xx \
         payments and transaction actions checked ({excused} whose completed record hit the \
         audit fault, listed as pending); requests inside fault windows {in_windows:?}; \
         {} audit records in {} files, orphans (forwarded without completed) {}; RSS {} -> {} \
         MiB, fds {fds0} -> {fds1}; /readyz during audit faults {:?}; failures {}",
        ev.shots.len(),
        ev.faults,
        ev.outputs.len(),
        report.records,
        files.len(),
        orphans.len(),
        rss0 >> 20,
        rss1 >> 20,
        ev.readyz_in_audit_fault,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n{figures}",
        failures.len(),
        failures
            .iter()
            .take(50)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    figures
}
