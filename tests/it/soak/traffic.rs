//! The soak's mixed traffic: payments with a distinct generated card each (every brand in
//! turn), capture and refund, transaction reads, token exchanges, invalid payment bodies
//! and bad credentials, sent by a few workers for as long as the run lasts. Each request
//! is kept with its timing, answer and card data, for the checker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use serde_json::json;

use crate::support::TestClient;
use crate::support::cards::{BRANDS, cvv_pool, luhn_broken, pan};
use crate::support::load::future_year;
use crate::support::payshim::STOREFRONT_KEY;

/// The `server-app` client's secret (client_credentials grant).
pub const APP_SECRET: &str = "soak-app-secret-0b7e2c9d4f6a8e1c3b5d7f9a";
/// The `web-browser` client's public id (implicit grant).
pub const PUBLIC_ID: &str = "pk-soak-browser-7c2e9a4b";

/// How long one request may take before the worker gives up on it.
const ANSWER_GUARD: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Payment,
    Capture,
    Refund,
    Read,
    Token,
    InvalidBody,
    BadCredential,
}

/// Kinds in the order the workers cycle through them (payments weigh most).
const MIX: [Kind; 12] = [
    Kind::Payment,
    Kind::Capture,
    Kind::Payment,
    Kind::InvalidBody,
    Kind::Payment,
    Kind::Refund,
    Kind::Payment,
    Kind::Read,
    Kind::Token,
    Kind::Payment,
    Kind::BadCredential,
    Kind::InvalidBody,
];

/// One request of the run as the client saw it.
pub struct Shot {
    pub kind: Kind,
    pub sent: Instant,
    pub answered: Instant,
    /// `None`: no answer (refused connection, reset, timeout); `seen` holds the error.
    pub status: Option<u16>,
    pub request_id: Option<String>,
    /// Response headers and body, or the error text: searched for card data.
    pub seen: Vec<u8>,
    /// The Luhn-valid number it carries (payments, invalid bodies, bad credentials).
    pub pan: Option<String>,
    /// A Luhn-invalid number it carries.
    pub not_pan: Option<String>,
    pub cvv: Option<String>,
    /// The transaction id of a capture or refund: how the upstream double's record of
    /// it is found.
    pub transaction: Option<String>,
}

impl Shot {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What the workers share.
pub struct Traffic {
    /// `https://localhost:PORT` of the payshim running now (changes at each restart).
    pub base: RwLock<String>,
    pub stop: AtomicBool,
    next: AtomicU64,
    /// Requests that carried a card number so far.
    cards: AtomicU64,
    cvv3: Vec<String>,
    cvv4: Vec<String>,
    year: String,
    /// Each worker's pause between two requests.
    pace: Duration,
}

impl Traffic {
    pub fn new(base: String, pace: Duration) -> Arc<Traffic> {
        Arc::new(Traffic {
            base: RwLock::new(base),
            stop: AtomicBool::new(false),
            next: AtomicU64::new(1),
            cards: AtomicU64::new(0),
            cvv3: cvv_pool(3).collect(),
            cvv4: cvv_pool(4).collect(),
            year: future_year(3),
            pace,
        })
    }

    /// How many requests carried a card number so far.
    pub fn cards(&self) -> u64 {
        self.cards.load(Ordering::Relaxed)
    }

    pub fn set_base(&self, base: String) {
        *self.base.write().unwrap() = base;
    }

    /// A uuid unique to request `n`.
    fn uuid(tag: u32, n: u64) -> String {
        format!("{tag:08x}-0000-4000-8000-{n:012x}")
    }

