//! Payment bodies (see README.md, Architecture).
//!
//! [`PaymentRequest::parse`] turns a client's `POST /v2/orders/{id}/payments` body into
//! validated values, or into the list of every field that is wrong, following the table of
//! the eleven gateways (`gateway.rs`) and the store's [`GatewayPolicy`]; and
//! [`PaymentRequest::to_upstream_body`] writes the canonical body that is forwarded instead of
//! the client's bytes.
//!
//! Card data stays inside [`CardNumber`] and [`Cvv`]: they print as masks, are wiped on drop,
//! and only the upstream serializer in this module can read them.

mod calendar;
mod canon;
mod card;
mod cvv;
mod field_error;
pub mod gateway;
mod json;
mod pan_scan;
mod policy;
mod request;
mod token_form;
mod transaction_body;
mod upstream_body;
mod validate;

#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod tests;

pub use calendar::YearMonth;
pub use canon::Canon;
pub use card::{Brand, CardError, CardNumber};
pub use cvv::{Cvv, CvvError};
pub use field_error::FieldError;
pub use policy::{GatewayPolicy, PolicyError};
pub use request::{CardPayment, Method, PaymentData, PaymentRequest};
pub use transaction_body::check_transaction_body;
