//! Prometheus metrics, served by the admin listener.
//!
//! Labels hold only route names, methods and statuses, values payshim itself chose: never
//! anything a client supplied.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::OnceLock;
use std::time::Duration;

use crate::outcome::Outcome;
use crate::route::RouteName;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `payment` or `transaction`.
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// What the idempotency phase decided: `replayed`, `in_flight`, `mismatch`,
/// `order_in_flight`, `unknown_outcome` (payshim's own names, never a client's key).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdempotencyLabel {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// A reload's result: `ok` or `refused` (payshim's own names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// The first 16 hex digits of the running config's hash (secrets masked before hashing).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabel {
    pub hash: String,
}

/// What the reloads set: their count by result and what the running config serves.
#[derive(Clone, Default)]
pub struct ReloadMetrics {
    pub reloads: Family<ResultLabel, Counter>,
    /// Unix time of the last successful reload (of the start, before any).
    pub last_success: Gauge,
    /// Unix time of the served certificate's notAfter.
    pub certificate_not_after: Gauge,
    /// Unix time the upstream token expires; 0 without a token (or a static one).
    pub token_expiry: Gauge,
    /// One series, the current config's hash, at 1.
    pub config_info: Family<HashLabel, Gauge>,
}

impl ReloadMetrics {
    /// Counts a reload: `ok` or `refused`.
    pub fn counted(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Exports `hash` as the only `payshim_config_info` series.
    pub fn set_config_hash(&self, hash: &str) {
        self.config_info.clear();
        let hash = hash.chars().take(16).collect();
        self.config_info.get_or_create(&HashLabel { hash }).set(1);
    }

    fn register(&self, registry: &mut Registry) {
        // Both series from the start, so that an alert on the first refusal sees it rise.
        for result in ["ok", "refused"] {
            let _ = self.reloads.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "reloads",
            "Config reloads by result (refused: invalid config or TLS files, or a key that needs a restart changed)",
            self.reloads.clone(),
        );
        registry.register(
            "reload_last_success_timestamp_seconds",
            "Unix time of the last successful reload (or of the start)",
            self.last_success.clone(),
        );
        registry.register(
            "tls_certificate_not_after_timestamp_seconds",
            "Unix time at which the served TLS certificate expires",
            self.certificate_not_after.clone(),
        );
        registry.register(
            "upstream_token_expiry_timestamp_seconds",
            "Unix time at which the upstream token expires (0: no token, or a static one)",
            self.token_expiry.clone(),
        );
        registry.register(
            "config_info",
            "The running config: its hash (secrets masked) as a label",
            self.config_info.clone(),
        );
    }
}

/// The connection counters the public listener keeps (cheap clones of the registered
/// metrics).
#[derive(Clone, Default)]
pub struct ConnMetrics {
    /// Open storefront connections.
    pub open: Gauge,
    /// Connections refused: over the per-address cap, or a failed TLS handshake.
    pub refused: Counter,
}

/// What the pipeline's audit side measures (cheap clones of the registered metrics).
#[derive(Clone)]
pub struct AuditMetrics {
    /// From handing a record over until it is durable: the wait a payment sees twice.
    pub durable_seconds: Histogram,
    /// Forwarded requests whose `completed` record could not be written: each one is a
    /// payment or transaction action to reconcile (`payshim audit pending` lists them).
    pub completed_lost: Counter,
}

impl AuditMetrics {
    fn new() -> AuditMetrics {
        AuditMetrics {
            // 0.1 ms to about 3 s: an fdatasync on a fast disk up to a stalled one.
            durable_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            completed_lost: Counter::default(),
        }
    }
}

/// What `/readyz` checks, as gauges, so that alerts need no HTTP probe: set at each
/// scrape.
#[derive(Clone, Default)]
pub struct ReadinessMetrics {
    /// 1 when `/readyz` answers 200.
    pub ready: Gauge,
    /// 1 when a valid upstream token is held (always with a static token).
    pub upstream_token: Gauge,
    /// 1 when the shared rate-limit store (Redis) answers, and without one.
    pub limits_store_up: Gauge,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabel, Histogram>,
    pub upstream_seconds: Family<RouteLabel, Histogram>,
    pub rejections: Family<ReasonLabel, Counter>,
    /// Audited requests (payments, transaction actions) by their [`Outcome`].
    pub outcomes: Family<OutcomeLabels, Counter>,
    /// Replays, conflicts and unknown outcomes of the idempotency phase.
    pub idempotency: Family<IdempotencyLabel, Counter>,
    pub connections: ConnMetrics,
    /// Set from the audit writer's own counters at each scrape.
    pub audit_records: Gauge,
    pub audit_fsyncs: Gauge,
    pub audit_healthy: Gauge,
    pub audit_io: AuditMetrics,
    pub readiness: ReadinessMetrics,
    pub reload: ReloadMetrics,
    /// Each route's histograms, looked up in their families once: a family lookup (lock,
    /// label hash) on every request is measurable at proxy speeds.
    route_histograms: [OnceLock<(Histogram, Histogram)>; RouteName::COUNT],
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("payshim");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<RouteLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let upstream_seconds =
            Family::<RouteLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let rejections = Family::<ReasonLabel, Counter>::default();
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        let idempotency = Family::<IdempotencyLabel, Counter>::default();
        let connections = Gauge::default();
        let connections_refused = Counter::default();
        let audit_records = Gauge::default();
        let audit_fsyncs = Gauge::default();
        let audit_healthy = Gauge::default();
        registry.register("requests", "Requests served", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            request_seconds.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time waiting for the upstream response head",
            upstream_seconds.clone(),
        );
        registry.register(
            "rejections",
            "Requests refused by payshim itself, by reason",
            rejections.clone(),
        );
        registry.register(
            "outcomes",
            "Payments and transaction actions by outcome (the audit log's outcome)",
            outcomes.clone(),
        );
        registry.register(
            "idempotency",
            "Idempotency decisions: stored answers replayed, 409s (key or order in flight), \
             422s (key reused for another request), forwarded requests left without an answer",
            idempotency.clone(),
        );
        registry.register(
            "open_connections",
            "Open storefront connections",
            connections.clone(),
        );
        registry.register(
            "refused_connections",
            "Connections refused (limit reached or TLS handshake failed)",
            connections_refused.clone(),
        );
        registry.register(
            "audit_records",
            "Audit records made durable since start",
            audit_records.clone(),
        );
        registry.register(
            "audit_fsyncs",
            "fdatasync calls on the audit log since start (group commit: records per fsync)",
            audit_fsyncs.clone(),
        );
        registry.register(
            "audit_healthy",
            "1 when the audit log is writable",
            audit_healthy.clone(),
        );
        let audit_io = AuditMetrics::new();
        registry.register(
            "audit_durable_duration_seconds",
            "Time from handing an audit record over until it is durable (write and fdatasync)",
            audit_io.durable_seconds.clone(),
        );
        registry.register(
            "audit_completed_lost",
            "Forwarded requests whose completed record could not be written: to reconcile, \
             listed by `payshim audit pending`",
            audit_io.completed_lost.clone(),
        );
        let readiness = ReadinessMetrics::default();
        registry.register(
            "ready",
            "1 when /readyz answers 200",
            readiness.ready.clone(),
        );
        registry.register(
            "upstream_token_available",
            "1 when a valid upstream store token is held",
            readiness.upstream_token.clone(),
        );
        registry.register(
            "limits_store_up",
            "1 when the shared rate-limit store answers (also when none is configured)",
            readiness.limits_store_up.clone(),
        );
        let reload = ReloadMetrics::default();
        reload.register(&mut registry);
        Metrics {
            registry,
            requests,
            request_seconds,
            upstream_seconds,
            rejections,
            outcomes,
            idempotency,
            connections: ConnMetrics {
                open: connections,
                refused: connections_refused,
            },
            audit_records,
            audit_fsyncs,
            audit_healthy,
            audit_io,
            readiness,
            reload,
            route_histograms: Default::default(),
        }
    }

