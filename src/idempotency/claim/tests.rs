use bytes::Bytes;
use http::StatusCode;

use super::*;
use crate::idempotency::Settled;
use crate::outcome::Outcome;

fn config(window: Option<Duration>) -> IdempotencyConfig {
    IdempotencyConfig {
        ttl: Duration::from_secs(3600),
        max_keys: 100,
        duplicate_window: window,
        one_payment_per_order: true,
    }
}

fn answered(outcome: Outcome) -> Settled {
    Settled::Answered {
        status: StatusCode::CREATED,
        content_type: None,
        body: Bytes::from_static(b"{\"data\":{}}"),
        outcome,
        request_id: "r1".into(),
    }
}

fn request(key: Option<Digest>, fingerprint: u8) -> TicketRequest<'static> {
    TicketRequest {
        client: "web-eu",
        key,
        fingerprint: [fingerprint; 32],
        order: Some(uuid::Uuid::from_u128(1)),
        probe: Some(Probe::Created {
            gateway: Some("card_connect".into()),
            kind: "purchase".into(),
        }),
    }
}

async fn proceed(idem: &Idempotency, req: TicketRequest<'_>) -> Ticket {
    match idem.check(&req).await {
        Ok(Decision::Proceed(t)) => t,
        Ok(Decision::Replay(_)) => panic!("replayed"),
        Ok(Decision::Resolve(_)) => panic!("unknown outcome"),
        Err(e) => panic!("refused: {e:?}"),
    }
}

#[tokio::test]
async fn key_in_flight_then_replayed_other_request_refused() {
    let idem = Idempotency::local(&config(None), b"k");
    let ticket = proceed(&idem, request(Some([9; 32]), 1)).await;
    let again = idem.check(&request(Some([9; 32]), 1)).await;
    assert!(matches!(again, Err(ApiError::IdempotencyInFlight)));
    ticket.finish(answered(Outcome::Approved)).await;
    let again = idem.check(&request(Some([9; 32]), 1)).await;
    assert!(matches!(again, Ok(Decision::Replay(_))));
    let other = idem.check(&request(Some([9; 32]), 2)).await;
    assert!(matches!(other, Err(ApiError::IdempotencyMismatch)));
}

#[tokio::test]
async fn one_payment_per_order_and_a_refusal_frees_the_key() {
    let idem = Idempotency::local(&config(None), b"k");
    let first = proceed(&idem, request(None, 1)).await;
    let second = idem.check(&request(Some([9; 32]), 1)).await;
    assert!(matches!(second, Err(ApiError::OrderInFlight)));
    drop(first);
    proceed(&idem, request(Some([9; 32]), 1)).await;
}

#[tokio::test]
async fn duplicate_window_keeps_only_approved_payments() {
    let idem = Idempotency::local(&config(Some(Duration::from_secs(600))), b"k");
    let t = proceed(&idem, request(None, 1)).await;
    t.finish(answered(Outcome::Declined)).await;
    let t = proceed(&idem, request(None, 1)).await;
    t.finish(answered(Outcome::Approved)).await;
    let again = idem.check(&request(None, 1)).await;
    assert!(matches!(again, Ok(Decision::Replay(_))));
    proceed(&idem, request(None, 2)).await;
}

#[tokio::test]
async fn unknown_outcome_is_held_then_resolved_or_taken_over() {
    let mut idem = Idempotency::local(&config(None), b"k");
    let resolve = async |idem: &Idempotency, key, found| {
        let Ok(Decision::Resolve(u)) = idem.check(&request(key, 1)).await else {
            panic!("not unknown")
        };
        idem.resolve(&request(key, 1), u, found).await
    };
    // Just sent: could still complete, so a retry without a transaction is held.
    let key = Some([9; 32]);
    let t = proceed(&idem, request(key, 1)).await;
    let request_id = "r1".to_string();
    t.finish(Settled::Unknown {
        sent_at_ms: now_ms(),
        request_id: request_id.clone(),
    })
    .await;
    let held = resolve(&idem, key, None).await;
    assert!(matches!(held, Err(ApiError::IdempotencyInFlight)));
    // Its transaction shows up: that is the answer, kept for the key.
    let answer = StoredAnswer {
        status: StatusCode::CREATED,
        content_type: None,
        body: Bytes::from_static(b"{}"),
        outcome: Outcome::Approved,
        request_id: "r2".into(),
    };
    let found = resolve(&idem, key, Some(answer)).await;
    assert!(matches!(found, Ok(Resolution::Found(_))));
    let again = idem.check(&request(key, 1)).await;
    assert!(matches!(again, Ok(Decision::Replay(_))));
    // Long past, no transaction: the retry takes the key over, once.
    idem.unknown_hold = Duration::from_millis(1);
    let key = Some([8; 32]);
    let t = proceed(&idem, request(key, 1)).await;
    t.finish(Settled::Unknown {
        sent_at_ms: 0,
        request_id,
    })
    .await;
    let taken = resolve(&idem, key, None).await;
    assert!(matches!(taken, Ok(Resolution::Retry(_))));
    let again = idem.check(&request(key, 1)).await;
    assert!(matches!(again, Err(ApiError::IdempotencyInFlight)));
}

#[test]
fn a_shared_entry_decides_replay_resolution_or_refusal() {
    let fp = [1; 32];
    let req = request(Some([0; 32]), 1);
    let entry = |value: String| existing_entry(&req, [0; 32], value);
    let unknown = crate::idempotency::resolve::UnknownOutcome {
        sent_at_ms: 1,
        request_id: "r".into(),
        probe: None,
    };
    let in_flight = entry(codec::in_flight("t", &fp));
    assert!(matches!(in_flight, Err(ApiError::IdempotencyInFlight)));
    let other = entry(codec::unknown(&[2; 32], &unknown));
    assert!(matches!(other, Err(ApiError::IdempotencyMismatch)));
    let unknown = entry(codec::unknown(&fp, &unknown));
    assert!(matches!(unknown, Ok(Decision::Resolve(_))));
    assert!(matches!(
        entry(String::new()),
        Err(ApiError::IdempotencyInFlight)
    ));
}

/// An answer is copied and scrubbed for keeping only when something keeps it: a payment
/// that holds no key (duplicate window off) keeps nothing, so nothing is masked or warned
/// about; a keyed one keeps the answer masked.
#[tokio::test]
async fn only_a_kept_answer_is_scrubbed_for_keeping() {
    let card_like = || Settled::Answered {
        status: StatusCode::CREATED,
        content_type: None,
        body: Bytes::from_static(b"{\"data\":{\"reference\":\"4111111111111111\"}}"),
        outcome: Outcome::Approved,
        request_id: "r1".into(),
    };
    let capture = crate::redact::CaptureWriter::new();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .finish();
    let _logs = tracing::subscriber::set_default(subscriber);
    let idem = Idempotency::local(&config(None), b"k");

    let keyless = proceed(&idem, request(None, 1)).await;
    keyless.finish(card_like()).await;
    assert!(
        !capture.contents().contains("kept for replay"),
        "{}",
        capture.contents()
    );

    let keyed = proceed(&idem, request(Some([9; 32]), 1)).await;
    keyed.finish(card_like()).await;
    assert!(capture.contents().contains("kept for replay"));
    match idem.check(&request(Some([9; 32]), 1)).await {
        Ok(Decision::Replay(answer)) => {
            let body = String::from_utf8_lossy(&answer.body).into_owned();
            assert!(body.contains("[PAN ****1111]"), "{body}");
            assert!(!body.contains("4111111111111111"), "{body}");
        }
        _ => panic!("the keyed answer was not kept"),
    }
}
