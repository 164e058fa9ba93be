//! Each quota kind through the server (`per_client`, `per_ip`, `per_order`, `per_card`)
//! and the card-cracking cap (`card_attempts`): the payments within the quota are served,
//! the next is refused with a 429 in the API error format and `Retry-After`, nothing is
//! forwarded for it, another key is unaffected, and the refusal is audited with the scope.

use crate::support;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};

use support::cards::{MASTERCARD, VISA, pan};
use support::load::{LocalClient, card_payment, future_year, payment_to, wait_rejected};
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY};
use support::upstream::random_uuid;
use support::{HttpVersion, TestClient, World, moltin_like};

use super::{
    HOUR, OTHER_KEY, PUBLIC_ID, WorldExt, assert_emission_interval, assert_rate_limited,
    assert_rejection_record, assert_served, payment, send,
};

/// One quota kind, tested the same way as the others (see `three_then_429`).
struct Quota {
    /// The `[limits]` key; every case allows 3 payments per `period`.
    kind: &'static str,
    value: &'static str,
    period: Duration,
    version: HttpVersion,
    /// The n-th payment sharing the key: (order, storefront key, body).
    same: fn(u64) -> (String, &'static str, String),
    /// What the shared payments have in common, for failure messages.
    shared: &'static str,
    /// A payment with another key, and what it stands for.
    other: fn() -> (String, &'static str, String),
    other_what: &'static str,
}

/// A quota of 3 per period on `q.kind`: three payments sharing the key are served, the
/// fourth is refused (429 with `Retry-After` of one emission interval, nothing forwarded),
/// one with another key is served. Returns the world, payshim, client and the refused
/// payment's order, for the checks of each kind.
async fn three_then_429(q: &Quota) -> (World, Payshim, TestClient, String) {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[(q.kind, q.value)])).await;
    let client = payshim.client(q.version);
    let base = payshim.url("");

    for n in 0..3 {
        let (order, bearer, body) = (q.same)(n);
        let resp = send(&client, payment_to(&base, &order, bearer, &body)).await;
        assert_served(&resp, &format!("payment {n} {}", q.shared));
    }
    let (order, bearer, body) = (q.same)(3);
    let resp = send(&client, payment_to(&base, &order, bearer, &body)).await;
    let retry = assert_rate_limited(&resp, q.kind, q.period);
    assert_emission_interval(retry, q.period, 3);
    assert_eq!(world.upstream.count(), 3, "nothing forwarded for the 429");

