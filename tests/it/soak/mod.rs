//! The soak (issue "Hardening", items 6 and 7): the real binary with Redis limits (`deny`
//! when Redis is down) and a real, small-rotating audit log takes mixed traffic
//! (`traffic.rs`) while faults are injected in turn, each between two quiet phases:
//! upstream resets, upstream stalls past `upstream.timeout`, upstream 500s, Redis killed
//! and restarted, the audit log unwritable (a file-size limit of 0 on the process, see
//! `process.rs`) and, in all but the last quarter of the cycles, a SIGKILL of payshim
//! and a restart on the same audit log. Afterwards `check.rs` proves exactly-once
//! forwarding, the audit records, the reconciliation list, the fault windows, the chain,
//! no card data anywhere and bounded memory and descriptors.
//!
//! Environment: `PAYSHIM_SOAK_SECS` (default 60), `PAYSHIM_SOAK_LOG_LEVEL` (default
//! `info`; `scripts/soak.sh` runs `trace`), `PAYSHIM_SOAK_MIN_CARDS` (default 0: cycles
//! are added until that many requests carried a distinct card number),
//! `PAYSHIM_SOAK_PACE_MS` (default 40: each worker's pause between requests, so that the
//! suite's other tests, which run alongside in the same binary, keep some CPU; 0 for full
//! speed).

mod check;
mod leaks;
pub(crate) mod process;
mod traffic;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support;
use support::payshim::{AUDIT_KEY, SESSION_KEY, base_config, set_key, sha256_hex, toml_str};
use support::redis::RedisServer;
use support::upstream::transaction;
use support::{Handler, HttpVersion, Reply, TestClient, TestPki, Upstream, handler, moltin_like};

use check::{Evidence, Window};
use process::Proc;
use traffic::{APP_SECRET, PUBLIC_ID, Traffic};

/// One quiet or fault phase.
const PHASE: Duration = Duration::from_millis(2500);
/// `upstream.timeout` of the soak's payshim.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(1);
/// Concurrent storefront workers (half HTTP/1.1, half HTTP/2).
const WORKERS: usize = 8;

/// What the upstream double does now.
const NORMAL: u8 = 0;
const RESET: u8 = 1;
const STALL: u8 = 2;
const ERROR_500: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    UpstreamReset,
    UpstreamStall,
    Upstream500,
    RedisDown,
    AuditUnwritable,
    Kill,
}

const FAULTS: [Fault; 6] = [
    Fault::UpstreamReset,
    Fault::UpstreamStall,
    Fault::Upstream500,
    Fault::RedisDown,
    Fault::AuditUnwritable,
    Fault::Kill,
];

struct Settings {
    secs: u64,
    log_level: String,
    min_cards: u64,
    pace: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Settings {
            secs: var("PAYSHIM_SOAK_SECS").map_or(60, |v| v.parse().expect("PAYSHIM_SOAK_SECS")),
            log_level: var("PAYSHIM_SOAK_LOG_LEVEL").unwrap_or_else(|| "info".into()),
            min_cards: var("PAYSHIM_SOAK_MIN_CARDS")
                .map_or(0, |v| v.parse().expect("PAYSHIM_SOAK_MIN_CARDS")),
            pace: Duration::from_millis(
                var("PAYSHIM_SOAK_PACE_MS")
                    .map_or(40, |v| v.parse().expect("PAYSHIM_SOAK_PACE_MS")),
            ),
        }
    }
}

/// The upstream double: the Moltin-like answers, or the fault of the moment.
fn fault_handler(mode: Arc<AtomicU8>) -> Handler {
    let normal = moltin_like();
    handler(move |req| match mode.load(Ordering::Acquire) {
        RESET => Reply::ResetAfterHeaders,
        STALL => Reply::json(201, json!({ "data": transaction("stalled", "purchase") }))
            .delayed(UPSTREAM_TIMEOUT + Duration::from_secs(1)),
        ERROR_500 => Reply::json(
            500,
            json!({"errors": [{"status": 500, "title": "Internal Server Error"}]}),
        ),
        _ => normal(req),
    })
}

/// The soak's config: Redis limits that deny when Redis is down (quotas high enough
/// for the traffic), a 256 KiB audit rotation, the token-exchange clients.
fn soak_config(
    pki: &TestPki,
    upstream_url: &str,
    audit_dir: &Path,
    redis: &str,
    level: &str,
) -> String {
    let mut config = base_config(pki, upstream_url, audit_dir);
    for (section, key, value) in [
        ("server", "header_read_timeout", "\"3s\""),
        ("server", "idle_timeout", "\"3s\""),
        ("upstream", "timeout", "\"1s\""),
        ("limits", "per_client", "\"100000/s\""),
        ("limits", "per_order", "\"100/min\""),
        ("limits", "per_card", "\"100/h\""),
        ("limits", "card_attempts", "\"100/h\""),
        ("limits", "redis_url", &toml_str(redis)),
        ("limits", "redis_timeout", "\"250ms\""),
        ("limits", "on_store_error", "\"deny\""),
        ("audit", "max_file_size", "\"256KiB\""),
        ("log", "level", &toml_str(level)),
    ] {
        config = set_key(&config, section, key, Some(value));
    }
    config.push_str(&format!(
        r#"
[auth]
session_key = {session}

[[clients]]
id = "server-app"
secret_sha256 = "{secret}"

[[clients]]
id = "web-browser"
public_id = "{PUBLIC_ID}"
routes = ["payments"]
"#,
        session = toml_str(SESSION_KEY),
        secret = sha256_hex(APP_SECRET),
    ));
    config
}

