//! The sandbox upstream (`upstream.url = "sandbox"`): payments are answered without an
//! upstream, still behind the storefront key, and only on loopback addresses.

use crate::support;

use std::collections::HashMap;

use super::{assert_api_error, assert_request_id, bearer, send};
use support::payshim::{ORDER, Payshim, base_config, payment_body, payment_request, set_key};
use support::{HttpVersion, TestPki};

#[tokio::test]
async fn sandbox_answers_payments_without_an_upstream() {
    let pki = TestPki::new();
    let audit = tempfile::tempdir().unwrap();
    let config = base_config(&pki, "sandbox", audit.path());
    let config = set_key(&config, "upstream.auth", "token", None);
    let payshim = Payshim::start(&config).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let resp = send(
            &payshim.client(version),
            payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
        )
        .await
        .unwrap();
        // Today's API answers a payment with 200.
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("x-payshim-sandbox").as_deref(), Some("true"));
        assert_request_id(&resp);
        let json = resp.json();
        assert_eq!(json["data"]["type"], "transaction", "{json}");
        assert_eq!(
            json["data"]["relationships"]["order"]["data"]["id"], ORDER,
            "{json}"
        );
        assert!(!resp.text().contains("4111111111111111"));
    }
    // The sandbox still requires a storefront credential.
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        payment_request(&payshim, &[], &payment_body()),
    )
    .await
    .unwrap();
    assert_api_error(&resp, 401);
    payshim.stop().await;
}

#[tokio::test]
async fn sandbox_on_a_non_loopback_address_is_refused() {
    let pki = TestPki::new();
    let audit = tempfile::tempdir().unwrap();
    let sandbox = base_config(&pki, "sandbox", audit.path());
    let no_env = HashMap::new();
    payshim::config::from_toml(&sandbox, &no_env).expect("sandbox on loopback is fine");

    let public = set_key(&sandbox, "server", "listen", Some("\"0.0.0.0:0\""));
    let err = payshim::config::from_toml(&public, &no_env).expect_err("sandbox on 0.0.0.0");
    assert_eq!(err.key, "server.listen", "{err}");

    let env = HashMap::from([(
        "PAYSHIM__ADMIN__LISTEN".to_string(),
        "0.0.0.0:9901".to_string(),
    )]);
    let err = payshim::config::from_toml(&sandbox, &env).expect_err("sandbox admin on 0.0.0.0");
    assert_eq!(err.key, "admin.listen", "{err}");

    // A real upstream may listen anywhere.
    let real = base_config(&pki, "https://api.moltin.com", audit.path());
    let real = set_key(&real, "server", "listen", Some("\"0.0.0.0:0\""));
    payshim::config::from_toml(&real, &no_env).expect("a real upstream on 0.0.0.0");
}
