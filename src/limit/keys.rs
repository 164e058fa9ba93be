//! The keys limits are counted under: Redis key names and the per-IP key.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::scope::Scope;

/// `payshim:rl:<scope>:<key>`: one namespace per scope, so two kinds never share a counter.
pub(super) fn redis_key<D: fmt::Display + ?Sized>(scope: Scope, key: &D) -> String {
    format!("payshim:rl:{}:{key}", scope.as_str())
}

/// Lower-case hex of a fingerprint, for Redis keys.
pub(super) struct HexKey<'a>(pub(super) &'a [u8; 32]);

impl fmt::Display for HexKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// IPv4 (also IPv4-mapped IPv6) as is, other IPv6 by /64 prefix.
pub(super) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}
