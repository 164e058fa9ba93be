//! The whole validated configuration and its conversion from the raw form, which delegates
//! each section to its own file and checks what spans sections (sandbox listeners, routes).

use crate::payment::GatewayPolicy;
use crate::route::RoutePattern;

use super::audit::{AuditConfig, audit_config};
use super::auth::{AuthConfig, auth_config};
use super::clients::{ClientConfig, clients_config};
use super::idempotency::{IdempotencyConfig, idempotency_config};
use super::limits::{LimitsConfig, limits_config};
use super::log::{LogConfig, log_config};
use super::parse::socket_addr;
use super::raw::{RawConfig, RawPayments};
use super::server::{AdminConfig, ServerConfig, server_config};
use super::upstream::{UpstreamConfig, UpstreamTarget, upstream_config};
use super::{ConfigError, Result};

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
    pub idempotency: IdempotencyConfig,
}

#[derive(Debug)]
pub struct PaymentsConfig {
    /// `payments.gateways`: the gateways the store uses; any other is refused.
    pub gateways: Vec<String>,
    /// `payments.raw_card_gateways`: those that may take raw card fields.
    pub raw_card_gateways: Vec<String>,
    /// The two lists, resolved against the gateway table.
    pub policy: GatewayPolicy,
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
        let idempotency = idempotency_config(raw.idempotency)?;
        let audit = audit_config(raw.audit)?;
        let mut log = log_config(raw.log)?;
        log.sandbox = matches!(upstream.target, UpstreamTarget::Sandbox);
        let payments = payments_config(raw.payments)?;
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
            payments,
            idempotency,
        })
    }
}

/// The gateway lists. Unset, they keep the 2020 behaviour: `card_connect` only, taking raw
/// card fields.
fn payments_config(raw: RawPayments) -> Result<PaymentsConfig> {
    let gateways = raw
        .gateways
        .unwrap_or_else(|| vec!["card_connect".to_string()]);
    let raw_card_gateways = raw.raw_card_gateways.unwrap_or_else(|| {
        gateways
            .iter()
            .filter(|g| *g == "card_connect")
            .cloned()
            .collect()
    });
    let policy = GatewayPolicy::new(&gateways, &raw_card_gateways)
        .map_err(|e| ConfigError::new(e.key(), e.to_string()))?;
    Ok(PaymentsConfig {
        gateways,
        raw_card_gateways,
        policy,
    })
}
