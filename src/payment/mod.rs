//! Payment bodies (see README.md, Architecture).
//!
//! [`PaymentRequest::parse`] turns a client's `POST /v2/orders/{id}/payments` body into
//! validated values, or into the list of every field that is wrong; and
//! [`PaymentRequest::to_upstream_body`] writes the canonical body that is forwarded instead of
//! the client's bytes.
//!
//! Card data stays inside [`CardNumber`] and [`Cvv`]: they print as masks, are wiped on drop,
//! and only the upstream serializer in this module can read them.

mod calendar;
mod card;
mod cvv;
mod field_error;
mod json;
mod request;
mod upstream_body;
mod validate;

#[cfg(test)]
mod tests;

pub use calendar::YearMonth;
pub use card::{Brand, CardError, CardNumber};
pub use cvv::{Cvv, CvvError};
pub use field_error::FieldError;
pub use request::{CardPayment, Method, PaymentData, PaymentRequest};
