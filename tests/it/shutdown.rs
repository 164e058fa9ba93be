//! Graceful shutdown of the real binary (issue 2): on SIGTERM or SIGINT payshim stops
//! accepting, lets the in-flight request finish with the upstream's answer, then exits 0.
//! While running it cannot dump core (memory holds card data), and it keeps transparent
//! huge pages off unless the operator allows them. And the shipped dev config runs as is
//! (sandbox, generated dev certificate).

use crate::support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::payshim::{
    ORDER, STOREFRONT_KEY, UPSTREAM_TOKEN, base_config, payment_body, set_key, wait_for_file,
};
use support::serving::{Bound, wait_bound};
use support::{HttpVersion, Reply, TestClient, TestPki, Upstream, handler};

const BIN: &str = env!("CARGO_BIN_EXE_payshim");

/// The binary as a child process; killed (by its pid) if the test ends early.
struct Process {
    child: Child,
    dir: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Process {
    /// Starts `payshim [--config FILE]` in `dir` (its working directory), with the
    /// environment's PAYSHIM__ variables and MIMALLOC_ALLOW_THP replaced by `env`; stdout and
    /// stderr go to files in `dir`.
    fn spawn(dir: &Path, config: Option<&Path>, env: &[(&str, String)]) -> Process {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout.log")).unwrap())
            .stderr(File::create(dir.join("stderr.log")).unwrap());
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("PAYSHIM__") || key == "MIMALLOC_ALLOW_THP" {
                cmd.env_remove(key);
            }
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        Process {
            child: cmd.spawn().expect("start payshim"),
            dir: dir.to_path_buf(),
        }
    }

    fn output(&self) -> String {
        output(&self.dir)
    }

    /// Waits until payshim logs the addresses it bound (its listeners are on port 0);
    /// panics (with the logs) if the process exits or 30 s pass.
    async fn wait_bound(&mut self) -> Bound {
        let dir = self.dir.clone();
        let stdout = dir.join("stdout.log");
        wait_bound(&stdout, &mut self.child, || output(&dir)).await
    }

    /// `kill -<signal> <pid>`, e.g. `signal("TERM")`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    fn sigterm(&self) {
        self.signal("TERM");
    }

    /// The "THP_enabled" flag of the running process, from /proc/<pid>/status.
    fn thp_enabled(&self) -> String {
        status_field(self.child.id(), "THP_enabled")
    }

    /// The soft and hard "Max core file size" of the running process, from
    /// /proc/<pid>/limits (a number of bytes, or "unlimited").
    fn core_limits(&self) -> (String, String) {
        let path = format!("/proc/{}/limits", self.child.id());
        let limits = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let line = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max core file size"))
            .unwrap_or_else(|| panic!("no core file size in {path}:\n{limits}"));
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some(soft), Some(hard)) => (soft.to_string(), hard.to_string()),
            _ => panic!("unexpected {path} line {line:?}"),
        }
    }

    /// Waits for the process to exit (at most `timeout`).
    async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "payshim still running {timeout:?} after the signal\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The process's stdout and stderr (files in `dir`), for failure messages.
/// A field of /proc/<pid>/status, e.g. "THP_enabled".
fn status_field(pid: u32, field: &str) -> String {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in {path}:\n{status}"))
}

fn output(dir: &Path) -> String {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        read("stdout.log"),
        read("stderr.log")
    )
}

fn payment(url: &str) -> http::Request<bytes::Bytes> {
    http::Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(bytes::Bytes::from(payment_body()))
        .unwrap()
}

/// Lets the processes this test process starts from now on dump core, up to a few KiB (the
/// usual soft limit is 0, which would make a check that payshim sets 0 prove nothing). Only
/// the soft limit moves, and only up to the hard one; payshim must lower both. It applies to
/// the children of every test in this binary (payshim lowers it to 0 itself; a few KiB of
/// core from a crashing helper is harmless), so the shutdown tests need no process of
/// their own.
fn allow_core_dumps_in_children() {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::CORE).expect("getrlimit(CORE)");
    let raised = hard.min(4096);
    if soft < raised {
        rlimit::setrlimit(rlimit::Resource::CORE, raised, hard).expect("setrlimit(CORE)");
    }
    if raised == 0 {
        eprintln!("note: the hard core limit is 0 here: the core dump check proves nothing");
    }
}

