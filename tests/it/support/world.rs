//! The usual test setting: a throw-away PKI, an upstream test double serving `handler`, and
//! a temporary audit directory. Test files add their own `impl World { fn config }`.

use tempfile::TempDir;

use super::payshim::base_config;
use super::{Handler, TestPki, Upstream};

pub struct World {
    pub pki: TestPki,
    pub upstream: Upstream,
    pub audit: TempDir,
}

impl World {
    pub async fn new(handler: Handler) -> World {
        let pki = TestPki::new();
        let upstream = Upstream::start(&pki, handler).await;
        World {
            pki,
            upstream,
            audit: tempfile::tempdir().expect("audit temp dir"),
        }
    }

    /// `base_config` pointing at this world's upstream and audit directory.
    pub fn base_config(&self) -> String {
        base_config(&self.pki, &self.upstream.url(), self.audit.path())
    }
}
