//! Configuration in two stages.
//!
//! [`RawConfig`] is what serde reads from the TOML file plus `PAYSHIM__SECTION__KEY`
//! environment overrides: strings and options, exactly as an operator wrote them.
//! [`Config`] is the validated form, built once at start-up by `TryFrom`; nothing on the
//! request path ever parses a duration, a size or an address again. Every failure names
//! the key and says what is expected, and never echoes a secret.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Deserialize;

use crate::route::{RouteName, RoutePattern};

/// A configuration problem, named by its key so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Loads the file (if given) and the environment overrides, then validates.
///
/// `env` is passed in as a value so tests never touch the process environment.
pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::new(
                "--config",
                format!("file {} does not exist", path.display()),
            ));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    with_env(builder, env)
}

/// Loads from a TOML string (tests and the embedded default).
pub fn from_toml(toml: &str, env: &HashMap<String, String>) -> Result<Config> {
    let builder = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml));
    with_env(builder, env)
}

/// Adds the `PAYSHIM__SECTION__KEY` overrides from `env`, deserializes, validates.
fn with_env(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    env: &HashMap<String, String>,
) -> Result<Config> {
    let overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("PAYSHIM__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let raw: RawConfig = builder
        .add_source(
            config::Environment::with_prefix("PAYSHIM")
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides)),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::new(config_error_key(&e), e.to_string()))?;
    Config::try_from(raw)
}

fn config_error_key(e: &config::ConfigError) -> String {
    // serde reports an unknown key as "unknown field `listn`, expected ..." on its table.
    let text = e.to_string();
    let unknown = text
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field.to_string());
    let table = match e {
        config::ConfigError::Type { key: Some(k), .. }
        | config::ConfigError::At { key: Some(k), .. } => Some(k.clone()),
        _ => None,
    };
    if let Some(field) = unknown {
        return match table {
            Some(t) if !t.is_empty() => format!("{t}.{field}"),
            _ => field,
        };
    }
    match e {
        config::ConfigError::Type { key: Some(k), .. } => k.clone(),
        config::ConfigError::NotFound(k) => k.clone(),
        config::ConfigError::At { key: Some(k), .. } => k.clone(),
        _ => "(file)".to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Raw form: what the file says.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    admin: RawAdmin,
    upstream: RawUpstream,
    auth: RawAuth,
    clients: Vec<RawClient>,
    routes: Vec<RawRoute>,
    limits: RawLimits,
    audit: RawAudit,
    log: RawLog,
    payments: RawPayments,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    dev_cert_dir: Option<PathBuf>,
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_header_size: Option<String>,
    max_h2_streams: Option<u32>,
    shutdown_grace: Option<String>,
    workers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    url: Option<String>,
    ca: Option<PathBuf>,
    connect_timeout: Option<String>,
    timeout: Option<String>,
    auth: RawUpstreamAuth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstreamAuth {
    token: Option<SecretString>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    session_key: Option<SecretString>,
    session_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawClient {
    id: String,
    public_id: Option<String>,
    allowed_origins: Vec<String>,
    api_key_sha256: Option<String>,
    secret_sha256: Option<String>,
    cert_subject: Option<String>,
    routes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRoute {
    method: String,
    path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    per_client: Option<String>,
    per_ip: Option<String>,
    per_order: Option<String>,
    per_card: Option<String>,
    card_attempts: Option<String>,
    decline_ratio: Option<f64>,
    decline_window: Option<u32>,
    decline_cooldown: Option<String>,
    max_keys: Option<usize>,
    max_body: Option<String>,
    redis_url: Option<String>,
    redis_timeout: Option<String>,
    on_store_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    path: Option<PathBuf>,
    key: Option<SecretString>,
    max_file_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
    flush_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPayments {
    gateways: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------
// Validated form: what the program uses.

/// The whole validated configuration.
#[derive(Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub auth: AuthConfig,
    pub clients: Vec<ClientConfig>,
    pub routes: Vec<RoutePattern>,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
    pub payments: PaymentsConfig,
}

#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Operator-provided chain and key (PEM).
    Files { cert: PathBuf, key: PathBuf },
    /// Neither given: a self-signed localhost certificate is generated at start-up; its
    /// PEM is written into this directory so curl can trust it.
    DevSelfSigned { dir: PathBuf },
}

#[derive(Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: TlsSource,
    pub client_ca: Option<PathBuf>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// One address cannot hold more than this many connections (idle or slow clients
    /// must not starve the others).
    pub max_connections_per_ip: usize,
    pub max_header_size: usize,
    pub max_h2_streams: u32,
    pub shutdown_grace: Duration,
    /// Runtime worker threads; 0 means one per available core.
    pub workers: usize,
}

#[derive(Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// Where forwarded requests go.
#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// payshim answers allowed routes itself (dev default; loopback listeners only).
    Sandbox,
    /// Scheme and authority of the real API, e.g. `https://api.moltin.com`.
    Remote(http::uri::Scheme, http::uri::Authority),
}

#[derive(Debug)]
pub struct UpstreamConfig {
    pub target: UpstreamTarget,
    pub ca: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub auth: UpstreamAuth,
}

/// How payshim obtains the store's real bearer token.
pub enum UpstreamAuth {
    Static(SecretString),
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
    },
    /// Sandbox mode without a token: nothing leaves the process.
    None,
}

