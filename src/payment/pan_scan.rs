//! Finds a card number where none belongs: a token, an option, a name.
//!
//! A Luhn-valid run of 12-19 digits (digits may be joined by single spaces or dashes, as
//! people type card numbers) in a token-form body means a storefront sends raw cards where
//! the shop believes it sends tokens. Only whole runs count: a longer run, such as
//! CardConnect's 20-digit profile ids, is not a card number, and a run inside letters ends
//! at them.

use crate::luhn;

/// Fewest and most digits of a card number.
const MIN_PAN: usize = 12;
const MAX_PAN: usize = 19;

/// Whether `s` holds a Luhn-valid run of 12-19 digits.
pub(super) fn holds_card_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let (end, digits) = run(b, i);
        if (MIN_PAN..=MAX_PAN).contains(&digits)
            && luhn::valid(
                b[i..end]
                    .iter()
                    .filter(|c| c.is_ascii_digit())
                    .map(|c| c - b'0'),
            )
        {
            return true;
        }
        i = end;
    }
    false
}

/// The digit run starting at `start` (a digit), with single spaces or dashes between
/// digits: its end and how many digits it holds.
fn run(b: &[u8], start: usize) -> (usize, usize) {
    let (mut j, mut digits) = (start, 0);
    loop {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
            digits += 1;
        }
        let joined = j + 1 < b.len() && matches!(b[j], b' ' | b'-') && b[j + 1].is_ascii_digit();
        if !joined {
            return (j, digits);
        }
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (input, expected) in [
            ("4111111111111111", true),
            ("tok_4111111111111111", true),
            ("4111 1111 1111 1111", true),
            ("4111-1111-1111-1111", true),
            ("x4111111111111111y", true),
            ("378282246310005", true),
            ("4111111111111112", false),
            ("41111111111", false),
            ("1|16178397535388255208", false),
            ("4111  1111 1111 1111", false),
            ("tok_visa", false),
            ("", false),
            ("pm_1N2b3C4d5E6f7G8h", false),
        ] {
            assert_eq!(holds_card_number(input), expected, "{input}");
        }
    }
}