    /// Counts one finished request and records its latencies.
    pub fn observe_request(
        &self,
        route: RouteName,
        method: &'static str,
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        let route_name = route.as_str();
        self.requests
            .get_or_create(&RequestLabels {
                route: route_name,
                method,
                status,
            })
            .inc();
        let (request_seconds, upstream_seconds) = self.route_histograms[route as usize]
            .get_or_init(|| {
                let label = RouteLabel { route: route_name };
                (
                    self.request_seconds.get_or_create(&label).clone(),
                    self.upstream_seconds.get_or_create(&label).clone(),
                )
            });
        request_seconds.observe(total.as_secs_f64());
        if let Some(d) = upstream {
            upstream_seconds.observe(d.as_secs_f64());
        }
    }

    /// Counts one finished payment or transaction action.
    pub fn observe_outcome(&self, kind: &'static str, outcome: Outcome) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                kind,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts one decision of the idempotency phase.
    pub fn observe_idempotency(&self, event: &'static str) {
        self.idempotency
            .get_or_create(&IdempotencyLabel { event })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alert rules (deploy/prometheus/) need these from the first scrape: a family
    /// with labels appears only once a sample exists, these have none.
    #[test]
    fn readiness_and_audit_io_are_exported_before_any_event() {
        let m = Metrics::new();
        m.readiness.ready.set(1);
        m.audit_io.completed_lost.inc();
        m.audit_io.durable_seconds.observe(0.002);
        let text = m.encode();
        for line in [
            "payshim_ready 1",
            "payshim_upstream_token_available 0",
            "payshim_limits_store_up 0",
            "payshim_audit_completed_lost_total 1",
            "payshim_audit_durable_duration_seconds_count 1",
            "payshim_audit_durable_duration_seconds_bucket{le=\"0.0032\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