impl fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAuth::Static(_) => f.write_str("Static(token: ****)"),
            UpstreamAuth::ClientCredentials { client_id, .. } => {
                write!(
                    f,
                    "ClientCredentials(client_id: {client_id}, client_secret: ****)"
                )
            }
            UpstreamAuth::None => f.write_str("None"),
        }
    }
}

pub struct AuthConfig {
    pub session_key: Option<SecretSlice<u8>>,
    pub session_ttl: Duration,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "session_key",
                &self
                    .session_key
                    .as_ref()
                    .map(|_| "****")
                    .unwrap_or("(none)"),
            )
            .field("session_ttl", &humantime::format_duration(self.session_ttl))
            .finish()
    }
}

/// One storefront allowed to use payshim.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub id: String,
    pub public_id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub api_key_sha256: Option<[u8; 32]>,
    pub secret_sha256: Option<[u8; 32]>,
    pub cert_subject: Option<String>,
    /// `None`: every route.
    pub routes: Option<Vec<RouteName>>,
}

/// A GCRA quota: `count` requests per `period`, with `burst` allowed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub count: u32,
    pub period: Duration,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Deny,
    Local,
}

impl OnStoreError {
    /// The config value, as `check-config` prints it back.
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Deny => "deny",
            OnStoreError::Local => "local",
        }
    }
}

#[derive(Debug)]
pub struct LimitsConfig {
    pub per_client: Option<Quota>,
    pub per_ip: Option<Quota>,
    pub per_order: Option<Quota>,
    pub per_card: Option<Quota>,
    /// Distinct (expiry, CVV) combinations tried per card in a window (card cracking).
    pub card_attempts: Option<Quota>,
    /// Per-client breaker: throttle a storefront whose recent payments are mostly declined.
    pub decline_ratio: f64,
    pub decline_window: u32,
    pub decline_cooldown: Duration,
    pub max_keys: usize,
    pub max_body: usize,
    pub redis_url: Option<String>,
    pub redis_timeout: Duration,
    pub on_store_error: OnStoreError,
}

pub struct AuditConfig {
    pub path: PathBuf,
    pub key: SecretSlice<u8>,
    pub max_file_size: u64,
}

impl fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditConfig")
            .field("path", &self.path)
            .field("key", &"****")
            .field("max_file_size", &self.max_file_size)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    /// The config value, as `check-config` prints it back.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        }
    }
}

#[derive(Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// How long log lines may wait in memory to be written in one batch; zero writes
    /// each line as it is logged.
    pub flush_interval: Duration,
    /// Not a key: set when `upstream.url = "sandbox"`, so that every line says so and a
    /// sandbox log can never pass for a real one.
    pub sandbox: bool,
}

