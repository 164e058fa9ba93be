//! The core proxy end to end (issue 2): a real payshim (`payshim::run`, in process) between
//! a storefront test client and the upstream test double, on loopback with real TLS.
//!
//! Each test starts its own upstream and payshim on kernel-chosen ports, so all of them run
//! in parallel.
//!
//! One topic per file: what is forwarded and how (`forwarding`), which routes and
//! credentials are served (`routes`), TLS versions (`tls`), a failing upstream
//! (`upstream_failures`), the body size limit (`body_limits`), the sandbox upstream
//! (`sandbox`). This file holds what they share.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use support::payshim::STOREFRONT_KEY;
use support::{Recorded, TestResponse, World};

const TRANSACTION: &str = "3f2a1b0c-4d5e-4f60-8a7b-9c0d1e2f3a4b";

/// What this file adds to `World` (a trait: other files add their own).
trait WorldExt {
    fn config(&self) -> String;
}

impl WorldExt for World {
    /// A valid config pointing at this world's upstream.
    fn config(&self) -> String {
        self.base_config()
    }
}

fn bearer() -> String {
    format!("Bearer {STOREFRONT_KEY}")
}

/// `x-request-id` is present and a UUID version 7; returns it.
fn assert_request_id(resp: &TestResponse) -> String {
    let id = resp
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on a {} response", resp.status));
    let uuid = uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("x-request-id {id:?}: {e}"));
    assert_eq!(
        uuid.get_version_num(),
        7,
        "x-request-id {id} is not a UUID v7"
    );
    id
}

/// payshim's own error: the status, `Content-Type: application/json` and the API error
/// format `{"errors":[{"status","title","detail","request_id"}]}` with the response's
/// request id.
fn assert_api_error(resp: &TestResponse, status: u16) {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    let id = assert_request_id(resp);
    let json = resp.json();
    let errors = json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {json}"));
    assert!(!errors.is_empty(), "{json}");
    let first = &errors[0];
    assert_eq!(first["status"], status, "{json}");
    assert!(
        first["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{json}"
    );
    assert!(
        first["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{json}"
    );
    assert_eq!(first["request_id"].as_str(), Some(id.as_str()), "{json}");
}

/// The storefront key must never reach the upstream, in any header or the body.
fn assert_no_storefront_key(req: &Recorded) {
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(STOREFRONT_KEY),
            "storefront key forwarded in header {name}: {value}"
        );
    }
    assert!(
        !String::from_utf8_lossy(&req.body).contains(STOREFRONT_KEY),
        "storefront key forwarded in the body"
    );
}

/// Sends with a guard, so a hang fails the test instead of stalling it.
async fn send(client: &support::TestClient, req: Request<Bytes>) -> Result<TestResponse, String> {
    tokio::time::timeout(Duration::from_secs(15), client.send(req))
        .await
        .expect("payshim answered (or failed) within 15 s")
}

/// One test per row: `name: scenario(arguments);`. A table of cases that keeps each case a
/// test of its own (its own name in the report, run in parallel with the others).
macro_rules! cases {
    ($($name:ident: $scenario:ident($($arg:expr),*);)*) => {$(
        #[tokio::test]
        async fn $name() {
            $scenario($($arg),*).await;
        }
    )*};
}

// Declared after `cases!`, which is in scope only in what follows its definition.
mod body_limits;
mod forwarding;
mod routes;
mod sandbox;
mod tls;
mod upstream_failures;
