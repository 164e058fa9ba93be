//! CVV-like keys and their values: the key names, the forms a value can take after `:` or
//! `=` (JSON strings at any escape depth, numbers, `key=value`, Debug output), and where the
//! value ends.

/// What a CVV-like value is replaced by.
pub(super) const REDACTED: &[u8] = b"[REDACTED]";

/// Key names, lower case; `_` matches `_`, `-` or nothing. `cvv` and `cvc` take an optional `2`.
const CVV_KEYS: [&[u8]; 5] = [
    b"verification_value",
    b"security_code",
    b"card_code",
    b"cvv",
    b"cvc",
];

/// If a CVV-like key starts at `i` and is followed by a value, the value's byte range.
pub(super) fn cvv_value(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let n = b.len();
    let mut j = match_key(b, i)?;
    // The key must end here: `cvv_length`, `cvvs` are other keys.
    if j >= n || b[j].is_ascii_alphanumeric() || b[j] == b'_' {
        return None;
    }
    // Closing quote or bracket of the key: `"`, `\"` (any escape depth), `'`, `]`, `%5D`.
    match b[j] {
        b'"' | b'\'' | b']' => j += 1,
        b'\\' => {
            let m = backslashes(b, j);
            if b.get(j + m) != Some(&b'"') {
                return None;
            }
            j += m + 1;
        }
        b'%' if b.len() >= j + 3 && b[j + 1..j + 3].eq_ignore_ascii_case(b"5d") => j += 3,
        _ => {}
    }
    j = skip_blanks(b, j);
    match b.get(j) {
        Some(b':') => j += 1,
        Some(b'=') => {
            j += 1;
            if b.get(j) == Some(&b'>') {
                j += 1; // `"cvv" => "123"`
            }
        }
        _ => return None,
    }
    j = skip_blanks(b, j);
    let (start, end) = match *b.get(j)? {
        b'"' => (j + 1, quoted_end(b, j + 1, 0)),
        b'\\' => {
            let m = backslashes(b, j);
            if b.get(j + m) != Some(&b'"') {
                return None;
            }
            (j + m + 1, quoted_end(b, j + m + 1, m))
        }
        b'\'' => {
            let end = b[j + 1..]
                .iter()
                .position(|&c| c == b'\'')
                .map_or(n, |p| j + 1 + p);
            (j + 1, end)
        }
        _ => (j, bare_end(b, j)),
    };
    (end > start).then_some((start, end))
}

fn match_key(b: &[u8], i: usize) -> Option<usize> {
    // Cheap first look at two letters; almost every `c`, `s` or `v` in a log line stops here.
    let pair = (b[i] | 0x20, *b.get(i + 1)? | 0x20);
    if !matches!(pair, (b'c', b'v' | b'a') | (b's' | b'v', b'e')) {
        return None;
    }
    CVV_KEYS.iter().find_map(|key| {
        let mut j = match_word(b, i, key)?;
        if key.len() == 3 && b.get(j) == Some(&b'2') {
            j += 1;
        }
        Some(j)
    })
}

fn match_word(b: &[u8], i: usize, pattern: &[u8]) -> Option<usize> {
    let mut j = i;
    for &p in pattern {
        if p == b'_' {
            if matches!(b.get(j), Some(b'_' | b'-')) {
                j += 1;
            }
        } else if b.get(j)?.to_ascii_lowercase() == p {
            j += 1;
        } else {
            return None;
        }
    }
    Some(j)
}

/// Skips spaces, tabs and ANSI colour sequences (`ESC [ 1;31 m`, as `tracing_subscriber::fmt`
/// writes around field names when colours are on). A colour sequence is at most eight numbers
/// of at most three digits: what is skipped here is not scanned for card numbers.
fn skip_blanks(b: &[u8], mut j: usize) -> usize {
    loop {
        match b.get(j) {
            Some(b' ' | b'\t') => j += 1,
            Some(0x1b) => match sgr_len(&b[j..]) {
                Some(len) => j += len,
                None => return j,
            },
            _ => return j,
        }
    }
}

/// Length of the SGR sequence (`ESC [ n;n;... m`) at the start of `b`, if one is there.
fn sgr_len(b: &[u8]) -> Option<usize> {
    if !b.starts_with(b"\x1b[") {
        return None;
    }
    let mut j = 2;
    for _ in 0..8 {
        let digits = b[j..]
            .iter()
            .take(4)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits > 3 {
            return None;
        }
        j += digits;
        match b.get(j)? {
            b'm' => return Some(j + 1),
            b';' => j += 1,
            _ => return None,
        }
    }
    None
}

fn backslashes(b: &[u8], j: usize) -> usize {
    b[j..].iter().take_while(|&&c| c == b'\\').count()
}

/// End of a string value that starts at `start`, opened by a quote preceded by `open`
/// backslashes: 0 for a plain JSON string, 1 for a JSON string inside a JSON string (`\"`),
/// 3 one level deeper (`\\\"`), and so on. Unterminated strings run to the end of the input.
fn quoted_end(b: &[u8], start: usize, open: usize) -> usize {
    // Escape depth: 2^depth - 1 backslashes open the string.
    let mut depth = 0u32;
    let mut m = open;
    while m % 2 == 1 {
        depth += 1;
        m /= 2;
    }
    let mut run = 0usize;
    for (j, &c) in b.iter().enumerate().skip(start) {
        match c {
            b'\\' => run += 1,
            b'"' => {
                if closes(run, depth) {
                    // The closing quote's own backslashes are not part of the value.
                    return j - run.min(open);
                }
                run = 0;
            }
            _ => run = 0,
        }
    }
    b.len()
}

/// Does a quote preceded by `run` backslashes close a string of escape depth `depth`? Each
/// level of unescaping turns `2r+1` backslashes + quote into `r` backslashes + quote; a quote
/// that is unescaped before `depth` levels are peeled ends an enclosing string, hence ours too.
fn closes(run: usize, depth: u32) -> bool {
    let mut m = run;
    for _ in 0..depth {
        if m.is_multiple_of(2) {
            return true;
        }
        m /= 2;
    }
    m.is_multiple_of(2)
}

/// End of an unquoted value (`cvv=123`, `"cvv": 123`, `cvv: Some(123)`).
fn bare_end(b: &[u8], start: usize) -> usize {
    let n = b.len();
    let mut depth = 0usize;
    let mut j = start;
    while j < n {
        let c = b[j];
        if depth > 0 {
            // Inside `Some(...)`: everything up to the matching parenthesis or the line's end.
            match c {
                b'(' => depth += 1,
                b')' => depth -= 1,
                b'\n' | b'\r' => break,
                _ => {}
            }
        } else {
            match c {
                b'(' => depth += 1,
                // A digit group separated by one space still belongs to the value
                // (`cvv: 12 34`), so no digit of it is left behind.
                b' ' if j > start
                    && b[j - 1].is_ascii_digit()
                    && b.get(j + 1).is_some_and(u8::is_ascii_digit) => {}
                b',' | b';' | b'&' | b'"' | b'\'' | b'\\' | b'<' | b'>' | b'{' | b'}' | b'['
                | b']' | b')' | 0x1b => break,
                _ if c.is_ascii_whitespace() => break,
                _ => {}
            }
        }
        j += 1;
    }
    j
}
