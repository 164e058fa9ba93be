//! Shared integration-test support: a throw-away PKI (`pki`), an upstream API test double
//! standing in for `https://api.moltin.com` (`upstream`), a storefront test client
//! (`client`), and payshim itself run in process with a test config (`payshim`).
//!
//! `tests/it/main.rs` includes this with `mod support;`. Some helpers are kept for tests
//! yet to come or used only in some configurations, hence the allows below (the accepted
//! pattern for shared test support).
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod payshim;
pub mod pki;
pub mod promql;
pub mod redis;
pub mod serving;
pub mod upstream;
pub mod world;

pub use client::{HttpVersion, TestClient, TestResponse, tls11_client_hello};
pub use pki::TestPki;
pub use upstream::{
    Handler, Recorded, Reply, TRICKLE_CHUNK, Upstream, blackhole, closed_port, handler, moltin_like,
};
pub use world::World;
pub mod abuse_scene;
pub mod cards;
pub mod h2abuse;
pub mod h2raw;
pub mod load;
pub mod node;
pub mod sdk_run;
pub mod storefront;