#[derive(Debug)]
pub struct PaymentsConfig {
    pub gateways: Vec<String>,
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config> {
        let server = server_config(raw.server)?;
        let admin = AdminConfig {
            listen: socket_addr(
                "admin.listen",
                raw.admin.listen.as_deref(),
                "127.0.0.1:9901",
            )?,
        };
        let upstream = upstream_config(raw.upstream)?;
        if matches!(upstream.target, UpstreamTarget::Sandbox) {
            for (key, addr) in [
                ("server.listen", server.listen),
                ("admin.listen", admin.listen),
            ] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::new(
                        key,
                        "sandbox mode (upstream.url = \"sandbox\") only listens on loopback \
                         addresses; set upstream.url to the real API to listen elsewhere",
                    ));
                }
            }
        }
        let auth = auth_config(raw.auth)?;
        let clients = clients_config(raw.clients, &auth)?;
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                RoutePattern::parse(&r.method, &r.path)
                    .map_err(|m| ConfigError::new(format!("routes[{i}]"), m))
            })
            .collect::<Result<Vec<_>>>()?;
        let limits = limits_config(raw.limits)?;
        let audit = audit_config(raw.audit)?;
        let mut log = log_config(raw.log)?;
        log.sandbox = matches!(upstream.target, UpstreamTarget::Sandbox);
        let gateways = raw
            .payments
            .gateways
            .unwrap_or_else(|| vec!["card_connect".to_string()]);
        if gateways.is_empty() || gateways.iter().any(|g| g.is_empty()) {
            return Err(ConfigError::new(
                "payments.gateways",
                "expected a non-empty list of gateway names, e.g. [\"card_connect\"]",
            ));
        }
        Ok(Config {
            server,
            admin,
            upstream,
            auth,
            clients,
            routes,
            limits,
            audit,
            log,
            payments: PaymentsConfig { gateways },
        })
    }
}

fn server_config(raw: RawServer) -> Result<ServerConfig> {
    let tls = match (raw.cert, raw.key) {
        (Some(cert), Some(key)) => {
            readable_file("server.cert", &cert)?;
            readable_file("server.key", &key)?;
            TlsSource::Files { cert, key }
        }
        (None, None) => TlsSource::DevSelfSigned {
            dir: raw.dev_cert_dir.unwrap_or_else(|| PathBuf::from("var/tls")),
        },
        (Some(_), None) => {
            return Err(ConfigError::new(
                "server.key",
                "server.cert is set but server.key is not; set both (PEM files) or neither",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "server.cert",
                "server.key is set but server.cert is not; set both (PEM files) or neither",
            ));
        }
    };
    if let Some(ca) = &raw.client_ca {
        readable_file("server.client_ca", ca)?;
    }
    Ok(ServerConfig {
        listen: socket_addr("server.listen", raw.listen.as_deref(), "127.0.0.1:8443")?,
        tls,
        client_ca: raw.client_ca,
        header_read_timeout: duration(
            "server.header_read_timeout",
            raw.header_read_timeout.as_deref(),
            "10s",
        )?,
        idle_timeout: duration("server.idle_timeout", raw.idle_timeout.as_deref(), "60s")?,
        max_connections: positive(
            "server.max_connections",
            raw.max_connections.unwrap_or(10_000),
        )?,
        max_connections_per_ip: positive(
            "server.max_connections_per_ip",
            raw.max_connections_per_ip.unwrap_or(256),
        )?,
        max_header_size: size(
            "server.max_header_size",
            raw.max_header_size.as_deref(),
            "16KiB",
        )? as usize,
        max_h2_streams: positive("server.max_h2_streams", raw.max_h2_streams.unwrap_or(100))?,
        shutdown_grace: duration(
            "server.shutdown_grace",
            raw.shutdown_grace.as_deref(),
            "30s",
        )?,
        workers: raw.workers.unwrap_or(0),
    })
}

