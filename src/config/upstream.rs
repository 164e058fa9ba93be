//! The `[upstream]` section: where forwarded requests go and how payshim obtains the store's
//! real bearer token.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::parse::{duration, readable_file};
use super::raw::RawUpstream;
use super::{ConfigError, Result};

/// Where forwarded requests go.
#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// payshim answers allowed routes itself (dev default; loopback listeners only).
    Sandbox,
    /// Scheme and authority of the real API, e.g. `https://useast.api.elasticpath.com`.
    Remote(http::uri::Scheme, http::uri::Authority),
}

#[derive(Debug)]
pub struct UpstreamConfig {
    pub target: UpstreamTarget,
    pub ca: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// An idle upstream connection is closed after this: shorter than the API's own
    /// keep-alive timeout, so payshim never sends on a connection the API is closing.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept at most (HTTP/2: connections kept for reuse).
    pub pool_max_idle: usize,
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

/// Elastic Path's US host, the SDK's default since 2023. The EU store host is
/// `https://euwest.api.elasticpath.com`; the 2020 host `https://api.moltin.com` is still
/// accepted like any HTTPS host.
const DEFAULT_URL: &str = "https://useast.api.elasticpath.com";

pub(super) fn upstream_config(raw: RawUpstream) -> Result<UpstreamConfig> {
    let url = raw.url.as_deref().unwrap_or(DEFAULT_URL).trim();
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
        pool_idle_timeout: pool_idle_timeout(raw.pool_idle_timeout.as_deref())?,
        pool_max_idle: raw.pool_max_idle.unwrap_or(256),
        auth,
    })
}

/// Between 100 ms and 10 min: a longer idle time than the API's (60 s behind common load
/// balancers) would send requests on connections the API is closing.
fn pool_idle_timeout(raw: Option<&str>) -> Result<Duration> {
    let key = "upstream.pool_idle_timeout";
    let value = duration(key, raw, "30s")?;
    if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&value) {
        return Err(ConfigError::new(
            key,
            "must be between 100ms and 10min; keep it below the API's keep-alive timeout",
        ));
    }
    Ok(value)
}

/// `https://host[:port]`, or `http://` for loopback hosts only (tests, benchmarks): the
/// real token must never cross a network in clear text.
fn upstream_target(url: &str) -> Result<UpstreamTarget> {
    let key = "upstream.url";
    let uri: http::Uri = url.parse().map_err(|_| {
        ConfigError::new(
            key,
            "expected a URL like https://useast.api.elasticpath.com or \"sandbox\"",
        )
    })?;
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        return Err(ConfigError::new(
            key,
            "expected an absolute URL like https://useast.api.elasticpath.com or \"sandbox\"",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: Option<&str>) -> String {
        let mut raw = RawUpstream {
            url: url.map(str::to_owned),
            ..RawUpstream::default()
        };
        raw.auth.token = Some("a-static-store-token".to_owned().into());
        match upstream_config(raw).expect("accepted").target {
            UpstreamTarget::Remote(scheme, authority) => format!("{scheme}://{authority}"),
            UpstreamTarget::Sandbox => "sandbox".into(),
        }
    }

    #[test]
    fn current_hosts_by_default_and_the_2020_host_still_accepted() {
        assert_eq!(target(None), "https://useast.api.elasticpath.com");
        for url in [
            "https://useast.api.elasticpath.com",
            "https://euwest.api.elasticpath.com",
            "https://api.moltin.com",
        ] {
            assert_eq!(target(Some(url)), url);
        }
    }
}
