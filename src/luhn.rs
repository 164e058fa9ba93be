//! The Luhn (mod 10) check, in one place for the two modules that need it: card validation
//! (`payment`) rejects numbers that fail it, and the log scrubber (`redact`) masks digit runs
//! that pass it. One implementation means the two can never disagree about what a card number
//! is. The scrubber runs it on every long digit run of every log line, so it works on digit
//! values without allocating, and is generic so each caller's loop is compiled inline.

/// Luhn contribution of digit value `d` (0-9) at position `from_right` (0 = check digit).
///
/// Public to the crate because the scrubber sums it itself over sliding windows of long runs.
#[inline]
pub(crate) fn digit(d: u8, from_right: usize) -> u32 {
    let v = u32::from(d);
    if from_right % 2 == 1 {
        let v = v * 2;
        if v > 9 { v - 9 } else { v }
    } else {
        v
    }
}

/// Luhn check over digit values (0-9, not ASCII), most significant first.
#[inline]
pub(crate) fn valid<I>(digits: I) -> bool
where
    I: IntoIterator<Item = u8>,
    I::IntoIter: DoubleEndedIterator,
{
    let sum: u32 = digits
        .into_iter()
        .rev()
        .enumerate()
        .map(|(k, d)| digit(d, k))
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_str(s: &str) -> bool {
        valid(s.bytes().map(|b| b - b'0'))
    }

    #[test]
    fn table() {
        #[rustfmt::skip]
        let cases: &[(&str, bool)] = &[
            // test numbers of every brand payshim accepts
            ("4111111111111111", true),
            ("4222222222222", true),
            ("5555555555554444", true),
            ("2223003122003222", true),
            ("378282246310005", true),
            ("6011111111111117", true),
            ("3530111333300000", true),
            ("30569309025904", true),
            ("6212345678901234569", true),
            ("4000001234567899", true),
            ("400000000002", true),
            // one digit off, two digits swapped (the errors Luhn exists to catch)
            ("4111111111111112", false),
            ("378282246310006", false),
            ("5555555555545444", false),
            ("5555555555554434", false),
            // the doubling of digits above 4 (x2 - 9)
            ("59", true),
            ("18", true),
            ("91", true),
            ("1700000000000", false),
            ("0", true),
            ("", true),
        ];
        for (digits, want) in cases {
            assert_eq!(valid_str(digits), *want, "{digits}");
        }
    }

    #[test]
    fn digit_doubles_every_second_from_the_right() {
        let got: Vec<u32> = (0..10).map(|d| digit(d, 1)).collect();
        assert_eq!(got, [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]);
        let got: Vec<u32> = (0..10).map(|d| digit(d, 2)).collect();
        assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
}
