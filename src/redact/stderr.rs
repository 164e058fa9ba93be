//! Text written straight to stderr (or another raw writer), for the few messages that cannot
//! go through `tracing`, such as the logger itself failing. `eprintln!` would bypass the
//! scrubber; this path cannot.

use std::io::{self, Write};

use super::scan::scrub;

/// Writes `text` to `out` (e.g. `io::stderr().lock()`) with card data masked, in one
/// `write_all`.
pub fn write_scrubbed(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(scrub(text).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_data_is_masked() {
        let mut out = Vec::new();
        write_scrubbed(&mut out, "failed for 4111 1111 1111 1111 cvv=123\n").unwrap();
        assert_eq!(out, b"failed for [PAN ****1111] cvv=[REDACTED]\n");
    }
}
