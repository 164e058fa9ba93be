//! payshim itself, in process: `Payshim::start(toml)` validates the config, binds the
//! public and admin listeners on free loopback ports and runs `payshim::run` in a tokio
//! task until `stop()` (or drop).
//!
//! `base_config` writes a complete, valid config for a test: one storefront `web-eu`
//! (key `STOREFRONT_KEY`), the upstream token `UPSTREAM_TOKEN`, the server certificate from
//! a `TestPki`, every rate limit off and short upstream timeouts. `set_key` edits one key of
//! such a TOML text, so each test states only what it changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use payshim::config::{Config, TlsSource};

use super::client::{HttpVersion, TestClient};
use super::pki::TestPki;

/// The storefront `web-eu`'s API key (its SHA-256 is in `base_config`).
pub const STOREFRONT_KEY: &str = "sf-web-eu-test-key-8c1f0e2b9d4a7765";
/// The store's real token, configured as `upstream.auth.token`.
pub const UPSTREAM_TOKEN: &str = "upstream-store-token-5f0c9e1d2b3a4f6e";
/// The audit HMAC key (at least 32 characters).
pub const AUDIT_KEY: &str = "audit-key-test-3e9b1c7d5a2f4e6b8d0c1a3f5e7b9d2c";
/// A session key, for configs that set `auth.session_key`.
pub const SESSION_KEY: &str = "session-key-test-7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
/// An order id (canonical UUID).
pub const ORDER: &str = "7d3c1a52-9e4f-4b8a-8c6d-2e5f4a3b1c0d";

/// The SHA-256 hex of a storefront key, as `payshim hash-key` prints it.
pub fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A TOML basic string holding `s` (JSON string escapes are valid TOML).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("serialize string")
}

/// A TOML string holding a path.
pub fn toml_path(p: &Path) -> String {
    toml_str(p.to_str().expect("UTF-8 path"))
}

/// A complete, valid config: listeners on 127.0.0.1:0 (tests bind their own ports), the
/// server certificate from `pki.server_cert()`, upstream `upstream_url` trusted through
/// `pki.ca_path` with `UPSTREAM_TOKEN`, one client `web-eu` with `STOREFRONT_KEY`, every
/// rate limit off, the duplicate window and the one-payment-per-order check off (tests send
/// the same payment again, and at once, on purpose),
/// `upstream.timeout = "2s"`, the audit log in `audit_dir`.
pub fn base_config(pki: &TestPki, upstream_url: &str, audit_dir: &Path) -> String {
    let (cert, key) = pki.server_cert();
    format!(
        r#"[server]
listen = "127.0.0.1:0"
cert = {cert}
key = {key}
header_read_timeout = "5s"
idle_timeout = "30s"
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[upstream]
url = {url}
ca = {ca}
connect_timeout = "1s"
timeout = "2s"

[upstream.auth]
token = {token}

[[clients]]
id = "web-eu"
api_key_sha256 = "{key_hash}"

[limits]
per_client = "off"
per_ip = "off"
per_order = "off"
per_card = "off"
card_attempts = "off"
max_body = "16KiB"

[idempotency]
duplicate_window = "off"
one_payment_per_order = false

[audit]
path = {audit_path}
key = {audit_key}

[log]
format = "json"
level = "warn"
"#,
        cert = toml_path(&cert),
        key = toml_path(&key),
        url = toml_str(upstream_url),
        ca = toml_path(&pki.ca_path),
        token = toml_str(UPSTREAM_TOKEN),
        key_hash = sha256_hex(STOREFRONT_KEY),
        audit_path = toml_path(&audit_dir.join("payshim.jsonl")),
        audit_key = toml_str(AUDIT_KEY),
    )
}

