//! The HTTP/2 abuse benchmark (ignored; `bench/h2-abuse.sh` runs it): for each attack of
//! `support::h2abuse`, payshim's CPU, resident memory and a normal client's p99 with and
//! without the attack, one table row per attack.
//!
//! Per attack: a window of `H2_ABUSE_WINDOW` seconds (default 5) with only the normal client
//! (`H2_ABUSE_CLIENTS` concurrent payments, default 4, on one HTTP/2 connection), then the
//! same window while one attacker connection at a time runs the attack (a new one when
//! payshim ends the last) from another process at the lowest CPU priority;
//! `H2_ABUSE_ROUNDS` times (default 1). payshim is `PAYSHIM_BENCH_BIN` if set, else the
//! test build's. Loopback only; every loop is bounded by the window and a frame budget.

use crate::support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::abuse_scene::{ATTACKER_IP, Scene, keep_paying, vm_hwm_kib};
use support::cards::BIN;
use support::h2abuse::{Attack, Target};
use support::h2raw::FloodEnd;
use support::load::percentile;

/// Frames per attacker connection: a flood goes on until payshim ends it (or 2 million
/// frames), a closed window asks for 1,000 streams (ten times the stream cap) and then
/// holds on to what it got.
fn frames_per_connection(attack: Attack) -> u64 {
    match attack {
        Attack::ClosedWindow => 1_000,
        _ => 2_000_000,
    }
}

