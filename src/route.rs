//! The route allow-list: request method and path -> [`Route`].
//!
//! The upstream token has full access to the store, so this table is a security boundary:
//! anything it does not name is a 404 and never leaves payshim.

use http::Method;

/// The names used in per-client `routes = [...]`, metric labels and log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteName {
    Token,
    Payments,
    Capture,
    Refund,
    Cancel,
    Transactions,
    Passthrough,
    /// `POST .../transactions/{uuid}/confirm`, after 3-D Secure or PayPal approval.
    Confirm,
    NotFound,
}

impl RouteName {
    /// Number of variants (they index per-route arrays, `route as usize`).
    pub const COUNT: usize = 9;

    /// Names a client may be limited to in `clients[].routes`.
    pub const ALL_NAMES: [&'static str; 7] = [
        "payments",
        "capture",
        "refund",
        "cancel",
        "confirm",
        "transactions",
        "passthrough",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteName::Token => "token",
            RouteName::Payments => "payments",
            RouteName::Capture => "capture",
            RouteName::Refund => "refund",
            RouteName::Cancel => "cancel",
            RouteName::Transactions => "transactions",
            RouteName::Passthrough => "passthrough",
            RouteName::Confirm => "confirm",
            RouteName::NotFound => "not_found",
        }
    }

    pub fn parse(s: &str) -> Option<RouteName> {
        Some(match s {
            "payments" => RouteName::Payments,
            "capture" => RouteName::Capture,
            "refund" => RouteName::Refund,
            "cancel" => RouteName::Cancel,
            "transactions" => RouteName::Transactions,
            "passthrough" => RouteName::Passthrough,
            "confirm" => RouteName::Confirm,
            _ => return None,
        })
    }
}

const _: () = assert!(RouteName::NotFound as usize + 1 == RouteName::COUNT);

/// A write action on an existing transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionAction {
    Capture,
    Refund,
    Cancel,
    Confirm,
}

impl TransactionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionAction::Capture => "capture",
            TransactionAction::Refund => "refund",
            TransactionAction::Cancel => "cancel",
            TransactionAction::Confirm => "confirm",
        }
    }
}

/// What a request is, decided from its method and path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /oauth/access_token`: answered by payshim, never forwarded.
    TokenExchange,
    /// `POST /v2/orders/{uuid}/payments`. `order_id` is `None` when that path segment is
    /// not a UUID: the payment pipeline refuses it with 400 (a specific error rather than
    /// 404, since the route is right), and the value itself is dropped here so it cannot
    /// reach a log line or the audit log (a buggy storefront may put a card number there).
    Payment {
        order_id: Option<String>,
    },
    /// `POST /v2/orders/{uuid}/transactions/{uuid}/{capture,refund,cancel,confirm}`.
    Transaction {
        order_id: String,
        transaction_id: String,
        action: TransactionAction,
    },
    /// `GET /v2/orders/{uuid}/transactions[/{uuid}]`.
    TransactionRead {
        order_id: String,
    },
    /// A CORS preflight for one of the routes above.
    Preflight(RouteName),
    /// An extra route from `[[routes]]` in the config.
    Passthrough,
    NotFound,
}

impl Route {
    pub fn name(&self) -> RouteName {
        match self {
            Route::TokenExchange => RouteName::Token,
            Route::Payment { .. } => RouteName::Payments,
            Route::Transaction { action, .. } => match action {
                TransactionAction::Capture => RouteName::Capture,
                TransactionAction::Refund => RouteName::Refund,
                TransactionAction::Cancel => RouteName::Cancel,
                TransactionAction::Confirm => RouteName::Confirm,
            },
            Route::TransactionRead { .. } => RouteName::Transactions,
            Route::Preflight(name) => *name,
            Route::Passthrough => RouteName::Passthrough,
            Route::NotFound => RouteName::NotFound,
        }
    }