fn upstream_config(raw: RawUpstream) -> Result<UpstreamConfig> {
    let url = raw
        .url
        .as_deref()
        .unwrap_or("https://api.moltin.com")
        .trim();
    let target = if url == "sandbox" {
        UpstreamTarget::Sandbox
    } else {
        upstream_target(url)?
    };
    if let Some(ca) = &raw.ca {
        readable_file("upstream.ca", ca)?;
    }
    let auth = match (raw.auth.token, raw.auth.client_id, raw.auth.client_secret) {
        (Some(token), None, None) => {
            if token.expose_secret().trim().is_empty() {
                return Err(ConfigError::new(
                    "upstream.auth.token",
                    "is empty; set PAYSHIM__UPSTREAM__AUTH__TOKEN to the store's token",
                ));
            }
            UpstreamAuth::Static(token)
        }
        (None, Some(client_id), Some(client_secret)) => UpstreamAuth::ClientCredentials {
            client_id,
            client_secret,
        },
        (None, None, None) if matches!(target, UpstreamTarget::Sandbox) => UpstreamAuth::None,
        (None, None, None) => {
            return Err(ConfigError::new(
                "upstream.auth.token",
                "missing: set upstream.auth.token (e.g. PAYSHIM__UPSTREAM__AUTH__TOKEN) or \
                 upstream.auth.client_id and upstream.auth.client_secret",
            ));
        }
        (Some(_), _, _) => {
            return Err(ConfigError::new(
                "upstream.auth.token",
                "set either a static token or client_id + client_secret, not both",
            ));
        }
        (None, Some(_), None) => {
            return Err(ConfigError::new(
                "upstream.auth.client_secret",
                "missing: client_credentials needs both client_id and client_secret",
            ));
        }
        (None, None, Some(_)) => {
            return Err(ConfigError::new(
                "upstream.auth.client_id",
                "missing: client_credentials needs both client_id and client_secret",
            ));
        }
    };
    Ok(UpstreamConfig {
        target,
        ca: raw.ca,
        connect_timeout: duration(
            "upstream.connect_timeout",
            raw.connect_timeout.as_deref(),
            "2s",
        )?,
        timeout: duration("upstream.timeout", raw.timeout.as_deref(), "40s")?,
        auth,
    })
}

/// `https://host[:port]`, or `http://` for loopback hosts only (tests, benchmarks): the
/// real token must never cross a network in clear text.
fn upstream_target(url: &str) -> Result<UpstreamTarget> {
    let key = "upstream.url";
    let uri: http::Uri = url.parse().map_err(|_| {
        ConfigError::new(
            key,
            "expected a URL like https://api.moltin.com or \"sandbox\"",
        )
    })?;
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        return Err(ConfigError::new(
            key,
            "expected an absolute URL like https://api.moltin.com or \"sandbox\"",
        ));
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(ConfigError::new(
            key,
            "expected scheme and host only, without a path or query",
        ));
    }
    let loopback = matches!(authority.host(), "localhost" | "127.0.0.1" | "[::1]");
    match scheme.as_str() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(ConfigError::new(
                key,
                "plain http is only allowed to a loopback host; use https",
            ));
        }
        _ => return Err(ConfigError::new(key, "expected an https URL")),
    }
    Ok(UpstreamTarget::Remote(scheme, authority))
}

fn auth_config(raw: RawAuth) -> Result<AuthConfig> {
    let session_key = match raw.session_key {
        Some(k) if k.expose_secret().len() < 32 => {
            return Err(ConfigError::new(
                "auth.session_key",
                "too short: use at least 32 random characters (e.g. `openssl rand -hex 32`)",
            ));
        }
        Some(k) => Some(SecretSlice::from(k.expose_secret().as_bytes().to_vec())),
        None => None,
    };
    Ok(AuthConfig {
        session_key,
        session_ttl: duration("auth.session_ttl", raw.session_ttl.as_deref(), "1h")?,
    })
}

