//! payshim: a TLS-terminating payment proxy for the Moltin / Elastic Path API.
//!
//! [`run`] is the one entry point, for `main` and for the integration tests alike: give it
//! a validated [`config::Config`], bound listeners and a shutdown future. It wires the
//! listeners ([`server`], [`admin`]) to the request [`pipeline`]; README.md,
//! "Architecture", maps the modules and the phases of a request.

// Card data must never bypass the log scrubber: nothing but `main` writes to the
// standard streams directly.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
#![deny(unreachable_pub)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod body;
pub mod config;
pub mod conn;
pub mod error;
mod idempotency;
mod keyed;
pub mod limit;
pub mod logging;
mod luhn;
pub mod metrics;
pub mod outcome;
pub mod payment;
pub mod pipeline;
pub mod redact;
pub mod reload;
pub mod route;
pub mod sandbox;
pub mod server;
pub mod swap;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::audit::{AuditLog, SystemEvent};
use crate::body::ProxyBody;
use crate::config::{Config, UpstreamTarget};
use crate::conn::ConnInfo;
use crate::pipeline::Pipeline;
use crate::reload::{Reloader, Reloads};
use crate::swap::Swap;

/// The two listening sockets, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses from the config.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        Ok(Listeners {
            public: TcpListener::bind(config.server.listen).await?,
            admin: TcpListener::bind(config.admin.listen).await?,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }
}

/// Why payshim could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Serves until `shutdown` resolves, then drains in-flight requests (up to
/// `server.shutdown_grace`) and returns. Never reloads: see [`run_with`].
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with(config, None, listeners, shutdown).await
}

/// [`run`], reloading the config from `reloads` on each request there and when a
/// watched file changes (README.md, "Operations").
pub async fn run_with(
    config: Config,
    reloads: Option<Reloads>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let served = tls::server_config(&config.server.tls, config.server.client_ca.as_deref())?;
    if let Some(path) = &served.dev_cert {
        tracing::warn!(
            cert = %path.display(),
            "DEV ONLY: serving a self-signed certificate generated at start-up; \
             trust it with `curl --cacert {}` and never use it in production",
            path.display()
        );
    }
    let pipeline = Arc::new(Pipeline::new(&config)?);
    for warning in config.audit.warnings() {
        tracing::warn!("{warning}");
    }
    audit_system_event(
        pipeline.audit(),
        SystemEvent::Started {
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_hash: config.hash(),
        },
    )
    .await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let public_addr = listeners.public_addr();
    let admin_addr = listeners.admin_addr();
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        pipeline.clone(),
        stop_rx.clone(),
    ));
    let upstream = match &config.upstream.target {
        UpstreamTarget::Sandbox => "sandbox".to_string(),
        UpstreamTarget::Remote(s, a) => format!("{s}://{a}"),
    };
    tracing::info!(
        listen = %public_addr,
        admin = %admin_addr,
        upstream,
        "payshim serving"
    );
    let server_settings = config.server.clone();
    let shutdown_grace = config.server.shutdown_grace;
    let tls = Arc::new(Swap::from_arc(served.config.clone()));
    let (source, signals) = match reloads {
        Some(r) => (r.source, Some(r.signals)),
        None => (None, None),
    };
    let reloader = Reloader::new(source, config, pipeline.clone(), tls.clone(), &served);
    let reloading = signals.map(|s| tokio::spawn(reloader.run(s, stop_rx.clone())));
    let server = server::serve(
        listeners.public,
        tls,
        pipeline.clone(),
        pipeline.metrics().connections.clone(),
        &server_settings,
        stop_rx,
    );
    tokio::pin!(server);
    tokio::select! {
        _ = &mut server => {}
        _ = shutdown => {
            let _ = stop_tx.send(true);
            server.await;
        }
    }
    let _ = stop_tx.send(true);
    let _ = admin.await;
    if let Some(task) = reloading {
        let _ = task.await;
    }
    pipeline.drain(shutdown_grace).await;
    let audit = pipeline.audit().clone();
    drop(pipeline);
    audit_system_event(&audit, SystemEvent::Stopped).await;
    audit.shutdown().await;
    tracing::info!("payshim stopped");
    Ok(())
}

/// Writes a start or stop record (PCI DSS 10.2.1). A log that cannot take it is already
/// unhealthy, refusing payments and failing readiness: that is logged, not fatal.
async fn audit_system_event(audit: &AuditLog, event: SystemEvent) {
    if let Err(e) = audit.system_event(event).await {
        tracing::error!(error = %e, "audit log: the start or stop record was not written");
    }
}

impl server::Handler for Pipeline {
    fn handle(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        Pipeline::handle(self, req, conn)
    }
}

impl admin::Status for Pipeline {
    fn readiness_problems(&self) -> impl Future<Output = Vec<&'static str>> + Send {
        Pipeline::readiness_problems(self)
    }

    fn metrics_text(&self) -> impl Future<Output = String> + Send {
        Pipeline::metrics_text(self)
    }
}
