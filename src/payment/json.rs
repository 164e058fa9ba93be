//! The strict JSON tree a payment body is read into before validation.
//!
//! `serde_json::Value` silently keeps the last of two equal keys, so a client could send a
//! field twice and have payshim and the upstream read different values. This tree keeps every
//! key in order, and the strings in it are zeroized on drop because some of them are PANs and
//! CVVs.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroizing;

/// A JSON value as far as validation needs it. Objects keep every key in order, duplicates
/// included, and strings are zeroized on drop.
pub(super) enum Json {
    String(Zeroizing<String>),
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    Bool(bool),
    /// A non-negative integer that fits in 64 bits (amounts are minor units).
    Unsigned(u64),
    /// Null, negative and fractional numbers: always the wrong type here.
    Other,
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(u64::try_from(v).map_or(Json::Other, Json::Unsigned))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Unsigned(v))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(Zeroizing::new(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(Zeroizing::new(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Json>()?;
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

/// The members of one JSON object, with repeated keys counted.
pub(super) struct Fields {
    entries: Vec<Entry>,
}

struct Entry {
    name: String,
    /// The first occurrence; later ones are dropped (and zeroized) right away.
    value: Json,
    count: usize,
}

/// What [`Fields::take`] found for a name.
pub(super) enum Slot {
    Missing,
    Duplicate,
    Present(Json),
}

impl Fields {
    pub(super) fn new(pairs: Vec<(String, Json)>) -> Self {
        let mut entries: Vec<Entry> = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            match entries.iter_mut().find(|e| e.name == name) {
                Some(entry) => entry.count += 1,
                None => entries.push(Entry {
                    name,
                    value,
                    count: 1,
                }),
            }
        }
        Fields { entries }
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// Removes `name` from the object, so that what is left afterwards is unknown.
    pub(super) fn take(&mut self, name: &str) -> Slot {
        let Some(index) = self.entries.iter().position(|e| e.name == name) else {
            return Slot::Missing;
        };
        let entry = self.entries.remove(index);
        if entry.count > 1 {
            Slot::Duplicate
        } else {
            Slot::Present(entry.value)
        }
    }

    /// Names still present that are not in `known`.
    pub(super) fn unknown<'a>(&'a self, known: &'a [&str]) -> impl Iterator<Item = &'a str> {
        self.entries
            .iter()
            .map(|e| e.name.as_str())
            .filter(|name| !known.contains(name))
    }
}
