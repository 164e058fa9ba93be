//! The invalid-payment table (its cases in `invalid_cards.rs` and `invalid_bodies.rs`):
//! every case refused with 400, one error entry per bad field, nothing echoed, nothing
//! forwarded, each refusal audited; and the expiry decided at the UTC month boundary.

use crate::support;

use support::cards::{VISA, pan, previous_month, utc_year_month};

use super::invalid_bodies::body_cases;
use super::invalid_cards::{card_cases, wrong_length_cases};
use super::{VERSIONS, World, assert_refused, card_body};

/// An invalid request: its body, and what payshim must answer.
pub(super) struct Bad {
    pub(super) name: String,
    pub(super) body: String,
    pub(super) sources: Vec<&'static str>,
    /// Values that must not come back (PANs, CVVs, other submitted values).
    pub(super) secrets: Vec<String>,
}

pub(super) fn bad(
    name: &str,
    body: impl Into<String>,
    sources: &[&'static str],
    secrets: &[&str],
) -> Bad {
    Bad {
        name: name.to_string(),
        body: body.into(),
        sources: sources.to_vec(),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
    }
}

/// Every rule of the payment parser (src/payment), broken once (some several at a time).
fn invalid_cases() -> Vec<Bad> {
    let mut cases = card_cases();
    cases.extend(body_cases());
    cases.extend(wrong_length_cases());
    cases
}

#[tokio::test]
async fn invalid_payments_are_400_per_field_and_never_forwarded() {
    let mut world = World::start().await;
    let cases = invalid_cases();
    for case in &cases {
        for version in VERSIONS {
            let resp = world.pay(version, &case.body).await;
            let name = format!("{} over {version:?}", case.name);
            let secrets: Vec<&str> = case.secrets.iter().map(String::as_str).collect();
            assert_refused(&name, &resp, 400, &case.sources, &secrets);
            assert_eq!(
                world.upstream.count(),
                0,
                "{name}: an invalid payment reached the upstream: {:?}",
                world.upstream.requests()
            );
        }
    }
    // Each refusal is audited as payment.rejected (written after the answer: wait for it).
    world.stop().await;
    let records = world.audit_records();
    assert_eq!(records.len(), cases.len() * 2);
    assert!(
        records
            .iter()
            .all(|r| r["event"] == "payment.rejected" && r["outcome"] == "rejected"),
        "{records:?}"
    );
}

#[tokio::test]
async fn expiry_is_decided_at_the_utc_month_boundary() {
    let mut world = World::start().await;
    let visa = pan(VISA, 40);
    for version in VERSIONS {
        // Computed per request so a month boundary between two requests cannot flake.
        let now = utc_year_month();
        let (year, month) = previous_month(now);
        let resp = world
            .pay(
                version,
                &card_body(&visa, "737", &month.to_string(), &year.to_string()).to_string(),
            )
            .await;
        if utc_year_month() == now {
            assert_refused("expired last month", &resp, 400, &["data.year"], &[&visa]);
        }
        assert_eq!(world.upstream.count(), 0);
    }
    for (i, version) in VERSIONS.into_iter().enumerate() {
        let (year, month) = utc_year_month();
        let resp = world
            .pay(
                version,
                &card_body(&visa, "737", &format!("{month:02}"), &year.to_string()).to_string(),
            )
            .await;
        if utc_year_month() == (year, month) {
            assert_eq!(resp.status, 201, "expiring this month: {}", resp.text());
            assert_eq!(world.upstream.count(), i + 1);
            assert_eq!(
                world.upstream.requests()[i].json()["data"]["month"],
                format!("{month:02}")
            );
        }
    }
    world.stop().await;
}