fn clients_config(raw: Vec<RawClient>, auth: &AuthConfig) -> Result<Vec<ClientConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, c) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("clients[{i}].{field}");
        if c.id.is_empty()
            || !c
                .id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return Err(ConfigError::new(
                key("id"),
                "expected a non-empty name of letters, digits, '-', '_' or '.'",
            ));
        }
        if !seen.insert(c.id.clone()) {
            return Err(ConfigError::new(
                key("id"),
                format!(
                    "duplicate client id {:?}: each client needs its own id",
                    c.id
                ),
            ));
        }
        for (j, origin) in c.allowed_origins.iter().enumerate() {
            validate_origin(&key(&format!("allowed_origins[{j}]")), origin)?;
        }
        let api_key_sha256 = c
            .api_key_sha256
            .as_deref()
            .map(|h| sha256_hex(&key("api_key_sha256"), h))
            .transpose()?;
        let secret_sha256 = c
            .secret_sha256
            .as_deref()
            .map(|h| sha256_hex(&key("secret_sha256"), h))
            .transpose()?;
        if api_key_sha256.is_none()
            && secret_sha256.is_none()
            && c.public_id.is_none()
            && c.cert_subject.is_none()
        {
            return Err(ConfigError::new(
                key("api_key_sha256"),
                "the client has no credential: set api_key_sha256 (see `payshim hash-key`), \
                 public_id, secret_sha256 or cert_subject",
            ));
        }
        if (c.public_id.is_some() || secret_sha256.is_some()) && auth.session_key.is_none() {
            return Err(ConfigError::new(
                "auth.session_key",
                format!(
                    "missing: client {:?} uses the token exchange (public_id or secret_sha256), \
                     which needs a session key (PAYSHIM__AUTH__SESSION_KEY)",
                    c.id
                ),
            ));
        }
        let routes = c
            .routes
            .map(|names| {
                names
                    .iter()
                    .map(|n| {
                        RouteName::parse(n).ok_or_else(|| {
                            ConfigError::new(
                                key("routes"),
                                format!(
                                    "unknown route name {n:?}; expected one of {}",
                                    RouteName::ALL_NAMES.join(", ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        out.push(ClientConfig {
            id: c.id,
            public_id: c.public_id,
            allowed_origins: c.allowed_origins,
            api_key_sha256,
            secret_sha256,
            cert_subject: c.cert_subject,
            routes,
        });
    }
    Ok(out)
}

/// An origin is `scheme://host[:port]` exactly as a browser sends it; never `*`.
fn validate_origin(key: &str, origin: &str) -> Result<()> {
    let bad = || {
        ConfigError::new(
            key,
            format!(
                "{origin:?} is not an origin; expected e.g. \"https://shop.example\" (no path, no wildcard)"
            ),
        )
    };
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "https" | "http")
        || rest.is_empty()
        || rest.contains(['/', '*', ' ', '?', '#'])
    {
        return Err(bad());
    }
    Ok(())
}

fn sha256_hex(key: &str, value: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(value.trim(), &mut out).map_err(|_| {
        ConfigError::new(
            key,
            "expected 64 hex characters (SHA-256); make one with `payshim hash-key`",
        )
    })?;
    Ok(out)
}

fn limits_config(raw: RawLimits) -> Result<LimitsConfig> {
    let quota_or = |key: &str, v: Option<&str>, default: Option<&str>| -> Result<Option<Quota>> {
        match v.or(default) {
            None | Some("off") => Ok(None),
            Some(s) => parse_quota(s)
                .map(Some)
                .map_err(|m| ConfigError::new(key, m)),
        }
    };
    let on_store_error = match raw.on_store_error.as_deref().unwrap_or("deny") {
        "deny" => OnStoreError::Deny,
        "local" => OnStoreError::Local,
        _ => {
            return Err(ConfigError::new(
                "limits.on_store_error",
                "expected \"deny\" (fail closed) or \"local\" (fall back to local limits)",
            ));
        }
    };
    if let Some(url) = &raw.redis_url
        && !url.starts_with("redis://")
    {
        return Err(ConfigError::new(
            "limits.redis_url",
            "expected a URL like redis://127.0.0.1:6379 (rediss:// is not supported: \
             run Redis on a private network or through a local TLS tunnel)",
        ));
    }
    let decline_ratio = raw.decline_ratio.unwrap_or(0.8);
    if !(decline_ratio > 0.0 && decline_ratio <= 1.0) {
        return Err(ConfigError::new(
            "limits.decline_ratio",
            "expected a fraction above 0 and at most 1, e.g. 0.8",
        ));
    }
    Ok(LimitsConfig {
        per_client: quota_or("limits.per_client", raw.per_client.as_deref(), Some("50/s"))?,
        per_ip: quota_or("limits.per_ip", raw.per_ip.as_deref(), Some("10/s"))?,
        per_order: quota_or(
            "limits.per_order",
            raw.per_order.as_deref(),
            Some("5/10min"),
        )?,
        per_card: quota_or("limits.per_card", raw.per_card.as_deref(), Some("5/h"))?,
        card_attempts: quota_or(
            "limits.card_attempts",
            raw.card_attempts.as_deref(),
            Some("3/h"),
        )?,
        decline_ratio,
        decline_window: raw.decline_window.unwrap_or(20),
        decline_cooldown: duration(
            "limits.decline_cooldown",
            raw.decline_cooldown.as_deref(),
            "5min",
        )?,
        max_keys: positive("limits.max_keys", raw.max_keys.unwrap_or(100_000))?,
        max_body: size("limits.max_body", raw.max_body.as_deref(), "16KiB")? as usize,
        redis_url: raw.redis_url,
        redis_timeout: duration(
            "limits.redis_timeout",
            raw.redis_timeout.as_deref(),
            "250ms",
        )?,
        on_store_error,
    })
}

fn audit_config(raw: RawAudit) -> Result<AuditConfig> {
    let key = raw.key.ok_or_else(|| {
        ConfigError::new(
            "audit.key",
            "missing: set a random HMAC key of at least 32 characters \
             (e.g. PAYSHIM__AUDIT__KEY=$(openssl rand -hex 32))",
        )
    })?;
    if key.expose_secret().len() < 32 {
        return Err(ConfigError::new(
            "audit.key",
            "too short: use at least 32 random characters",
        ));
    }
    Ok(AuditConfig {
        path: raw
            .path
            .unwrap_or_else(|| PathBuf::from("var/audit/payshim.jsonl")),
        key: SecretSlice::from(key.expose_secret().as_bytes().to_vec()),
        max_file_size: size("audit.max_file_size", raw.max_file_size.as_deref(), "64MiB")?,
    })
}

fn log_config(raw: RawLog) -> Result<LogConfig> {
    let format = match raw.format.as_deref().unwrap_or("json") {
        "json" => LogFormat::Json,
        "pretty" => LogFormat::Pretty,
        _ => {
            return Err(ConfigError::new(
                "log.format",
                "expected \"json\" or \"pretty\"",
            ));
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(ConfigError::new(
            "log.level",
            "expected a level (error, warn, info, debug, trace) or a filter like \"payshim=debug\"",
        ));
    }
    let flush = raw.flush_interval.as_deref().unwrap_or(DEFAULT_LOG_FLUSH);
    let flush_interval = match humantime::parse_duration(flush) {
        Ok(d) if d <= Duration::from_secs(10) => d,
        _ => {
            return Err(ConfigError::new(
                "log.flush_interval",
                format!(
                    "{flush:?}: expected a duration up to \"10s\", e.g. \"100ms\", or \"0s\" to write each line at once"
                ),
            ));
        }
    };
    Ok(LogConfig {
        format,
        level,
        flush_interval,
        sandbox: false,
    })
}

/// Long enough to batch hundreds of request lines at load, short enough that nobody
/// watching the log notices.
const DEFAULT_LOG_FLUSH: &str = "100ms";

// ---------------------------------------------------------------------------------------
// Value parsers shared by the sections above.

fn socket_addr(key: &str, value: Option<&str>, default: &str) -> Result<SocketAddr> {
    let v = value.unwrap_or(default);
    v.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{v:?} is not a socket address; expected e.g. \"127.0.0.1:8443\""),
        )
    })
}

fn duration(key: &str, value: Option<&str>, default: &str) -> Result<Duration> {
    let v = value.unwrap_or(default);
    match humantime::parse_duration(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError::new(
            key,
            format!("{v:?} is not a duration; expected e.g. \"40s\", \"500ms\", \"10min\", \"1h\""),
        )),
    }
}