    /// Matches a request against the built-in table, then the configured extra routes.
    pub fn match_request(method: &Method, path: &str, extra: &[RoutePattern]) -> Route {
        let preflight = method == Method::OPTIONS;
        let route = builtin(if preflight { None } else { Some(method) }, path);
        match route {
            Some(Route::TokenExchange) if preflight => Route::Preflight(RouteName::Token),
            Some(r) if preflight => Route::Preflight(r.name()),
            Some(r) => r,
            None if extra.iter().any(|p| p.matches(method, path)) => Route::Passthrough,
            None if preflight && extra.iter().any(|p| p.matches_path(path)) => {
                Route::Preflight(RouteName::Passthrough)
            }
            None => Route::NotFound,
        }
    }
}

/// The built-in route table (README.md, "Routes"). `method` None matches any method (preflight).
fn builtin(method: Option<&Method>, path: &str) -> Option<Route> {
    let is = |m: Method| method.is_none_or(|x| *x == m);
    if path == "/oauth/access_token" {
        return is(Method::POST).then_some(Route::TokenExchange);
    }
    let rest = path.strip_prefix("/v2/orders/")?;
    let mut parts = rest.split('/');
    let segment = parts.next().filter(|s| !s.is_empty())?;
    let order_id = is_uuid(segment).then(|| segment.to_string());
    let tail = (parts.next(), parts.next(), parts.next(), parts.next());
    if let (Some("payments"), None, None, None) = tail {
        return is(Method::POST).then_some(Route::Payment { order_id });
    }
    let order_id = order_id?;
    match tail {
        (Some("transactions"), None, None, None) if is(Method::GET) => {
            Some(Route::TransactionRead { order_id })
        }
        (Some("transactions"), Some(t), None, None) if is_uuid(t) && is(Method::GET) => {
            Some(Route::TransactionRead { order_id })
        }
        (Some("transactions"), Some(t), Some(action), None) if is_uuid(t) && is(Method::POST) => {
            let action = match action {
                "capture" => TransactionAction::Capture,
                "refund" => TransactionAction::Refund,
                "cancel" => TransactionAction::Cancel,
                "confirm" => TransactionAction::Confirm,
                _ => return None,
            };
            Some(Route::Transaction {
                order_id,
                transaction_id: t.to_string(),
                action,
            })
        }
        _ => None,
    }
}

/// Canonical textual UUID: 8-4-4-4-12 hex digits.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// One segment of a configured path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{uuid}`: a canonical UUID.
    Uuid,
    /// `{id}`: any non-empty segment of letters, digits, '-' and '_'.
    Id,
}

/// An extra passthrough route from `[[routes]]`: a method and a path pattern like
/// `/v2/orders/{uuid}`. Query strings are allowed on matching requests.
#[derive(Debug, Clone)]
pub struct RoutePattern {
    pub method: Method,
    pub source: String,
    segments: Vec<Segment>,
}