/// `signal`: "TERM" or "INT" (for `kill`). `workers`: 1 runs tokio's current-thread
/// scheduler, more the multi-thread one.
async fn in_flight_request_finishes_then_exit_0(signal: &str, version: HttpVersion, workers: u32) {
    let pki = TestPki::new();
    let upstream = Upstream::start(
        &pki,
        handler(|_| {
            Reply::json(
                201,
                serde_json::json!({"data": {"type": "transaction", "slow": true}}),
            )
            .delayed(Duration::from_millis(1500))
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Listeners on port 0 (as in `base_config`): the process names what it bound.
    let config = base_config(&pki, &upstream.url(), dir.path());
    let config = set_key(&config, "upstream", "timeout", Some("\"10s\""));
    let config = set_key(&config, "server", "shutdown_grace", Some("\"10s\""));
    let config = set_key(&config, "log", "level", Some("\"info\""));
    let config = set_key(&config, "server", "workers", Some(&workers.to_string()));
    let config_path = dir.path().join("payshim.toml");
    std::fs::write(&config_path, config).unwrap();

    allow_core_dumps_in_children();
    let mut process = Process::spawn(dir.path(), Some(Path::new("payshim.toml")), &[]);
    let Bound { public, admin } = process.wait_bound().await;

    // Started with core dumps allowed, payshim disabled them (soft and hard limit).
    assert_eq!(
        process.core_limits(),
        ("0".to_string(), "0".to_string()),
        "Max core file size (soft, hard) of the running payshim"
    );

    let client = TestClient::new(&pki.ca_pem, version);
    let url = format!(
        "https://localhost:{}/v2/orders/{ORDER}/payments",
        public.port()
    );
    let in_flight = tokio::spawn({
        let client = client.clone();
        let request = payment(&url);
        async move { client.send(request).await }
    });
    assert!(
        upstream.wait_for_requests(1, Duration::from_secs(10)).await,
        "the payment did not reach the upstream\n{}",
        process.output()
    );
    let signalled = Instant::now();
    process.signal(signal);

    // New connections are refused while the request is still in flight.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match tokio::net::TcpStream::connect(public).await {
            Err(e) => {
                // Refused once the listener is gone; reset if the SYN raced its closing.
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ),
                    "{e}"
                );
                break;
            }
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "payshim still accepts 1 s after SIG{signal}\n{}",
                    process.output()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        !in_flight.is_finished(),
        "the in-flight request ended before the upstream answered"
    );

    // The in-flight request completes with the upstream's answer...
    let resp = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request finished within 10 s")
        .unwrap()
        .unwrap_or_else(|e| panic!("in-flight request failed: {e}\n{}", process.output()));
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.json()["data"]["slow"], true);
    assert!(resp.header("x-request-id").is_some());
    assert_eq!(upstream.count(), 1);
    let recorded = &upstream.requests()[0];
    assert_eq!(
        recorded.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );

    // ...then the process exits 0, well before the 10 s grace period.
    let status = process.wait_exit(Duration::from_secs(8)).await;
    assert!(
        status.success(),
        "exit status {status}\n{}",
        process.output()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "exit took {:?} after SIG{signal}",
        signalled.elapsed()
    );
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_0_http1() {
    in_flight_request_finishes_then_exit_0("TERM", HttpVersion::Http1, 2).await;
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_0_http2() {
    in_flight_request_finishes_then_exit_0("TERM", HttpVersion::Http2, 2).await;
}

#[tokio::test]
async fn one_worker_sigterm_lets_the_in_flight_request_finish_then_exits_0_http1() {
    in_flight_request_finishes_then_exit_0("TERM", HttpVersion::Http1, 1).await;
}

#[tokio::test]
async fn one_worker_sigterm_lets_the_in_flight_request_finish_then_exits_0_http2() {
    in_flight_request_finishes_then_exit_0("TERM", HttpVersion::Http2, 1).await;
}

#[tokio::test]
async fn sigint_lets_the_in_flight_request_finish_then_exits_0_http1() {
    in_flight_request_finishes_then_exit_0("INT", HttpVersion::Http1, 2).await;
}

#[tokio::test]
async fn shipped_config_serves_a_sandbox_payment_with_the_dev_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("dev-tls");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/payshim.toml");
    let mut process = Process::spawn(
        dir.path(),
        Some(&shipped),
        &[
            ("PAYSHIM__SERVER__LISTEN", "127.0.0.1:0".to_string()),
            ("PAYSHIM__ADMIN__LISTEN", "127.0.0.1:0".to_string()),
            (
                "PAYSHIM__SERVER__DEV_CERT_DIR",
                certs.to_str().unwrap().to_string(),
            ),
            // The same payment is sent twice below: each must reach the sandbox.
            ("PAYSHIM__IDEMPOTENCY__DUPLICATE_WINDOW", "off".to_string()),
        ],
    );
    let Bound { public, .. } = process.wait_bound().await;
    let dev_cert = wait_for_file(&certs.join("dev-cert.pem"), Duration::from_secs(5)).await;

    // The dev storefront key of the shipped config, over both HTTP versions.
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = TestClient::new(&dev_cert, version);
        let resp = client
            .send(
                http::Request::post(format!(
                    "https://localhost:{}/v2/orders/{ORDER}/payments",
                    public.port()
                ))
                .header("content-type", "application/json")
                .header("authorization", "Bearer dev-storefront-key-0001")
                .body(bytes::Bytes::from(payment_body()))
                .unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("sandbox payment failed: {e}\n{}", process.output()));
        assert_eq!(resp.status, 200, "{}\n{}", resp.text(), process.output());
        assert_eq!(resp.header("x-payshim-sandbox").as_deref(), Some("true"));
        assert_eq!(resp.json()["data"]["type"], "transaction");
        assert!(resp.header("x-request-id").is_some());
    }
    // The certificate is for 127.0.0.1 too.
    let by_ip = TestClient::new(&dev_cert, HttpVersion::Http1)
        .send(
            http::Request::post(format!(
                "https://127.0.0.1:{}/v2/orders/{ORDER}/payments",
                public.port()
            ))
            .header("content-type", "application/json")
            .header("authorization", "Bearer dev-storefront-key-0001")
            .body(bytes::Bytes::from(payment_body()))
            .unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("by IP: {e}"));
    assert_eq!(by_ip.status, 200);

    process.sigterm();
    let status = process.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status}\n{}",
        process.output()
    );
    // The dev certificate went to the overridden directory, not the default var/tls.
    assert!(!dir.path().join("var/tls/dev-cert.pem").exists());
}