fn positive<T: PartialEq + Default>(key: &str, v: T) -> Result<T> {
    if v == T::default() {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    Ok(v)
}

fn readable_file(key: &str, path: &Path) -> Result<()> {
    std::fs::File::open(path).map(|_| ()).map_err(|e| {
        ConfigError::new(
            key,
            format!(
                "cannot read {}: {e}; give the path of a PEM file",
                path.display()
            ),
        )
    })
}

fn size(key: &str, value: Option<&str>, default: &str) -> Result<u64> {
    let v = value.unwrap_or(default);
    parse_size(v).ok_or_else(|| {
        ConfigError::new(
            key,
            format!("{v:?} is not a size; expected e.g. \"16KiB\", \"1MiB\" or a number of bytes"),
        )
    })
}

/// Parses "16384", "16KiB", "1MiB", "2GiB", "16KB", "1MB".
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&b| b > 0)
}

/// Parses "50/s", "5/10min", "5/h", "100/min burst 20".
pub fn parse_quota(s: &str) -> std::result::Result<Quota, String> {
    let bad = || {
        format!(
            "{s:?} is not a quota; expected e.g. \"50/s\", \"5/10min\", \"5/h burst 10\" or \"off\""
        )
    };
    let (rate, burst) = match s.split_once("burst") {
        Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
        None => (s.trim(), None),
    };
    let (count, period) = rate.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let period = period.trim();
    let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
        humantime::parse_duration(period).map_err(|_| bad())?
    } else {
        humantime::parse_duration(&format!("1{period}")).map_err(|_| bad())?
    };
    let burst = match burst {
        Some(b) => b.parse().map_err(|_| bad())?,
        None => count,
    };
    if count == 0 || burst == 0 || period.is_zero() {
        return Err(bad());
    }
    Ok(Quota {
        count,
        period,
        burst,
    })
}