/// One window's figures.
struct Figures {
    payments: usize,
    failures: usize,
    p50: Duration,
    p99: Duration,
    /// payshim's CPU time over wall time (1.0 = one core busy).
    cpu: f64,
    rss_kib: u64,
    /// Attacker connections opened, and how many payshim ended (GOAWAY or close).
    connections: u32,
    ended: u32,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The normal client for `window`, with `attack` looping beside it when given.
async fn window(scene: &Arc<Scene>, attack: Option<Attack>, window: Duration) -> Figures {
    let clients = env_num("H2_ABUSE_CLIENTS", 4) as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = scene.cpu_time();
    let started = Instant::now();
    let paying = tokio::spawn(keep_paying(
        scene.clone(),
        clients,
        usize::MAX,
        stop.clone(),
    ));
    let (connections, ended) = match attack {
        Some(attack) => attacker_process(scene, attack, window).await,
        None => {
            tokio::time::sleep(window).await;
            (0, 0)
        }
    };
    stop.store(true, Ordering::SeqCst);
    let rss_kib = scene.rss_kib();
    let (mut latencies, failures) = paying.await.expect("normal client");
    if let Some(first) = failures.first() {
        println!(
            "failures: {} normal payments failed, first: {first}",
            failures.len()
        );
    }
    let wall = started.elapsed();
    let cpu = (scene.cpu_time() - cpu_before).as_secs_f64() / wall.as_secs_f64();
    Figures {
        payments: latencies.len(),
        failures: failures.len(),
        p50: percentile(&mut latencies, 50),
        p99: percentile(&mut latencies, 99),
        cpu,
        rss_kib,
        connections,
        ended,
    }
}

/// Pins payshim to the core `H2_ABUSE_PAYSHIM_CPU` when set (the script runs the test
/// process on another core, and the child inherits that).
fn pin(pid: u32) {
    let Ok(cpu) = std::env::var("H2_ABUSE_PAYSHIM_CPU") else {
        return;
    };
    let status = std::process::Command::new("taskset")
        .args(["-a", "-pc", &cpu, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run taskset");
    assert!(status.success(), "taskset -a -pc {cpu} {pid}: {status}");
}

/// Runs `attack` for `window` in another process (this test binary, test
/// `attacker`) at the lowest CPU priority: it shares the normal client's core, and takes
/// only what the normal client leaves. Returns (connections, ended by payshim).
async fn attacker_process(scene: &Scene, attack: Attack, window: Duration) -> (u32, u32) {
    let exe = std::env::current_exe().expect("test binary path");
    let out = tokio::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(exe)
        .args([
            "h2_abuse_bench::attacker",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("H2_ABUSE_ATTACK", attack.name())
        .env("H2_ABUSE_ADDR", scene.binary.public.to_string())
        .env("H2_ABUSE_CA_PEM", &scene.world.pki.ca_pem)
        .env("H2_ABUSE_SECS", window.as_secs_f64().to_string())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the attacker process");
    let text = String::from_utf8_lossy(&out.stdout);
    let counts = text
        .lines()
        .find_map(|l| Some(l.split_once("attacker connections/ended: ")?.1))
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(c, e)| Some((c.trim().parse().ok()?, e.trim().parse().ok()?)));
    counts.unwrap_or_else(|| {
        panic!(
            "attacker process: {}\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The attacker side of `attacker_process`: one connection at a time (a new one when
/// payshim ends the last, or the last held until the window ends when it has sent all its
/// frames) for `H2_ABUSE_SECS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by h2_abuse_figures"]
async fn attacker() {
    let Ok(name) = std::env::var("H2_ABUSE_ATTACK") else {
        // Run by hand (`--ignored`) rather than by h2_abuse_figures: nothing to attack.
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let attack = Attack::ALL
        .into_iter()
        .find(|a| a.name() == name)
        .unwrap_or_else(|| panic!("unknown attack {name}"));
    let window = Duration::from_secs_f64(var("H2_ABUSE_SECS").parse().expect("seconds"));
    let started = Instant::now();
    let (mut connections, mut ended) = (0u32, 0u32);
    while started.elapsed() < window {
        let target = Target {
            addr: var("H2_ABUSE_ADDR").parse().expect("address"),
            ca_pem: var("H2_ABUSE_CA_PEM"),
            local: Some(ATTACKER_IP),
            max_frames: frames_per_connection(attack),
            guard: window.saturating_sub(started.elapsed()),
            stall: Duration::from_secs(5),
            read: true,
        };
        let Ok((_conn, outcome)) = attack.run(&target).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections += 1;
        match outcome.end {
            FloodEnd::Ended { .. } => ended += 1,
            // Nothing more to send: hold the connection (and what it holds) open.
            FloodEnd::Exhausted { .. } => {
                tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
            }
            FloodEnd::Stalled { .. } | FloodEnd::TimedOut { .. } => {}
        }
    }
    println!("attacker connections/ended: {connections}/{ended}");
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/h2-abuse.sh"]
async fn h2_abuse_figures() {
    let secs = env_num("H2_ABUSE_WINDOW", 5);
    let span = Duration::from_secs(secs);
    let bin =
        std::env::var_os("PAYSHIM_BENCH_BIN").map_or_else(|| PathBuf::from(BIN), PathBuf::from);
    let only = std::env::var("H2_ABUSE_ONLY").unwrap_or_default();
    // payshim's defaults, but for a shorter idle limit so floods without requests are cut
    // within a window.
    let server: &[(&str, &str)] = &[
        ("header_read_timeout", "\"2s\""),
        ("idle_timeout", "\"3s\""),
    ];
    let scene = Arc::new(Scene::start(&bin, server).await);
    pin(scene.binary.pid());
    scene.pay_n(200).await;
    let rounds = env_num("H2_ABUSE_ROUNDS", 1).max(1);
    println!(
        "payshim: {}; window {secs}s; {rounds} round(s), attacks in reverse order every \
         other round",
        bin.display()
    );
    println!(
        "| attack | payments base/att | failures | p50 base/att ms | p99 base/att ms | p99 ratio \
         | CPU base/att | VmRSS base/att MiB | VmHWM MiB | attacker conns (ended) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut attacks: Vec<Attack> = Attack::ALL
        .into_iter()
        .filter(|a| only.is_empty() || only.split(',').any(|n| n == a.name()))
        .collect();
    let mut ratios: Vec<(Attack, f64)> = Vec::new();
    for round in 0..rounds {
        for &attack in &attacks {
            let base = window(&scene, None, span).await;
            let att = window(&scene, Some(attack), span).await;
            // Lets anything the attack left behind end before the next baseline.
            tokio::time::sleep(Duration::from_secs(4)).await;
            let ratio = att.p99.as_secs_f64() / base.p99.as_secs_f64().max(1e-9);
            ratios.push((attack, ratio));
            print_row(
                attack,
                round,
                &base,
                &att,
                ratio,
                vm_hwm_kib(scene.binary.pid()),
            );
        }
        attacks.reverse();
    }
    if rounds > 1 {
        print_medians(&attacks, &ratios);
    }
}

/// One table row: one attack's windows without and with it.
fn print_row(attack: Attack, round: u64, base: &Figures, att: &Figures, ratio: f64, hwm: u64) {
    println!(
        "| {}{} | {}/{} | {}/{} | {}/{} | {}/{} | {:.2} | {:.0}%/{:.0}% | {:.1}/{:.1} | {:.1} | {} ({}) |",
        attack.name(),
        if round > 0 {
            format!(" #{}", round + 1)
        } else {
            String::new()
        },
        base.payments,
        att.payments,
        base.failures,
        att.failures,
        ms(base.p50),
        ms(att.p50),
        ms(base.p99),
        ms(att.p99),
        ratio,
        base.cpu * 100.0,
        att.cpu * 100.0,
        base.rss_kib as f64 / 1024.0,
        att.rss_kib as f64 / 1024.0,
        hwm as f64 / 1024.0,
        att.connections,
        att.ended,
    );
}

/// Per attack, the median and the highest p99 ratio over the rounds.
fn print_medians(attacks: &[Attack], ratios: &[(Attack, f64)]) {
    println!("| attack | p99 ratio, median of rounds | highest |");
    println!("|---|---|---|");
    for &attack in attacks {
        let mut mine: Vec<f64> = ratios
            .iter()
            .filter(|(a, _)| *a == attack)
            .map(|(_, r)| *r)
            .collect();
        mine.sort_by(f64::total_cmp);
        let median = mine[mine.len() / 2];
        let highest = mine[mine.len() - 1];
        println!("| {} | {median:.2} | {highest:.2} |", attack.name());
    }
}
