//! Card verification values (CVV, CVC, CID).
//!
//! Like the PAN, a CVV lives only in its own type (see README.md, Architecture): masked when
//! printed, not clonable, wiped on drop, read only by the upstream serializer. PCI DSS forbids
//! storing it after authorization at all, so it never reaches the audit log, not even masked.

use std::fmt;

use zeroize::Zeroize;

use super::card::Brand;

/// Why a CVV was rejected. Carries no part of the input; the messages are API error details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CvvError {
    #[error("must contain only the ASCII digits 0-9")]
    NotDigits,
    /// The brand is not known (the card number was invalid), so only the general rule applies.
    #[error("must be 3 or 4 digits")]
    Length,
    #[error("must be exactly 3 digits")]
    NotThreeDigits,
    #[error("must be exactly 4 digits for American Express")]
    NotFourDigits,
}

/// A validated CVV.
pub struct Cvv {
    digits: String,
}

impl Cvv {
    /// Validates `s`: ASCII digits, 4 of them for American Express, 3 for other brands, and 3 or
    /// 4 when the brand is unknown (`None`, because the card number itself was invalid: the CVV
    /// is still checked so that all errors are reported at once).
    ///
    /// `brand` accepts both `Brand` and `Option<Brand>`.
    pub fn parse(s: &str, brand: impl Into<Option<Brand>>) -> Result<Cvv, CvvError> {
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CvvError::NotDigits);
        }
        let (valid, error) = match brand.into() {
            Some(Brand::Amex) => (s.len() == 4, CvvError::NotFourDigits),
            Some(_) => (s.len() == 3, CvvError::NotThreeDigits),
            None => ((3..=4).contains(&s.len()), CvvError::Length),
        };
        if !valid {
            return Err(error);
        }
        Ok(Cvv {
            digits: s.to_owned(),
        })
    }

    /// The digits. Only the upstream serializer and the attempt fingerprint use this.
    pub(super) fn expose(&self) -> &str {
        &self.digits
    }
}

impl Drop for Cvv {
    fn drop(&mut self) {
        self.digits.zeroize();
    }
}

/// Always `***`: not even the length is shown.
impl fmt::Debug for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
