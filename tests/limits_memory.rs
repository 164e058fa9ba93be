//! Local limit state stays bounded while an attacker rotates cards and IPs
//! (`limits.max_keys`).
//!
//! In a test binary of its own on purpose: the check reads the process's resident memory,
//! which tests running beside it in the same process would disturb.

use std::collections::HashMap;
use std::net::IpAddr;

use payshim::limit::Limiter;

const MAX_KEYS: usize = 10_000;

fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

/// A stand-in card fingerprint: uniform bytes, like the HMAC outputs of production.
fn fp(i: u32) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(i.to_le_bytes()).into()
}

/// 100,000 distinct cards and 100,000 distinct IPs against max_keys = 10,000: every kind
/// stays at or below max_keys, so the three kinds involved hold at most 30,000 keys
/// (instead of 300,000), and memory grows by a few MiB, not by the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_key_rotation() {
    let toml = format!(
        "[upstream]\nurl = \"sandbox\"\n\n[audit]\nkey = \"{}\"\n\n[limits]\n\
         per_client = \"off\"\nper_order = \"off\"\nper_ip = \"10/s\"\nper_card = \"5/h\"\n\
         card_attempts = \"3/h\"\nmax_keys = {MAX_KEYS}\n",
        "k".repeat(40)
    );
    let config = payshim::config::from_toml(&toml, &HashMap::new()).expect("valid test config");
    let l = Limiter::start(&config.limits);
    let before = rss_kib();
    let mut peak = 0;
    for i in 0..100_000u32 {
        l.check_ip(IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
            .await
            .unwrap();
        l.check_card(&fp(i), &fp(i ^ 0x5555_5555)).await.unwrap();
        if i % 100 == 99 {
            peak = peak.max(l.local_keys());
        }
    }
    peak = peak.max(l.local_keys());
    let after = rss_kib();
    let bound = 3 * MAX_KEYS;
    eprintln!(
        "memory bound: 100k cards + 100k IPs, max_keys {MAX_KEYS}: peak local_keys {peak} \
         (bound {bound}), RSS {before:?} KiB -> {after:?} KiB"
    );
    assert!(peak <= bound, "peak local_keys {peak} > {bound}");
    assert!(
        peak > MAX_KEYS,
        "the flood should fill more than one kind: {peak}"
    );
    let (Some(b), Some(a)) = (before, after) else {
        panic!("no /proc/self/statm: cannot check memory");
    };
    // ~30,000 small entries: a few MiB; without the cap it would be ~10 times more.
    assert!(a.saturating_sub(b) < 64 * 1024, "RSS grew {} KiB", a - b);
}
