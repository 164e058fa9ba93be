//! Every integration test in one binary: one link step instead of one per file, and the
//! shared `support` compiled once. Each module is one former `tests/NAME.rs`, so a test's
//! path names its file: `cargo test --test it card_leak::` runs that file's tests.
//!
//! Not here: `tests/limits_memory.rs`, which reads its own process's resident memory and
//! so needs a process of its own.

mod support;

mod alert_rules;
mod alert_signals;
mod audit_cli;
mod audit_e2e;
mod audit_events;
mod browser;
mod card_leak;
mod config_errors;
mod connections;
mod core_proxy;
mod cors;
mod early_refusals;
mod gateways;
mod h2_abuse;
mod h2_abuse_bench;
mod idempotency;
mod limits_e2e;
mod limits_redis;
mod metric_names;
mod mtls;
mod payments;
mod reload;
mod sdk_e2e;
mod sdk_retry;
mod shutdown;
mod soak;
mod support_ports;
mod support_selftest;
mod token_exchange;
mod transactions;
mod upstream_pool;
mod upstream_timeouts;
mod upstream_token;
