//! Card numbers in text: digit runs (digits joined by single spaces or dashes), the Luhn
//! checks that decide whether a run holds a card number, and the exemption of UUIDs.

use crate::luhn;

/// Fewest digits of a card number (ISO/IEC 7812 allows 8, but card brands issue 12 and up).
pub(super) const MIN_PAN: usize = 12;
/// Most digits of a card number.
pub(super) const MAX_PAN: usize = 19;
/// Length of a textual UUID: 8-4-4-4-12 hex digits.
const UUID_LEN: usize = 36;

fn is_sep(c: u8) -> bool {
    c == b' ' || c == b'-'
}

/// The digit run starting at `start` (a digit): its end and how many digits it holds.
pub(super) fn digit_run(b: &[u8], start: usize) -> (usize, usize) {
    let n = b.len();
    let mut j = start;
    let mut count = 0;
    loop {
        while j < n && b[j].is_ascii_digit() {
            j += 1;
            count += 1;
        }
        if j + 1 < n && is_sep(b[j]) && b[j + 1].is_ascii_digit() {
            j += 1;
        } else {
            return (j, count);
        }
    }
}

/// Decides whether the digit run `b[start..end]` (digits and single separators, `count`
/// digits) must be masked; returns the last four digits (ASCII) of the Luhn-valid part. Inside
/// a UUID only the whole run counts: its groups join into runs by chance, not because a card
/// number is there.
pub(super) fn find_pan(b: &[u8], start: usize, end: usize, count: usize) -> Option<[u8; 4]> {
    if count < MIN_PAN {
        return None;
    }
    let run = &b[start..end];
    if count <= MAX_PAN {
        // Whole run, then every sequence of consecutive groups of 12+ digits.
        let mut digits = [0u8; MAX_PAN];
        let mut group_start = [0usize; MAX_PAN + 1];
        let (mut nd, mut ng) = (0, 0);
        let mut prev_digit = false;
        for &c in run {
            if c.is_ascii_digit() {
                if !prev_digit {
                    group_start[ng] = nd;
                    ng += 1;
                }
                digits[nd] = c - b'0';
                nd += 1;
                prev_digit = true;
            } else {
                prev_digit = false;
            }
        }
        group_start[ng] = nd;
        let digits = &digits[..nd];
        if luhn::valid(digits.iter().copied()) {
            return Some(last4(digits));
        }
        if ng == 1 || inside_uuid(b, start, end) {
            return None;
        }
        for first in 0..ng {
            for past in (first + 1..=ng).rev() {
                let (a, z) = (group_start[first], group_start[past]);
                if z - a < MIN_PAN {
                    break;
                }
                if (first, past) != (0, ng) && luhn::valid(digits[a..z].iter().copied()) {
                    return Some(last4(&digits[a..z]));
                }
            }
        }
        return None;
    }
    if inside_uuid(b, start, end) {
        return None;
    }
    // More than 19 digits: any 12-19 digit window. `ring` holds the last 19 digits; for each
    // new digit, the Luhn sums of the windows ending there are built right to left.
    let mut ring = [0u8; MAX_PAN];
    let mut k = 0usize;
    for &c in run {
        if !c.is_ascii_digit() {
            continue;
        }
        ring[k % MAX_PAN] = c - b'0';
        k += 1;
        if k < MIN_PAN {
            continue;
        }
        let mut sum = 0u32;
        for back in 0..k.min(MAX_PAN) {
            sum += luhn::digit(ring[(k - 1 - back) % MAX_PAN], back);
            if back + 1 >= MIN_PAN && sum.is_multiple_of(10) {
                let mut l4 = [0u8; 4];
                for (j, d) in l4.iter_mut().enumerate() {
                    *d = b'0' + ring[(k - 4 + j) % MAX_PAN];
                }
                return Some(l4);
            }
        }
    }
    None
}

fn last4(digits: &[u8]) -> [u8; 4] {
    let mut l4 = [0u8; 4];
    let tail = &digits[digits.len() - 4..];
    for (d, &v) in l4.iter_mut().zip(tail) {
        *d = b'0' + v;
    }
    l4
}

/// Does the digit run `b[start..end]` lie inside a UUID standing alone? Only asked about the
/// rare runs of 12+ digits that fail the plain Luhn check.
fn inside_uuid(b: &[u8], start: usize, end: usize) -> bool {
    (start.saturating_sub(UUID_LEN - 1)..=start).any(|s| s + UUID_LEN >= end && uuid_at(b, s))
}

/// Is a whole UUID (8-4-4-4-12 hex digits) standing alone at `i`? "Alone" means that no digit
/// touches it and that no digit run reaches into it through a separator (otherwise the run
/// would be longer than the UUID's own groups). Letters may touch it (`id:u0190...`).
fn uuid_at(b: &[u8], i: usize) -> bool {
    let n = b.len();
    if i + UUID_LEN > n {
        return false;
    }
    if i > 0 {
        let p = b[i - 1];
        if p.is_ascii_digit() || (is_sep(p) && i >= 2 && b[i - 2].is_ascii_digit()) {
            return false;
        }
    }
    let shape_ok = b[i..i + UUID_LEN]
        .iter()
        .enumerate()
        .all(|(k, &c)| match k {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if !shape_ok {
        return false;
    }
    let e = i + UUID_LEN;
    e == n || !(b[e].is_ascii_digit() || (is_sep(b[e]) && e + 1 < n && b[e + 1].is_ascii_digit()))
}
