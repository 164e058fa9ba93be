//! Bad configuration values stop start-up with an error naming the key (issue 2), and no
//! error or `check-config` output ever shows a secret.
//!
//! `bad_values.rs`: the table of bad values, each refused with the key it names and no
//! secret in the error, and unknown keys named; `environment.rs`: `PAYSHIM__` overrides and
//! the shipped production example; `cli.rs`: `payshim check-config` and `payshim hash-key`.
//! The fixture they share is here.

mod bad_values;
mod cli;
mod environment;

use crate::support;

use support::TestPki;
use support::payshim::base_config;

struct Fixture {
    pki: TestPki,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            pki: TestPki::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn base(&self) -> String {
        base_config(&self.pki, "https://api.moltin.com", self.dir.path())
    }
}
