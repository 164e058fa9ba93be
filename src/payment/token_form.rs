//! The members a gateway's table row lists (`payment`, `options`, ... in `gateway.rs`):
//! checked against their kind, collected in table order as [`Canon`] values. Used for the
//! token form, and for the `options` a raw-card form may carry.
//!
//! Every string is also searched for a card number (`pan_scan.rs`): a PAN in `payment`, an
//! option or a name means raw cards are sent where a token belongs, and the body is refused
//! without the value ever being repeated.

use zeroize::Zeroizing;

use super::canon::Canon;
use super::field_error::{FieldError, duplicate, echoable_name, invalid_type, missing, unknown};
use super::gateway::{Field, Kind};
use super::json::{Fields, Json, Slot};
use super::pan_scan::holds_card_number;

/// Longest free-text value.
const MAX_TEXT: usize = 1000;
/// Longest token.
const MAX_TOKEN: usize = 256;
/// The rule for an amount.
pub(super) const AMOUNT: &str = "must be a positive integer in minor units, e.g. 5499 for 54.99";

/// Takes the members `spec` lists out of `fields`, checks each, and returns the valid ones
/// in table order. Errors go to `errors`, pointed at `<parent>.<name>` (`<name>` when
/// `parent` is "", the top level); members `spec` does not list are left in `fields`.
pub(super) fn take_fields(
    fields: &mut Fields,
    spec: &[Field],
    parent: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<(String, Canon)> {
    let mut out = Vec::with_capacity(spec.len());
    for field in spec {
        let path = match parent {
            "" => field.name.to_owned(),
            _ => format!("{parent}.{}", field.name),
        };
        match fields.take(field.name) {
            Slot::Missing if field.required => errors.push(missing(path)),
            Slot::Missing => {}
            Slot::Duplicate => errors.push(duplicate(path)),
            Slot::Present(value) => {
                if let Some(canon) = check(value, &field.kind, &path, errors) {
                    out.push((field.name.to_owned(), canon));
                }
            }
        }
    }
    out
}

/// Reports every member left in `fields` as unknown (`parent` "" for the top level).
pub(super) fn refuse_rest(fields: &Fields, parent: &str, errors: &mut Vec<FieldError>) {
    let parent = Some(parent).filter(|p| !p.is_empty());
    errors.extend(fields.unknown(&[]).map(|name| unknown(parent, name)));
}

/// One value against its kind.
fn check(value: Json, kind: &Kind, path: &str, errors: &mut Vec<FieldError>) -> Option<Canon> {
    let fail = |errors: &mut Vec<FieldError>, title, detail: &str| {
        errors.push(FieldError::new(path, title, detail));
        None
    };
    match (kind, value) {
        (Kind::Token, Json::String(s)) => string(s, path, errors, token_problem),
        (Kind::AcctProfile, Json::String(s)) => string(s, path, errors, acct_profile_problem),
        (Kind::Text, Json::String(s)) => string(s, path, errors, text_problem),
        (Kind::Bool, Json::Bool(b)) => Some(Canon::Bool(b)),
        (Kind::OneOf(names), Json::String(s)) => match names.iter().find(|n| **n == s.as_str()) {
            Some(name) => Some(Canon::Text((*name).to_owned())),
            None => fail(
                errors,
                "Invalid value",
                &format!("must be one of: {}", names.join(", ")),
            ),
        },
        (Kind::TextList, Json::Array(items)) => text_list(items, path, errors),
        (Kind::Object(spec), Json::Object(pairs)) => {
            let mut inner = Fields::new(pairs);
            let members = take_fields(&mut inner, spec, path, errors);
            refuse_rest(&inner, path, errors);
            Some(Canon::Object(members))
        }
        (Kind::TextMap, Json::Object(pairs)) => text_map(pairs, path, errors),
        (Kind::Amount, Json::Unsigned(n)) if n > 0 => Some(Canon::Unsigned(n)),
        (Kind::Amount, Json::Unsigned(_) | Json::Other) => fail(errors, "Invalid amount", AMOUNT),
        (kind, _) => {
            errors.push(invalid_type(path.to_owned(), expected(kind)));
            None
        }
    }
}

/// A string value: refused when it holds a card number, else checked by `problem`.
fn string(
    mut s: Zeroizing<String>,
    path: &str,
    errors: &mut Vec<FieldError>,
    problem: fn(&str) -> Option<(&'static str, &'static str)>,
) -> Option<Canon> {
    if holds_card_number(&s) {
        errors.push(card_number_here(path));
        return None;
    }
    if let Some((title, detail)) = problem(&s) {
        errors.push(FieldError::new(path, title, detail));
        return None;
    }
    Some(Canon::Text(std::mem::take(&mut *s)))
}

/// The refusal of a card number in a token, option or name. Never quotes the value.
fn card_number_here(path: &str) -> FieldError {
    FieldError::new(
        path,
        "Card number where a token is expected",
        "holds a card number; send the gateway's token or reference, never card data, here",
    )
}

fn token_problem(s: &str) -> Option<(&'static str, &'static str)> {
    let ok = (1..=MAX_TOKEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
    (!ok).then_some((
        "Invalid payment token",
        "must be 1-256 printable ASCII characters without spaces",
    ))
}

fn acct_profile_problem(s: &str) -> Option<(&'static str, &'static str)> {
    let part_ok =
        |p: &str| (1..=64).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric());
    let ok = s
        .split_once('|')
        .is_some_and(|(acct, profile)| part_ok(acct) && part_ok(profile));
    (!ok).then_some((
        "Invalid payment token",
        "must be `<acctid>|<profileid>`, each part 1-64 ASCII letters or digits",
    ))
}

fn text_problem(s: &str) -> Option<(&'static str, &'static str)> {
    if s.chars().count() > MAX_TEXT {
        Some(("Invalid value", "must be at most 1000 characters"))
    } else if s.chars().any(char::is_control) {
        Some(("Invalid value", "must not contain control characters"))
    } else {
        None
    }
}

fn text_list(items: Vec<Json>, path: &str, errors: &mut Vec<FieldError>) -> Option<Canon> {
    let before = errors.len();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Json::String(s) => {
                if let Some(Canon::Text(t)) = string(s, path, errors, text_problem) {
                    out.push(t);
                }
            }
            _ => errors.push(invalid_type(
                path.to_owned(),
                "must be an array of JSON strings",
            )),
        }
    }
    (errors.len() == before).then_some(Canon::List(out))
}