impl RoutePattern {
    pub fn parse(method: &str, path: &str) -> Result<RoutePattern, String> {
        let method: Method = match method.to_ascii_uppercase().as_str() {
            m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE") => m.parse().expect("known method"),
            _ => {
                return Err(format!(
                    "method {method:?}: expected GET, POST, PUT, PATCH or DELETE"
                ));
            }
        };
        let Some(rest) = path.strip_prefix('/') else {
            return Err(format!(
                "path {path:?}: expected an absolute path like /v2/orders/{{uuid}}"
            ));
        };
        if path == "/oauth/access_token" {
            return Err(
                "path /oauth/access_token is answered by payshim and cannot be forwarded".into(),
            );
        }
        let segments = rest
            .split('/')
            .map(|s| match s {
                "{uuid}" => Ok(Segment::Uuid),
                "{id}" => Ok(Segment::Id),
                s if !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
                {
                    Ok(Segment::Literal(s.to_string()))
                }
                _ => Err(format!(
                    "path {path:?}: segments are literals, {{uuid}} or {{id}}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RoutePattern {
            method,
            source: path.to_string(),
            segments,
        })
    }

    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.method == *method && self.matches_path(path)
    }

    fn matches_path(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for seg in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            let ok = match seg {
                Segment::Literal(l) => part == l,
                Segment::Uuid => is_uuid(part),
                Segment::Id => {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }
            };
            if !ok {
                return false;
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";
    const T: &str = "11111111-2222-4333-8444-555555555555";

    #[test]
    fn builtin_table() {
        let extra = [RoutePattern::parse("GET", "/v2/orders/{uuid}").unwrap()];
        let cases: Vec<(Method, String, RouteName)> = vec![
            (Method::POST, "/oauth/access_token".into(), RouteName::Token),
            (
                Method::GET,
                "/oauth/access_token".into(),
                RouteName::NotFound,
            ),
            (
                Method::POST,
                format!("/v2/orders/{O}/payments"),
                RouteName::Payments,
            ),
            (
                Method::GET,
                format!("/v2/orders/{O}/payments"),
                RouteName::NotFound,
            ),
            (
                Method::POST,
                "/v2/orders/not-a-uuid/payments".into(),
                RouteName::Payments,
            ),
            (
                Method::POST,
                "/v2/orders//payments".into(),
                RouteName::NotFound,
            ),
            (
                Method::POST,
                format!("/v2/orders/not-a-uuid/transactions/{T}/capture"),
                RouteName::NotFound,
            ),
            (
                Method::POST,
                format!("/v2/orders/{O}/payments/"),
                RouteName::NotFound,
            ),
            (
                Method::GET,
                format!("/v2/orders/{O}/transactions"),
                RouteName::Transactions,
            ),
            (
                Method::GET,
                format!("/v2/orders/{O}/transactions/{T}"),
                RouteName::Transactions,
            ),
            (
                Method::POST,
                format!("/v2/orders/{O}/transactions/{T}/capture"),
                RouteName::Capture,
            ),
            (
                Method::POST,
                format!("/v2/orders/{O}/transactions/{T}/refund"),
                RouteName::Refund,
            ),
            (
                Method::POST,
                format!("/v2/orders/{O}/transactions/{T}/cancel"),
                RouteName::Cancel,
            ),
            (
                Method::POST,
                format!("/v2/orders/{O}/transactions/{T}/confirm"),
                RouteName::Confirm,
            ),
            (
                Method::GET,
                format!("/v2/orders/{O}/transactions/{T}/confirm"),
                RouteName::NotFound,
            ),
            (
                Method::POST,
                format!("/v2/orders/{O}/confirm"),
                RouteName::NotFound,
            ),
            (
                Method::POST,
                format!("/v2/orders/{O}/transactions/{T}/void"),
                RouteName::NotFound,
            ),
            (
                Method::GET,
                format!("/v2/orders/{O}"),
                RouteName::Passthrough,
            ),
            (
                Method::DELETE,
                format!("/v2/orders/{O}"),
                RouteName::NotFound,
            ),
            (Method::GET, "/v2/products".into(), RouteName::NotFound),
            (Method::GET, "/".into(), RouteName::NotFound),
        ];
        for (method, path, want) in cases {
            let got = Route::match_request(&method, &path, &extra).name();
            assert_eq!(got, want, "{method} {path}");
        }
    }

    #[test]
    fn preflight_matches_any_method_route() {
        let r = Route::match_request(&Method::OPTIONS, &format!("/v2/orders/{O}/payments"), &[]);
        assert_eq!(r, Route::Preflight(RouteName::Payments));
        let r = Route::match_request(&Method::OPTIONS, "/v2/products", &[]);
        assert_eq!(r, Route::NotFound);
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for (m, p) in [
            ("GET", "v2/x"),
            ("TRACE", "/v2/x"),
            ("GET", "/v2/{order}"),
            ("POST", "/oauth/access_token"),
            ("GET", "/v2//x"),
        ] {
            assert!(RoutePattern::parse(m, p).is_err(), "{m} {p}");
        }
    }

    #[test]
    fn uuids() {
        assert!(is_uuid(O));
        assert!(!is_uuid("0a1b2c3d00004000800000000000abcd"));
        assert!(!is_uuid("0a1b2c3d-0000-4000-8000-00000000abcg"));
    }
}