    let (other_order, other_bearer, other_body) = (q.other)();
    let resp = send(
        &client,
        payment_to(&base, &other_order, other_bearer, &other_body),
    )
    .await;
    assert_served(&resp, q.other_what);
    assert_eq!(world.upstream.count(), 4);
    (world, payshim, client, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_quota_is_per_storefront() {
    let (world, payshim, client, order) = three_then_429(&Quota {
        kind: "per_client",
        value: "\"3/h\"",
        period: HOUR,
        version: HttpVersion::Http1,
        same: |n| (random_uuid(), STOREFRONT_KEY, payment(VISA, n).1),
        shared: "of web-eu",
        // Another storefront has its own quota.
        other: || (random_uuid(), OTHER_KEY, payment(VISA, 4).1),
        other_what: "web-us",
    })
    .await;

    // web-eu stays limited.
    let resp = send(
        &client,
        payment_to(
            &payshim.url(""),
            &random_uuid(),
            STOREFRONT_KEY,
            &payment(VISA, 5).1,
        ),
    )
    .await;
    assert_rate_limited(&resp, "per_client", HOUR);
    assert_eq!(world.upstream.count(), 4);

    let rejected = wait_rejected(&world.audit_path(), "per_client", 2).await;
    assert_rejection_record(&rejected[0], "web-eu", &order);
}

/// A session token of `web-browser` (implicit grant). It is fetched from 127.0.0.3: the
/// token exchange is IP-limited too, and the per-IP tests count payments only.
async fn browser_session(payshim: &Payshim) -> String {
    let token_client = LocalClient::new(&payshim.ca_pem, HttpVersion::Http1, [127, 0, 0, 3].into());
    let resp = token_client
        .send(
            Request::builder()
                .method(Method::POST)
                .uri(payshim.url("/oauth/access_token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Bytes::from(format!(
                    "grant_type=implicit&client_id={PUBLIC_ID}"
                )))
                .unwrap(),
        )
        .await
        .expect("token exchange");
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_quota_applies_to_browser_sessions() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("per_ip", "\"3/h\"")])).await;
    let base = payshim.url("");
    let localhost: IpAddr = [127, 0, 0, 1].into();
    let second: IpAddr = [127, 0, 0, 2].into();

    let session = browser_session(&payshim).await;

    let first = LocalClient::new(&payshim.ca_pem, HttpVersion::Http1, localhost);
    for n in 0..3 {
        let resp = first
            .send(payment_to(
                &base,
                &random_uuid(),
                &session,
                &payment(VISA, n).1,
            ))
            .await
            .unwrap();
        assert_served(&resp, &format!("browser payment {n} from 127.0.0.1"));
    }
    let order = random_uuid();
    let resp = first
        .send(payment_to(&base, &order, &session, &payment(VISA, 3).1))
        .await
        .unwrap();
    let retry = assert_rate_limited(&resp, "per_ip", HOUR);
    assert_emission_interval(retry, HOUR, 3);
    assert_eq!(world.upstream.count(), 3, "nothing forwarded for the 429");

    // Another address with the same session is served...
    let other = LocalClient::new(&payshim.ca_pem, HttpVersion::Http2, second);
    let resp = other
        .send(payment_to(
            &base,
            &random_uuid(),
            &session,
            &payment(VISA, 4).1,
        ))
        .await
        .unwrap();
    assert_served(&resp, "browser payment from 127.0.0.2");
    // ...and so is a server storefront (API key) from the limited address: only browser
    // callers are limited per IP.
    let resp = first
        .send(payment_to(
            &base,
            &random_uuid(),
            STOREFRONT_KEY,
            &payment(VISA, 5).1,
        ))
        .await
        .unwrap();
    assert_served(&resp, "API-key payment from 127.0.0.1");
    assert_eq!(world.upstream.count(), 5);

    let rejected = wait_rejected(&world.audit_path(), "per_ip", 1).await;
    assert_eq!(rejected[0]["remote_addr"], "127.0.0.1", "{}", rejected[0]);
    assert_eq!(rejected[0]["order_id"], order.as_str(), "{}", rejected[0]);
}

