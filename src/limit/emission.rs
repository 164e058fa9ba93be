//! The GCRA emission interval of a quota, in a leaf file because both stores need it: the
//! local governor limiters (`local.rs`) and the Redis script (`redis.rs`) must space cells
//! alike, or a replica falling back to local limits would enforce another rate.

use std::time::Duration;

use crate::config::Quota;

/// `period / count`, never zero.
pub(super) fn emission_interval(q: &Quota) -> Duration {
    (q.period / q.count.max(1)).max(Duration::from_nanos(1))
}
