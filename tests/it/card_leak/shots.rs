//! The requests of the leak run (`plan`): every path a request with card data can take,
//! each with the card numbers, CVVs and cardholder names it carries, what it must get
//! back and whether it reaches the upstream.

use crate::support;

use http::Method;
use serde_json::json;

use support::cards::{
    AMEX, BRANDS, BrandSpec, cvv_pool, grouped, luhn_broken, pan, previous_month, utc_year_month,
};
use support::payshim::STOREFRONT_KEY;

use super::{ORDER_500, ORDER_OK, ORDER_RESET, ORDER_SLOW, card_data, payment_path};

/// What a request must get back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Expect {
    Status(u16),
    /// The upstream reset the connection mid-answer: a 502, or a broken response.
    BrokenOr502,
}

/// One request of the run and the card data it carries.
pub(super) struct Shot {
    pub(super) kind: &'static str,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
    pub(super) expect: Expect,
    /// Reaches the upstream (so: payment.forwarded + payment.completed).
    pub(super) forwarded: bool,
    /// Matches the payment route (so: audited; one record if not forwarded).
    pub(super) payment_route: bool,
    /// Luhn-valid numbers it carries, anywhere (body, query, header, path).
    pub(super) pans: Vec<String>,
    /// The PAN of its card fields, when the upstream must receive it.
    pub(super) forwarded_pan: Option<String>,
    /// Luhn-invalid 12-19 digit numbers it carries.
    pub(super) not_pans: Vec<String>,
    pub(super) cvvs: Vec<String>,
    /// Cardholder last names (distinct, no digits): never logged either.
    pub(super) names: Vec<String>,
}

/// Distinct card data on demand.
struct Gen {
    n: u64,
    cvv3: Box<dyn Iterator<Item = String>>,
    cvv4: Box<dyn Iterator<Item = String>>,
    names: u32,
}

impl Gen {
    fn new() -> Gen {
        Gen {
            n: 1_000,
            cvv3: Box::new(cvv_pool(3)),
            cvv4: Box::new(cvv_pool(4)),
            names: 0,
        }
    }

    fn pan(&mut self, brand: BrandSpec) -> String {
        self.n += 1;
        pan(brand, self.n)
    }

    fn cvv(&mut self, len: usize) -> String {
        let pool = if len == 3 {
            &mut self.cvv3
        } else {
            &mut self.cvv4
        };
        pool.next().expect("CVV pool large enough")
    }

    /// A last name made of letters only, distinct per call.
    fn name(&mut self) -> String {
        self.names += 1;
        let mut n = self.names;
        let mut s = String::from("Qx");
        while n > 0 {
            s.push((b'a' + (n % 26) as u8) as char);
            n /= 26;
        }
        s.push_str("ovelace");
        s
    }
}

