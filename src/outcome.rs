//! [`Outcome`]: what became of an audited request (a payment or a transaction action).
//!
//! One type for the request's log line, its audit records and the outcome metric, so the
//! three can never disagree, and so that "refused before anything was forwarded" is a
//! question the type answers ([`Outcome::was_forwarded`]) rather than a string compared.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Refused by payshim: nothing was sent upstream.
    Rejected,
    /// Sent upstream; the answer is not known yet (the `forwarded` audit record).
    Forwarded,
    /// The API accepted it (2xx, and the transaction is not failed or declined).
    Approved,
    /// The API refused it (4xx, or a 2xx whose transaction failed or was declined).
    Declined,
    /// The API answered 5xx, unreadably, or the connection failed after sending.
    UpstreamError,
    /// No answer within `upstream.timeout`: the charge may or may not have happened.
    Timeout,
}

impl Outcome {
    /// Every variant, for tables and metric pre-registration.
    pub const ALL: [Outcome; 6] = [
        Outcome::Rejected,
        Outcome::Forwarded,
        Outcome::Approved,
        Outcome::Declined,
        Outcome::UpstreamError,
        Outcome::Timeout,
    ];

    /// The name in logs, audit records and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Rejected => "rejected",
            Outcome::Forwarded => "forwarded",
            Outcome::Approved => "approved",
            Outcome::Declined => "declined",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Timeout => "timeout",
        }
    }

    /// The outcome named `name` (as [`Outcome::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// Whether the request may have reached the API. Only a [`Outcome::Rejected`]
    /// request certainly did not; it is the one that gets a `*.rejected` audit record.
    pub const fn was_forwarded(self) -> bool {
        !matches!(self, Outcome::Rejected)
    }

    /// The outcome of an answer from the API: its status and, when the body names one,
    /// the transaction's status.
    pub fn of_answer(status: u16, transaction_status: Option<&str>) -> Outcome {
        match (status, transaction_status) {
            (200..=299, Some("failed" | "declined")) => Outcome::Declined,
            (200..=299, _) => Outcome::Approved,
            (400..=499, _) => Outcome::Declined,
            _ => Outcome::UpstreamError,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        let cases = [
            (201, Some("complete"), Outcome::Approved),
            (200, None, Outcome::Approved),
            (201, Some("failed"), Outcome::Declined),
            (201, Some("declined"), Outcome::Declined),
            (422, None, Outcome::Declined),
            (404, Some("complete"), Outcome::Declined),
            (500, None, Outcome::UpstreamError),
            (302, None, Outcome::UpstreamError),
        ];
        for (status, txn, want) in cases {
            assert_eq!(Outcome::of_answer(status, txn), want, "{status} {txn:?}");
        }
    }

    #[test]
    fn only_rejected_was_not_forwarded() {
        for o in Outcome::ALL {
            assert_eq!(o.was_forwarded(), o != Outcome::Rejected, "{o}");
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
        }
    }
}