/// A per-IP refusal of a caller whose session token is valid names its storefront in the
/// audit record, like every other limit's refusal does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_rejection_of_a_valid_session_names_the_storefront() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("per_ip", "\"1/h\"")])).await;
    let session = browser_session(&payshim).await;
    let client = LocalClient::new(&payshim.ca_pem, HttpVersion::Http1, [127, 0, 0, 1].into());
    let base = payshim.url("");
    let resp = client
        .send(payment_to(
            &base,
            &random_uuid(),
            &session,
            &payment(VISA, 1).1,
        ))
        .await
        .unwrap();
    assert_served(&resp, "first browser payment");
    let order = random_uuid();
    let resp = client
        .send(payment_to(&base, &order, &session, &payment(VISA, 2).1))
        .await
        .unwrap();
    assert_rate_limited(&resp, "per_ip", HOUR);
    let rejected = wait_rejected(&world.audit_path(), "per_ip", 1).await;
    assert_rejection_record(&rejected[0], "web-browser", &order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_order_quota() {
    let (world, _payshim, _client, order) = three_then_429(&Quota {
        kind: "per_order",
        value: "\"3/10min\"",
        period: Duration::from_secs(600),
        version: HttpVersion::Http2,
        same: |n| (ORDER.to_string(), STOREFRONT_KEY, payment(VISA, n).1),
        shared: "on the order",
        other: || (random_uuid(), STOREFRONT_KEY, payment(VISA, 4).1),
        other_what: "another order",
    })
    .await;
    assert_eq!(order, ORDER);

    let rejected = wait_rejected(&world.audit_path(), "per_order", 1).await;
    assert_rejection_record(&rejected[0], "web-eu", ORDER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_card_quota_across_orders() {
    let (world, _payshim, _client, order) = three_then_429(&Quota {
        kind: "per_card",
        value: "\"3/h\"",
        period: HOUR,
        version: HttpVersion::Http1,
        same: |_| (random_uuid(), STOREFRONT_KEY, payment(MASTERCARD, 1).1),
        shared: "with the card",
        // Another card (same storefront, same brand).
        other: || (random_uuid(), STOREFRONT_KEY, payment(MASTERCARD, 2).1),
        other_what: "another card",
    })
    .await;

    let (number, _) = payment(MASTERCARD, 1);
    let rejected = wait_rejected(&world.audit_path(), "per_card", 1).await;
    assert_rejection_record(&rejected[0], "web-eu", &order);
    assert_eq!(
        rejected[0]["card"]["last4"],
        &number[number.len() - 4..],
        "{}",
        rejected[0]
    );
    assert_eq!(
        rejected[0]["card"]["brand"], "mastercard",
        "{}",
        rejected[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_attempts_cap_distinct_expiry_and_cvv() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("card_attempts", "\"3/h\"")])).await;
    let client = payshim.client(HttpVersion::Http1);
    let base = payshim.url("");
    let number = pan(VISA, 42);
    let year = future_year(3);
    let attempt = |month: &str, cvv: &str| card_payment(&number, month, &year, cvv);

    // Three distinct (expiry, CVV) combinations for one card number, each on its own order.
    for (month, cvv) in [("01", "601"), ("02", "602"), ("03", "603")] {
        let resp = send(
            &client,
            payment_to(&base, &random_uuid(), STOREFRONT_KEY, &attempt(month, cvv)),
        )
        .await;
        assert_served(&resp, &format!("attempt {month}/{cvv}"));
    }
    // A fourth is card cracking.
    let order = random_uuid();
    let resp = send(
        &client,
        payment_to(&base, &order, STOREFRONT_KEY, &attempt("04", "604")),
    )
    .await;
    let retry = assert_rate_limited(&resp, "card_attempts", HOUR);
    // Until the first attempt leaves the one-hour window.
    assert!(retry + 10 >= HOUR.as_secs(), "Retry-After {retry}");
    // A refused combination is not recorded: a fifth new one is refused as well.
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), STOREFRONT_KEY, &attempt("05", "605")),
    )
    .await;
    assert_rate_limited(&resp, "card_attempts", HOUR);
    assert_eq!(world.upstream.count(), 3, "nothing forwarded for the 429s");

    // Repeating a combination already tried (a customer's retry) is not a new attempt.
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), STOREFRONT_KEY, &attempt("02", "602")),
    )
    .await;
    assert_served(&resp, "repeated combination");
    // Another card number with the refused combination is served.
    let other = pan(VISA, 43);
    let resp = send(
        &client,
        payment_to(
            &base,
            &random_uuid(),
            STOREFRONT_KEY,
            &card_payment(&other, "04", &year, "604"),
        ),
    )
    .await;
    assert_served(&resp, "another card");
    assert_eq!(world.upstream.count(), 5);

    let rejected = wait_rejected(&world.audit_path(), "card_attempts", 2).await;
    assert_rejection_record(&rejected[0], "web-eu", &order);
    assert_eq!(
        rejected[0]["card"]["last4"],
        &number[number.len() - 4..],
        "{}",
        rejected[0]
    );
}
