//! HTTP/2 abuse from one connection (issue "Hardening", item 5): rapid reset, CONTINUATION
//! flood, huge header blocks and HPACK bombs, SETTINGS and PING floods, and a receive window
//! that never opens, each against a real payshim process while a normal client keeps paying.
//!
//! Each test asserts bounds that hold however loaded the machine is: the attacker's
//! connection ends (GOAWAY or close) or its work is throttled (its writes stall, or the
//! streams it gets served stay under the stream cap), payshim's resident memory grows by
//! less than `RSS_BOUND_KIB`, and every normal payment during and after the attack succeeds.
//! No timing is asserted; the speed figures (CPU, p99) come from the benchmark
//! (`h2_abuse_bench`, run by `bench/h2-abuse.sh`).

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::abuse_scene::{Scene, keep_paying};
use support::cards::BIN;
use support::h2abuse::{ATTACK_ORDER, Attack, Outcome};
use support::h2raw::{Attacker, FloodEnd, HEADERS, PING, RST_STREAM, SETTINGS, Seen};

/// How much payshim's resident memory may grow during one attack: generous (the attacks
/// as payshim stops them grow it by 0-8 MiB), so allocator noise cannot fail a test, yet
/// far below what a buffer growing with the attack would reach.
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// No attack connection lives longer than this.
const GUARD: Duration = Duration::from_secs(60);
/// payshim's stream cap in these tests (`server.max_h2_streams`).
const MAX_STREAMS: usize = 100;

/// Short connection limits, so the watchdog's closes come within the test's time.
const SERVER: &[(&str, &str)] = &[
    ("header_read_timeout", "\"2s\""),
    ("idle_timeout", "\"3s\""),
    ("max_h2_streams", "100"),
];

/// An attack's outcome, the scene, the attacker's connection (still open unless payshim
/// closed it) and payshim's resident memory before the attack (KiB), for more checks.
struct Attacked {
    outcome: Outcome,
    scene: Arc<Scene>,
    conn: Attacker,
    rss_before: u64,
}

/// Runs `attack` (one connection, at most `max_frames` frames; `read`: whether the
/// attacker reads) while one normal client keeps paying; checks payshim's memory and every
/// normal payment.
async fn attacked(attack: Attack, max_frames: u64, read: bool) -> Attacked {
    let scene = Arc::new(Scene::start(Path::new(BIN), SERVER).await);
    scene.pay_n(20).await;
    let before = scene.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let paying = tokio::spawn(keep_paying(scene.clone(), 1, 100_000, stop.clone()));
    let mut target = scene.target(max_frames, GUARD);
    target.read = read;
    let (mut conn, outcome) = attack.run(&target).await.expect("attacker connects");
    if !read {
        // Either payshim stopped reading (its answers fill the socket buffers), or the
        // watchdog closed the connection (no request in flight) before the buffers filled.
        assert!(
            matches!(
                outcome.end,
                FloodEnd::Stalled { .. } | FloodEnd::Ended { .. }
            ),
            "{}: a peer that never reads was neither throttled nor closed: {outcome:?}",
            attack.name()
        );
        assert!(
            conn.wait_ended(GUARD).await,
            "{}: the stalled connection was never closed: {:?}",
            attack.name(),
            conn.seen()
        );
    }
    stop.store(true, Ordering::SeqCst);
    let (latencies, failures) = paying.await.expect("normal client");
    scene.pay_n(5).await;
    let after = scene.rss_kib();
    eprintln!(
        "{}: {outcome:?}; {} normal payments during the attack; VmRSS {before} -> {after} KiB",
        attack.name(),
        latencies.len()
    );
    assert!(
        failures.is_empty(),
        "{}: {} normal payments failed during the attack, first: {:?}",
        attack.name(),
        failures.len(),
        failures.first()
    );
    let growth = after.saturating_sub(before);
    assert!(
        growth < RSS_BOUND_KIB,
        "{}: payshim's VmRSS grew by {growth} KiB (bound {RSS_BOUND_KIB} KiB)",
        attack.name()
    );
    Attacked {
        outcome,
        scene,
        conn,
        rss_before: before,
    }
}

/// The attacker's connection was ended by payshim (GOAWAY or close) before it could send
/// all its frames.
fn assert_ended(attack: Attack, outcome: &Outcome) {
    assert!(
        matches!(outcome.end, FloodEnd::Ended { .. }),
        "{}: the attacker's connection was not ended: {outcome:?}",
        attack.name()
    );
}

/// Acknowledgements a flooding peer may get before payshim cuts it off: its limit of 100
/// SETTINGS or PING frames a second, twice over (a count can straddle two seconds), plus
/// the server's own SETTINGS. Without the limit every frame was acknowledged until the
/// idle watchdog closed the connection, thousands of them.
const FLOOD_ACKS_BOUND: u64 = 2 * 100 + 2;