// ---------------------------------------------------------------------------------------
// `check-config` output.

impl fmt::Display for Config {
    /// The effective configuration with every secret masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        writeln!(f, "[server]")?;
        writeln!(f, "listen = \"{}\"", self.server.listen)?;
        match &self.server.tls {
            TlsSource::Files { cert, key } => {
                writeln!(f, "cert = {:?}\nkey = {:?}", cert, key)?;
            }
            TlsSource::DevSelfSigned { dir } => {
                writeln!(
                    f,
                    "# cert/key: none, self-signed DEV certificate written to {dir:?}"
                )?;
            }
        }
        if let Some(ca) = &self.server.client_ca {
            writeln!(f, "client_ca = {ca:?}")?;
        }
        writeln!(
            f,
            "header_read_timeout = \"{}\"",
            d(self.server.header_read_timeout)
        )?;
        writeln!(f, "idle_timeout = \"{}\"", d(self.server.idle_timeout))?;
        writeln!(f, "max_connections = {}", self.server.max_connections)?;
        writeln!(
            f,
            "max_connections_per_ip = {}",
            self.server.max_connections_per_ip
        )?;
        writeln!(f, "max_header_size = {}", self.server.max_header_size)?;
        writeln!(f, "max_h2_streams = {}", self.server.max_h2_streams)?;
        writeln!(f, "shutdown_grace = \"{}\"", d(self.server.shutdown_grace))?;
        writeln!(f, "workers = {} # 0: one per core", self.server.workers)?;
        writeln!(f, "\n[admin]\nlisten = \"{}\"", self.admin.listen)?;
        writeln!(f, "\n[upstream]")?;
        match &self.upstream.target {
            UpstreamTarget::Sandbox => writeln!(f, "url = \"sandbox\"")?,
            UpstreamTarget::Remote(s, a) => writeln!(f, "url = \"{s}://{a}\"")?,
        }
        if let Some(ca) = &self.upstream.ca {
            writeln!(f, "ca = {ca:?}")?;
        }
        writeln!(
            f,
            "connect_timeout = \"{}\"",
            d(self.upstream.connect_timeout)
        )?;
        writeln!(f, "timeout = \"{}\"", d(self.upstream.timeout))?;
        match &self.upstream.auth {
            UpstreamAuth::Static(_) => writeln!(f, "auth.token = \"****\"")?,
            UpstreamAuth::ClientCredentials { client_id, .. } => writeln!(
                f,
                "auth.client_id = \"{client_id}\"\nauth.client_secret = \"****\""
            )?,
            UpstreamAuth::None => writeln!(f, "# auth: none (sandbox)")?,
        }
        writeln!(f, "\n[auth]")?;
        writeln!(
            f,
            "session_key = {}",
            if self.auth.session_key.is_some() {
                "\"****\""
            } else {
                "# not set"
            }
        )?;
        writeln!(f, "session_ttl = \"{}\"", d(self.auth.session_ttl))?;
        for c in &self.clients {
            writeln!(f, "\n[[clients]]\nid = \"{}\"", c.id)?;
            if let Some(p) = &c.public_id {
                writeln!(f, "public_id = \"{p}\"")?;
            }
            if !c.allowed_origins.is_empty() {
                writeln!(f, "allowed_origins = {:?}", c.allowed_origins)?;
            }
            if let Some(h) = &c.api_key_sha256 {
                writeln!(f, "api_key_sha256 = \"{}\"", hex::encode(h))?;
            }
            if c.secret_sha256.is_some() {
                writeln!(f, "secret_sha256 = \"****\"")?;
            }
            if let Some(s) = &c.cert_subject {
                writeln!(f, "cert_subject = \"{s}\"")?;
            }
            if let Some(r) = &c.routes {
                let names: Vec<&str> = r.iter().map(|r| r.as_str()).collect();
                writeln!(f, "routes = {names:?}")?;
            }
        }
        for r in &self.routes {
            writeln!(
                f,
                "\n[[routes]]\nmethod = \"{}\"\npath = \"{}\"",
                r.method, r.source
            )?;
        }
        let q = |q: &Option<Quota>| match q {
            None => "\"off\"".to_string(),
            Some(q) => format!(
                "\"{}/{} burst {}\"",
                q.count,
                humantime::format_duration(q.period),
                q.burst
            ),
        };
        let l = &self.limits;
        writeln!(f, "\n[limits]")?;
        writeln!(
            f,
            "per_client = {}\nper_ip = {}",
            q(&l.per_client),
            q(&l.per_ip)
        )?;
        writeln!(
            f,
            "per_order = {}\nper_card = {}",
            q(&l.per_order),
            q(&l.per_card)
        )?;
        writeln!(f, "card_attempts = {}", q(&l.card_attempts))?;
        writeln!(
            f,
            "decline_ratio = {}\ndecline_window = {}\ndecline_cooldown = \"{}\"",
            l.decline_ratio,
            l.decline_window,
            d(l.decline_cooldown)
        )?;
        writeln!(f, "max_keys = {}\nmax_body = {}", l.max_keys, l.max_body)?;
        if let Some(url) = &l.redis_url {
            writeln!(f, "redis_url = \"{}\"", mask_url_password(url))?;
        }
        writeln!(f, "on_store_error = \"{}\"", l.on_store_error.as_str())?;
        writeln!(f, "\n[audit]\npath = {:?}\nkey = \"****\"", self.audit.path)?;
        writeln!(f, "max_file_size = {}", self.audit.max_file_size)?;
        writeln!(
            f,
            "\n[log]\nformat = \"{}\"\nlevel = \"{}\"\nflush_interval = \"{}\"",
            self.log.format.as_str(),
            self.log.level,
            d(self.log.flush_interval)
        )?;
        writeln!(f, "\n[payments]\ngateways = {:?}", self.payments.gateways)
    }
}

