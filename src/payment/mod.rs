//! Payment bodies (DESIGN.md sections 4 and 5).
//!
//! [`PaymentRequest::parse`] turns a client's `POST /v2/orders/{id}/payments` body into
//! validated values, or into the list of every field that is wrong; and
//! [`PaymentRequest::to_upstream_body`] writes the canonical body that is forwarded instead of
//! the client's bytes.
//!
//! Card data stays inside [`CardNumber`] and [`Cvv`]: they print as masks, are wiped on drop,
//! and only the upstream serializer in this module can read them.

mod card;
mod cvv;
mod request;

#[cfg(test)]
mod tests;

pub use card::{Brand, CardError, CardNumber};
pub use cvv::{Cvv, CvvError};
pub use request::{CardPayment, FieldError, Method, PaymentData, PaymentRequest, YearMonth};