/// An object of client-chosen names to text. The names must look like field names, so
/// that none of them can carry card data; the map is sorted by name.
fn text_map(pairs: Vec<(String, Json)>, path: &str, errors: &mut Vec<FieldError>) -> Option<Canon> {
    let before = errors.len();
    let mut out: Vec<(String, Canon)> = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        if !echoable_name(&name) {
            errors.push(FieldError::new(
                path,
                "Invalid field name",
                "names here are 1-64 letters, digits or `_`, starting with a letter or `_`",
            ));
            continue;
        }
        let member = format!("{path}.{name}");
        if out.iter().any(|(n, _)| *n == name) {
            errors.push(duplicate(member));
            continue;
        }
        let canon = match value {
            Json::String(s) => string(s, &member, errors, text_problem),
            _ => {
                errors.push(invalid_type(member, "must be a JSON string"));
                None
            }
        };
        if let Some(canon) = canon {
            out.push((name, canon));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    (errors.len() == before).then_some(Canon::Object(out))
}

/// The type a kind needs, for an "Invalid type" error.
fn expected(kind: &Kind) -> &'static str {
    match kind {
        Kind::Token | Kind::AcctProfile | Kind::Text | Kind::OneOf(_) => "must be a JSON string",
        Kind::Bool => "must be true or false",
        Kind::TextList => "must be an array of JSON strings",
        Kind::Object(_) | Kind::TextMap => "must be a JSON object",
        Kind::Amount => "must be a JSON number",
    }
}
