//! Live reload through the real binary: SIGHUP and watched files swap the certificate
//! for new handshakes while open connections and payments in flight carry on; a broken
//! certificate, an invalid config or a key that needs a restart is refused whole; the
//! storefronts and the session key change without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use rustls::crypto::aws_lc_rs::default_provider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::cards::Binary;
use crate::support::payshim::{
    ORDER, SESSION_KEY, STOREFRONT_KEY, admin_get, base_config, payment_body, set_key, sha256_hex,
    toml_path, toml_str,
};
use crate::support::{HttpVersion, TestClient, TestPki, Upstream, handler, moltin_like};

/// Generous for a loaded 2-core machine: every wait below ends as soon as it is met.
const WAIT: Duration = Duration::from_secs(20);

/// The scene: a PKI, an upstream double, a temp dir with the TLS files at fixed paths.
struct Scene {
    pki: TestPki,
    upstream: Upstream,
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Scene {
    /// `payment_delay`: how long the upstream double takes to answer a payment.
    async fn new(payment_delay: Duration) -> Scene {
        let pki = TestPki::new();
        let inner = moltin_like();
        let upstream = Upstream::start(
            &pki,
            handler(move |req| {
                let reply = inner(req);
                if req.path.ends_with("/payments") {
                    reply.delayed(payment_delay)
                } else {
                    reply
                }
            }),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let scene = Scene {
            pki,
            upstream,
            dir,
            cert,
            key,
        };
        scene.install_new_pair(&scene.cert, &scene.key);
        scene
    }

    /// A fresh certificate and key written over `cert` and `key`; returns the new leaf's
    /// fingerprint.
    fn install_new_pair(&self, cert: &Path, key: &Path) -> [u8; 32] {
        let (new_cert, new_key) = self.pki.server_cert();
        std::fs::copy(&new_key, key).unwrap();
        std::fs::copy(&new_cert, cert).unwrap();
        pem_fingerprint(cert)
    }

    /// The base config on this scene's TLS files, logging at info, watching every
    /// `interval` (a TOML string such as `"\"off\""`).
    fn config(&self, interval: &str) -> String {
        let config = base_config(
            &self.pki,
            &self.upstream.url(),
            &self.dir.path().join("audit"),
        );
        let config = set_key(&config, "server", "cert", Some(&toml_path(&self.cert)));
        let config = set_key(&config, "server", "key", Some(&toml_path(&self.key)));
        let config = set_key(&config, "server", "reload_check_interval", Some(interval));
        set_key(&config, "log", "level", Some("\"info\""))
    }

    async fn start(&self, config: &str) -> Binary {
        Binary::start(self.dir.path(), "payshim", config).await
    }

    fn client(&self) -> TestClient {
        TestClient::new(&self.pki.ca_pem, HttpVersion::Http1)
    }
}

/// Rewrites the binary's config file (listeners kept on port 0, as `Binary::start` wrote
/// them), atomically, as an editor or a config manager would.
fn rewrite_config(binary: &Binary, config: &str) {
    let any_port = Some("\"127.0.0.1:0\"");
    let config = set_key(config, "server", "listen", any_port);
    let config = set_key(&config, "admin", "listen", any_port);
    let tmp = binary.config.with_extension("tmp");
    std::fs::write(&tmp, config).unwrap();
    std::fs::rename(&tmp, &binary.config).unwrap();
}

fn pem_fingerprint(cert: &Path) -> [u8; 32] {
    let leaf = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    Sha256::digest(leaf.as_ref()).into()
}

/// A new TLS connection to `binary`, trusting the test CA only.
async fn connect(binary: &Binary, ca_pem: &str) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(binary.public).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}\n{}", binary.output()))
}

/// The fingerprint of the certificate a new handshake sees.
async fn served_fingerprint(binary: &Binary, ca_pem: &str) -> [u8; 32] {
    let tls = connect(binary, ca_pem).await;
    let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
    Sha256::digest(leaf.as_ref()).into()
}

