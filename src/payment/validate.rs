//! Validation of a payment body, field by field.
//!
//! Every field is checked and every failure collected, so a client sees all its mistakes in
//! one answer; a body is accepted only when no field failed.

use zeroize::Zeroizing;

use super::calendar::{YearMonth, check_expiry, parse_month, parse_year};
use super::card::{Brand, CardNumber};
use super::cvv::Cvv;
use super::field_error::{
    FieldError, duplicate, invalid_type, malformed, missing, source, unknown,
};
use super::json::{Fields, Json, Slot};
use super::request::{CardPayment, Method, PaymentData, PaymentRequest};

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

impl PaymentRequest {
    /// Parses and validates a payment body, collecting one error per bad field (see README.md,
    /// Architecture). `today` decides expiry, so tests can pin it.
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
        match check_expiry(year, month, self.today) {
            Ok(()) => Some(year),
            Err(e) => self.fail("year", e.title(), e.to_string()),
        }
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

/// `"<acctid>|<profileid>"`, each part 1-64 ASCII letters or digits.
fn valid_token(s: &str) -> bool {
    let part_ok =
        |p: &str| (1..=64).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric());
    s.split_once('|')
        .is_some_and(|(acct, profile)| part_ok(acct) && part_ok(profile))
}
