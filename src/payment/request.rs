//! Parsing and validation of payment bodies, and the canonical body sent upstream.
//!
//! The body is read into a strict JSON tree (duplicate keys kept, strings zeroized on drop),
//! then every field is checked and every failure collected, so a client sees all its mistakes
//! in one answer. What goes upstream is re-serialized from the validated values, never the
//! client's bytes (DESIGN.md section 4), so payshim and the upstream cannot disagree on what
//! the body means.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroizing;

use super::card::{Brand, CardNumber, hmac_sha256};
use super::cvv::Cvv;

/// The raw-card fields: any of them makes the body a card payment.
const CARD_FIELDS: [&str; 6] = [
    "first_name",
    "last_name",
    "number",
    "month",
    "year",
    "verification_value",
];

/// Every field accepted inside `data`; anything else is an unknown field.
const KNOWN_FIELDS: [&str; 9] = [
    "gateway",
    "method",
    "first_name",
    "last_name",
    "number",
    "month",
    "year",
    "verification_value",
    "payment",
];

/// How far ahead an expiry year may be; cards are not issued for longer.
const MAX_YEARS_AHEAD: u16 = 20;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// One validation failure; becomes one entry of the API `errors` array.
///
/// `detail` states the rule that was broken and never contains the submitted value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is: `body`, `data` or `data.<field>`.
    pub source: String,
    pub title: &'static str,
    pub detail: String,
}

impl FieldError {
    fn new(source: impl Into<String>, title: &'static str, detail: impl Into<String>) -> Self {
        FieldError {
            source: source.into(),
            title,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.source, self.title, self.detail)
    }
}

/// A calendar month, used for card expiry.
///
/// Ordered by year, then month, so `expiry < today` means the card has expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: u16,
    pub month: u8,
}

impl YearMonth {
    /// The current month in UTC, from the system clock (a clock before 1970 reads as 1970-01).
    pub fn now_utc() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::from_unix_days((secs / 86_400) as i64)
    }

    /// The month containing the given day (days since 1970-01-01), by Howard Hinnant's
    /// `civil_from_days` algorithm (proleptic Gregorian calendar).
    pub(super) fn from_unix_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097); // day of era, 0..=146096
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, March-based
        let mp = (5 * doy + 2) / 153; // month, March = 0
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        YearMonth {
            year: u16::try_from(year).unwrap_or(u16::MAX),
            month: month as u8,
        }
    }
}

/// The payment operation requested from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Purchase,
    Authorize,
    Capture,
}

impl Method {
    /// The wire name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Purchase => "purchase",
            Method::Authorize => "authorize",
            Method::Capture => "capture",
        }
    }

    /// Exact, case-sensitive match on the wire name.
    fn from_wire(s: &str) -> Option<Self> {
        [Method::Purchase, Method::Authorize, Method::Capture]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// The payment instrument: raw card data, or a gateway token (`"<acctid>|<profileid>"`).
pub enum PaymentData {
    Card(CardPayment),
    Token { payment: String },
}

/// The token is a reusable reference to a stored card, so it is not printed either.
impl fmt::Debug for PaymentData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaymentData::Card(card) => f.debug_tuple("Card").field(card).finish(),
            PaymentData::Token { .. } => {
                f.debug_struct("Token").field("payment", &Redacted).finish()
            }
        }
    }
}

/// A validated raw-card payment.
pub struct CardPayment {
    pub first_name: String,
    pub last_name: String,
    pub number: CardNumber,
    pub month: u8,
    pub year: u16,
    pub cvv: Cvv,
}

impl CardPayment {
    /// HMAC-SHA-256(key, `pan|MM|YYYY|cvv`), with the month and year formatted as in the
    /// upstream body. Counting distinct values per card fingerprint reveals a client guessing
    /// expiry dates or CVVs, without storing either.
    pub fn attempt_fingerprint(&self, key: &[u8]) -> [u8; 32] {
        let month = format!("{:02}", self.month);
        let year = format!("{:04}", self.year);
        hmac_sha256(
            key,
            &[
                self.number.expose().as_bytes(),
                b"|",
                month.as_bytes(),
                b"|",
                year.as_bytes(),
                b"|",
                self.cvv.expose().as_bytes(),
            ],
        )
    }
}

/// Cardholder names are personal data and are not logged; the expiry is card data. Only the
/// masked number (brand, last four) is shown.
impl fmt::Debug for CardPayment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardPayment")
            .field("first_name", &Redacted)
            .field("last_name", &Redacted)
            .field("number", &self.number)
            .field("expiry", &Redacted)
            .field("cvv", &self.cvv)
            .finish()
    }
}