/// Builds the whole run: (kind, count) per path, brands cycling, card data distinct.
pub(super) fn plan() -> Vec<Shot> {
    let mut cards_gen = Gen::new();
    let year = (utc_year_month().0 + 3).to_string();
    let (expired_year, expired_month) = previous_month(utc_year_month());
    let json_headers = |auth: Option<&str>| {
        let mut h = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(a) = auth {
            h.push(("authorization".to_string(), a.to_string()));
        }
        h
    };
    let bearer = format!("Bearer {STOREFRONT_KEY}");
    let kinds: [(&str, usize); 27] = [
        ("valid", 70),
        ("upstream_500", 21),
        ("upstream_timeout", 14),
        ("upstream_reset", 14),
        ("luhn_invalid", 14),
        ("expired", 14),
        ("bad_cvv", 14),
        ("unknown_field", 14),
        ("wrong_type", 14),
        ("duplicate_field", 14),
        ("control_char_name", 7),
        ("malformed_json", 7),
        ("wrong_content_type", 7),
        ("oversized", 7),
        ("bad_credential", 14),
        ("missing_credential", 7),
        ("mixed_forms", 7),
        ("pan_in_query", 7),
        ("pan_in_unknown_field", 7),
        ("pan_as_json_key", 7),
        ("pan_in_header", 7),
        ("pan_in_unknown_route", 7),
        ("pan_as_order_id", 7),
        ("pan_as_token", 7),
        ("pan_in_token_option", 7),
        ("pan_in_token_name", 7),
        ("card_for_token_gateway", 7),
    ];
    let mut shots = Vec::new();
    let mut b = 0usize;
    for (kind, count) in kinds {
        for i in 0..count {
            let brand = BRANDS[b % BRANDS.len()];
            b += 1;
            let number = cards_gen.pan(brand);
            let cvv = cards_gen.cvv(brand.cvv_len);
            let name = cards_gen.name();
            let mut data = card_data(&name, &number, "7", &year, &cvv);
            let mut shot = Shot {
                kind,
                method: Method::POST,
                path: payment_path(ORDER_OK),
                headers: json_headers(Some(&bearer)),
                body: String::new(),
                expect: Expect::Status(400),
                forwarded: false,
                payment_route: true,
                pans: vec![number.clone()],
                forwarded_pan: None,
                not_pans: Vec::new(),
                cvvs: vec![cvv.clone()],
                names: vec![name.clone()],
            };
            match kind {
                "valid" | "upstream_500" | "upstream_timeout" | "upstream_reset" => {
                    let (order, expect) = match kind {
                        "valid" => (ORDER_OK, Expect::Status(201)),
                        "upstream_500" => (ORDER_500, Expect::Status(500)),
                        "upstream_timeout" => (ORDER_SLOW, Expect::Status(504)),
                        _ => (ORDER_RESET, Expect::BrokenOr502),
                    };
                    shot.path = payment_path(order);
                    shot.expect = expect;
                    shot.forwarded = true;
                    shot.forwarded_pan = Some(number.clone());
                }
                "luhn_invalid" => {
                    let broken = luhn_broken(&number);
                    data["number"] = json!(broken);
                    shot.pans.clear();
                    shot.not_pans.push(broken);
                }
                "expired" => {
                    data["month"] = json!(expired_month.to_string());
                    data["year"] = json!(expired_year.to_string());
                }
                "bad_cvv" => {
                    // The other length: 3 digits for Amex, 4 for the rest.
                    let wrong = cards_gen.cvv(if brand.name == AMEX.name { 3 } else { 4 });
                    data["verification_value"] = json!(wrong);
                    shot.cvvs.push(wrong);
                }
                "unknown_field" => data["note"] = json!("leave at the door"),
                "wrong_type" => data["month"] = json!(7),
                "duplicate_field" => {
                    // Two `number` keys, two valid PANs (raw text).
                    let second = cards_gen.pan(brand);
                    let text = data.to_string();
                    let dup = text.replacen(
                        "\"number\":",
                        &format!("\"number\":\"{second}\",\"number\":"),
                        1,
                    );
                    assert_ne!(dup, text);
                    shot.body = format!("{{\"data\":{dup}}}");
                    shot.pans.push(second);
                }
                "control_char_name" => data["first_name"] = json!("Ad\u{1b}a"),
                "malformed_json" => {
                    let text = json!({ "data": data }).to_string();
                    shot.body = text[..text.len() - 2].to_string();
                }
                "wrong_content_type" => {
                    shot.headers[0].1 = "text/plain".into();
                    shot.expect = Expect::Status(415);
                }
                "oversized" => {
                    data["first_name"] = json!("A".repeat(17 * 1024));
                    shot.expect = Expect::Status(413);
                }
                "bad_credential" => {
                    shot.headers = json_headers(Some("Bearer sf-web-eu-wrong-key-0000000000"));
                    shot.expect = Expect::Status(401);
                }
                "missing_credential" => {
                    shot.headers = json_headers(None);
                    shot.expect = Expect::Status(401);
                }
                "mixed_forms" => data["payment"] = json!("acct1|prof1"),
                "pan_in_query" => {
                    let extra = cards_gen.pan(BRANDS[i % BRANDS.len()]);
                    let extra_cvv = cards_gen.cvv(3);
                    shot.path = format!(
                        "{}?note={}&cvv={extra_cvv}",
                        payment_path(ORDER_OK),
                        grouped(&extra, '-')
                    );
                    shot.expect = Expect::Status(201);
                    shot.forwarded = true;
                    shot.forwarded_pan = Some(number.clone());
                    shot.pans.push(extra);
                    shot.cvvs.push(extra_cvv);
                }
                "pan_in_unknown_field" => {
                    let extra = cards_gen.pan(BRANDS[i % BRANDS.len()]);
                    data["note"] = json!(format!("card {}", grouped(&extra, ' ')));
                    shot.pans.push(extra);
                }
                "pan_as_json_key" => {
                    let extra = cards_gen.pan(BRANDS[i % BRANDS.len()]);
                    data[extra.as_str()] = json!("x");
                    shot.pans.push(extra);
                }
                "pan_in_header" => {
                    let extra = cards_gen.pan(BRANDS[i % BRANDS.len()]);
                    let extra_cvv = cards_gen.cvv(3);
                    shot.headers
                        .push(("x-note".into(), format!("{extra} cvv={extra_cvv}")));
                    shot.expect = Expect::Status(201);
                    shot.forwarded = true;
                    shot.forwarded_pan = Some(number.clone());
                    shot.pans.push(extra);
                    shot.cvvs.push(extra_cvv);
                }
                "pan_in_unknown_route" => {
                    shot.method = Method::GET;
                    shot.path = format!("/v2/cards/{number}?verification_value={cvv}");
                    shot.expect = Expect::Status(404);
                    shot.payment_route = false;
                }
                // Token-form bodies (issue 18) carrying the card where a token belongs:
                // refused, never forwarded. No CVV travels with them.
                "pan_as_token" => {
                    shot.cvvs.clear();
                    shot.names.clear();
                    let data =
                        json!({"gateway": "stripe", "method": "purchase", "payment": number});
                    shot.body = json!({ "data": data }).to_string();
                }
                "pan_in_token_option" => {
                    shot.cvvs.clear();
                    shot.names.clear();
                    let note = format!("card {}", grouped(&number, ' '));
                    let data = json!({"gateway": "stripe", "method": "purchase",
                                      "payment": "tok_visa", "options": {"receipt_email": note}});
                    shot.body = json!({ "data": data }).to_string();
                }
                "pan_in_token_name" => {
                    shot.cvvs.clear();
                    let meta = json!({"name": name, "custom_reference": grouped(&number, '-')});
                    let data = json!({"gateway": "manual", "method": "authorize",
                                      "paymentmethod_meta": meta});
                    shot.body = json!({ "data": data }).to_string();
                }
                "card_for_token_gateway" => data["gateway"] = json!("stripe"),
                "pan_as_order_id" => {
                    // The payment route with a bad order id: refused (400) and audited as
                    // rejected, without the segment in the audit record or the log line.
                    shot.path = payment_path(&number);
                    shot.expect = Expect::Status(400);
                }
                other => unreachable!("{other}"),
            }
            if shot.body.is_empty() {
                shot.body = json!({ "data": data }).to_string();
            }
            shots.push(shot);
        }
    }
    shots
}
