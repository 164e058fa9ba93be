//! Card numbers (PANs), their brands and the Luhn check.
//!
//! A [`CardNumber`] is the only place a PAN lives after parsing (see README.md, Architecture):
//! it prints as a mask, cannot be cloned or serialized, and wipes its digits when dropped. Only
//! the upstream serializer in `upstream_body.rs` (and the attempt fingerprint) read the digits,
//! through the `pub(super)` [`CardNumber::expose`].

use std::fmt;

use zeroize::Zeroize;

use crate::keyed::KeyedHash;
use crate::luhn;

/// Card brands payshim accepts. Anything else is rejected as an unknown brand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    Diners,
    UnionPay,
}

impl Brand {
    /// The lower-case name used in audit records and log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
            Brand::UnionPay => "unionpay",
        }
    }

    /// Whether a PAN of `len` digits is a valid length for this brand.
    pub fn accepts_length(self, len: usize) -> bool {
        match self {
            Brand::Visa => matches!(len, 13 | 16 | 19),
            Brand::Mastercard => len == 16,
            Brand::Amex => len == 15,
            Brand::Discover | Brand::Jcb | Brand::UnionPay => (16..=19).contains(&len),
            Brand::Diners => (14..=19).contains(&len),
        }
    }

    /// Detects the brand from the leading digits (IIN ranges).
    ///
    /// `digits` must be ASCII digits and at least six long. Discover is tested before UnionPay
    /// so that the more specific ranges win where the two could be confused.
    fn detect(digits: &str) -> Option<Brand> {
        let prefix = |n: usize| digits[..n].parse::<u32>().unwrap_or(0);
        if digits.starts_with('4') {
            Some(Brand::Visa)
        } else if (51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4)) {
            Some(Brand::Mastercard)
        } else if matches!(prefix(2), 34 | 37) {
            Some(Brand::Amex)
        } else if prefix(4) == 6011 || (644..=649).contains(&prefix(3)) || prefix(2) == 65 {
            Some(Brand::Discover)
        } else if prefix(2) == 62 {
            Some(Brand::UnionPay)
        } else if (3528..=3589).contains(&prefix(4)) {
            Some(Brand::Jcb)
        } else if (300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39) {
            Some(Brand::Diners)
        } else {
            None
        }
    }
}

impl fmt::Display for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a card number was rejected.
///
/// The variants carry no part of the input, and their messages are written to be used as the
/// `detail` of an API error as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("must contain only the ASCII digits 0-9, without spaces or dashes")]
    NotDigits,
    #[error("must be 12-19 digits")]
    Length,
    #[error("must pass the Luhn check")]
    Luhn,
    #[error(
        "must be a Visa, Mastercard, American Express, Discover, JCB, Diners Club or UnionPay card"
    )]
    UnknownBrand,
    #[error("the number of digits does not match the card brand")]
    BrandLength,
}

/// A validated PAN.
///
/// Deliberately neither `Clone` nor `Serialize`: copies are how card numbers end up in logs.
pub struct CardNumber {
    digits: String,
    brand: Brand,
}

impl CardNumber {
    /// Validates `s` as a PAN: ASCII digits only, 12-19 long, Luhn-valid, of a known brand and a
    /// length that brand issues.
    pub fn parse(s: &str) -> Result<CardNumber, CardError> {
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::NotDigits);
        }
        if !(12..=19).contains(&s.len()) {
            return Err(CardError::Length);
        }
        if !luhn::valid(s.bytes().map(|b| b - b'0')) {
            return Err(CardError::Luhn);
        }
        let brand = Brand::detect(s).ok_or(CardError::UnknownBrand)?;
        if !brand.accepts_length(s.len()) {
            return Err(CardError::BrandLength);
        }
        Ok(CardNumber {
            digits: s.to_owned(),
            brand,
        })
    }

    pub fn brand(&self) -> Brand {
        self.brand
    }

    /// The first six digits (the BIN), which PCI DSS allows to be stored and shown.
    pub fn bin(&self) -> &str {
        &self.digits[..6]
    }

    /// The last four digits, which PCI DSS allows to be stored and shown.
    pub fn last4(&self) -> &str {
        &self.digits[self.digits.len() - 4..]
    }

    /// HMAC-SHA-256 of the PAN digits: identifies a card across requests (limits, audit)
    /// without storing the PAN. Keyed, so it cannot be brute-forced from the BIN and last four.
    pub(crate) fn fingerprint(&self, key: &KeyedHash) -> [u8; 32] {
        key.mac(&[self.digits.as_bytes()])
    }

    /// The full digits. Only the upstream serializer and the attempt fingerprint use this.
    pub(super) fn expose(&self) -> &str {
        &self.digits
    }
}

impl Drop for CardNumber {
    fn drop(&mut self) {
        self.digits.zeroize();
    }
}

/// Prints the mask `brand ****last4`, never the full number.
impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ****{}", self.brand, self.last4())
    }
}

/// Same mask as `Debug`, so `{}` in a log line is as safe as `{:?}`.
impl fmt::Display for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
