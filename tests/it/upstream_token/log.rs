//! The log, on the real binary: the upstream client secret, the upstream and session
//! tokens, the storefront's credentials and card data never reach it, at debug level and
//! through a token failure streak and an upstream 401.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use serde_json::Value;

use super::{CLIENT_ID, CLIENT_SECRET, World, bearer, send, wait_until};
use crate::support;
use support::payshim::{
    AUDIT_KEY, ORDER, SESSION_KEY, STOREFRONT_KEY, admin_get, base_config, payment_body, set_key,
    sha256_hex, toml_str,
};
use support::{HttpVersion, TestClient};

/// A running `payshim` binary with its stdout and stderr collected.
struct Binary {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Binary {
    fn start(config: &std::path::Path, dir: &std::path::Path, env: &[(&str, &str)]) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_payshim"));
        cmd.arg("--config")
            .arg(config)
            .current_dir(dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the payshim binary");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Binary { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The JSON log line with this message, once it is there.
    async fn wait_line(&mut self, message: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            for line in self.output().lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line)
                    && v["message"] == message
                {
                    return v;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("payshim exited ({status}):\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} log line within {within:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits (at most 15 s) for the exit and the last output.
    async fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("payshim did not stop on SIGTERM:\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the reader threads take the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.output()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An admin address from the `payshim serving` line.
fn port_of(line: &Value, field: &str) -> u16 {
    line[field]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no {field} address in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_reach_the_log() {
    const STOREFRONT_SECRET: &str = "sf-app-secret-2b7d9e4f6a1c3e5d";
    let world = World::new(3600).await;
    // The first two token calls fail (a failure streak to log), token 1 is then refused
    // by the payment route once (the 401 path), token 2 works.
    world.api.down.store(true, Ordering::SeqCst);
    world
        .api
        .rejected
        .lock()
        .unwrap()
        .push("upstream-token-1".into());

    let dir = tempfile::tempdir().unwrap();
    let toml = base_config(&world.pki, &world.upstream.url(), world.audit.path());
    let toml = set_key(&toml, "upstream.auth", "token", None);
    let toml = set_key(
        &toml,
        "upstream.auth",
        "client_id",
        Some(&toml_str(CLIENT_ID)),
    );
    // Debug level: the most the log can ever say.
    let mut toml = set_key(&toml, "log", "level", Some("\"debug\""));
    toml.push_str(&format!(
        r#"
[[clients]]
id = "server-app"
secret_sha256 = "{}"
"#,
        sha256_hex(STOREFRONT_SECRET)
    ));
    let config = dir.path().join("payshim.toml");
    std::fs::write(&config, toml).unwrap();
    // Secrets from the environment, as in production.
    let mut binary = Binary::start(
        &config,
        dir.path(),
        &[
            ("PAYSHIM__UPSTREAM__AUTH__CLIENT_SECRET", CLIENT_SECRET),
            ("PAYSHIM__AUTH__SESSION_KEY", SESSION_KEY),
        ],
    );
    let serving = binary
        .wait_line("payshim serving", Duration::from_secs(10))
        .await;
    let port = port_of(&serving, "listen");
    let admin_port = port_of(&serving, "admin");
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();

    // A failure streak of two token calls, then recovery.
    wait_until("two failed token calls", Duration::from_secs(5), || {
        world.token_calls() >= 2
    })
    .await;
    world.api.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_get(admin, "/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            binary.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ca_pem = std::fs::read_to_string(&world.pki.ca_path).unwrap();
    let client = TestClient::new(&ca_pem, HttpVersion::Http1);
    let url = |path: &str| format!("https://localhost:{port}{path}");

    // A session token through client_credentials (the storefront secret in the body).
    let resp = send(
        &client,
        Request::post(url("/oauth/access_token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Bytes::from(format!(
                "grant_type=client_credentials&client_id=server-app&client_secret={STOREFRONT_SECRET}"
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let session = resp.json()["access_token"].as_str().unwrap().to_string();

    // A payment with it: token 1 refused upstream, refresh, resend with token 2.
    let payment = |auth: String| {
        Request::post(url(&format!("/v2/orders/{ORDER}/payments")))
            .header("content-type", "application/json")
            .header("authorization", auth)
            .body(Bytes::from(payment_body()))
            .unwrap()
    };
    let resp = send(&client, payment(format!("Bearer {session}"))).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    // One with the API key, and a few refused ones (bad key, bad session token).
    let resp = send(&client, payment(format!("Bearer {STOREFRONT_KEY}"))).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let resp = send(&client, payment(format!("Bearer {STOREFRONT_KEY}x"))).await;
    assert_eq!(resp.status, 401);
    let resp = send(&client, payment(format!("Bearer {session}x"))).await;
    assert_eq!(resp.status, 401);
    assert_eq!(
        world.payment_tokens(),
        vec![bearer(1), bearer(2), bearer(2)]
    );

    let log = binary.stop().await;
    // The log did record the run (so the absence checks below mean something).
    assert!(log.contains("\"message\":\"request\""), "{log}");
    let streak_lines = log
        .lines()
        .filter(|l| l.contains("cannot obtain an upstream token"))
        .count();
    assert_eq!(
        streak_lines, 1,
        "one log line per failure streak (two failed calls):\n{log}"
    );
    assert!(log.contains("upstream token endpoint recovered"), "{log}");
    assert!(
        log.contains("(401)"),
        "no line about the upstream 401:\n{log}"
    );
    for (what, secret) in [
        ("upstream client_secret", CLIENT_SECRET),
        ("upstream token", "upstream-token-"),
        ("session token", session.as_str()),
        ("session token MAC", session.rsplit('.').next().unwrap()),
        ("storefront secret", STOREFRONT_SECRET),
        ("storefront API key", STOREFRONT_KEY),
        ("session key", SESSION_KEY),
        ("audit key", AUDIT_KEY),
        ("card number", "4111111111111111"),
    ] {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("the {what} appears in payshim's log: {line}");
        }
    }
}