/// Sets (`Some(value)`, a TOML literal such as `"\"5s\""` or `"[\"payments\"]"`) or removes
/// (`None`) `key` in the first table headed `section` (`"upstream"`, `"upstream.auth"`,
/// `"clients"` for the first `[[clients]]`). A key that is not there yet is added at the
/// top of the table. Panics if the table does not exist, so a typo cannot turn a test into
/// a no-op.
pub fn set_key(toml: &str, section: &str, key: &str, value: Option<&str>) -> String {
    let headers = [format!("[{section}]"), format!("[[{section}]]")];
    let mut out = Vec::new();
    let mut in_section = false;
    let mut seen_section = false;
    let mut done = false;
    for line in toml.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            if in_section && !done {
                // The key was not in the table: add it at its end.
                if let Some(v) = value {
                    insert_before_blank_tail(&mut out, format!("{key} = {v}"));
                }
                done = true;
            }
            in_section = !seen_section && headers.iter().any(|h| h == trimmed);
            seen_section |= in_section;
        } else if in_section && !done && is_key_line(trimmed, key) {
            if let Some(v) = value {
                out.push(format!("{key} = {v}"));
            }
            done = true;
            continue;
        }
        out.push(line.to_string());
    }
    assert!(seen_section, "no table [{section}] in the config:\n{toml}");
    if in_section
        && !done
        && let Some(v) = value
    {
        out.push(format!("{key} = {v}"));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn is_key_line(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

fn insert_before_blank_tail(out: &mut Vec<String>, line: String) {
    let mut at = out.len();
    while at > 0 && out[at - 1].trim().is_empty() {
        at -= 1;
    }
    out.insert(at, line);
}

/// A running payshim (in this process).
pub struct Payshim {
    /// The public TLS listener.
    pub addr: SocketAddr,
    /// The admin listener (plain HTTP).
    pub admin: SocketAddr,
    /// PEM of the certificate(s) a client must trust to talk to `addr`.
    pub ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), payshim::RunError>>>,
}

impl Drop for Payshim {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Payshim {
    /// Validates `toml` (no environment overrides) and starts payshim on free ports.
    pub async fn start(toml: &str) -> Payshim {
        Self::start_with_env(toml, &HashMap::new()).await
    }

    /// Like `start`, with `PAYSHIM__SECTION__KEY` overrides.
    pub async fn start_with_env(toml: &str, env: &HashMap<String, String>) -> Payshim {
        let config = payshim::config::from_toml(toml, env)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"));
        Self::start_config(config).await
    }

    /// Starts payshim with a validated config, on 127.0.0.1 with kernel-chosen ports
    /// (whatever the config's listen addresses say).
    pub async fn start_config(config: Config) -> Payshim {
        let public = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind public listener");
        let admin = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin listener");
        let listeners = payshim::Listeners { public, admin };
        let (addr, admin) = (listeners.public_addr(), listeners.admin_addr());
        let trust = match &config.server.tls {
            TlsSource::Files { cert, .. } => Trust::File(cert.clone()),
            TlsSource::DevSelfSigned { dir } => {
                let path = dir.join("dev-cert.pem");
                let _ = std::fs::remove_file(&path);
                Trust::DevCert(path)
            }
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut task = tokio::spawn(payshim::run(config, listeners, async move {
            let _ = stop_rx.await;
        }));
        wait_serving(admin, &mut task).await;
        let ca_pem = match trust {
            Trust::File(path) => std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
            Trust::DevCert(path) => wait_for_file(&path, Duration::from_secs(10)).await,
        };
        Payshim {
            addr,
            admin,
            ca_pem,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// `https://localhost:PORT{path}` (`path` starts with '/').
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// `http://127.0.0.1:ADMIN_PORT{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin.port())
    }

    /// A storefront client trusting this payshim's certificate.
    pub fn client(&self, version: HttpVersion) -> TestClient {
        TestClient::new(&self.ca_pem, version)
    }

    /// Triggers the shutdown and waits (at most 15 s) for `run` to return; panics if it
    /// failed or did not return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("payshim task");
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("payshim::run failed: {e}"),
            Ok(Err(e)) => panic!("payshim task panicked: {e}"),
            Err(_) => panic!("payshim did not stop within 15 s"),
        }
    }
}

/// Waits until `run` serves (its admin listener answers `/healthz`); if `run` ends or
/// panics first, fails the test with its error instead of letting requests be refused.
async fn wait_serving(admin: SocketAddr, task: &mut JoinHandle<Result<(), payshim::RunError>>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::select! {
            ended = &mut *task => match ended {
                Ok(Ok(())) => panic!("payshim::run returned before serving"),
                Ok(Err(e)) => panic!("payshim::run failed at start-up: {e}"),
                Err(e) => panic!("payshim::run panicked at start-up: {e}"),
            },
            probe = tokio::time::timeout(Duration::from_secs(1), try_admin_get(admin, "/healthz")) => {
                if let Ok(Ok((200, _))) = probe {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "payshim did not serve /healthz within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

enum Trust {
    File(PathBuf),
    DevCert(PathBuf),
}

/// Waits until `path` holds a complete PEM certificate and returns it.
pub async fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.contains("-----END CERTIFICATE-----")
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed's payment: a valid raw-card purchase (card_connect, Visa test number).
pub fn payment_body() -> String {
    serde_json::json!({
        "data": {
            "gateway": "card_connect",
            "method": "purchase",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "number": "4111111111111111",
            "month": "12",
            "year": "2031",
            "verification_value": "123"
        }
    })
    .to_string()
}

/// `POST /v2/orders/{ORDER}/payments` with JSON and the given extra headers.
pub fn payment_request(payshim: &Payshim, headers: &[(&str, &str)], body: &str) -> Request<Bytes> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(payshim.url(&format!("/v2/orders/{ORDER}/payments")))
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Bytes::copy_from_slice(body.as_bytes()))
        .expect("build payment request")
}

/// A plain HTTP/1.1 GET on the admin listener; (status, body). Panics on I/O errors.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(Duration::from_secs(10), try_admin_get(addr, path))
        .await
        .expect("admin answer within 10 s")
        .unwrap_or_else(|e| panic!("GET {path} on the admin listener {addr}: {e}"))
}

/// A plain HTTP/1.1 GET (`Connection: close`); (status, body).
pub async fn try_admin_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP/1.1 answer: {text:?}"),
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
