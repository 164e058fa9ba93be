//! Memory of a real payshim process while thousands of distinct cards go through it: the
//! key caps engage and resident memory stays bounded.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use support::cards::{BRANDS, Binary};
use support::load::{payment_to, vm_rss_kib};
use support::payshim::STOREFRONT_KEY;
use support::upstream::random_uuid;
use support::{HttpVersion, TestClient, TestPki, Upstream, moltin_like};

use super::{config_for, payment};

/// 3,000 payments with distinct cards and orders through a real payshim process with
/// `max_keys = 500`: the key caps engage (logged) and the process's resident memory grows
/// by less than 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_thousands_of_distinct_cards() {
    const WARM_UP: u64 = 300;
    const PAYMENTS: u64 = 3_000;
    const CONCURRENCY: usize = 48;
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(
        &pki,
        &upstream.url(),
        &dir.path().join("audit"),
        &[
            ("per_order", "\"5/10min\""),
            ("per_card", "\"5/h\""),
            ("card_attempts", "\"3/h\""),
            ("max_keys", "500"),
        ],
    );
    let binary = Binary::start(dir.path(), "memory", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http2);
    let base = binary.url("");

    let run = |from: u64, to: u64| {
        let next = Arc::new(AtomicUsize::new(from as usize));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (client, base, next) = (client.clone(), base.clone(), next.clone());
            tasks.spawn(async move {
                let mut failures = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst) as u64;
                    if n >= to {
                        return failures;
                    }
                    let brand = BRANDS[(n as usize) % BRANDS.len()];
                    let (_, body) = payment(brand, n);
                    let req = payment_to(&base, &random_uuid(), STOREFRONT_KEY, &body);
                    match client.send(req).await {
                        Ok(r) if r.status == 201 => {}
                        Ok(r) => failures.push(format!("#{n}: {} {}", r.status, r.text())),
                        Err(e) => failures.push(format!("#{n}: {e}")),
                    }
                }
            });
        }
        tasks
    };

    let mut warm = run(0, WARM_UP);
    while let Some(failures) = warm.join_next().await {
        let failures = failures.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    let before = vm_rss_kib(binary.pid());
    let started = Instant::now();
    let mut load = run(WARM_UP, WARM_UP + PAYMENTS);
    let mut failures = Vec::new();
    while let Some(f) = load.join_next().await {
        failures.extend(f.unwrap());
    }
    let took = started.elapsed();
    let after = vm_rss_kib(binary.pid());
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(upstream.count() as u64, WARM_UP + PAYMENTS);
    let growth = after.saturating_sub(before);
    eprintln!(
        "memory: {PAYMENTS} payments with distinct cards and orders in {took:?} \
         ({:.0}/s, HTTP/2, {CONCURRENCY} streams), max_keys 500: VmRSS {before} KiB -> \
         {after} KiB (+{growth} KiB)",
        PAYMENTS as f64 / took.as_secs_f64()
    );
    assert!(
        growth < 64 * 1024,
        "VmRSS grew by {growth} KiB (bound 64 MiB)\n{}",
        binary.output()
    );
    // The caps did engage through the server (3,300 distinct keys per kind > 500).
    let log = format!(
        "{}{}",
        std::fs::read_to_string(&binary.stdout).unwrap_or_default(),
        std::fs::read_to_string(&binary.stderr).unwrap_or_default()
    );
    for scope in ["per_card", "per_order", "card_attempts"] {
        assert!(
            log.lines()
                .any(|l| l.contains("key cap reached") && l.contains(scope)),
            "no key-cap warning for {scope} in the log:\n{}",
            binary.output()
        );
    }
}
