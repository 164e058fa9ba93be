//! A throw-away `redis-server` on loopback, for the shared-limit tests.
//!
//! `RedisServer::start()` runs `redis-server --port <port> --bind 127.0.0.1 --save ""
//! --appendonly no` (its working directory and log in a temporary directory) and returns
//! once it answers PING. `stop()` kills it (an outage as abrupt as a crash),
//! `start_again()` brings it back on the same port, empty; dropping it kills it.
//!
//! Which port: payshim only takes `redis://` URLs, so it has to be TCP, and redis-server
//! cannot report a port the kernel chose. A port released by a probe bind could be taken by
//! a test running in parallel before redis-server binds it, so the port is drawn at random
//! BELOW the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), where no port-0
//! listener and no outgoing connection ever lands, skipping ports other servers of this
//! process hold. If something else holds it anyway, redis-server exits ("Address already
//! in use") and another port is drawn. Once it answers, `INFO server` must name its
//! process id and that port, so the tests never talk to some other Redis. The port stays
//! reserved while stopped, for `start_again`.
//!
//! When `redis-server` is not installed the test FAILS, never skips: CI (`scripts/test.sh`)
//! installs the Debian package `redis-server`.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports drawn below this are privileged or commonly taken by local services.
const LOWEST_PORT: u16 = 10_000;

/// How many ports `start` tries before giving up.
const START_ATTEMPTS: usize = 20;

/// Ports held by the servers of this test process (running or stopped).
static RESERVED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a loopback port no other test gets (see the module doc), drawing
    /// another port if that one is taken. Panics with a clear message when `redis-server`
    /// is missing or does not start.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = reserve_port();
            match spawn(port, dir.path()) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        dir,
                        child: Some(child),
                    };
                }
                Err(e) => {
                    release_port(port);
                    failures.push(format!("port {port}: {e}"));
                }
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n---\n"));
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted). Panics if it
    /// does not come up.
    pub fn start_again(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match spawn(self.port, self.dir.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                // The port may linger for a moment after the kill.
                Err(e) if Instant::now() < deadline => {
                    eprintln!(
                        "redis-server restart on port {} failed, retrying: {e}",
                        self.port
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!(
                    "redis-server did not start again on port {}: {e}",
                    self.port
                ),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        release_port(self.port);
    }
}

/// Draws a port in `candidate_ports()` that no server of this process holds, and holds it.
fn reserve_port() -> u16 {
    let range = candidate_ports();
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let reserved = reserved.get_or_insert_with(HashSet::new);
    let random = RandomState::new();
    for attempt in 0u64.. {
        let span = u64::from(range.end - range.start);
        let port = range.start + (random.hash_one(attempt) % span) as u16;
        if reserved.insert(port) {
            return port;
        }
    }
    unreachable!("the range has more ports than tests")
}

fn release_port(port: u16) {
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reserved) = reserved.as_mut() {
        reserved.remove(&port);
    }
}

/// From `LOWEST_PORT` up to the start of the kernel's ephemeral range (32768 when it cannot
/// be read); the whole unprivileged range if that leaves fewer than 1000 ports.
pub fn candidate_ports() -> Range<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_start >= LOWEST_PORT + 1_000 {
        LOWEST_PORT..ephemeral_start
    } else {
        1_024..u16::MAX
    }
}

/// Spawns `redis-server` on `port` and waits until it answers PING; `Err` (with its log)
/// if it exits or stays silent.
fn spawn(port: u16, dir: &Path) -> Result<Child, String> {
    let log = dir.join(format!("redis-{port}.log"));
    let mut child = match Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed (not found on PATH). The shared rate-limit tests \
             need a real Redis and never skip: install the Debian package with \
             `apt-get install -y redis-server` (scripts/test.sh does it)."
        ),
        Err(e) => panic!("cannot run redis-server: {e}"),
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("redis-server exited ({status}):\n{stderr}{log}"));
        }
        if ping(addr) {
            return match serves_as(addr, child.id(), port) {
                Ok(()) => Ok(child),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(e)
                }
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "redis-server did not answer PING within {READY_TIMEOUT:?}:\n{log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when a Redis server at `addr` answers `PING` with `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// `Ok` when the Redis at `addr` says (`INFO server`) it is process `pid` serving `port`.
fn serves_as(addr: SocketAddr, pid: u32, port: u16) -> Result<(), String> {
    let info = info_server(addr).map_err(|e| format!("INFO server on {addr}: {e}"))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
            .map(str::to_string)
    };
    let (their_pid, their_port) = (field("process_id"), field("tcp_port"));
    if their_pid.as_deref() == Some(pid.to_string().as_str())
        && their_port.as_deref() == Some(port.to_string().as_str())
    {
        Ok(())
    } else {
        Err(format!(
            "{addr} is another Redis: process_id {their_pid:?}, tcp_port {their_port:?} \
             (ours: {pid}, {port})"
        ))
    }
}

/// The text of `INFO server` (a RESP bulk string) from the Redis at `addr`.
fn info_server(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"INFO server\r\n")?;
    let mut reader = BufReader::new(s);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    let len: usize = header
        .trim_end()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unexpected reply {header:?}")))?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}
