//! An audit directory that cannot be created: payments get a 503 in the API's error
//! format, readiness fails while liveness holds, nothing is forwarded, and the binary logs
//! an error line about it.

use super::{payment, payment_request};
use crate::support;
use support::cards::Binary;
use support::payshim::{Payshim, admin_get, base_config, set_key};
use support::{HttpVersion, TestClient, TestPki, Upstream, moltin_like};

#[tokio::test]
async fn unwritable_audit_directory_is_503_and_not_ready() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    // The audit directory's parent is a regular file: no one, root included, can create it.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "a file").unwrap();
    let audit_dir = blocker.join("audit");
    let config = base_config(&pki, &upstream.url(), &audit_dir);
    // Info level: `Binary::start` reads the bound addresses from the serving line.
    let config = set_key(&config, "log", "level", Some("\"info\""));

    let payshim = Payshim::start(&config).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let resp = payshim
            .client(version)
            .send(payment_request(&payshim.url(""), &payment(1).1))
            .await
            .unwrap();
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert!(
            resp.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json")
        );
        let json = resp.json();
        assert_eq!(json["errors"][0]["status"], 503, "{json}");
        assert_eq!(
            json["errors"][0]["request_id"].as_str(),
            resp.header("x-request-id").as_deref(),
            "{json}"
        );
    }
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit"), "{body}");
    let (status, _) = admin_get(payshim.admin, "/healthz").await;
    assert_eq!(status, 200, "alive, just not ready");
    payshim.stop().await;
    assert_eq!(
        upstream.count(),
        0,
        "nothing forwarded without its audit record"
    );
    assert!(!audit_dir.exists());

    // The binary says so in its log, at error level.
    let mut binary = Binary::start(dir.path(), "unwritable", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let resp = client
        .send(payment_request(&binary.url(""), &payment(2).1))
        .await
        .unwrap();
    assert_eq!(resp.status, 503);
    let (status, _) = admin_get(binary.admin, "/readyz").await;
    assert_eq!(status, 503);
    binary.stop().await;
    let stdout = std::fs::read_to_string(&binary.stdout).unwrap();
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("audit")),
        "no error line about the audit log:\n{stdout}"
    );
    assert_eq!(upstream.count(), 0);
}
