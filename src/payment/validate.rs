//! Validation of a payment body, field by field.
//!
//! Every field is checked and every failure collected, so a client sees all its mistakes in
//! one answer; a body is accepted only when no field failed.

use zeroize::Zeroizing;

use super::calendar::{YearMonth, check_expiry, parse_month, parse_year};
use super::canon::Canon;
use super::card::{Brand, CardNumber};
use super::cvv::Cvv;
use super::field_error::{
    FieldError, duplicate, invalid_type, malformed, missing, source, unknown,
};
use super::gateway::{Gateway, Names, method_list};
use super::json::{Fields, Json, Slot};
use super::policy::GatewayPolicy;
use super::request::{CardPayment, Method, PaymentData, PaymentRequest};
use super::token_form::{AMOUNT, refuse_rest, take_fields};

/// The raw-card fields: any of them makes the body a card payment.
const CARD_FIELDS: [&str; 6] = [
    "first_name",
    "last_name",
    "number",
    "month",
    "year",
    "verification_value",
];

/// What one form yields: the payment data and the gateway's other members.
type Form = (Option<PaymentData>, Vec<(String, Canon)>);

impl PaymentRequest {
    /// Parses and validates a payment body against the gateway table and the store's
    /// policy, collecting one error per bad field (see README.md, Architecture). `today`
    /// decides expiry, so tests can pin it.
    pub fn parse(
        body: &[u8],
        policy: &GatewayPolicy,
        today: YearMonth,
    ) -> Result<PaymentRequest, Vec<FieldError>> {
        let root: Json = serde_json::from_slice(body).map_err(|e| vec![malformed(&e)])?;
        let mut errors = Vec::new();
        let Some(fields) = take_data(root, &mut errors) else {
            return Err(errors);
        };
        DataParser {
            fields,
            policy,
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
    policy: &'a GatewayPolicy,
    today: YearMonth,
    errors: Vec<FieldError>,
}

impl DataParser<'_> {
    fn run(mut self) -> Result<PaymentRequest, Vec<FieldError>> {
        let has_card = CARD_FIELDS.iter().any(|f| self.fields.contains(f));
        let mixed = has_card && self.fields.contains("payment");
        let gateway = self.gateway();
        let method = self.method();
        let amount = self.amount();
        if mixed {
            self.errors.push(FieldError::new(
                "data",
                "Mixed payment forms",
                "send either the card fields or `payment`, not both",
            ));
        }
        // Without a known gateway (or with both forms) the rest cannot be checked.
        let (Some(gateway), false) = (gateway, mixed) else {
            return Err(self.errors);
        };
        let (data, fields) = if has_card {
            self.card_form(gateway, method)
        } else {
            self.token_form(gateway, method)
        };
        refuse_rest(&self.fields, "data", &mut self.errors);
        match (method, data) {
            (Some(method), Some(data)) if self.errors.is_empty() => Ok(PaymentRequest {
                gateway: gateway.name.to_owned(),
                method,
                amount,
                data,
                fields,
            }),
            _ => {
                debug_assert!(!self.errors.is_empty(), "a rejected field must report why");
                Err(self.errors)
            }
        }
    }

    fn gateway(&mut self) -> Option<&'static Gateway> {
        let value = self.string("gateway")?;
        if let Some(gateway) = self.policy.find(&value) {
            return Some(gateway);
        }
        let names = self.policy.names();
        let detail = if names.is_empty() {
            "no gateway is configured on this proxy".to_owned()
        } else {
            format!("must be one of: {}", names.join(", "))
        };
        self.fail("gateway", "Gateway not allowed", detail)
    }

    fn method(&mut self) -> Option<Method> {
        let value = self.string("method")?;
        Method::from_wire(&value).or_else(|| {
            let all = method_list(&Method::ALL);
            self.fail("method", "Invalid method", format!("must be one of: {all}"))
        })
    }

    /// `amount`, when present: a positive integer in minor units.
    fn amount(&mut self) -> Option<u64> {
        match self.fields.take("amount") {
            Slot::Missing => None,
            Slot::Duplicate => {
                self.errors.push(duplicate(source("amount")));
                None
            }
            Slot::Present(Json::Unsigned(n)) if n > 0 => Some(n),
            Slot::Present(Json::Unsigned(_) | Json::Other) => {
                self.fail("amount", "Invalid amount", AMOUNT)
            }
            Slot::Present(_) => {
                self.errors
                    .push(invalid_type(source("amount"), "must be a JSON number"));
                None
            }
        }
    }

    /// The gateway's token form: the members its table row lists.
    fn token_form(&mut self, gateway: &'static Gateway, method: Option<Method>) -> Form {
        self.method_allowed(method, gateway.methods, gateway.name, "");
        let fields = take_fields(&mut self.fields, gateway.fields, "data", &mut self.errors);
        for (a, b) in gateway.exclusive {
            if has_member(&fields, a) && has_member(&fields, b) {
                let detail = format!("must not be sent together with `{b}`");
                self.fail::<()>(a, "Conflicting fields", detail);
            }
        }
        (Some(PaymentData::Token), fields)
    }

    /// The raw-card form, where the gateway had one and the policy allows it. Every field
    /// is checked before any `?`, so all errors are collected.
    fn card_form(&mut self, gateway: &'static Gateway, method: Option<Method>) -> Form {
        let Some(raw) = gateway
            .raw_card
            .as_ref()
            .filter(|_| self.policy.raw_card_allowed(gateway))
        else {
            return self.card_refused();
        };
        self.method_allowed(method, raw.methods, gateway.name, " with card fields");
        let names = (raw.names == Names::Required).then(|| {
            (
                self.name("first_name", "Invalid first name"),
                self.name("last_name", "Invalid last name"),
            )
        });
        let number = self.number();
        let month = self.month();
        let year = self.year(month);
        let cvv = self.cvv(number.as_ref().map(CardNumber::brand));
        let fields = take_fields(&mut self.fields, raw.fields, "data", &mut self.errors);
        let card = || {
            let (first_name, last_name) = match names {
                Some((first, last)) => (Some(first?), Some(last?)),
                None => (None, None),
            };
            Some(PaymentData::Card(CardPayment {
                first_name,
                last_name,
                number: number?,
                month: month?,
                year: year?,
                cvv: cvv?,
            }))
        };
        (card(), fields)
    }

    /// Card fields for a gateway that takes none here: one error, and the body is dropped
    /// (wiping the card data) without looking further.
    fn card_refused(&mut self) -> Form {
        self.errors.push(FieldError::new(
            "data",
            "Card data not accepted",
            "this gateway takes a token (or no instrument) on this proxy, never card fields",
        ));
        self.fields = Fields::new(Vec::new());
        (None, Vec::new())
    }

    /// Records an error when `method` is not one `gateway` takes (in this form).
    fn method_allowed(
        &mut self,
        method: Option<Method>,
        allowed: &[Method],
        gateway: &str,
        form: &str,
    ) {
        if let Some(m) = method
            && !allowed.contains(&m)
        {
            let detail = format!("gateway {gateway} takes{form}: {}", method_list(allowed));
            self.fail::<()>("method", "Method not supported", detail);
        }
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

/// Whether the checked members hold `path` (dotted, below `data`).
fn has_member(fields: &[(String, Canon)], path: &str) -> bool {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    fields.iter().any(|(name, value)| {
        name == head
            && match (rest, value) {
                ("", _) => true,
                (rest, Canon::Object(inner)) => has_member(inner, rest),
                _ => false,
            }
    })
}
