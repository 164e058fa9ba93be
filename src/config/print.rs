//! The `check-config` output: the effective configuration as TOML, every secret masked.

use std::fmt;
use std::time::Duration;

use super::{Config, Quota, TlsSource, UpstreamAuth, UpstreamTarget};

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
        match self.server.reload_check_interval {
            Some(i) => writeln!(f, "reload_check_interval = \"{}\"", d(i))?,
            None => writeln!(f, "reload_check_interval = \"off\"")?,
        }
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
        writeln!(
            f,
            "pool_idle_timeout = \"{}\"",
            d(self.upstream.pool_idle_timeout)
        )?;
        writeln!(f, "pool_max_idle = {}", self.upstream.pool_max_idle)?;
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
        if !self.auth.previous_session_keys.is_empty() {
            let masked = vec!["****"; self.auth.previous_session_keys.len()];
            writeln!(f, "previous_session_keys = {masked:?}")?;
        }
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
        let i = &self.idempotency;
        writeln!(
            f,
            "\n[idempotency]\nttl = \"{}\"\nmax_keys = {}\none_payment_per_order = {}",
            d(i.ttl),
            i.max_keys,
            i.one_payment_per_order
        )?;
        match i.duplicate_window {
            Some(w) => writeln!(f, "duplicate_window = \"{}\"", d(w))?,
            None => writeln!(f, "duplicate_window = \"off\"")?,
        }
        writeln!(f, "\n[audit]\npath = {:?}\nkey = \"****\"", self.audit.path)?;
        if !self.audit.previous_keys.is_empty() {
            let masked = vec!["****"; self.audit.previous_keys.len()];
            writeln!(f, "previous_keys = {masked:?}")?;
        }
        if self.audit.fingerprint_key_defaulted {
            writeln!(f, "# fingerprint_key: not set, audit.key's value is used")?;
        } else {
            writeln!(f, "fingerprint_key = \"****\"")?;
        }
        writeln!(f, "max_file_size = {}", self.audit.max_file_size)?;
        writeln!(
            f,
            "\n[log]\nformat = \"{}\"\nlevel = \"{}\"\nflush_interval = \"{}\"",
            self.log.format.as_str(),
            self.log.level,
            d(self.log.flush_interval)
        )?;
        writeln!(f, "\n[payments]\ngateways = {:?}", self.payments.gateways)?;
        writeln!(
            f,
            "raw_card_gateways = {:?}",
            self.payments.raw_card_gateways
        )
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
    fn masks_redis_password() {
        assert_eq!(
            mask_url_password("redis://u:pw@127.0.0.1:6379"),
            "redis://u:****@127.0.0.1:6379"
        );
        assert_eq!(mask_url_password("redis://127.0.0.1"), "redis://127.0.0.1");
    }
}