/// How many of the attacker's requests reached the upstream.
fn attacker_requests(scene: &Scene) -> usize {
    scene
        .world
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path.contains(ATTACK_ORDER))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_the_connection_and_normal_payments_go_on() {
    // 100,000 requests, each reset at once.
    let Attacked { outcome, scene, .. } = attacked(Attack::RapidReset, 200_000, true).await;
    assert_ended(Attack::RapidReset, &outcome);
    let forwarded = attacker_requests(&scene);
    eprintln!("rapid-reset: {forwarded} reset requests forwarded upstream");
    assert!(
        forwarded < 1_000,
        "{forwarded} of the reset requests were still forwarded upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_ends_the_connection_and_normal_payments_go_on() {
    let Attacked { outcome, scene, .. } =
        attacked(Attack::ContinuationFlood, 1_000_000, true).await;
    assert_ended(Attack::ContinuationFlood, &outcome);
    assert_eq!(
        attacker_requests(&scene),
        0,
        "an unfinished header block was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_header_block_ends_the_connection_and_normal_payments_go_on() {
    // At most 1,024 frames of 16 KiB: a 16 MiB header block.
    let Attacked { outcome, scene, .. } = attacked(Attack::HugeHeaderBlock, 1_024, true).await;
    assert_ended(Attack::HugeHeaderBlock, &outcome);
    assert_eq!(
        attacker_requests(&scene),
        0,
        "a huge header block was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_ends_the_connection_and_normal_payments_go_on() {
    // Up to 1,000 streams of 40 MB decoded headers each.
    let Attacked { outcome, scene, .. } = attacked(Attack::HpackBomb, 1_000, true).await;
    assert_ended(Attack::HpackBomb, &outcome);
    assert_eq!(attacker_requests(&scene), 0, "an HPACK bomb was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_acked_one_for_one_then_closed_as_idle() {
    let Attacked { outcome, .. } = attacked(Attack::SettingsFlood, u64::MAX, true).await;
    assert_ended(Attack::SettingsFlood, &outcome);
    // Nothing is amplified: at most one acknowledgement per SETTINGS, plus the server's own.
    let FloodEnd::Ended { frames } = outcome.end else {
        unreachable!()
    };
    assert!(
        outcome.seen.frames[usize::from(SETTINGS)] <= frames + 2,
        "{outcome:?}"
    );
    assert!(
        outcome.seen.frames[usize::from(SETTINGS)] <= FLOOD_ACKS_BOUND,
        "the flood was not cut off at its rate limit: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_from_a_peer_that_never_reads_stalls_then_is_closed() {
    attacked(Attack::SettingsFlood, u64::MAX, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_closed_as_idle_and_normal_payments_go_on() {
    let Attacked { outcome, .. } = attacked(Attack::PingFlood, u64::MAX, true).await;
    assert_ended(Attack::PingFlood, &outcome);
    assert!(
        outcome.seen.frames[usize::from(PING)] <= FLOOD_ACKS_BOUND,
        "the flood was not cut off at its rate limit: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_from_a_peer_that_never_reads_stalls_then_is_closed() {
    attacked(Attack::PingFlood, u64::MAX, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_window_is_held_to_the_stream_cap_and_normal_payments_go_on() {
    // 1,000 requests whose answers can never be sent.
    let Attacked {
        outcome,
        scene,
        conn,
        rss_before,
    } = attacked(Attack::ClosedWindow, 1_000, true).await;
    assert!(
        matches!(outcome.end, FloodEnd::Exhausted { .. }),
        "the closed-window flood did not get its frames out: {outcome:?}"
    );
    // Every stream is answered (HEADERS; its body then waits for a window) or refused
    // (RST_STREAM) once payshim has read them all.
    let streams = 1_000;
    let answered =
        |seen: &Seen| seen.frames[usize::from(HEADERS)] + seen.frames[usize::from(RST_STREAM)];
    let deadline = Instant::now() + GUARD;
    while answered(&conn.seen()) < streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = conn.seen();
    assert!(
        answered(&seen) >= streams,
        "not every stream was answered or refused: {seen:?}"
    );
    let served = seen.frames[usize::from(HEADERS)];
    assert!(
        served <= MAX_STREAMS as u64,
        "{served} streams served (stream cap {MAX_STREAMS})"
    );
    let forwarded = attacker_requests(&scene);
    let growth = scene.rss_kib().saturating_sub(rss_before);
    eprintln!(
        "closed-window: {served} streams served, {forwarded} requests forwarded, \
         VmRSS +{growth} KiB with every stream answered or refused"
    );
    assert!(
        growth < RSS_BOUND_KIB,
        "VmRSS grew by {growth} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    assert!(
        forwarded <= MAX_STREAMS,
        "{forwarded} requests forwarded for a peer that reads no answer (stream cap {MAX_STREAMS})"
    );
}
