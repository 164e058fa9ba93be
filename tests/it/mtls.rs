//! mTLS (issue 4): with `server.client_ca` set, client certificates are required and
//! verified during the TLS handshake; a verified certificate maps to a configured client
//! by `cert_subject` ("CN=..." or "DNS:..."). Without a valid certificate no HTTP request
//! is ever read, so nothing can reach the upstream.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use serde_json::Value;

use support::payshim::{
    ORDER, Payshim, STOREFRONT_KEY, UPSTREAM_TOKEN, admin_get, payment_body, payment_request,
    set_key, sha256_hex, toml_path,
};
use support::{HttpVersion, TestClient, TestPki, TestResponse, World, moltin_like};

/// A second storefront with an API key only (for the "certificate and bearer disagree" case).
const OTHER_KEY: &str = "sf-other-test-key-4b3a29180f7e6d5c";

/// What this file adds to `World` (a trait: other files add their own).
trait WorldExt {
    fn config(&self) -> String;
    fn audit_records(&self) -> Vec<Value>;
}

impl WorldExt for World {
    /// Client certificates required (the test CA); `web-eu` identified by `CN=web-eu`
    /// alone (its API key removed), `pos-terminal` by the SAN `DNS:pos.shop.example`,
    /// `other` by an API key.
    fn config(&self) -> String {
        let toml = self.base_config();
        let toml = set_key(
            &toml,
            "server",
            "client_ca",
            Some(&toml_path(&self.pki.ca_path)),
        );
        let toml = set_key(&toml, "clients", "api_key_sha256", None);
        let mut toml = set_key(&toml, "clients", "cert_subject", Some("\"CN=web-eu\""));
        toml.push_str(&format!(
            r#"
[[clients]]
id = "pos-terminal"
cert_subject = "DNS:pos.shop.example"

[[clients]]
id = "other"
api_key_sha256 = "{}"
"#,
            sha256_hex(OTHER_KEY)
        ));
        toml
    }

    /// Every payment and transaction record written so far (not the start and stop
    /// records, which have no request id).
    fn audit_records(&self) -> Vec<Value> {
        let text = payshim::audit::read_records(&self.audit.path().join("payshim.jsonl"))
            .unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
            .filter(|r| r.get("request_id").is_some())
            .collect()
    }
}

fn client_with(payshim: &Payshim, version: HttpVersion, cert: &(PathBuf, PathBuf)) -> TestClient {
    TestClient::with_client_cert(&payshim.ca_pem, version, &cert.0, &cert.1)
}

async fn send(client: &TestClient, req: Request<Bytes>) -> Result<TestResponse, String> {
    tokio::time::timeout(Duration::from_secs(15), client.send(req))
        .await
        .expect("payshim answered (or refused) within 15 s")
}

async fn pay(
    payshim: &Payshim,
    client: &TestClient,
    headers: &[(&str, &str)],
) -> Result<TestResponse, String> {
    send(client, payment_request(payshim, headers, &payment_body())).await
}

/// `payshim_refused_connections_total` from /metrics.
async fn refused_connections(payshim: &Payshim) -> u64 {
    let (status, body) = admin_get(payshim.admin, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("payshim_refused_connections_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no payshim_refused_connections_total in:\n{body}"))
}

#[tokio::test]
async fn valid_certificate_pays_as_its_client() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let web_eu = world.pki.client_cert("web-eu");
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = client_with(&payshim, version, &web_eu);
        // No Authorization header at all: the certificate is the credential.
        let resp = pay(&payshim, &client, &[]).await.expect("mTLS payment");
        assert_eq!(resp.status, 201, "{version:?}: {}", resp.text());
        assert_eq!(resp.json()["data"]["type"], "transaction");
    }
    let recorded = world.upstream.requests();
    assert_eq!(recorded.len(), 2);
    for req in &recorded {
        assert_eq!(req.path, format!("/v2/orders/{ORDER}/payments"));
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {UPSTREAM_TOKEN}"))
        );
    }
    // Attributed to web-eu: the forwarded records are durable before the upstream call.
    let forwarded: Vec<Value> = world
        .audit_records()
        .into_iter()
        .filter(|r| r["event"] == "payment.forwarded")
        .collect();
    assert_eq!(forwarded.len(), 2, "{forwarded:?}");
    assert!(
        forwarded.iter().all(|r| r["client_id"] == "web-eu"),
        "{forwarded:?}"
    );
    payshim.stop().await;
}