    /// Request `n`: its HTTP request and the card data it carries.
    fn build(&self, kind: Kind, n: u64) -> (Request<Bytes>, Shot) {
        let base = self.base.read().unwrap().clone();
        let brand = BRANDS[(n as usize) % BRANDS.len()];
        let number = pan(brand, n);
        let cvv = if brand.cvv_len == 3 {
            self.cvv3[(n as usize) % self.cvv3.len()].clone()
        } else {
            self.cvv4[(n as usize) % self.cvv4.len()].clone()
        };
        let order = Self::uuid(0x5a0c_0001, n);
        let txn = Self::uuid(0x7b1d_0002, n);
        let mut shot = Shot {
            kind,
            sent: Instant::now(),
            answered: Instant::now(),
            status: None,
            request_id: None,
            seen: Vec::new(),
            pan: None,
            not_pan: None,
            cvv: None,
            transaction: None,
        };
        let bearer = format!("Bearer {STOREFRONT_KEY}");
        let mut card = json!({
            "gateway": "card_connect",
            "method": if n.is_multiple_of(3) { "authorize" } else { "purchase" },
            "first_name": "Ada",
            "last_name": "Lovelace",
            "number": number,
            "month": "7",
            "year": self.year,
            "verification_value": cvv,
        });
        let payments = format!("{base}/v2/orders/{order}/payments");
        let (method, uri, auth, ctype, body) = match kind {
            Kind::Payment | Kind::BadCredential => {
                shot.pan = Some(number);
                shot.cvv = Some(cvv);
                let auth = if kind == Kind::Payment {
                    bearer
                } else {
                    "Bearer sf-web-eu-wrong-key-0000000000".to_string()
                };
                let body = json!({ "data": card }).to_string();
                (Method::POST, payments, Some(auth), "application/json", body)
            }
            Kind::InvalidBody => {
                let body = match n % 3 {
                    0 => {
                        let broken = luhn_broken(&number);
                        card["number"] = json!(broken);
                        shot.not_pan = Some(broken);
                        shot.cvv = Some(cvv);
                        json!({ "data": card }).to_string()
                    }
                    1 => {
                        // A CVV of the wrong length for the brand.
                        let wrong = if brand.cvv_len == 3 { "48151" } else { "62" };
                        card["verification_value"] = json!(wrong);
                        shot.pan = Some(number);
                        json!({ "data": card }).to_string()
                    }
                    _ => {
                        shot.pan = Some(number);
                        shot.cvv = Some(cvv);
                        let text = json!({ "data": card }).to_string();
                        text[..text.len() - 3].to_string()
                    }
                };
                (
                    Method::POST,
                    payments,
                    Some(bearer),
                    "application/json",
                    body,
                )
            }
            Kind::Capture | Kind::Refund => {
                let action = if kind == Kind::Capture {
                    "capture"
                } else {
                    "refund"
                };
                let uri = format!("{base}/v2/orders/{order}/transactions/{txn}/{action}");
                let body = if kind == Kind::Refund {
                    json!({"data": {"amount": 1250}}).to_string()
                } else {
                    String::new()
                };
                shot.transaction = Some(txn);
                (Method::POST, uri, Some(bearer), "application/json", body)
            }
            Kind::Read => {
                let uri = format!("{base}/v2/orders/{order}/transactions");
                (Method::GET, uri, Some(bearer), "", String::new())
            }
            Kind::Token => {
                let body = if n.is_multiple_of(2) {
                    format!("grant_type=implicit&client_id={PUBLIC_ID}")
                } else {
                    format!(
                        "grant_type=client_credentials&client_id=server-app&client_secret={APP_SECRET}"
                    )
                };
                let uri = format!("{base}/oauth/access_token");
                (
                    Method::POST,
                    uri,
                    None,
                    "application/x-www-form-urlencoded",
                    body,
                )
            }
        };
        if shot.pan.is_some() || shot.not_pan.is_some() {
            self.cards.fetch_add(1, Ordering::Relaxed);
        }
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        if !body.is_empty() {
            builder = builder.header("content-type", ctype);
        }
        let req = builder.body(Bytes::from(body)).expect("build request");
        (req, shot)
    }
}

/// Sends the mix until `traffic.stop`; returns every request it sent.
pub async fn worker(traffic: Arc<Traffic>, client: TestClient) -> Vec<Shot> {
    let mut shots = Vec::new();
    while !traffic.stop.load(Ordering::Acquire) {
        let n = traffic.next.fetch_add(1, Ordering::Relaxed);
        let kind = MIX[(n as usize) % MIX.len()];
        let (req, mut shot) = traffic.build(kind, n);
        shot.sent = Instant::now();
        let answer = tokio::time::timeout(ANSWER_GUARD, client.send(req)).await;
        shot.answered = Instant::now();
        match answer {
            Ok(Ok(resp)) => {
                shot.status = Some(resp.status);
                shot.request_id = resp.header("x-request-id");
                for (name, value) in &resp.headers {
                    shot.seen.extend_from_slice(name.as_str().as_bytes());
                    shot.seen.extend_from_slice(b": ");
                    shot.seen.extend_from_slice(value.as_bytes());
                    shot.seen.push(b'\n');
                }
                shot.seen.extend_from_slice(&resp.body);
            }
            Ok(Err(e)) => {
                shot.seen = e.into_bytes();
                // Refused while payshim restarts: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => shot.seen = b"no answer within the guard".to_vec(),
        }
        shots.push(shot);
        if !traffic.pace.is_zero() {
            tokio::time::sleep(traffic.pace).await;
        }
    }
    shots
}
