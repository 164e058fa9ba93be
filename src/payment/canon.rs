//! [`Canon`]: a checked member of a payment body, as it is written upstream and fingerprinted.
//!
//! Built only from validated values (`token_form.rs`), in the gateway table's order (client
//! names in a map sorted), so the forwarded body and the request fingerprint do not depend on
//! how the client ordered or spaced its JSON. Card numbers and CVVs never get here: they live
//! in `CardNumber` and `Cvv`.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A checked JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canon {
    Text(String),
    Bool(bool),
    Unsigned(u64),
    List(Vec<String>),
    Object(Vec<(String, Canon)>),
}

impl Canon {
    /// Bytes of names and strings, to size an output buffer up front.
    pub(super) fn text_len(&self) -> usize {
        match self {
            Canon::Text(s) => s.len(),
            Canon::Bool(_) => 5,
            Canon::Unsigned(_) => 20,
            Canon::List(items) => items.iter().map(|s| s.len() + 3).sum(),
            Canon::Object(members) => members
                .iter()
                .map(|(k, v)| k.len() + 3 + v.text_len())
                .sum(),
        }
    }
}

impl Serialize for Canon {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Canon::Text(v) => s.serialize_str(v),
            Canon::Bool(v) => s.serialize_bool(*v),
            Canon::Unsigned(v) => s.serialize_u64(*v),
            Canon::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Canon::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}
