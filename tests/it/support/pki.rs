//! A throw-away PKI for tests: one CA per `TestPki`, leaf certificates signed by it, every
//! file written into a `TempDir` owned by the struct (removed when it is dropped).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::crypto::aws_lc_rs::default_provider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate written to `dir()/ca.pem`.
    pub ca_path: PathBuf,
    dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
    serial: AtomicUsize,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// A fresh CA ("payshim test CA", ECDSA P-256, valid from yesterday for a year).
    pub fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("payshim-pki-")
            .tempdir()
            .expect("create pki temp dir");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "payshim test CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "payshim tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, -DAY_SECS, 365 * DAY_SECS);
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        let ca_pem = cert.pem();
        let ca_path = dir.path().join("ca.pem");
        fs::write(&ca_path, &ca_pem).expect("write ca.pem");
        TestPki {
            ca_pem,
            ca_path,
            dir,
            issuer: Issuer::new(params, key),
            serial: AtomicUsize::new(0),
        }
    }

    /// The folder holding every file this PKI wrote.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server leaf for DNS `localhost` and IP `127.0.0.1`, signed by the CA.
    /// Returns (chain PEM: leaf then CA, key PEM). Each call makes a new key and new files.
    pub fn server_cert(&self) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server SANs");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        set_validity(&mut params, -DAY_SECS, 90 * DAY_SECS);
        self.issue("server", params)
    }

    /// A server leaf for the given DNS names, valid from `from_secs` to `to_secs` from now
    /// (negative: in the past), signed by the CA: a wrong host name or an expired
    /// certificate for upstream verification tests.
    pub fn server_cert_for(
        &self,
        names: &[&str],
        from_secs: i64,
        to_secs: i64,
    ) -> (PathBuf, PathBuf) {
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).expect("server SANs");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, from_secs, to_secs);
        self.issue("server-for", params)
    }

    /// A rustls server config (ALPN h2 and http/1.1) serving `chain` and `key`.
    pub fn server_config_from(chain: &Path, key: &Path) -> ServerConfig {
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(load_certs(chain), load_key(key))
            .expect("server cert and key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// A client-auth leaf with subject `CN=cn` and SAN DNS `cn`, valid now.
    pub fn client_cert(&self, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(
            &format!("client-{}", file_safe(cn)),
            client_params(cn, -DAY_SECS, 90 * DAY_SECS),
        )
    }

    /// Like `client_cert`, but expired: valid from 30 days ago until yesterday.
    pub fn expired_client_cert(&self, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(
            &format!("expired-{}", file_safe(cn)),
            client_params(cn, -30 * DAY_SECS, -DAY_SECS),
        )
    }

    /// A rustls server config (aws-lc-rs, TLS 1.2 + 1.3, ALPN h2 and http/1.1) with a fresh
    /// `server_cert()`. With `require_client_cert`, clients must present a certificate
    /// signed by this CA (mTLS).
    pub fn server_config(&self, require_client_cert: bool) -> ServerConfig {
        let (chain, key) = self.server_cert();
        let provider = Arc::new(default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(&self.ca_path) {
                roots.add(cert).expect("add CA to root store");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(load_certs(&chain), load_key(&key))
            .expect("server cert and key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    fn issue(&self, stem: &str, params: CertificateParams) -> (PathBuf, PathBuf) {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let cert_path = self.dir.path().join(format!("{stem}-{n}.pem"));
        let key_path = self.dir.path().join(format!("{stem}-{n}.key"));
        fs::write(&cert_path, format!("{}{}", cert.pem(), self.ca_pem)).expect("write cert");
        fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("read key {}: {e}", path.display()))
}

fn client_params(cn: &str, valid_from: i64, valid_to: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = vec![SanType::DnsName(
        cn.to_string()
            .try_into()
            .expect("client CN must be a valid DNS name (IA5)"),
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, valid_from, valid_to);
    params
}

/// Sets not_before / not_after to now + the given offsets in seconds (negative: in the past).
/// (rcgen takes `time::OffsetDateTime`; there is no direct `time` dependency, so the values are
/// built from `rcgen::date_time_ymd` plus a std `Duration`.)
fn set_validity(params: &mut CertificateParams, from_secs: i64, to_secs: i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let at = |offset: i64| {
        let secs = u64::try_from(now + offset).expect("validity after 1970");
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(secs)
    };
    params.not_before = at(from_secs);
    params.not_after = at(to_secs);
}

/// Seconds in a day, for validity offsets.
pub const DAY_SECS: i64 = 24 * 60 * 60;

/// A CN reduced to characters that are safe in a file name.
fn file_safe(cn: &str) -> String {
    cn.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
