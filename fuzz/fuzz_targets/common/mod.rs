//! Shared by the fuzz targets: a deliberately naive reference for "holds a card number".

/// Maximal digit runs of `s`, as digit strings. A single space or dash between two digits joins
/// them into one run (`4111 1111 1111 1111` is one 16-digit run).
pub fn digit_runs(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut runs = Vec::new();
    let mut cur = String::new();
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            cur.push(char::from(c));
        } else if (c == b' ' || c == b'-')
            && i > 0
            && b[i - 1].is_ascii_digit()
            && b.get(i + 1).is_some_and(u8::is_ascii_digit)
        {
            // separator inside a run
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

/// Luhn check of a string of ASCII digits.
pub fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(k, c)| {
            let d = u32::from(c - b'0');
            if k % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The first maximal digit run of 12-19 digits that passes Luhn, if any.
pub fn luhn_valid_run(s: &str) -> Option<String> {
    digit_runs(s)
        .into_iter()
        .find(|r| (12..=19).contains(&r.len()) && luhn(r))
}

/// Only the last four digits, for failure messages.
pub fn masked(run: &str) -> String {
    format!("{} digits ending {}", run.len(), &run[run.len() - 4..])
}