/// The run's moving parts and what it collected so far.
struct Soak {
    dir: tempfile::TempDir,
    config: String,
    mode: Arc<AtomicU8>,
    redis: RedisServer,
    proc: Proc,
    traffic: Arc<Traffic>,
    ev: Evidence,
}

impl Soak {
    /// Injects `fault` for one phase (a kill: until the restarted process serves).
    async fn inject(&mut self, fault: Fault) {
        *self.ev.faults.entry(format!("{fault:?}")).or_default() += 1;
        match fault {
            Fault::UpstreamReset => self.upstream_fault(RESET).await,
            Fault::UpstreamStall => self.upstream_fault(STALL).await,
            Fault::Upstream500 => self.upstream_fault(ERROR_500).await,
            Fault::RedisDown => self.redis_down().await,
            Fault::AuditUnwritable => self.audit_unwritable().await,
            Fault::Kill => self.kill_and_restart().await,
        }
    }

    async fn upstream_fault(&self, mode: u8) {
        self.mode.store(mode, Ordering::Release);
        tokio::time::sleep(PHASE).await;
        self.mode.store(NORMAL, Ordering::Release);
    }

    /// Redis killed (its keys searched first) and started again, empty, a phase later.
    async fn redis_down(&mut self) {
        let keys = leaks::redis_dump(&self.redis.url());
        self.ev.haystack("redis (before it was killed)", keys);
        self.redis.stop();
        let from = Instant::now();
        tokio::time::sleep(PHASE).await;
        self.ev.windows.push(Window::new("redis down", from));
        self.redis.start_again();
    }

    /// A file-size limit of 0 on payshim for a phase; `/readyz` is asked halfway.
    async fn audit_unwritable(&mut self) {
        self.proc.limit_file_size(Some(0));
        let from = Instant::now();
        tokio::time::sleep(PHASE / 2).await;
        let ready = self.proc.ready().await;
        tokio::time::sleep(PHASE / 2).await;
        self.ev.windows.push(Window::new("audit unwritable", from));
        self.proc.limit_file_size(None);
        self.ev.readyz_in_audit_fault.push(ready);
    }

    /// SIGKILL under load (its /metrics searched first), then a new process on the same
    /// audit log, and the traffic moves to it.
    async fn kill_and_restart(&mut self) {
        let metrics = self.proc.metrics().await.into_bytes();
        self.ev.haystack("metrics (before a kill)", metrics);
        let outputs = (self.proc.stdout.clone(), self.proc.stderr.clone());
        self.ev.outputs.push(outputs);
        self.ev.kills.push(Instant::now());
        self.proc.kill();
        let name = format!("payshim-{}", self.ev.outputs.len());
        self.proc = Proc::start(self.dir.path(), &name, &self.config).await;
        self.traffic.set_base(self.proc.base_url());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_with_every_fault_injected() {
    support::cards::self_check();
    let settings = Settings::from_env();
    let started = Instant::now();
    let pki = TestPki::new();
    let mode = Arc::new(AtomicU8::new(NORMAL));
    let upstream = Upstream::start(&pki, fault_handler(mode.clone())).await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let audit_path = dir.path().join("audit").join("payshim.jsonl");
    let config = soak_config(
        &pki,
        &upstream.url(),
        &dir.path().join("audit"),
        &redis.url(),
        &settings.log_level,
    );
    let proc = Proc::start(dir.path(), "payshim-0", &config).await;
    let traffic = Traffic::new(proc.base_url(), settings.pace);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let version = [HttpVersion::Http1, HttpVersion::Http2][w % 2];
            let client = TestClient::new(&pki.ca_pem, version);
            tokio::spawn(traffic::worker(traffic.clone(), client))
        })
        .collect();
    let mut soak = Soak {
        dir,
        config,
        mode,
        redis,
        proc,
        traffic,
        ev: Evidence::default(),
    };

    // Every fault in turn, each after a quiet phase; no kill in the last quarter, so the
    // last process goes through every other fault and its baseline is taken early on.
    let cycles = (settings.secs / (PHASE.as_secs_f64() * 12.0) as u64).max(2);
    let kill_cycles = cycles - (cycles / 4).max(1);
    let mut baseline = None;
    let mut cycle = 0;
    while cycle < cycles || soak.traffic.cards() < settings.min_cards {
        for fault in FAULTS {
            if fault == Fault::Kill && cycle >= kill_cycles {
                continue;
            }
            tokio::time::sleep(PHASE).await;
            if baseline.is_none() && cycle >= kill_cycles {
                baseline = Some(soak.proc.usage());
            }
            soak.inject(fault).await;
        }
        cycle += 1;
    }
    tokio::time::sleep(PHASE).await;
    soak.traffic.stop.store(true, Ordering::Release);
    for worker in workers {
        soak.ev.shots.extend(worker.await.expect("worker"));
    }

    // Idle: back near the baseline? Then the last searches and a clean stop.
    let baseline = baseline.expect("a baseline was taken");
    let mut ev = soak.ev;
    ev.usage = Some((baseline, check::settle(&soak.proc, baseline).await));
    ev.haystack(
        "metrics (at the end)",
        soak.proc.metrics().await.into_bytes(),
    );
    ev.haystack("redis (at the end)", leaks::redis_dump(&soak.redis.url()));
    ev.outputs
        .push((soak.proc.stdout.clone(), soak.proc.stderr.clone()));
    soak.proc.stop().await;
    ev.upstream = upstream.requests();
    ev.min_cards = settings.min_cards;
    ev.trace = settings.log_level == "trace";
    let figures = check::check(ev, &audit_path, soak.dir.path(), AUDIT_KEY);
    eprintln!(
        "soak: {:.0} s at log level {}; {figures}",
        started.elapsed().as_secs_f64(),
        settings.log_level
    );
}
