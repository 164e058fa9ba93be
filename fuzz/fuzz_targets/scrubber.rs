//! Invariant of the log scrubber (DESIGN.md §5.3): whatever the input, `scrub`'s output holds
//! no Luhn-valid run of 12-19 ASCII digits (single spaces or dashes between digits removed), and
//! `scrub` never panics. Inputs that are not UTF-8 are decoded lossily so every input counts.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use payshim::redact::scrub;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let out = scrub(&input);
    if let Some(run) = common::luhn_valid_run(&out) {
        panic!(
            "scrub left a Luhn-valid run ({}) in its output: {out:?}",
            common::masked(&run)
        );
    }
});
