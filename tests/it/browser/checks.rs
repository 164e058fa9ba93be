//! The checks of a browser run, one topic each: payments from the allowed origin with both
//! SDKs, refused payments (a bad card, a declined one), re-authentication with a token
//! payshim no longer accepts, and a page on an origin payshim does not allow.

use serde_json::{Value, json};

use super::{
    BAD_CARD, BAD_CARD_ORDER, DECLINED_ORDER, EXPIRED_ORDER, FOREIGN_ORDER, MOLTIN_ORDER,
    PAY_ORDER, STALE_ORDER, Seen, declined,
};
use crate::support;
use support::payshim::UPSTREAM_TOKEN;

const TOKEN_GRANTED: &str = "POST /oauth/access_token 200";

/// From the allowed origin, with both SDKs: the implicit grant, then the payment, each
/// preflighted (the SDK sends its own X-MOLTIN-* headers; the browser caches a preflight
/// for payshim's max-age, so only the first step shows both) and readable by the page's
/// code, all over HTTP/2; the upstream got the store's token, never the browser's.
pub(super) fn check_payments_from_the_allowed_origin(seen: &Seen) {
    let report = &seen.report;
    assert_eq!(
        seen.network("pay", true),
        vec![
            "OPTIONS /oauth/access_token 204".to_string(),
            format!("OPTIONS /v2/orders/{PAY_ORDER}/payments 204")
        ],
        "{report}"
    );
    for (step, order) in [("pay", PAY_ORDER), ("pay_moltin", MOLTIN_ORDER)] {
        let r = seen.page(step);
        assert_eq!(r["ok"], true, "{step}\n{report}");
        let data = &r["result"]["data"];
        assert_eq!(data["type"], "transaction", "{step}\n{report}");
        assert_eq!(data["relationships"]["order"]["data"]["id"], order);
        let payment = format!("POST /v2/orders/{order}/payments 201");
        assert_eq!(
            seen.network(step, false),
            vec![TOKEN_GRANTED.to_string(), payment],
            "{step}\n{report}"
        );
        for request in seen.results[step]["network"].as_array().expect("network") {
            assert_eq!(request["protocol"], "h2", "{step}: {request}\n{report}");
        }
        // The page itself saw both answers.
        let statuses: Vec<&Value> = r["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|e| &e["responseStatus"])
            .collect();
        assert_eq!(statuses, [&json!(200), &json!(201)], "{step}\n{report}");
        let forwarded = seen.upstream_payments(order);
        assert_eq!(forwarded.len(), 1, "{step}\n{report}");
        assert_eq!(
            forwarded[0].header("authorization"),
            Some(format!("Bearer {UPSTREAM_TOKEN}"))
        );
        for (name, value) in &forwarded[0].headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains("ps1."),
                "the browser's session token reached the upstream in {name}"
            );
        }
    }
    // payshim's side: it answered the preflights of the token exchange and the payments.
    for route in ["token", "payments"] {
        let sample = format!(
            "payshim_requests_total{{route=\"{route}\",method=\"OPTIONS\",status=\"204\"}}"
        );
        assert!(seen.metric(&sample) >= 1, "no {sample}\n{}", seen.metrics);
    }
}

/// A bad card: payshim's 400 in the API's format reaches the page's code, naming the
/// field, nothing upstream. A card the gateway declines: the API's own error, as it
/// answered.
pub(super) fn check_refused_payments(seen: &Seen) {
    let report = &seen.report;
    let bad = seen.page("bad_card");
    assert_eq!(bad["ok"], false, "{report}");
    let error = &bad["error"]["errors"][0];
    assert_eq!(error["status"], 400, "{report}");
    assert_eq!(error["source"], "data.number", "{report}");
    assert!(
        error["title"].is_string() && error["request_id"].is_string(),
        "{error}"
    );
    assert!(
        !bad.to_string().contains(BAD_CARD),
        "the card number came back: {bad}"
    );
    assert!(seen.upstream_payments(BAD_CARD_ORDER).is_empty());

    let declined_page = seen.page("declined");
    assert_eq!(declined_page["ok"], false, "{report}");
    assert_eq!(declined_page["error"], declined(), "{report}");
    assert_eq!(seen.upstream_payments(DECLINED_ORDER).len(), 1, "{report}");
}

/// A token payshim no longer accepts (another deployment's key; expired) that the SDK
/// still takes for valid: 401, a new token, the resend; one charge.
pub(super) fn check_reauthentication(seen: &Seen) {
    let report = &seen.report;
    for (step, order) in [("stale", STALE_ORDER), ("expired", EXPIRED_ORDER)] {
        assert_eq!(seen.page(step)["ok"], true, "{step}\n{report}");
        let payment = format!("POST /v2/orders/{order}/payments");
        assert_eq!(
            seen.network(step, false),
            vec![
                format!("{payment} 401"),
                TOKEN_GRANTED.to_string(),
                format!("{payment} 201")
            ],
            "{step}\n{report}"
        );
        assert_eq!(seen.upstream_payments(order).len(), 1, "{step}\n{report}");
    }
    let probes = format!("/v2/orders/{EXPIRED_ORDER}/transactions");
    assert!(seen.upstream.iter().all(|r| r.path != probes));
}

/// From an origin payshim does not allow, the page can read nothing: the browser's fetch
/// (a simple request, not preflighted) and the SDK both fail with a TypeError, the
/// browser naming the missing CORS grant, and no payment reaches the upstream.
pub(super) fn check_foreign_origin(seen: &Seen) {
    let report = &seen.report;
    for part in ["simple", "payment"] {
        let r = &seen.page("foreign")[part];
        assert_eq!(r["ok"], false, "{part}\n{report}");
        assert_eq!(r["error"]["name"], "TypeError", "{part}\n{report}");
    }
    let cors_errors: Vec<&Value> = seen.results["foreign"]["network"]
        .as_array()
        .expect("network")
        .iter()
        .filter_map(|r| r.get("corsError"))
        .collect();
    assert_eq!(
        cors_errors,
        [
            &json!("MissingAllowOriginHeader"),
            &json!("PreflightMissingAllowOriginHeader")
        ],
        "{report}"
    );
    assert!(seen.upstream_payments(FOREIGN_ORDER).is_empty(), "{report}");
    // payshim did answer the simple request, with no CORS grant: the browser withheld it.
    let refused = "payshim_requests_total{route=\"token\",method=\"POST\",status=\"403\"}";
    assert!(seen.metric(refused) >= 1, "no {refused}\n{}", seen.metrics);
}
