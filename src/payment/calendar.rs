//! Calendar maths for card expiry: the current month, the expiry fields and whether a card
//! has expired.
//!
//! Kept apart from the field checks because it is pure arithmetic on dates, with its own edge
//! cases (leap years, eras, clocks before 1970) and no JSON in sight.

use std::time::{SystemTime, UNIX_EPOCH};

/// How far ahead an expiry year may be; cards are not issued for longer.
const MAX_YEARS_AHEAD: u16 = 20;

/// A calendar month, used for card expiry.
///
/// Ordered by year, then month, so `expiry < today` means the card has expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: u16,
    pub month: u8,
}

impl YearMonth {
    /// The current month in UTC, from the system clock (a clock before 1970 reads as 1970-01).
    pub fn now_utc() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::from_unix_days((secs / 86_400) as i64)
    }

    /// The month containing the given day (days since 1970-01-01), by Howard Hinnant's
    /// `civil_from_days` algorithm (proleptic Gregorian calendar).
    pub(super) fn from_unix_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097); // day of era, 0..=146096
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, March-based
        let mp = (5 * doy + 2) / 153; // month, March = 0
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        YearMonth {
            year: u16::try_from(year).unwrap_or(u16::MAX),
            month: month as u8,
        }
    }
}

/// Why a well-formed expiry date is refused. The messages are API error details as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum ExpiryError {
    #[error("must not be more than 20 years in the future")]
    TooFarAhead,
    #[error("the card is valid through the end of its expiry month (UTC), which has passed")]
    Expired,
}

impl ExpiryError {
    /// The API error title.
    pub(super) fn title(self) -> &'static str {
        match self {
            ExpiryError::TooFarAhead => "Invalid expiry year",
            ExpiryError::Expired => "Card expired",
        }
    }
}

/// Checks an expiry against `today`: a card is valid through the end of its expiry month in
/// UTC. Without a valid `month` only the year's distance is checked.
pub(super) fn check_expiry(
    year: u16,
    month: Option<u8>,
    today: YearMonth,
) -> Result<(), ExpiryError> {
    if year > today.year.saturating_add(MAX_YEARS_AHEAD) {
        return Err(ExpiryError::TooFarAhead);
    }
    match month {
        Some(month) if (YearMonth { year, month }) < today => Err(ExpiryError::Expired),
        _ => Ok(()),
    }
}

/// `"1"`-`"12"`, one or two ASCII digits (`"08"` allowed).
pub(super) fn parse_month(s: &str) -> Option<u8> {
    if !(1..=2).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|m| (1..=12).contains(m))
}

/// Exactly four ASCII digits.
pub(super) fn parse_year(s: &str) -> Option<u16> {
    if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
