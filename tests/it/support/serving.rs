//! Where a payshim binary started with `listen = "127.0.0.1:0"` really listens.
//!
//! A test must never pick a "free" port and hand it to the binary: between the pick and
//! the bind, a test running in parallel may take it ("Address already in use"), and two
//! picks may even return the same port. So the binary binds port 0 for both listeners and
//! its `payshim serving` line (info level) names the addresses it bound, as fields
//! `listen` and `admin` in either log format:
//!
//! - JSON: `{..,"message":"payshim serving","listen":"127.0.0.1:41017","admin":"127.0.0.1:39121",..}`
//! - pretty: `.. INFO payshim: payshim serving listen=127.0.0.1:41017 admin=127.0.0.1:39121 ..`
//!
//! So the config of a binary started this way must log at `info` (or more) for `payshim`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// How long the binary may take to log its serving line. Generous: the line may wait in
/// the log batch for `log.flush_interval` (one test sets 10 s).
const SERVING_TIMEOUT: Duration = Duration::from_secs(30);

/// The addresses the binary's two listeners are bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

/// The addresses named by the first complete (newline-terminated) `payshim serving` line
/// of `log`, JSON or pretty; `None` while there is none.
pub fn bound_addrs(log: &str) -> Option<Bound> {
    let complete = &log[..log.rfind('\n')? + 1];
    complete
        .lines()
        .find_map(|line| json_line(line).or_else(|| pretty_line(line)))
}

fn json_line(line: &str) -> Option<Bound> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["message"] != "payshim serving" {
        return None;
    }
    Some(Bound {
        public: v["listen"].as_str()?.parse().ok()?,
        admin: v["admin"].as_str()?.parse().ok()?,
    })
}

fn pretty_line(line: &str) -> Option<Bound> {
    let (_, fields) = line.split_once(" payshim: payshim serving ")?;
    let field = |name: &str| {
        fields
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(Bound {
        public: field("listen")?,
        admin: field("admin")?,
    })
}

/// Waits until the binary (`child`, logging to the file `stdout`) names its addresses;
/// panics with `output()` (its logs) if it exits first or takes longer than 30 s.
pub async fn wait_bound(stdout: &Path, child: &mut Child, output: impl Fn() -> String) -> Bound {
    let deadline = Instant::now() + SERVING_TIMEOUT;
    loop {
        let log = std::fs::read_to_string(stdout).unwrap_or_default();
        if let Some(bound) = bound_addrs(&log) {
            return bound;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("payshim exited with {status} before serving\n{}", output());
        }
        assert!(
            Instant::now() < deadline,
            "payshim logged no `payshim serving` line within {SERVING_TIMEOUT:?} (the config \
             must log at info level for it)\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
