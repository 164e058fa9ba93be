//! The leak test itself: the run of `shots.rs` through the real binary at `trace` level,
//! the check of every answer, the upstream and the audit records, then the search of
//! stdout, stderr, every audit file and every response for the card data (and of what the
//! upstream received, as the positive control).

use crate::support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use serde_json::Value;

use support::cards::{Binary, context, find_cvvs, find_pans};
use support::payshim::{AUDIT_KEY, base_config, set_key};
use support::{HttpVersion, TestClient, TestPki, Upstream};

use super::shots::{Expect, Shot, plan};
use super::upstream_handler;

/// What a request got: (status, headers and body as text), or why it failed.
type Outcome = Result<(u16, Vec<u8>), String>;

async fn fire(client: &TestClient, binary_url: &str, shot: &Shot) -> Outcome {
    let mut builder = Request::builder()
        .method(shot.method.clone())
        .uri(format!("{binary_url}{}", shot.path));
    for (name, value) in &shot.headers {
        builder = builder.header(name, value);
    }
    let req = builder
        .body(Bytes::copy_from_slice(shot.body.as_bytes()))
        .expect("build request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client.send(req))
        .await
        .map_err(|_| "no answer within 20 s".to_string())??;
    // Headers are searched too: everything the client got back.
    let mut seen = Vec::new();
    for (name, value) in &resp.headers {
        seen.extend_from_slice(name.as_str().as_bytes());
        seen.extend_from_slice(b": ");
        seen.extend_from_slice(value.as_bytes());
        seen.push(b'\n');
    }
    seen.extend_from_slice(&resp.body);
    Ok((resp.status, seen))
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn audit_lines(path: &Path) -> usize {
    payshim::audit::read_records(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_card_data_in_logs_audit_or_responses_at_trace_level() {
    support::cards::self_check();
    let started = Instant::now();
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, upstream_handler()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let audit_dir = dir.path().join("audit");
    let audit_path = audit_dir.join("payshim.jsonl");
    let config = base_config(&pki, &upstream.url(), &audit_dir);
    let config = set_key(&config, "log", "level", Some("\"trace\""));
    let config = set_key(&config, "upstream", "timeout", Some("\"1s\""));
    // Token-form gateways, raw card fields for card_connect only (the default).
    let config =
        format!("{config}\n[payments]\ngateways = [\"card_connect\", \"stripe\", \"manual\"]\n");
    let mut binary = Binary::start(dir.path(), "payshim", &config).await;
    let base_url = binary.url("");

    let shots = Arc::new(plan());
    let total = shots.len();
    assert!(total >= 300, "{total} requests");

    // Phase 1: everything but the resets, 16 tasks, half over HTTP/1.1, half over HTTP/2.
    // Phase 2: the resets one at a time (a reset kills payshim's whole upstream HTTP/2
    // connection, which would fail unrelated requests sharing it).
    let h1 = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let h2 = TestClient::new(&pki.ca_pem, HttpVersion::Http2);
    let mut results: Vec<Option<Outcome>> = vec![None; total];
    let concurrent: Vec<usize> = (0..total)
        .filter(|&i| shots[i].expect != Expect::BrokenOr502)
        .collect();
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let shots = shots.clone();
            let client = if t % 2 == 0 { h1.clone() } else { h2.clone() };
            let mine: Vec<usize> = concurrent.iter().copied().skip(t).step_by(16).collect();
            let base_url = base_url.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in mine {
                    out.push((i, fire(&client, &base_url, &shots[i]).await));
                }
                out
            })
        })
        .collect();
    for task in tasks {
        for (i, r) in task.await.expect("sender task") {
            results[i] = Some(r);
        }
    }
    for (k, i) in (0..total)
        .filter(|&i| shots[i].expect == Expect::BrokenOr502)
        .enumerate()
    {
        let client = if k % 2 == 0 { &h1 } else { &h2 };
        results[i] = Some(fire(client, &base_url, &shots[i]).await);
    }
    let results: Vec<Outcome> = results.into_iter().map(|r| r.expect("sent")).collect();

    // Every request got what its path must give.
    let mut per_kind: HashMap<&str, usize> = HashMap::new();
    for (shot, result) in shots.iter().zip(&results) {
        *per_kind.entry(shot.kind).or_default() += 1;
        match (shot.expect, result) {
            (Expect::Status(s), Ok((status, seen))) => assert_eq!(
                *status,
                s,
                "{}: {} {}: {}",
                shot.kind,
                shot.method,
                shot.path,
                String::from_utf8_lossy(seen)
            ),
            (Expect::Status(s), Err(e)) => {
                panic!("{}: expected {s}, the request failed: {e}", shot.kind)
            }
            (Expect::BrokenOr502, Ok((status, _))) => {
                assert_eq!(*status, 502, "{}", shot.kind)
            }
            (Expect::BrokenOr502, Err(_)) => {}
        }
    }

    // The upstream got exactly the forwarded payments, each once.
    let forwarded = shots.iter().filter(|s| s.forwarded).count();
    assert_eq!(
        upstream.count(),
        forwarded,
        "payments that reached the upstream"
    );

    // Audit: one record per refused payment, two per forwarded one, and the start and
    // stop records. Completions and rejections are written after the answer: wait for
    // them (all but the stop record), then stop the process.
    let expected_records = 2 + shots
        .iter()
        .filter(|s| s.payment_route)
        .map(|s| if s.forwarded { 2 } else { 1 })
        .sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(10);
    while audit_lines(&audit_path) < expected_records - 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    binary.stop().await;

    let report = payshim::audit::verify_files(
        &payshim::audit::chain_files(&audit_path).expect("chain files"),
        AUDIT_KEY.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("audit chain: {e}"));
    assert_eq!(report.records as usize, expected_records);
    assert!(!report.torn_tail);
    let mut events: HashMap<String, usize> = HashMap::new();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for line in payshim::audit::read_records(&audit_path).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let event = record["event"].as_str().unwrap().to_string();
        if event == "payment.completed" {
            *outcomes
                .entry(record["outcome"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        *events.entry(event).or_default() += 1;
    }
    let rejected = shots
        .iter()
        .filter(|s| s.payment_route && !s.forwarded)
        .count();
    assert_eq!(
        events.get("payment.forwarded"),
        Some(&forwarded),
        "{events:?}"
    );
    assert_eq!(
        events.get("payment.completed"),
        Some(&forwarded),
        "{events:?}"
    );
    assert_eq!(
        events.get("payment.rejected"),
        Some(&rejected),
        "{events:?}"
    );
    // The completions say what happened upstream.
    let count = |kinds: &[&str]| shots.iter().filter(|s| kinds.contains(&s.kind)).count();
    assert_eq!(
        outcomes.get("approved").copied().unwrap_or(0),
        count(&["valid", "pan_in_query", "pan_in_header"]),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.get("timeout").copied().unwrap_or(0),
        count(&["upstream_timeout"]),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.get("upstream_error").copied().unwrap_or(0),
        count(&["upstream_500", "upstream_reset"]),
        "{outcomes:?}"
    );

    // What is searched for.
    let pans: HashSet<String> = shots.iter().flat_map(|s| s.pans.clone()).collect();
    let not_pans: HashSet<String> = shots.iter().flat_map(|s| s.not_pans.clone()).collect();
    let cvvs: HashSet<String> = shots.iter().flat_map(|s| s.cvvs.clone()).collect();
    let names: Vec<String> = shots.iter().flat_map(|s| s.names.clone()).collect();
    assert_eq!(
        pans.len(),
        shots.iter().map(|s| s.pans.len()).sum::<usize>(),
        "PANs are distinct"
    );
    assert_eq!(
        cvvs.len(),
        shots.iter().map(|s| s.cvvs.len()).sum::<usize>(),
        "CVVs are distinct"
    );

    // Positive control: the same search finds every forwarded card where it belongs, in
    // what the upstream received.
    let received = upstream.requests();
    let mut found_upstream: HashSet<String> = HashSet::new();
    let mut cvvs_upstream: HashSet<String> = HashSet::new();
    for req in &received {
        found_upstream.extend(find_pans(&req.body, &pans).into_iter().map(|(p, _)| p));
        cvvs_upstream.extend(find_cvvs(&req.body, &cvvs).into_iter().map(|(c, _)| c));
    }
    let expected_upstream: HashSet<String> = shots
        .iter()
        .filter_map(|s| s.forwarded_pan.clone())
        .collect();
    assert_eq!(
        found_upstream, expected_upstream,
        "the search must find exactly the forwarded PANs in the upstream's bodies"
    );
    assert_eq!(
        cvvs_upstream.len(),
        forwarded,
        "forwarded CVVs found upstream"
    );

    // The haystacks: stdout, stderr, every audit file, every response.
    let stdout = std::fs::read(&binary.stdout).expect("stdout");
    let stderr = std::fs::read(&binary.stderr).expect("stderr");
    let mut haystacks: Vec<(String, Vec<u8>)> =
        vec![("stdout".into(), stdout.clone()), ("stderr".into(), stderr)];
    let audit_files = files_under(&audit_dir);
    assert!(!audit_files.is_empty());
    for file in &audit_files {
        haystacks.push((file.display().to_string(), std::fs::read(file).unwrap()));
    }
    for (i, (shot, result)) in shots.iter().zip(&results).enumerate() {
        let seen = match result {
            Ok((_, seen)) => seen.clone(),
            Err(e) => e.clone().into_bytes(),
        };
        haystacks.push((format!("response {i} ({})", shot.kind), seen));
    }

    // The logs are real trace logs with one line per request, not an empty file.
    let stdout_text = String::from_utf8_lossy(&stdout);
    let request_lines = stdout_text
        .lines()
        .filter(|l| l.contains("\"message\":\"request\""))
        .count();
    assert!(
        request_lines >= total,
        "{request_lines} request log lines for {total} requests"
    );
    assert!(
        stdout_text.contains("\"level\":\"TRACE\""),
        "no trace-level line in stdout: is the log level in effect?"
    );
    // The log does speak of these very cards, by their allowed part: brand and last four.
    for shot in shots.iter().filter(|s| s.forwarded) {
        let number = shot.forwarded_pan.as_deref().unwrap();
        let last4 = format!("\"last4\":\"{}\"", &number[number.len() - 4..]);
        assert!(
            stdout_text.contains(&last4),
            "no request log line with {last4} ({})",
            shot.kind
        );
    }

    let mut leaks = Vec::new();
    let mut bytes_searched = 0usize;
    for (name, hay) in &haystacks {
        bytes_searched += hay.len();
        for (p, at) in find_pans(hay, &pans) {
            leaks.push(format!("PAN {p} in {name}: …{}…", context(hay, at)));
        }
        for (p, at) in find_pans(hay, &not_pans) {
            leaks.push(format!(
                "submitted (Luhn-invalid) number {p} in {name}: …{}…",
                context(hay, at)
            ));
        }
        for (c, at) in find_cvvs(hay, &cvvs) {
            leaks.push(format!("CVV {c} in {name}: …{}…", context(hay, at)));
        }
        if !name.starts_with("response") {
            let text = String::from_utf8_lossy(hay);
            for n in &names {
                if let Some(at) = text.find(n.as_str()) {
                    leaks.push(format!(
                        "cardholder name {n} in {name}: …{}…",
                        context(hay, at)
                    ));
                }
            }
        }
    }
    eprintln!(
        "leak test: {total} requests ({per_kind:?}), {} PANs + {} Luhn-invalid numbers + {} \
         CVVs + {} names searched in {} haystacks ({} bytes, stdout {} bytes, {} audit \
         records); positive control: {} of {} forwarded PANs and {} CVVs found in the \
         upstream's {} bodies; {:?}",
        pans.len(),
        not_pans.len(),
        cvvs.len(),
        names.len(),
        haystacks.len(),
        bytes_searched,
        stdout.len(),
        report.records,
        found_upstream.len(),
        expected_upstream.len(),
        cvvs_upstream.len(),
        received.len(),
        started.elapsed()
    );
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
