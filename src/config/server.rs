//! The `[server]` and `[admin]` sections: listeners, TLS material and connection limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{duration, positive, readable_file, size, socket_addr};
use super::raw::RawServer;
use super::{ConfigError, Result};

#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Operator-provided chain and key (PEM).
    Files { cert: PathBuf, key: PathBuf },
    /// Neither given: a self-signed localhost certificate is generated at start-up; its
    /// PEM is written into this directory so curl can trust it.
    DevSelfSigned { dir: PathBuf },
}

#[derive(Debug, Clone)]
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
    /// How often the config file and the TLS files are hashed to reload on a change
    /// (mounted Kubernetes Secrets change without a signal); `None`: only on SIGHUP.
    pub reload_check_interval: Option<Duration>,
}

#[derive(Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

pub(super) fn server_config(raw: RawServer) -> Result<ServerConfig> {
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
        reload_check_interval: match raw.reload_check_interval.as_deref() {
            Some("off") => None,
            v => Some(duration("server.reload_check_interval", v, "10s")?),
        },
    })
}
