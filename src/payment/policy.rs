//! [`GatewayPolicy`]: which gateways a store uses (`payments.gateways`, default-deny) and
//! which of them may take raw card fields (`payments.raw_card_gateways`). Built once from the
//! config; every payment is checked against it.

use super::gateway::{self, Gateway};

/// The gateways this proxy takes, and those that may receive raw card data.
#[derive(Debug, Clone, Default)]
pub struct GatewayPolicy {
    allowed: Vec<&'static Gateway>,
    raw_card: Vec<&'static Gateway>,
}

/// Why a gateway list is refused; [`PolicyError::key`] names the config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("expected a non-empty list of gateway names, e.g. [\"card_connect\"]")]
    Empty,
    #[error("unknown gateway {0:?}; the API's gateways are: {names}", names = names())]
    Unknown(String),
    #[error("{0:?} is not in payments.gateways: expected only gateways listed there")]
    RawNotAllowed(String),
    #[error(
        "{0:?} never took raw card fields: expected only some of {names}",
        names = raw_names()
    )]
    NoRawCardForm(String),
}

impl PolicyError {
    /// The config key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            PolicyError::Empty | PolicyError::Unknown(_) => "payments.gateways",
            PolicyError::RawNotAllowed(_) | PolicyError::NoRawCardForm(_) => {
                "payments.raw_card_gateways"
            }
        }
    }
}

impl GatewayPolicy {
    /// Checks both lists: every name one of the API's gateways, each raw-card gateway among
    /// the allowed ones and one whose API took card fields.
    pub fn new(gateways: &[String], raw_card: &[String]) -> Result<GatewayPolicy, PolicyError> {
        if gateways.is_empty() {
            return Err(PolicyError::Empty);
        }
        let allowed = resolve(gateways, PolicyError::Unknown)?;
        let raw_card = resolve(raw_card, PolicyError::RawNotAllowed)?;
        for g in &raw_card {
            if !allowed.iter().any(|a| a.name == g.name) {
                return Err(PolicyError::RawNotAllowed(g.name.to_owned()));
            }
            if !g.has_raw_card_form() {
                return Err(PolicyError::NoRawCardForm(g.name.to_owned()));
            }
        }
        Ok(GatewayPolicy { allowed, raw_card })
    }

    /// The allowed gateway of this wire name.
    pub(super) fn find(&self, name: &str) -> Option<&'static Gateway> {
        self.allowed.iter().copied().find(|g| g.name == name)
    }

    /// Whether `gateway` may take raw card fields here.
    pub(super) fn raw_card_allowed(&self, gateway: &Gateway) -> bool {
        self.raw_card.iter().any(|g| g.name == gateway.name)
    }

    /// The allowed gateway names, for an error message.
    pub(super) fn names(&self) -> Vec<&'static str> {
        self.allowed.iter().map(|g| g.name).collect()
    }
}

/// The gateways of `names`, refusing an unknown one.
fn resolve(
    names: &[String],
    unknown: fn(String) -> PolicyError,
) -> Result<Vec<&'static Gateway>, PolicyError> {
    names
        .iter()
        .map(|name| gateway::find(name).ok_or_else(|| unknown(name.clone())))
        .collect()
}

fn names() -> String {
    gateway::all_names().collect::<Vec<_>>().join(", ")
}

fn raw_names() -> String {
    gateway::GATEWAYS
        .iter()
        .filter(|g| g.has_raw_card_form())
        .map(|g| g.name)
        .collect::<Vec<_>>()
        .join(", ")
}
