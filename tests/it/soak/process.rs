//! payshim as a child process for the soak: like `support::cards::Binary`, but its stdout
//! and stderr are pipes copied into files by two threads. The audit fault is a file-size
//! limit (`RLIMIT_FSIZE`) set on the running process, and it applies to every regular file
//! the process writes: with its logs on pipes, only the audit log feels it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::support::cards::BIN;
use crate::support::payshim::{admin_get, set_key};
use crate::support::serving::wait_bound;

/// A running payshim (killed by its pid if the test ends early).
pub struct Proc {
    child: Child,
    copiers: Vec<JoinHandle<()>>,
    pub public: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    /// Writes `config` (listeners on port 0) to `dir/NAME.toml`, starts payshim on it and
    /// returns once it logged its addresses.
    pub async fn start(dir: &Path, name: &str, config: &str) -> Proc {
        let any_port = Some("\"127.0.0.1:0\"");
        let config = set_key(config, "server", "listen", any_port);
        let config = set_key(&config, "admin", "listen", any_port);
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("PAYSHIM__") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd.spawn().expect("start payshim");
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let copiers = vec![
            copy_to(child.stdout.take().expect("stdout pipe"), &stdout),
            copy_to(child.stderr.take().expect("stderr pipe"), &stderr),
        ];
        let (out, err) = (stdout.clone(), stderr.clone());
        let bound = wait_bound(&stdout, &mut child, || tail(&out, &err)).await;
        Proc {
            child,
            copiers,
            public: bound.public,
            admin: bound.admin,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `https://localhost:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.public.port())
    }

    /// The last lines of its output, for failure messages.
    pub fn output(&self) -> String {
        tail(&self.stdout, &self.stderr)
    }

    /// `/metrics` as served now.
    pub async fn metrics(&self) -> String {
        let (status, body) = admin_get(self.admin, "/metrics").await;
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    /// `/readyz`'s status.
    pub async fn ready(&self) -> u16 {
        admin_get(self.admin, "/readyz").await.0
    }

    /// SIGKILL, and waits for the process and its output copies to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_copiers();
    }

    /// SIGTERM; panics unless it exits 0 within 15 s.
    pub async fn stop(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        for _ in 0..1500 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "exit {status}\n{}", self.output());
                self.join_copiers();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "payshim still running 15 s after SIGTERM\n{}",
            self.output()
        );
    }

    fn join_copiers(&mut self) {
        for copier in self.copiers.drain(..) {
            let _ = copier.join();
        }
    }

    /// Sets the soft file-size limit of the running process: 0 makes every write to a
    /// regular file fail (EFBIG, payshim ignores SIGXFSZ); `None` lifts it.
    pub fn limit_file_size(&self, soft: Option<u64>) {
        let soft = soft.unwrap_or(rlimit::INFINITY);
        rlimit::prlimit(
            self.pid() as i32,
            rlimit::Resource::FSIZE,
            Some((soft, rlimit::INFINITY)),
            None,
        )
        .expect("prlimit RLIMIT_FSIZE on payshim");
    }

    /// Resident memory (bytes) and open file descriptors.
    pub fn usage(&self) -> (u64, usize) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count();
        (rss_kib * 1024, fds)
    }
}

/// Copies `from` into a new file at `path` until the pipe closes.
fn copy_to(mut from: impl io::Read + Send + 'static, path: &Path) -> JoinHandle<()> {
    let mut file = File::create(path).expect("create output file");
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut file);
    })
}

fn tail(stdout: &Path, stderr: &Path) -> String {
    let tail = |path: &Path| {
        let text = std::fs::read(path).unwrap_or_default();
        let from = text.len().saturating_sub(4000);
        String::from_utf8_lossy(&text[from..]).into_owned()
    };
    format!(
        "--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
        tail(stdout),
        tail(stderr)
    )
}