/// One HTTP/1.1 request on an open connection; the answer's status.
async fn status_on(tls: &mut TlsStream<TcpStream>, path: &str, bearer: &str) -> u16 {
    let head =
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {bearer}\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .expect("an answer on the open connection")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

/// The value of the metric line starting with `series` (name and labels), 0 if absent.
async fn metric(binary: &Binary, series: &str) -> f64 {
    let (_, text) = admin_get(binary.admin, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn wait_metric(binary: &Binary, series: &str, at_least: f64) {
    let deadline = Instant::now() + WAIT;
    while metric(binary, series).await < at_least {
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}\n{}",
            binary.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_served(binary: &Binary, ca_pem: &str, want: [u8; 32]) {
    let deadline = Instant::now() + WAIT;
    while served_fingerprint(binary, ca_pem).await != want {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served\n{}",
            binary.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const OK: &str = "payshim_reloads_total{result=\"ok\"}";
const REFUSED: &str = "payshim_reloads_total{result=\"refused\"}";

fn transactions_path() -> String {
    format!("/v2/orders/{ORDER}/transactions")
}

async fn get_status(client: &TestClient, binary: &Binary, bearer: &str) -> u16 {
    let resp = client
        .get(&binary.url(&transactions_path()), Some(bearer))
        .await
        .unwrap_or_else(|e| panic!("GET transactions: {e}\n{}", binary.output()));
    resp.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_the_new_certificate_and_keeps_connections_and_payments() {
    let scene = Scene::new(Duration::from_millis(1500)).await;
    let mut binary = scene.start(&scene.config("\"off\"")).await;
    let ca = scene.pki.ca_pem.clone();
    let first = pem_fingerprint(&scene.cert);
    assert_eq!(served_fingerprint(&binary, &ca).await, first);
    assert!(
        metric(
            &binary,
            "payshim_tls_certificate_not_after_timestamp_seconds"
        )
        .await
            > 0.0
    );

    let mut open = connect(&binary, &ca).await;
    let client = scene.client();
    let request = Request::post(binary.url(&format!("/v2/orders/{ORDER}/payments")))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(Bytes::from(payment_body()))
        .unwrap();
    let payment = tokio::spawn(async move { client.send(request).await });
    assert!(
        scene.upstream.wait_for_requests(1, WAIT).await,
        "payment never forwarded"
    );

    let second = scene.install_new_pair(&scene.cert, &scene.key);
    assert_ne!(first, second);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(served_fingerprint(&binary, &ca).await, second);

    let answer = payment
        .await
        .unwrap()
        .expect("the payment in flight is answered");
    assert_eq!(answer.status, 201, "{}", answer.text());
    let status = status_on(&mut open, &transactions_path(), STOREFRONT_KEY).await;
    assert_eq!(
        status, 200,
        "the connection opened before the reload still serves"
    );
    assert_eq!(metric(&binary, REFUSED).await, 0.0);
    binary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_alone_reload_overwritten_files_and_a_swapped_secret_volume() {
    let scene = Scene::new(Duration::ZERO).await;
    // A mounted Kubernetes Secret: the visible files are symlinks through `..data`,
    // which the kubelet points at a new timestamped directory.
    let volume = scene.dir.path().join("secret");
    let first_dir = volume.join("..2026_12_05_first");
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::copy(&scene.cert, first_dir.join("tls.crt")).unwrap();
    std::fs::copy(&scene.key, first_dir.join("tls.key")).unwrap();
    std::os::unix::fs::symlink("..2026_12_05_first", volume.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), volume.join(name)).unwrap();
    }
    let (cert, key) = (volume.join("tls.crt"), volume.join("tls.key"));
    let config = scene.config("\"200ms\"");
    let config = set_key(&config, "server", "cert", Some(&toml_path(&cert)));
    let config = set_key(&config, "server", "key", Some(&toml_path(&key)));
    let mut binary = scene.start(&config).await;
    let ca = scene.pki.ca_pem.clone();
    assert_eq!(
        served_fingerprint(&binary, &ca).await,
        pem_fingerprint(&cert)
    );

    // Overwritten in place, no signal.
    let overwritten =
        scene.install_new_pair(&first_dir.join("tls.crt"), &first_dir.join("tls.key"));
    wait_served(&binary, &ca, overwritten).await;

    // The kubelet's swap: a new directory, `..data` replaced by a rename.
    let second_dir = volume.join("..2026_12_05_second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let swapped = scene.install_new_pair(&second_dir.join("tls.crt"), &second_dir.join("tls.key"));
    std::os::unix::fs::symlink("..2026_12_05_second", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    wait_served(&binary, &ca, swapped).await;
    assert!(metric(&binary, OK).await >= 2.0);
    binary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_certificate_invalid_config_and_restart_only_keys_are_refused() {
    let scene = Scene::new(Duration::ZERO).await;
    let config = scene.config("\"off\"");
    let mut binary = scene.start(&config).await;
    let ca = scene.pki.ca_pem.clone();
    let served = pem_fingerprint(&scene.cert);
    let good_cert = std::fs::read(&scene.cert).unwrap();

    // Each refusal: counted, the ERROR names the key, the old certificate is served,
    // and payshim stays ready.
    let mut refusals = 0.0;
    let mut refused = async |binary: &mut Binary, key: &str| {
        binary.signal("HUP");
        refusals += 1.0;
        wait_metric(binary, REFUSED, refusals).await;
        let log = std::fs::read_to_string(&binary.stdout).unwrap();
        let line = log
            .lines()
            .rfind(|l| l.contains("reload refused"))
            .unwrap_or_else(|| panic!("no refusal logged\n{}", binary.output()));
        assert!(line.contains("\"ERROR\""), "{line}");
        assert!(line.contains(key), "the refusal names {key}: {line}");
        assert_eq!(served_fingerprint(binary, &ca).await, served);
        assert_eq!(admin_get(binary.admin, "/readyz").await.0, 200);
    };

    std::fs::write(&scene.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    refused(&mut binary, "server.cert").await;

    // A certificate with another certificate's key.
    let (other_cert, _) = scene.pki.server_cert();
    std::fs::copy(&other_cert, &scene.cert).unwrap();
    refused(&mut binary, "server.key").await;
    std::fs::write(&scene.cert, &good_cert).unwrap();

    rewrite_config(
        &binary,
        &set_key(&config, "limits", "per_client", Some("\"lots\"")),
    );
    refused(&mut binary, "limits.per_client").await;

    rewrite_config(
        &binary,
        &set_key(&config, "upstream", "timeout", Some("\"9s\"")),
    );
    refused(&mut binary, "upstream.timeout").await;
    rewrite_config(&binary, &set_key(&config, "server", "workers", Some("3")));
    refused(&mut binary, "server.workers").await;

    // Put back, the next reload goes through.
    rewrite_config(&binary, &config);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(metric(&binary, REFUSED).await, refusals);
    binary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storefront_is_added_and_another_revoked_by_reload() {
    let scene = Scene::new(Duration::from_millis(1500)).await;
    let config = scene.config("\"off\"");
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    const NEW_KEY: &str = "storefront-key-added-by-reload-4c2e9a7b1d";
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    assert_eq!(get_status(&client, &binary, NEW_KEY).await, 401);
    // A payment of the storefront about to be revoked, in flight during the reload: it
    // finishes with the config it started with.
    let in_flight = {
        let client = scene.client();
        let binary_url = binary.url("");
        tokio::spawn(async move {
            let request = Request::post(format!("{binary_url}/v2/orders/{ORDER}/payments"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
                .body(Bytes::from(payment_body()))
                .unwrap();
            client.send(request).await
        })
    };
    let forwarded = scene.upstream.wait_for_requests(2, WAIT).await;
    assert!(forwarded, "payment never forwarded");

    let replaced = config.replace(
        &format!(
            "id = \"web-eu\"\napi_key_sha256 = \"{}\"",
            sha256_hex(STOREFRONT_KEY)
        ),
        &format!(
            "id = \"web-us\"\napi_key_sha256 = \"{}\"",
            sha256_hex(NEW_KEY)
        ),
    );
    assert_ne!(replaced, config);
    rewrite_config(&binary, &replaced);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(get_status(&client, &binary, NEW_KEY).await, 200);
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 401);
    let answer = in_flight
        .await
        .unwrap()
        .expect("the payment in flight is answered");
    assert_eq!(answer.status, 201, "{}", answer.text());
    let audit = payshim::audit::read_records(&scene.dir.path().join("audit").join("payshim.jsonl"));
    let completed = audit
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"payment.completed\"") && l.contains("\"web-eu\""))
        .count();
    assert_eq!(completed, 1, "completed under the client it started with");
    binary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_upstream_credentials_fetch_a_new_token_and_the_log_level_changes() {
    const CLIENT_ID: &str = "store-client-id-reload-1";
    let scene = Scene::new(Duration::ZERO).await;
    let config = set_key(&scene.config("\"off\""), "upstream.auth", "token", None);
    let config = set_key(
        &config,
        "upstream.auth",
        "client_id",
        Some(&toml_str(CLIENT_ID)),
    );
    let with_secret = |secret: &str| {
        set_key(
            &config,
            "upstream.auth",
            "client_secret",
            Some(&toml_str(secret)),
        )
    };
    let config = with_secret("store-client-secret-before-rotation-1");
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    let expiry = "payshim_upstream_token_expiry_timestamp_seconds";
    assert!(metric(&binary, expiry).await > 0.0);
    let bearers = |upstream: &Upstream| -> Vec<Option<String>> {
        upstream
            .requests()
            .iter()
            .filter(|r| r.path.contains("/transactions"))
            .map(|r| r.header("authorization"))
            .collect()
    };
    assert_eq!(
        bearers(&scene.upstream),
        [Some("Bearer upstream-token-1".to_string())]
    );

    // New credentials (and a quieter log): a new token is fetched at once and used.
    let rotated = with_secret("store-client-secret-after-rotation-2");
    rewrite_config(
        &binary,
        &set_key(&rotated, "log", "level", Some("\"error\"")),
    );
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    let last = bearers(&scene.upstream).pop().unwrap();
    assert_eq!(last.as_deref(), Some("Bearer upstream-token-2"));
    let token_calls: Vec<String> = scene
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/oauth/access_token"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(token_calls.len(), 2);
    assert!(
        token_calls[1].contains("after-rotation-2"),
        "{}",
        token_calls[1]
    );

    // At level error, a SIGHUP's info line is no longer written.
    let received = || {
        let log = std::fs::read_to_string(&binary.stdout).unwrap();
        log.matches("SIGHUP received").count()
    };
    let before = received();
    binary.signal("HUP");
    wait_metric(&binary, OK, 2.0).await;
    assert_eq!(received(), before, "info lines after log.level = \"error\"");
    binary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_outlives_a_session_key_rotation_and_a_forged_one_does_not() {
    const NEW_SESSION_KEY: &str = "session-key-rotated-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let scene = Scene::new(Duration::ZERO).await;
    let browser = "\n[[clients]]\nid = \"web-browser\"\npublic_id = \"pk-browser-1\"\n";
    let auth = format!("\n[auth]\nsession_key = {}\n", toml_str(SESSION_KEY));
    let config = format!("{}{browser}{auth}", scene.config("\"off\""));
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    let issue = async |binary: &Binary| {
        let resp = client
            .send(
                Request::post(binary.url("/oauth/access_token"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Bytes::from("grant_type=implicit&client_id=pk-browser-1"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()["access_token"].as_str().unwrap().to_string()
    };
    let before = issue(&binary).await;
    assert_eq!(get_status(&client, &binary, &before).await, 200);

    let rotated = set_key(
        &config,
        "auth",
        "session_key",
        Some(&toml_str(NEW_SESSION_KEY)),
    );
    let rotated = set_key(
        &rotated,
        "auth",
        "previous_session_keys",
        Some(&format!("[{}]", toml_str(SESSION_KEY))),
    );
    rewrite_config(&binary, &rotated);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(
        get_status(&client, &binary, &before).await,
        200,
        "issued before the rotation"
    );
    let after = issue(&binary).await;
    assert_ne!(after, before);
    assert_eq!(get_status(&client, &binary, &after).await, 200);
    // The same payload under a MAC that is not one of the keys'.
    let (signed, mac) = after.rsplit_once('.').unwrap();
    let flipped = if mac.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &mac[1..]);
    assert_eq!(get_status(&client, &binary, &forged).await, 401);

    // Once the old key is dropped, its tokens are refused.
    rewrite_config(
        &binary,
        &set_key(
            &config,
            "auth",
            "session_key",
            Some(&toml_str(NEW_SESSION_KEY)),
        ),
    );
    binary.signal("HUP");
    wait_metric(&binary, OK, 2.0).await;
    assert_eq!(get_status(&client, &binary, &before).await, 401);
    assert_eq!(get_status(&client, &binary, &after).await, 200);
    binary.stop().await;
}

/// A payment with the support's card; panics unless 201.
async fn pay(client: &TestClient, binary: &Binary) {
    let request = Request::post(binary.url(&format!("/v2/orders/{ORDER}/payments")))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(Bytes::from(payment_body()))
        .unwrap();
    let resp = client.send(request).await.expect("payment");
    assert_eq!(resp.status, 201, "{}\n{}", resp.text(), binary.output());
}

/// `payshim audit verify` with the key files given, on one audit file.
fn verify(keys: &[&Path], audit: &Path) -> std::process::Output {
    let mut cmd = std::process::Command::new(crate::support::cards::BIN);
    cmd.args(["audit", "verify"]);
    for key in keys {
        cmd.arg("--key-file").arg(key);
    }
    cmd.arg(audit).current_dir(audit.parent().unwrap());
    for (key, _) in std::env::vars() {
        if key.starts_with("PAYSHIM__") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run payshim audit verify")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_audited_and_the_audit_key_rotates_mid_run() {
    const NEW_AUDIT_KEY: &str = "audit-key-rotated-by-reload-9e8d7c6b5a4f3e2d1c0b";
    let scene = Scene::new(Duration::ZERO).await;
    let audit = scene.dir.path().join("audit").join("payshim.jsonl");
    let auth = format!("\n[auth]\nsession_key = {}\n", toml_str(SESSION_KEY));
    let config = format!("{}{auth}", scene.config("\"off\""));
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    pay(&client, &binary).await;

    rewrite_config(
        &binary,
        &set_key(&config, "limits", "per_ip", Some("\"often\"")),
    );
    binary.signal("HUP");
    wait_metric(&binary, REFUSED, 1.0).await;

    // The documented rotation: a new chain key, the old one kept as previous and pinned as
    // the fingerprint key (card fingerprints and limits keep their history).
    let old_key = toml_str(crate::support::payshim::AUDIT_KEY);
    let rotated = set_key(&config, "audit", "key", Some(&toml_str(NEW_AUDIT_KEY)));
    let rotated = set_key(
        &rotated,
        "audit",
        "previous_keys",
        Some(&format!("[{old_key}]")),
    );
    let rotated = set_key(&rotated, "audit", "fingerprint_key", Some(&old_key));
    rewrite_config(&binary, &rotated);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    pay(&client, &binary).await;
    binary.stop().await;

    let text = payshim::audit::read_records(&audit).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "system.started",
            "payment.forwarded",
            "payment.completed",
            "config.reload_refused",
            "audit.key_rotated",
            "config.reloaded",
            "payment.forwarded",
            "payment.completed",
            "system.stopped",
        ]
    );
    let refused = &records[3];
    assert_eq!(refused["trigger"], "signal", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("limits.per_ip"),
        "{refused}"
    );
    let reloaded = &records[5];
    assert_eq!(
        reloaded["changed"],
        serde_json::json!(["audit"]),
        "{reloaded}"
    );
    assert_ne!(reloaded["config_hash"], records[0]["config_hash"]);
    for secret in [
        crate::support::payshim::AUDIT_KEY,
        NEW_AUDIT_KEY,
        SESSION_KEY,
        STOREFRONT_KEY,
    ] {
        assert!(
            !text.contains(secret),
            "a configured secret is in the audit log"
        );
    }

    let dir = scene.dir.path();
    let (old_file, new_file) = (dir.join("old.key"), dir.join("new.key"));
    std::fs::write(&old_file, crate::support::payshim::AUDIT_KEY).unwrap();
    std::fs::write(&new_file, NEW_AUDIT_KEY).unwrap();
    let both = verify(&[&old_file, &new_file], &audit);
    assert!(both.status.success(), "{both:?}");
    let only_new = verify(&[&new_file], &audit);
    assert_eq!(only_new.status.code(), Some(2), "{only_new:?}");
    let stderr = String::from_utf8_lossy(&only_new.stderr);
    assert!(
        stderr.contains("line 1:"),
        "names the first record it cannot verify: {stderr}"
    );
    let only_old = verify(&[&old_file], &audit);
    assert_eq!(only_old.status.code(), Some(2), "{only_old:?}");
    let stderr = String::from_utf8_lossy(&only_old.stderr);
    assert!(
        stderr.contains("line 6:"),
        "the first record after the switch: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_reload_keeps_the_counters_of_the_quotas_it_did_not_change() {
    let scene = Scene::new(Duration::ZERO).await;
    let config = set_key(
        &scene.config("\"off\""),
        "limits",
        "per_client",
        Some("\"2/h\""),
    );
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    for _ in 0..2 {
        assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    }
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 429);

    // Another quota changed: the storefront's allowance is still spent.
    rewrite_config(
        &binary,
        &set_key(&config, "limits", "per_order", Some("\"9/h\"")),
    );
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 429);

    // Its own quota changed: a new quota, counted afresh.
    rewrite_config(
        &binary,
        &set_key(&config, "limits", "per_client", Some("\"5/h\"")),
    );
    binary.signal("HUP");
    wait_metric(&binary, OK, 2.0).await;
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    binary.stop().await;
}