/// Transparent huge pages are off in payshim unless `MIMALLOC_ALLOW_THP` says otherwise
/// (README.md, "Memory per idle connection"): idle connections then cost what they hold,
/// not the 2 MiB pages khugepaged fills around them.
#[tokio::test]
async fn transparent_huge_pages_are_off_unless_the_operator_allows_them() {
    let ours = status_field(std::process::id(), "THP_enabled");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "0"),
        (&[("MIMALLOC_ALLOW_THP", "0")], "0"),
        // Allowed: the process keeps what it inherited (this test's own flag).
        (&[("MIMALLOC_ALLOW_THP", "1")], ours.as_str()),
    ];
    for (env, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        env.push(("PAYSHIM__SERVER__LISTEN", "127.0.0.1:0".to_string()));
        env.push(("PAYSHIM__ADMIN__LISTEN", "127.0.0.1:0".to_string()));
        let certs = dir.path().join("dev-tls").to_str().unwrap().to_string();
        env.push(("PAYSHIM__SERVER__DEV_CERT_DIR", certs));
        let mut process = Process::spawn(dir.path(), None, &env);
        process.wait_bound().await;
        assert_eq!(
            process.thp_enabled(),
            *expected,
            "THP_enabled of payshim started with {env:?}"
        );
    }
    if ours == "0" {
        eprintln!("note: THP is off for this test process: the allowed case proves nothing");
    }
}