/// A validated payment request, ready to be re-serialized for the upstream.
#[derive(Debug)]
pub struct PaymentRequest {
    /// One of the configured gateways.
    pub gateway: String,
    pub method: Method,
    pub data: PaymentData,
}

impl PaymentRequest {
    /// Parses and validates a payment body against DESIGN.md section 4, collecting one error
    /// per bad field. `today` decides expiry, so tests can pin it.
    pub fn parse(
        body: &[u8],
        allowed_gateways: &[String],
        today: YearMonth,
    ) -> Result<PaymentRequest, Vec<FieldError>> {
        let root: Json = serde_json::from_slice(body).map_err(|e| vec![malformed(&e)])?;
        let mut errors = Vec::new();
        let Some(fields) = take_data(root, &mut errors) else {
            return Err(errors);
        };
        DataParser {
            fields,
            allowed_gateways,
            today,
            errors,
        }
        .run()
    }

    /// The canonical body sent upstream: fixed field order, month as two digits, year as four.
    /// Zeroizing because it holds the PAN and CVV.
    pub fn to_upstream_body(&self) -> Zeroizing<Vec<u8>> {
        let gateway = self.gateway.as_str();
        let method = self.method.as_str();
        match &self.data {
            PaymentData::Card(card) => {
                let data = UpstreamCard {
                    gateway,
                    method,
                    first_name: &card.first_name,
                    last_name: &card.last_name,
                    number: card.number.expose(),
                    month: format!("{:02}", card.month),
                    year: format!("{:04}", card.year),
                    verification_value: card.cvv.expose(),
                };
                let len = data_len(&data);
                write_json(&Envelope { data }, len)
            }
            PaymentData::Token { payment } => {
                let data = UpstreamToken {
                    gateway,
                    method,
                    payment,
                };
                write_json(
                    &Envelope { data },
                    gateway.len() + method.len() + payment.len(),
                )
            }
        }
    }

    /// The card, for the raw-card form.
    pub fn card(&self) -> Option<&CardPayment> {
        match &self.data {
            PaymentData::Card(card) => Some(card),
            PaymentData::Token { .. } => None,
        }
    }
}

/// Prints `<redacted>` in place of a value in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream serialization
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Serialize)]
struct UpstreamCard<'a> {
    gateway: &'a str,
    method: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    number: &'a str,
    month: String,
    year: String,
    verification_value: &'a str,
}

#[derive(Serialize)]
struct UpstreamToken<'a> {
    gateway: &'a str,
    method: &'a str,
    payment: &'a str,
}

/// Total length of the string values of a card body, to size its buffer.
fn data_len(d: &UpstreamCard<'_>) -> usize {
    [
        d.gateway,
        d.method,
        d.first_name,
        d.last_name,
        d.number,
        &d.month,
        &d.year,
        d.verification_value,
    ]
    .iter()
    .map(|s| s.len())
    .sum()
}

/// Serializes into a buffer reserved up front for the worst case (every value byte escaped as
/// `\u00XX`, six bytes), so the buffer never reallocates and no stale copy of the PAN is left
/// in freed memory.
fn write_json<T: Serialize>(value: &T, values_len: usize) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(256 + 6 * values_len));
    serde_json::to_writer(&mut *buf, value).expect("serializing string fields cannot fail");
    buf
}

// ---------------------------------------------------------------------------------------------
// Strict JSON tree
// ---------------------------------------------------------------------------------------------

/// A JSON value as far as validation needs it. Objects keep every key in order, duplicates
/// included (`serde_json::Value` silently keeps the last one), and strings are zeroized on drop
/// because some of them are PANs and CVVs.
enum Json {
    String(Zeroizing<String>),
    Object(Vec<(String, Json)>),
    /// Null, booleans, numbers and arrays: always the wrong type here, so their content is
    /// parsed (nested objects and strings included) and dropped.
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

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Other)
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
        while seq.next_element::<Json>()?.is_some() {}
        Ok(Json::Other)
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
struct Fields {
    entries: Vec<Entry>,
}

struct Entry {
    name: String,
    /// The first occurrence; later ones are dropped (and zeroized) right away.
    value: Json,
    count: usize,
}

/// What [`Fields::take`] found for a name.
enum Slot {
    Missing,
    Duplicate,
    Present(Json),
}

