//! The limit kinds, named: which limit refused a request.

use std::fmt;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Client,
    Ip,
    Order,
    Card,
    CardAttempts,
    Breaker,
}

impl Scope {
    /// The name used in config keys, logs, audit records and Redis keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Client => "per_client",
            Scope::Ip => "per_ip",
            Scope::Order => "per_order",
            Scope::Card => "per_card",
            Scope::CardAttempts => "card_attempts",
            Scope::Breaker => "decline_breaker",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
