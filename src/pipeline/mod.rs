//! The request pipeline: one request, phase by phase, in the order it happens.
//!
//! ```text
//! accept -> admit -> read body -> validate -> pre-forward checks -> idempotency
//!        -> audit `forwarded` -> upstream -> audit `completed` -> respond -> observe
//! ```
//!
//! [`Pipeline::handle`] runs the phases; each lives in a file of its own (README.md,
//! "Architecture", maps them). A [`RequestCtx`] carries everything the request
//! accumulates. The route kinds (payment, transaction action, passthrough, token
//! exchange) supply only what differs: their checks before the body, their validation
//! and, for the audited ones, the facts their audit records hold. No phase calls back
//! into this file, and every refusal happens before anything is sent upstream.

mod admit;
mod auditor;
mod call;
mod context;
mod cors;
mod forward;
mod idempotent;
mod linger;
mod observe;
mod passthrough;
mod payment;
mod read;
mod respond;
mod token;
mod transaction;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};

use crate::audit::{AuditLog, AuditSettings};
use crate::auth::session::SessionKeys;
use crate::auth::{Clients, UpstreamToken};
use crate::body::ProxyBody;
use crate::config::{Config, OnStoreError};
use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::idempotency::{self, Idempotency, Ticket, transaction_fingerprint};
use crate::keyed::KeyedHash;
use crate::limit::Limiter;
use crate::metrics::Metrics;
use crate::route::{self, Route, RoutePattern};
use crate::swap::Swap;
use crate::tls::TlsError;
use crate::upstream::{Outgoing, Upstream};
use admit::{Admission, Admitted};
use auditor::Auditor;
use call::Caller;
use context::{AuditedAction, RequestCtx};
use forward::Forwarder;
use idempotent::Claimed;
use linger::Linger;
use payment::PaymentRules;
use read::BodyLimits;
use secrecy::ExposeSecret;

/// Everything the phases need, built from the validated config; the parts a reload
/// changes are in [`Live`] (or swap themselves: the limiter's quotas, the upstream token).
pub struct Pipeline {
    live: Swap<Live>,
    limiter: Arc<Limiter>,
    limits_fail_closed: bool,
    body_limits: BodyLimits,
    linger: Linger,
    payments: PaymentRules,
    forwarder: Arc<Forwarder>,
    idempotency: Idempotency,
    /// Keys the scoped idempotency keys and transaction fingerprints
    /// (`audit.fingerprint_key`, which a rotation of the chain key leaves alone).
    hasher: KeyedHash,
    metrics: Metrics,
}

/// The storefronts and the extra routes: a request takes one snapshot when it starts and
/// keeps it to its end, so a reload never changes them under a request in flight.
pub(crate) struct Live {
    pub(crate) clients: Clients,
    pub(crate) extra_routes: Vec<RoutePattern>,
}

impl Live {
    fn new(config: &Config) -> Live {
        let sessions = config.auth.session_key.clone().map(|k| {
            SessionKeys::with_previous(
                k,
                &config.auth.previous_session_keys,
                config.auth.session_ttl,
            )
        });
        Live {
            clients: Clients::new(config.clients.clone(), sessions),
            extra_routes: config.routes.clone(),
        }
    }
}

/// What the validate phase made of a request.
enum Prepared {
    /// A request for the upstream.
    Forward(Outgoing),
    /// Answered by payshim itself (the token exchange).
    Answered(Response<ProxyBody>),
}

impl Pipeline {
    /// Builds the pipeline; runs inside the runtime (it starts the audit writer, the
    /// limiter's pruning and, with client credentials, the upstream token refresher).
    pub fn new(config: &Config) -> Result<Pipeline, TlsError> {
        let upstream = Arc::new(Upstream::new(&config.upstream)?);
        let audit = AuditLog::start(AuditSettings {
            path: config.audit.path.clone(),
            key: config.audit.key.clone(),
            previous_keys: config.audit.previous_keys.clone(),
            max_file_bytes: config.audit.max_file_size,
        });
        let limiter = Arc::new(Limiter::start(&config.limits));
        let metrics = Metrics::new();
        let caller = Caller {
            token: UpstreamToken::start(&config.upstream.auth, upstream.clone()),
            upstream,
        };
        Ok(Pipeline {
            live: Swap::new(Live::new(config)),
            limits_fail_closed: config.limits.on_store_error == OnStoreError::Deny,
            body_limits: BodyLimits {
                max_body: config.limits.max_body,
                timeout: config.server.header_read_timeout,
            },
            linger: Linger {
                max_body: config.limits.max_body,
                total: config.server.header_read_timeout,
            },
            payments: PaymentRules::new(config),
            forwarder: Arc::new(Forwarder {
                caller,
                auditor: Auditor::new(audit, metrics.audit_io.clone()),
                limiter: limiter.clone(),
            }),
            limiter,
            idempotency: Idempotency::start(config),
            hasher: KeyedHash::new(config.audit.fingerprint_key.expose_secret()),
            metrics,
        })
    }