#[tokio::test]
async fn certificate_maps_by_dns_san() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let pos = world.pki.client_cert("pos.shop.example");
    let client = client_with(&payshim, HttpVersion::Http2, &pos);
    let resp = pay(&payshim, &client, &[]).await.expect("mTLS payment");
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    let forwarded: Vec<Value> = world
        .audit_records()
        .into_iter()
        .filter(|r| r["event"] == "payment.forwarded")
        .collect();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0]["client_id"], "pos-terminal");
    payshim.stop().await;
}

#[tokio::test]
async fn bad_or_missing_certificates_fail_the_handshake() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let foreign_pki = TestPki::new();
    let foreign = foreign_pki.client_cert("web-eu");
    let expired = world.pki.expired_client_cert("web-eu");
    let refused_before = refused_connections(&payshim).await;
    let mut attempts = 0;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let cases: [(&str, TestClient); 3] = [
            (
                "certificate from another CA",
                client_with(&payshim, version, &foreign),
            ),
            (
                "expired certificate",
                client_with(&payshim, version, &expired),
            ),
            ("no certificate", payshim.client(version)),
        ];
        for (name, client) in cases {
            // With a credential that would otherwise be accepted: still refused.
            let other = format!("Bearer {OTHER_KEY}");
            let result = pay(&payshim, &client, &[("authorization", &other)]).await;
            attempts += 1;
            match result {
                Err(e) => {
                    let e = e.to_lowercase();
                    assert!(
                        !e.contains("no complete response within"),
                        "{name} ({version:?}): hung instead of failing: {e}"
                    );
                }
                Ok(resp) => panic!(
                    "{name} ({version:?}): got HTTP {} instead of a failed handshake: {}",
                    resp.status,
                    resp.text()
                ),
            }
        }
    }
    assert_eq!(
        world.upstream.count(),
        0,
        "a request without a valid certificate reached the upstream"
    );
    assert!(
        world.audit_records().is_empty(),
        "a request without a valid certificate was read: {:?}",
        world.audit_records()
    );
    let refused = refused_connections(&payshim).await - refused_before;
    assert!(
        refused >= attempts,
        "{refused} refused connections for {attempts} bad handshakes"
    );
    payshim.stop().await;
}

#[tokio::test]
async fn valid_certificate_of_an_unmapped_name_needs_a_credential() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let stranger = world.pki.client_cert("stranger.example");
    let client = client_with(&payshim, HttpVersion::Http1, &stranger);
    let resp = pay(&payshim, &client, &[])
        .await
        .expect("handshake succeeds");
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(resp.json()["errors"][0]["status"], 401);
    assert_eq!(world.upstream.count(), 0);

    // With a valid API key it is that key's client.
    let other = format!("Bearer {OTHER_KEY}");
    let resp = pay(&payshim, &client, &[("authorization", &other)])
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

#[tokio::test]
async fn certificate_and_bearer_of_different_clients_are_401() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let web_eu = world.pki.client_cert("web-eu");
    let client = client_with(&payshim, HttpVersion::Http1, &web_eu);
    for bearer in [
        format!("Bearer {OTHER_KEY}"),
        // web-eu's old API key was removed from the config: it is no credential now.
        format!("Bearer {STOREFRONT_KEY}"),
        "Bearer garbage".to_string(),
    ] {
        let resp = pay(&payshim, &client, &[("authorization", &bearer)])
            .await
            .unwrap();
        assert_eq!(resp.status, 401, "{bearer}: {}", resp.text());
    }
    assert_eq!(world.upstream.count(), 0);
    payshim.stop().await;
}
