//! rustls configuration for both sides: the public listener and the upstream client.
//!
//! One crypto provider, aws-lc-rs, installed explicitly; TLS 1.2 and 1.3 only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

use crate::config::TlsSource;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {path}: {reason}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(
        "config key `server.key`: {reason}; give the private key that server.cert was issued for"
    )]
    KeyPair { reason: String },
    #[error("client CA verifier: {0}")]
    Verifier(String),
    #[error("generating the dev certificate: {0}")]
    DevCert(String),
    #[error("writing the dev certificate to {path}: {source}")]
    DevCertWrite {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The crypto provider used everywhere (aws-lc-rs, no `ring`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The public listener's TLS set-up, built at start and again on each reload.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// In dev mode, where the self-signed certificate's PEM went.
    pub dev_cert: Option<PathBuf>,
    /// The served certificate's notAfter (Unix seconds), for the expiry metric.
    pub not_after: i64,
    /// SHA-256 of the served leaf certificate: tells a reload whether it changed.
    pub leaf_sha256: [u8; 32],
}

/// The server side: certificate, ALPN h2 + http/1.1, and client certificates when a
/// client CA is configured.
pub fn server_config(source: &TlsSource, client_ca: Option<&Path>) -> Result<ServerTls, TlsError> {
    let (chain, key, dev_path) = match source {
        TlsSource::Files { cert, key } => (
            read_certs("server.cert", cert)?,
            read_key("server.key", key)?,
            None,
        ),
        TlsSource::DevSelfSigned { dir } => {
            let (chain, key, path) = dev_certificate(dir)?;
            (chain, key, Some(path))
        }
    };
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(root_store("server.client_ca", ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let not_after = not_after(&chain[0]);
    let leaf_sha256 = sha2::Sha256::digest(chain[0].as_ref()).into();
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::KeyPair {
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        dev_cert: dev_path,
        not_after,
        leaf_sha256,
    })
}

/// A certificate's notAfter as Unix seconds (0 when it does not parse).
fn not_after(leaf: &CertificateDer<'_>) -> i64 {
    x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_or(0, |(_, cert)| cert.validity().not_after.timestamp())
}

/// The upstream side: the public web PKI roots plus an optional private CA; ALPN offers
/// `h2` and `http/1.1`.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = extra_ca {
        for cert in read_certs("upstream.ca", ca)? {
            roots.add(cert)?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The pool speaks HTTP/2 when the API chooses it, else HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn root_store(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(key, path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn read_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

type DevCert = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    PathBuf,
);

/// A fresh self-signed certificate for localhost and 127.0.0.1. Only the certificate is
/// written (for `curl --cacert`); the key never leaves memory.
fn dev_certificate(dir: &Path) -> Result<DevCert, TlsError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::DevCert(e.to_string()))?;
    let path = dir.join("dev-cert.pem");
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&path, certified.cert.pem()))
        .map_err(|source| TlsError::DevCertWrite {
            path: path.clone(),
            source,
        })?;
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| TlsError::DevCert(e.to_string()))?;
    Ok((vec![certified.cert.der().clone()], key, path))
}

/// The identity a client certificate presents: its subject CN and DNS SANs, used to map
/// an mTLS connection to a configured client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub names: Vec<String>,
}

/// Reads the subject CN and the DNS SANs of a verified client certificate.
pub fn identity(leaf: &CertificateDer<'_>) -> PeerIdentity {
    let mut names = Vec::new();
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(format!("CN={s}"));
            }
        }
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                    names.push(format!("DNS:{d}"));
                }
            }
        }
    }
    PeerIdentity { names }
}
