//! Live reload through the real binary: SIGHUP and watched files swap the certificate
//! for new handshakes while open connections and payments in flight carry on; a broken
//! certificate, an invalid config or a key that needs a restart is refused whole; the
//! storefronts and the session key change without a restart.
//!
//! `certificates.rs`: a new certificate by SIGHUP or by watched files (a Kubernetes Secret
//! volume too); `refusals.rs`: what a reload refuses, whole; `credentials.rs`: storefronts,
//! upstream credentials (and the log level) and the session key, changed live;
//! `audit.rs`: reloads in the audit log and an audit key rotated mid-run; `quotas.rs`: a
//! quota reload keeps the counters of the quotas it did not change. The helpers they share
//! are here.

mod audit;
mod certificates;
mod credentials;
mod quotas;
mod refusals;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::support::payshim::{ORDER, admin_get, base_config, set_key, toml_path};
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