impl Fields {
    fn new(pairs: Vec<(String, Json)>) -> Self {
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

    fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// Removes `name` from the object, so that what is left afterwards is unknown.
    fn take(&mut self, name: &str) -> Slot {
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
    fn unknown<'a>(&'a self, known: &'a [&str]) -> impl Iterator<Item = &'a str> {
        self.entries
            .iter()
            .map(|e| e.name.as_str())
            .filter(|name| !known.contains(name))
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The single error for a body that is not JSON. serde_json's message is not used: for some
/// inputs it quotes them. Line and column are positions, not content.
fn malformed(e: &serde_json::Error) -> FieldError {
    FieldError::new(
        "body",
        "Malformed JSON",
        format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
    )
}

/// Checks the envelope `{"data":{...}}` and returns the members of `data` when it is usable.
/// Errors about the envelope go to `errors`; `None` is returned only with at least one error.
fn take_data(root: Json, errors: &mut Vec<FieldError>) -> Option<Fields> {
    let Json::Object(pairs) = root else {
        errors.push(FieldError::new(
            "body",
            "Invalid type",
            "the body must be a JSON object with a `data` object",
        ));
        return None;
    };
    let mut top = Fields::new(pairs);
    let data = match top.take("data") {
        Slot::Missing => {
            errors.push(missing("data".into()));
            None
        }
        Slot::Duplicate => {
            errors.push(duplicate("data".into()));
            None
        }
        Slot::Present(Json::Object(pairs)) => Some(Fields::new(pairs)),
        Slot::Present(_) => {
            errors.push(invalid_type("data".into(), "must be a JSON object"));
            None
        }
    };
    errors.extend(top.unknown(&[]).map(|name| unknown(None, name)));
    data
}

/// Validates the members of `data`, field by field.
struct DataParser<'a> {
    fields: Fields,
    allowed_gateways: &'a [String],
    today: YearMonth,
    errors: Vec<FieldError>,
}

impl DataParser<'_> {
    fn run(mut self) -> Result<PaymentRequest, Vec<FieldError>> {
        let has_token = self.fields.contains("payment");
        let has_card = CARD_FIELDS.iter().any(|f| self.fields.contains(f));

        let gateway = self.gateway();
        let method = self.method();
        let data = match (has_token, has_card) {
            (true, true) => {
                self.errors.push(FieldError::new(
                    "data",
                    "Mixed payment forms",
                    "send either the card fields or `payment`, not both",
                ));
                None
            }
            (true, false) => self.token(),
            (false, _) => self.card(),
        };
        let unknown: Vec<FieldError> = self
            .fields
            .unknown(&KNOWN_FIELDS)
            .map(|name| unknown(Some("data"), name))
            .collect();
        self.errors.extend(unknown);

        match (gateway, method, data) {
            (Some(gateway), Some(method), Some(data)) if self.errors.is_empty() => {
                Ok(PaymentRequest {
                    gateway,
                    method,
                    data,
                })
            }
            _ => {
                debug_assert!(!self.errors.is_empty(), "a rejected field must report why");
                Err(self.errors)
            }
        }
    }

    fn gateway(&mut self) -> Option<String> {
        let value = self.string("gateway")?;
        if let Some(gateway) = self.allowed_gateways.iter().find(|g| **g == *value) {
            return Some(gateway.clone());
        }
        let detail = if self.allowed_gateways.is_empty() {
            "no gateway is configured on this proxy".to_owned()
        } else {
            format!("must be one of: {}", self.allowed_gateways.join(", "))
        };
        self.fail("gateway", "Gateway not allowed", detail)
    }

    fn method(&mut self) -> Option<Method> {
        let value = self.string("method")?;
        Method::from_wire(&value).or_else(|| {
            self.fail(
                "method",
                "Invalid method",
                "must be one of: purchase, authorize, capture",
            )
        })
    }

    /// The token form: `payment` and no card fields (checked by the caller).
    fn token(&mut self) -> Option<PaymentData> {
        let mut value = self.string("payment")?;
        if !valid_token(&value) {
            return self.fail(
                "payment",
                "Invalid payment token",
                "must be `<acctid>|<profileid>`, each part 1-64 ASCII letters or digits",
            );
        }
        Some(PaymentData::Token {
            payment: std::mem::take(&mut *value),
        })
    }

    /// The raw-card form. Every field is checked before any `?`, so all errors are collected.
    fn card(&mut self) -> Option<PaymentData> {
        let first_name = self.name("first_name", "Invalid first name");
        let last_name = self.name("last_name", "Invalid last name");
        let number = self.number();
        let month = self.month();
        let year = self.year(month);
        let cvv = self.cvv(number.as_ref().map(CardNumber::brand));
        Some(PaymentData::Card(CardPayment {
            first_name: first_name?,
            last_name: last_name?,
            number: number?,
            month: month?,
            year: year?,
            cvv: cvv?,
        }))
    }

    fn name(&mut self, field: &'static str, title: &'static str) -> Option<String> {
        let mut value = self.string(field)?;
        let problem = if !(1..=100).contains(&value.chars().count()) {
            Some("must be 1-100 characters")
        } else if value.chars().any(char::is_control) {
            Some("must not contain control characters")
        } else if value.trim().is_empty() {
            Some("must not be only whitespace")
        } else {
            None
        };
        match problem {
            Some(detail) => self.fail(field, title, detail),
            None => Some(std::mem::take(&mut *value)),
        }
    }

    fn number(&mut self) -> Option<CardNumber> {
        let value = self.string("number")?;
        CardNumber::parse(&value)
            .map_err(|e| self.fail::<()>("number", "Invalid card number", e.to_string()))
            .ok()
    }

    fn month(&mut self) -> Option<u8> {
        let value = self.string("month")?;
        parse_month(&value).or_else(|| {
            self.fail(
                "month",
                "Invalid expiry month",
                "must be 1-12, as one or two digits",
            )
        })
    }

    /// The year, and the expiry check, reported on `data.year`: a card is valid through the
    /// end of its expiry month in UTC.
    fn year(&mut self, month: Option<u8>) -> Option<u16> {
        let value = self.string("year")?;
        let Some(year) = parse_year(&value) else {
            return self.fail("year", "Invalid expiry year", "must be four digits");
        };
        if year > self.today.year.saturating_add(MAX_YEARS_AHEAD) {
            return self.fail(
                "year",
                "Invalid expiry year",
                "must not be more than 20 years in the future",
            );
        }
        if let Some(month) = month
            && (YearMonth { year, month }) < self.today
        {
            return self.fail(
                "year",
                "Card expired",
                "the card is valid through the end of its expiry month (UTC), which has passed",
            );
        }
        Some(year)
    }

    fn cvv(&mut self, brand: Option<Brand>) -> Option<Cvv> {
        let value = self.string("verification_value")?;
        Cvv::parse(&value, brand)
            .map_err(|e| {
                self.fail::<()>("verification_value", "Invalid security code", e.to_string())
            })
            .ok()
    }

    /// Takes a field that must be a JSON string, reporting it missing, repeated or of the
    /// wrong type otherwise.
    fn string(&mut self, field: &'static str) -> Option<Zeroizing<String>> {
        match self.fields.take(field) {
            Slot::Present(Json::String(value)) => Some(value),
            Slot::Present(_) => {
                self.errors
                    .push(invalid_type(source(field), "must be a JSON string"));
                None
            }
            Slot::Missing => {
                self.errors.push(missing(source(field)));
                None
            }
            Slot::Duplicate => {
                self.errors.push(duplicate(source(field)));
                None
            }
        }
    }

    /// Records an error on `data.<field>`; returns `None` so callers can `return self.fail(..)`.
    fn fail<T>(
        &mut self,
        field: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Option<T> {
        self.errors
            .push(FieldError::new(source(field), title, detail));
        None
    }
}

fn source(field: &str) -> String {
    format!("data.{field}")
}

fn missing(source: String) -> FieldError {
    FieldError::new(source, "Missing field", "is required")
}

fn duplicate(source: String) -> FieldError {
    FieldError::new(source, "Duplicate field", "must appear only once")
}

fn invalid_type(source: String, detail: &'static str) -> FieldError {
    FieldError::new(source, "Invalid type", detail)
}

/// An unknown member of the top-level object (`parent` `None`) or of `data`. The name is only
/// echoed when it looks like a field name; otherwise the error points at the enclosing object.
fn unknown(parent: Option<&str>, name: &str) -> FieldError {
    let source = match (parent, echoable_name(name)) {
        (Some(parent), true) => format!("{parent}.{name}"),
        (None, true) => name.to_owned(),
        (Some(parent), false) => parent.to_owned(),
        (None, false) => "body".to_owned(),
    };
    FieldError::new(source, "Unknown field", "is not accepted here")
}

/// Whether a client-chosen key is safe to repeat in an error: at most 64 of `[A-Za-z0-9_]`,
/// starting with a letter or `_`, and no run of three or more digits, so that a PAN, CVV or
/// year sent as a key is never echoed.
fn echoable_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let starts_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
    let chars_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let no_digit_runs = !bytes.windows(3).any(|w| w.iter().all(u8::is_ascii_digit));
    bytes.len() <= 64 && starts_ok && chars_ok && no_digit_runs
}

/// `"<acctid>|<profileid>"`, each part 1-64 ASCII letters or digits.
fn valid_token(s: &str) -> bool {
    let part_ok =
        |p: &str| (1..=64).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric());
    s.split_once('|')
        .is_some_and(|(acct, profile)| part_ok(acct) && part_ok(profile))
}

/// `"1"`-`"12"`, one or two ASCII digits (`"08"` allowed).
fn parse_month(s: &str) -> Option<u8> {
    if !(1..=2).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|m| (1..=12).contains(m))
}

/// Exactly four ASCII digits.
fn parse_year(s: &str) -> Option<u16> {
    if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