    /// Handles one request; never fails (errors become API error responses).
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
        let live = self.live.load();
        let mut ctx = RequestCtx::accept(&req, conn, &live.extra_routes);
        let (head, mut body) = req.into_parts();
        let result = self.serve(&live, &mut ctx, &head, &mut body).await;
        if !body.is_end_stream() {
            // Answered without reading the whole body (a refusal): let the client finish
            // sending, so the answer reaches it (see linger.rs). Boxed: rare.
            let read = Box::pin(self.linger.before_answer(&mut body)).await;
            if !body.is_end_stream() {
                self.linger.after_answer(body, read);
            }
        }
        let client = ctx.client.map(|c| live.clients.get(c).id.as_str());
        if let Err(err) = &result {
            let auditor = &self.forwarder.auditor;
            auditor.refused(&ctx, client.unwrap_or("unauthenticated"), err);
        }
        let response = respond::finish(result, &mut ctx, &live.clients, &self.metrics);
        observe::record(&ctx, client, &response, &self.metrics);
        response
    }

    /// The phases from admission to the upstream's answer.
    async fn serve(
        &self,
        live: &Live,
        ctx: &mut RequestCtx<'_>,
        head: &http::request::Parts,
        body: &mut Incoming,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let admission = Admission {
            clients: &live.clients,
            limiter: &self.limiter,
        };
        if let Admitted::Answered(response) = admission.admit(ctx, &head.headers).await? {
            return Ok(response);
        }
        self.before_body(live, ctx, head)?;
        let body = self.body_limits.read(&head.headers, body).await?;
        let out = match self.validate(live, ctx, head, body)? {
            Prepared::Answered(response) => return Ok(response),
            Prepared::Forward(out) => out,
        };
        if ctx.audit.as_ref().is_some_and(|a| a.limit_keys.is_some()) {
            // Boxed, as below: only payments wait for these limits.
            Box::pin(self.pre_forward_checks(ctx)).await?;
        }
        if ctx.audit.is_some() {
            let client = ctx.client.map(|c| live.clients.get(c).id.as_str());
            let auditor = &self.forwarder.auditor;
            let client = client.unwrap_or("unauthenticated");
            let phase = idempotent::Phase {
                idempotency: &self.idempotency,
                auditor,
                caller: &self.forwarder.caller,
            };
            // Boxed, as the forward below: with Redis, the check's future is large.
            let claim = phase.claim(ctx, client);
            let ticket = match Box::pin(claim).await? {
                Claimed::Replayed(response) => return Ok(response),
                Claimed::Forward(ticket) => ticket,
            };
            // Boxed: the audited forward's future is large, and unboxed it would make
            // every request's future (the plain forward's too) that large.
            Box::pin(self.forward_audited(live, ctx, out, ticket)).await
        } else {
            let called = self.forwarder.caller.send(out).await?;
            ctx.upstream_latency = Some(called.latency);
            Ok(called.response)
        }
    }

    /// The route's checks on the head alone, before any of the body is read.
    fn before_body(
        &self,
        live: &Live,
        ctx: &mut RequestCtx<'_>,
        head: &http::request::Parts,
    ) -> Result<(), ApiError> {
        let audit = &self.forwarder.auditor.log;
        match ctx.route {
            Route::Payment { .. } => self.payments.before_body(ctx, audit, head)?,
            Route::Transaction { action, .. } => transaction::before_body(ctx, action, audit)?,
            Route::TokenExchange => token::before_body(&head.headers)?,
            _ => {}
        }
        if ctx.audit.is_some() {
            let client = ctx.client.map(|c| live.clients.get(c).id.as_str());
            let key = idempotency::scoped_key(&self.hasher, client.unwrap_or(""), &head.headers)?;
            ctx.audited().idempotency_key = key;
        }
        Ok(())
    }

    /// The route's validation of the whole request.
    fn validate(
        &self,
        live: &Live,
        ctx: &mut RequestCtx<'_>,
        head: &http::request::Parts,
        body: bytes::Bytes,
    ) -> Result<Prepared, ApiError> {
        Ok(match ctx.route {
            Route::Payment { .. } => Prepared::Forward(self.payments.validate(ctx, head, body)?),
            Route::Transaction { action, .. } => {
                let out = transaction::validate(head, action, body)?;
                self.fingerprint_transaction(ctx, action, &out.body);
                Prepared::Forward(out)
            }
            Route::TokenExchange => {
                Prepared::Answered(token::answer(&live.clients, ctx, &head.headers, &body)?)
            }
            _ => Prepared::Forward(passthrough::prepare(head, body)),
        })
    }

    /// A transaction action with an `Idempotency-Key` gets its fingerprint; without one
    /// it is not tracked, so costs nothing.
    fn fingerprint_transaction(
        &self,
        ctx: &mut RequestCtx<'_>,
        action: route::TransactionAction,
        body: &[u8],
    ) {
        if ctx
            .audit
            .as_ref()
            .is_none_or(|a| a.idempotency_key.is_none())
        {
            return;
        }
        let order = ctx.order_id().unwrap_or("");
        let transaction = ctx.transaction_id().unwrap_or("");
        let fingerprint = transaction_fingerprint(&self.hasher, order, transaction, action, body);
        ctx.audited().fingerprint = Some(fingerprint);
    }

    /// The limits that need a validated payment: per order, per card, card attempts.
    async fn pre_forward_checks(&self, ctx: &RequestCtx<'_>) -> Result<(), ApiError> {
        let Some(keys) = ctx.audit.as_ref().and_then(|a| a.limit_keys.as_ref()) else {
            return Ok(());
        };
        let card = keys.card.as_ref().map(|(card, attempt)| (card, attempt));
        self.limiter.check_payment(Some(keys.order), card).await?;
        Ok(())
    }

    /// Audit `forwarded` -> upstream -> audit `completed`, detached from the storefront.
    async fn forward_audited(
        &self,
        live: &Live,
        ctx: &mut RequestCtx<'_>,
        out: Outgoing,
        ticket: Option<Ticket>,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let client_id = ctx.client.map(|c| live.clients.get(c).id.clone());
        let record = auditor::forwarded(ctx, client_id.as_deref().unwrap_or("unauthenticated"));
        let payment = ctx.audited().action == AuditedAction::Payment;
        let breaker_client = if payment { client_id } else { None };
        let tracked = ticket.is_some();
        let done = forward::audited(&self.forwarder, out, record, breaker_client, ticket).await;
        ctx.upstream_latency = done.latency;
        let audited = ctx.audited();
        audited.outcome = done.outcome;
        audited.upstream_status = done.upstream_status;
        audited.unknown_outcome = tracked && done.response.is_err() && done.outcome.was_forwarded();
        done.response
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Applies the live parts of a reloaded config: storefronts and routes for requests
    /// that start from now on, the limits' quotas (unchanged ones keep their counters)
    /// and, when they changed, the upstream credentials (a new token is fetched).
    pub fn reconfigure(&self, config: &Config, upstream_auth_changed: bool) {
        self.live.store(Arc::new(Live::new(config)));
        self.limiter.reconfigure(&config.limits);
        if upstream_auth_changed {
            self.forwarder.caller.token.replace(&config.upstream.auth);
        }
    }

    /// The metrics, with the audit writer's own counters and the readiness checks read
    /// at this moment.
    pub async fn metrics_text(&self) -> String {
        let audit = self.audit();
        let stats = audit.stats();
        let m = &self.metrics;
        m.audit_records.set(stats.records as i64);
        m.audit_fsyncs.set(stats.syncs as i64);
        m.audit_healthy.set(i64::from(audit.is_healthy()));
        let ready = self.readiness_problems().await.is_empty();
        let token = self.forwarder.caller.token.is_available().await;
        let store_up = self.limiter.readiness_problem().is_none();
        m.readiness.ready.set(i64::from(ready));
        m.readiness.upstream_token.set(i64::from(token));
        m.readiness.limits_store_up.set(i64::from(store_up));
        let token_expiry = self.forwarder.caller.token.expiry_unix();
        m.reload
            .token_expiry
            .set(token_expiry.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)));
        m.encode()
    }

    pub fn audit(&self) -> &AuditLog {
        &self.forwarder.auditor.log
    }

    /// Why payshim is not ready to serve payments, if it is not.
    pub async fn readiness_problems(&self) -> Vec<&'static str> {
        let mut problems = Vec::new();
        if !self.forwarder.caller.token.is_available().await {
            problems.push("no upstream token");
        }
        if !self.audit().is_healthy() {
            problems.push("audit log not writable");
        }
        // With on_store_error = "local", payments are still served while Redis is down,
        // so that is not a reason to leave the load balancer's rotation.
        if let Some(p) = self.limiter.readiness_problem()
            && self.limits_fail_closed
        {
            problems.push(p);
        }
        problems
    }

    /// Waits (up to `limit`) for forwarded requests whose storefront already went away,
    /// so their `completed` records are written before the audit log closes.
    pub async fn drain(&self, limit: Duration) {
        self.forwarder.auditor.drain(limit).await;
    }
}
