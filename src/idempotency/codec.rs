//! The text form of a key's entry in the shared store (Redis), one string per key:
//!
//! - `F|<claim token>|<fingerprint>`: claimed, the request is in flight;
//! - `U|<fingerprint>|<sent at, Unix ms>|<request id>|<gateway>|<method>`: forwarded,
//!   outcome unknown (gateway and method in base64, both empty for transaction actions);
//! - `D|<fingerprint>|<status>|<outcome>|<request id>|<content type>|<body>`: completed,
//!   with the content type and the body in base64 (so no byte of them can end a field).
//!
//! The fingerprint is hex. The claim token is random per claim, so a replica settles only
//! the claim it made.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::Digest;
use super::answer::StoredAnswer;
use super::resolve::{Probe, UnknownOutcome};
use crate::audit::hex32;
use crate::outcome::Outcome;

/// A decoded entry.
pub(crate) enum Decoded {
    InFlight,
    Unknown(UnknownOutcome),
    Done(StoredAnswer),
}

pub(crate) fn in_flight(token: &str, fingerprint: &Digest) -> String {
    format!("F|{token}|{}", hex32(fingerprint))
}

/// `U|fingerprint|sent_at_ms|request_id|probe`, the probe being `-` (none),
/// `C|gateway|kind` (a created transaction; an empty gateway is any) or `S|id|status` (an
/// updated one), each text in base64. Entries of older versions have `gateway|method`
/// instead and still decode.
pub(crate) fn unknown(fingerprint: &Digest, unknown: &UnknownOutcome) -> String {
    let probe = match &unknown.probe {
        None => "-".to_string(),
        Some(Probe::Created { gateway, kind }) => format!(
            "C|{}|{}",
            STANDARD.encode(gateway.as_deref().unwrap_or_default()),
            STANDARD.encode(kind)
        ),
        Some(Probe::Updated { id, status }) => {
            format!("S|{}|{}", STANDARD.encode(id), STANDARD.encode(status))
        }
    };
    format!(
        "U|{}|{}|{}|{probe}",
        hex32(fingerprint),
        unknown.sent_at_ms,
        unknown.request_id
    )
}

pub(crate) fn done(fingerprint: &Digest, answer: &StoredAnswer) -> String {
    let content_type = answer
        .content_type
        .as_ref()
        .map(|v| STANDARD.encode(v.as_bytes()))
        .unwrap_or_default();
    format!(
        "D|{}|{}|{}|{}|{}|{}",
        hex32(fingerprint),
        answer.status.as_u16(),
        answer.outcome.as_str(),
        answer.request_id,
        content_type,
        STANDARD.encode(&answer.body),
    )
}

/// The fingerprint and state of an entry; `None` when it is not one (then the caller
/// treats the key as taken: never a second charge on a value it cannot read).
pub(crate) fn decode(value: &str) -> Option<(Digest, Decoded)> {
    let mut fields = value.split('|');
    let kind = fields.next()?;
    if kind == "F" {
        fields.next()?;
    }
    let mut fingerprint = [0u8; 32];
    hex::decode_to_slice(fields.next()?, &mut fingerprint).ok()?;
    let decoded = match kind {
        "F" => Decoded::InFlight,
        "U" => Decoded::Unknown(unknown_outcome(&mut fields)?),
        "D" => Decoded::Done(answer(&mut fields)?),
        _ => return None,
    };
    Some((fingerprint, decoded))
}

fn answer<'a>(fields: &mut impl Iterator<Item = &'a str>) -> Option<StoredAnswer> {
    let status = StatusCode::from_u16(fields.next()?.parse().ok()?).ok()?;
    let outcome = outcome(fields.next()?)?;
    let request_id = fields.next()?.to_string();
    let content_type = match fields.next()? {
        "" => None,
        b64 => Some(HeaderValue::from_bytes(&STANDARD.decode(b64).ok()?).ok()?),
    };
    let body = Bytes::from(STANDARD.decode(fields.next()?).ok()?);
    Some(StoredAnswer {
        status,
        content_type,
        body,
        outcome,
        request_id,
    })
}

fn unknown_outcome<'a>(fields: &mut impl Iterator<Item = &'a str>) -> Option<UnknownOutcome> {
    let sent_at_ms = fields.next()?.parse().ok()?;
    let request_id = fields.next()?.to_string();
    let text = |b64: &str| String::from_utf8(STANDARD.decode(b64).ok()?).ok();
    let gateway = |b64: &str| Some(text(b64)?).filter(|g| !g.is_empty());
    let probe = match fields.next()? {
        "-" => None,
        "C" => Some(Probe::Created {
            gateway: gateway(fields.next()?),
            kind: text(fields.next()?)?,
        }),
        "S" => Some(Probe::Updated {
            id: text(fields.next()?)?,
            status: text(fields.next()?)?,
        }),
        old_gateway => match (old_gateway, fields.next()?) {
            ("", "") => None,
            (g, method) => Some(Probe::Created {
                gateway: gateway(g),
                kind: text(method)?,
            }),
        },
    };
    Some(UnknownOutcome {
        sent_at_ms,
        request_id,
        probe,
    })
}

fn outcome(name: &str) -> Option<Outcome> {
    Outcome::parse(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let fp = [0xab; 32];
        let answer = StoredAnswer {
            status: StatusCode::CREATED,
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from_static(br#"{"data":{"id":"a|b"}}"#),
            outcome: Outcome::Approved,
            request_id: "r-1".into(),
        };
        let (got_fp, decoded) = decode(&done(&fp, &answer)).unwrap();
        assert_eq!(got_fp, fp);
        let Decoded::Done(got) = decoded else {
            panic!("not done")
        };
        assert_eq!(got.status, answer.status);
        assert_eq!(got.content_type, answer.content_type);
        assert_eq!(got.body, answer.body);
        assert_eq!(got.outcome, Outcome::Approved);
        assert_eq!(got.request_id, "r-1");
        assert!(matches!(decode(&in_flight("t", &fp)), Some((f, Decoded::InFlight)) if f == fp));
        let u = UnknownOutcome {
            sent_at_ms: 42,
            request_id: "r-2".into(),
            probe: Some(Probe::Created {
                gateway: Some("card_connect".into()),
                kind: "purchase".into(),
            }),
        };
        let probes = [
            u.probe.clone(),
            Some(Probe::Created {
                gateway: None,
                kind: "refund".into(),
            }),
            Some(Probe::Updated {
                id: "a|b".into(),
                status: "cancelled".into(),
            }),
            None,
        ];
        for probe in probes {
            let u = UnknownOutcome { probe, ..u.clone() };
            assert!(
                matches!(decode(&unknown(&fp, &u)), Some((f, Decoded::Unknown(got))) if f == fp && got == u)
            );
        }
        // Written by the version before probes of transaction actions.
        let old = format!("U|{}|42|r-2|Y2FyZF9jb25uZWN0|cHVyY2hhc2U=", hex32(&fp));
        assert!(matches!(decode(&old), Some((_, Decoded::Unknown(got))) if got == u));
        let old_none = format!("U|{}|42|r-2||", hex32(&fp));
        assert!(
            matches!(decode(&old_none), Some((_, Decoded::Unknown(got))) if got.probe.is_none())
        );
        assert!(decode("garbage").is_none());
        assert!(decode("D|zz").is_none());
    }
}
