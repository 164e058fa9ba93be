//! Refusals before the body is parsed: over `max_body`, a content type that is not JSON, an
//! order id that is not a UUID, a route that is not the payment route, no or a wrong
//! storefront key. Each is payshim's own JSON error, echoes no card data, and reaches no
//! upstream; a JSON content type with parameters is still JSON.

use crate::support;

use serde_json::json;

use support::cards::{VISA, pan};
use support::payshim::{ORDER, STOREFRONT_KEY};

use super::{
    HttpVersion, VERSIONS, World, assert_refused, card_body, payments_path, valid_year, with,
};

#[tokio::test]
async fn refusals_before_parsing_never_reach_the_upstream() {
    let mut world = World::start().await;
    let visa = pan(VISA, 50);
    let valid = card_body(&visa, "737", "7", &valid_year()).to_string();
    let bearer = format!("Bearer {STOREFRONT_KEY}");
    let path = payments_path();
    // 17 KiB: over the 16 KiB limits.max_body.
    let oversized = with(
        card_body(&visa, "737", "7", &valid_year()),
        "first_name",
        Some(json!("A".repeat(17 * 1024))),
    )
    .to_string();
    struct Case<'a> {
        name: &'a str,
        path: String,
        content_type: Option<&'a str>,
        auth: Option<&'a str>,
        body: &'a str,
        status: u16,
        sources: &'a [&'a str],
    }
    let case = |name, path: &str, content_type, auth, body, status| Case {
        name,
        path: path.to_string(),
        content_type,
        auth,
        body,
        status,
        sources: &[],
    };
    let json = Some("application/json");
    // The payment route with something else than a UUID where the order id goes: 400
    // naming the path segment (never echoing it: it may be a card number).
    let bad_order = |name, path: String| Case {
        name,
        path,
        content_type: json,
        auth: Some(&bearer),
        body: &valid,
        status: 400,
        sources: &["path.order_id"],
    };
    let cases = [
        case(
            "body over max_body",
            &path,
            json,
            Some(&bearer),
            &oversized,
            413,
        ),
        case(
            "text/plain",
            &path,
            Some("text/plain"),
            Some(&bearer),
            &valid,
            415,
        ),
        case("no content type", &path, None, Some(&bearer), &valid, 415),
        case(
            "form-encoded",
            &path,
            Some("application/x-www-form-urlencoded"),
            Some(&bearer),
            &valid,
            415,
        ),
        bad_order(
            "order id not a UUID",
            "/v2/orders/not-a-uuid/payments".to_string(),
        ),
        bad_order("order id a number", "/v2/orders/12345/payments".to_string()),
        bad_order("order id a PAN", format!("/v2/orders/{visa}/payments")),
        bad_order(
            "order id UUID without dashes",
            format!("/v2/orders/{}/payments", ORDER.replace('-', "")),
        ),
        bad_order(
            "order id UUID with a suffix",
            format!("/v2/orders/{ORDER}0/payments"),
        ),
        case(
            "trailing slash",
            &format!("{path}/"),
            json,
            Some(&bearer),
            &valid,
            404,
        ),
        case("no credential", &path, json, None, &valid, 401),
        case(
            "wrong storefront key",
            &path,
            json,
            Some("Bearer sf-web-eu-wrong-key-000000000000"),
            &valid,
            401,
        ),
    ];
    for case in &cases {
        for version in VERSIONS {
            let name = format!("{} over {version:?}", case.name);
            let resp = world
                .post_with(version, &case.path, case.content_type, case.auth, case.body)
                .await;
            assert_refused(&name, &resp, case.status, case.sources, &[&visa, "737"]);
            assert_eq!(
                world.upstream.count(),
                0,
                "{name}: reached the upstream: {:?}",
                world.upstream.requests()
            );
        }
    }
    // A vnd.api+json type and a charset are JSON, and a body just under the limit is read.
    let resp = world
        .post_with(
            HttpVersion::Http1,
            &path,
            Some("application/json; charset=utf-8"),
            Some(&bearer),
            &valid,
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    world.stop().await;
}
