//! The setting of the HTTP/2 abuse tests and benchmark (`h2_abuse`): a real payshim process
//! (so its resident memory and CPU time are its own, not the test's) in front of the upstream
//! test double, a normal client that keeps paying, and readings of the process's
//! `/proc/PID/stat` and `/proc/PID/status`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::cards::Binary;
use super::h2abuse::Target;
use super::load::{payment_to, vm_rss_kib};
use super::payshim::{STOREFRONT_KEY, payment_body, set_key};
use super::upstream::random_uuid;
use super::{HttpVersion, TestClient, World, moltin_like};

/// The attacker's source address: another loopback address, so it does not share the
/// normal client's per-address connection count.
pub const ATTACKER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// payshim (the binary) with the upstream test double, and a normal HTTP/2 client.
pub struct Scene {
    pub world: World,
    pub binary: Binary,
    pub client: TestClient,
    _dir: TempDir,
}

impl Scene {
    /// Starts payshim from `bin` on `world.base_config()` with `server` keys set (TOML
    /// literals), logging at info level (the start-up line carries the bound addresses).
    pub async fn start(bin: &Path, server: &[(&str, &str)]) -> Scene {
        let world = World::new(moltin_like()).await;
        let mut config = set_key(&world.base_config(), "log", "level", Some("\"info\""));
        for (key, value) in server {
            config = set_key(&config, "server", key, Some(value));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = Binary::start_bin(bin, dir.path(), "h2abuse", &config).await;
        let client = TestClient::new(&world.pki.ca_pem, HttpVersion::Http2);
        Scene {
            world,
            binary,
            client,
            _dir: dir,
        }
    }

    /// An attack target on this payshim from `ATTACKER_IP`, reading the server's frames.
    pub fn target(&self, max_frames: u64, guard: Duration) -> Target {
        Target {
            addr: self.binary.public,
            ca_pem: self.world.pki.ca_pem.clone(),
            local: Some(ATTACKER_IP),
            max_frames,
            guard,
            stall: Duration::from_secs(5),
            read: true,
        }
    }

    /// One payment by the normal client: Ok(latency) on 201, else the failure.
    pub async fn pay(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let req = payment_to(
            &self.binary.url(""),
            &random_uuid(),
            STOREFRONT_KEY,
            &payment_body(),
        );
        match self.client.send(req).await {
            Ok(r) if r.status == 201 => Ok(started.elapsed()),
            Ok(r) => Err(format!("{} {}", r.status, r.text())),
            Err(e) => Err(e),
        }
    }

    /// `n` payments one after the other; panics on the first failure.
    pub async fn pay_n(&self, n: usize) {
        for i in 0..n {
            if let Err(e) = self.pay().await {
                panic!("normal payment #{i} failed: {e}\n{}", self.binary.output());
            }
        }
    }

    /// Resident memory of payshim, KiB.
    pub fn rss_kib(&self) -> u64 {
        vm_rss_kib(self.binary.pid())
    }

    /// CPU time payshim has used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.binary.pid())
    }
}

/// Payments by `clients` concurrent normal clients, one after the other each, until `stop`
/// is set or `max` are done; every latency and every failure.
pub async fn keep_paying(
    scene: Arc<Scene>,
    clients: usize,
    max: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, Vec<String>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (scene, stop) = (scene.clone(), stop.clone());
        tasks.spawn(async move {
            let (mut latencies, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) && latencies.len() + failures.len() < max {
                match scene.pay().await {
                    Ok(took) => latencies.push(took),
                    Err(e) => failures.push(e),
                }
            }
            (latencies, failures)
        });
    }
    let (mut latencies, mut failures) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (l, f) = done.expect("payment task");
        latencies.extend(l);
        failures.extend(f);
    }
    (latencies, failures)
}

/// User + system CPU time of process `pid` (fields 14 and 15 of /proc/PID/stat, in clock
/// ticks of 1/100 s, the Linux USER_HZ).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The command name (field 2) may hold spaces; fields after it start past its ')'.
    let after = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// Peak resident memory of process `pid` in KiB (`VmHWM`).
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}