/// `redis://user:secret@host` -> `redis://user:****@host`.
fn mask_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:****{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (input, want) in [
            ("16KiB", Some(16384)),
            ("1MiB", Some(1 << 20)),
            ("100", Some(100)),
            ("2KB", Some(2000)),
            ("0", None),
            ("12XB", None),
            ("", None),
        ] {
            assert_eq!(parse_size(input), want, "{input}");
        }
    }

    #[test]
    fn quotas() {
        let q = parse_quota("5/10min").unwrap();
        assert_eq!(
            (q.count, q.period, q.burst),
            (5, Duration::from_secs(600), 5)
        );
        let q = parse_quota("50/s burst 100").unwrap();
        assert_eq!(
            (q.count, q.period, q.burst),
            (50, Duration::from_secs(1), 100)
        );
        assert_eq!(
            parse_quota("5/h").unwrap().period,
            Duration::from_secs(3600)
        );
        for bad in ["5", "x/s", "0/s", "5/parsec", "5/s burst x"] {
            assert!(parse_quota(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn masks_redis_password() {
        assert_eq!(
            mask_url_password("redis://u:pw@127.0.0.1:6379"),
            "redis://u:****@127.0.0.1:6379"
        );
        assert_eq!(mask_url_password("redis://127.0.0.1"), "redis://127.0.0.1");
    }
}
