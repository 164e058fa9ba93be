//! The eleven gateways of `POST /v2/orders/{id}/payments`, as data: the methods each takes,
//! the members of its token form (`payment`, `options`, ...), and its raw-card form where the
//! 2020 API had one. The validator (`validate.rs`, `token_form.rs`) walks this table, so a
//! gateway is described once here instead of coded eleven times; README.md, "Payments",
//! shows the same table.
//!
//! Sources: Elastic Path's API specification (the `oneOf` of gateway schemas), its gateway
//! guides (options the specification omits, such as Stripe's `idempotency_key`) and the JS
//! SDK's types; where they disagree the table accepts what the API and the SDKs send.

use super::request::Method;

/// How a member's value must look.
#[derive(Debug)]
pub(super) enum Kind {
    /// A gateway token or reference (`payment`): 1-256 printable ASCII characters, no space.
    Token,
    /// CardConnect's stored card, `"<acctid>|<profileid>"`, each part 1-64 letters or digits.
    AcctProfile,
    /// Free text (an e-mail address, a description, a Stripe id): at most 1000 characters,
    /// no control characters.
    Text,
    Bool,
    /// One of these strings, exactly.
    OneOf(&'static [&'static str]),
    /// An array of `Text`.
    TextList,
    /// An object with these members and no others.
    Object(&'static [Field]),
    /// An object of client-chosen names (letters, digits, `_`) to `Text` values.
    TextMap,
    /// A positive integer: an amount in minor units (5499 = 54.99).
    Amount,
}

/// One member of a gateway's body or of one of its objects.
#[derive(Debug)]
pub(super) struct Field {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    pub(super) required: bool,
}

pub(super) const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

/// Whether a raw-card form carries the cardholder's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Names {
    Required,
    /// Authorize.Net's card form had none: `first_name` / `last_name` are unknown fields there.
    Absent,
}

/// The 2020 API's raw-card form of a gateway.
#[derive(Debug)]
pub(super) struct RawCard {
    pub(super) names: Names,
    pub(super) methods: &'static [Method],
    /// Members besides the card fields, e.g. `options`.
    pub(super) fields: &'static [Field],
}

/// One gateway: its name on the wire and what its bodies may hold.
#[derive(Debug)]
pub struct Gateway {
    pub name: &'static str,
    pub(super) methods: &'static [Method],
    /// The members of the token form besides `gateway`, `method` and `amount`.
    pub(super) fields: &'static [Field],
    /// Pairs of members (dotted paths below `data`) the API refuses together.
    pub(super) exclusive: &'static [(&'static str, &'static str)],
    pub(super) raw_card: Option<RawCard>,
}

impl Gateway {
    /// Whether the 2020 API took raw card fields for this gateway.
    pub fn has_raw_card_form(&self) -> bool {
        self.raw_card.is_some()
    }
}

use Method::{Authorize, AuthorizeSetup, Capture, Purchase, PurchaseSetup};

/// "Split payments can be performed using any methods for any gateway" (the specification).
const METHODS: &[Method] = &[Purchase, Authorize, PurchaseSetup, AuthorizeSetup];
/// The same, plus the legacy `capture` method for the gateways that documented it.
const WITH_CAPTURE: &[Method] = &[Purchase, Authorize, PurchaseSetup, AuthorizeSetup, Capture];
const CARD_ALL: &[Method] = &[Purchase, Authorize, Capture];
const CARD_PURCHASE: &[Method] = &[Purchase];

const STRIPE_BASE_OPTIONS: &[Field] = &[
    opt("receipt_email", Kind::Text),
    opt("idempotency_key", Kind::Text),
    opt("customer", Kind::Text),
];
const STRIPE_OPTIONS: &[Field] = &[
    opt("receipt_email", Kind::Text),
    opt("idempotency_key", Kind::Text),
    opt("customer", Kind::Text),
    opt("destination", Kind::Text),
];
const CONFIRMATION: Kind = Kind::OneOf(&["manual", "automatic"]);
const AUTOMATIC_PAYMENT_METHODS: Kind = Kind::Object(&[opt("enabled", Kind::Bool)]);
/// The guide puts `confirmation_method` at the top level in its table and under `options`
/// in its example; the SDK puts `automatic_payment_methods` at the top level, the
/// specification under `options`. Both places are accepted.
const EP_STRIPE_OPTIONS: &[Field] = &[
    opt("receipt_email", Kind::Text),
    opt("idempotency_key", Kind::Text),
    opt("customer", Kind::Text),
    opt("return_url", Kind::Text),
    opt("confirm", Kind::Bool),
    opt("execute_threed", Kind::Bool),
    opt("confirmation_method", CONFIRMATION),
    opt("automatic_payment_methods", AUTOMATIC_PAYMENT_METHODS),
];
const RECEIPT_ONLY: &[Field] = &[opt(
    "options",
    Kind::Object(&[opt("receipt_email", Kind::Text)]),
)];

/// The gateway names, in the API's order (the same as [`GATEWAYS`]).
pub(super) const NAMES: [&str; 11] = [
    "adyen",
    "authorize_net",
    "braintree",
    "card_connect",
    "cyber_source",
    "elastic_path_payments_stripe",
    "manual",
    "paypal_express_checkout",
    "stripe",
    "stripe_connect",
    "stripe_payment_intents",
];

/// Every gateway, in the API's order.
pub(super) static GATEWAYS: [Gateway; 11] = [
    Gateway {
        name: "adyen",
        methods: WITH_CAPTURE,
        fields: &[
            req("payment", Kind::Token),
            opt(
                "options",
                Kind::Object(&[
                    opt("shopper_reference", Kind::Text),
                    opt("recurring_processing_model", Kind::Text),
                ]),
            ),
        ],
        exclusive: &[],
        raw_card: Some(RawCard {
            names: Names::Required,
            methods: CARD_PURCHASE,
            fields: &[],
        }),
    },
    Gateway {
        name: "authorize_net",
        methods: WITH_CAPTURE,
        fields: &[
            req("payment", Kind::Token),
            opt(
                "options",
                Kind::Object(&[opt("customer_payment_profile_id", Kind::Text)]),
            ),
        ],
        exclusive: &[],
        raw_card: Some(RawCard {
            names: Names::Absent,
            methods: CARD_ALL,
            fields: &[],
        }),
    },
    Gateway {
        name: "braintree",
        methods: METHODS,
        fields: &[
            req("payment", Kind::Token),
            opt(
                "options",
                Kind::Object(&[
                    opt("payment_method_token", Kind::Bool),
                    opt("payment_method_nonce", Kind::Bool),
                    opt("custom_fields", Kind::TextMap),
                ]),
            ),
        ],
        exclusive: &[],
        raw_card: Some(RawCard {
            names: Names::Required,
            methods: CARD_PURCHASE,
            fields: &[opt(
                "options",
                Kind::Object(&[opt("custom_fields", Kind::TextMap)]),
            )],
        }),
    },
    Gateway {
        name: "card_connect",
        methods: WITH_CAPTURE,
        fields: &[req("payment", Kind::AcctProfile)],
        exclusive: &[],
        raw_card: Some(RawCard {
            names: Names::Required,
            methods: CARD_ALL,
            fields: &[],
        }),
    },
    Gateway {
        name: "cyber_source",
        methods: METHODS,
        fields: &[req("payment", Kind::Token), opt("options", Kind::TextMap)],
        exclusive: &[],
        raw_card: Some(RawCard {
            names: Names::Required,
            methods: CARD_PURCHASE,
            fields: &[],
        }),
    },
    Gateway {
        name: "elastic_path_payments_stripe",
        methods: METHODS,
        fields: &[
            opt("payment", Kind::Token),
            opt("payment_method_types", Kind::TextList),
            opt("confirmation_method", CONFIRMATION),
            opt("automatic_payment_methods", AUTOMATIC_PAYMENT_METHODS),
            opt("options", Kind::Object(EP_STRIPE_OPTIONS)),
        ],
        // "Setting both will result in an error" (the Elastic Path Payments guide).
        exclusive: &[
            ("payment_method_types", "automatic_payment_methods"),
            ("payment_method_types", "options.automatic_payment_methods"),
        ],
        raw_card: None,
    },
    Gateway {
        name: "manual",
        methods: WITH_CAPTURE,
        fields: &[opt(
            "paymentmethod_meta",
            Kind::Object(&[opt("custom_reference", Kind::Text), opt("name", Kind::Text)]),
        )],
        exclusive: &[],
        raw_card: None,
    },
    Gateway {
        name: "paypal_express_checkout",
        methods: METHODS,
        fields: &[opt(
            "options",
            Kind::Object(&[
                opt("description", Kind::Text),
                opt("soft_descriptor", Kind::Text),
                opt(
                    "application_context",
                    Kind::Object(&[
                        opt("brand_name", Kind::Text),
                        opt("locale", Kind::Text),
                        opt("landing_page", Kind::Text),
                        opt("shipping_preference", Kind::Text),
                        opt("user_action", Kind::Text),
                        opt("return_url", Kind::Text),
                        opt("cancel_url", Kind::Text),
                    ]),
                ),
            ]),
        )],
        exclusive: &[],
        raw_card: None,
    },
    Gateway {
        name: "stripe",
        methods: WITH_CAPTURE,
        fields: &[
            opt("payment", Kind::Token),
            opt("options", Kind::Object(STRIPE_OPTIONS)),
        ],
        exclusive: &[],
        raw_card: Some(RawCard {
            names: Names::Required,
            methods: CARD_ALL,
            fields: RECEIPT_ONLY,
        }),
    },
    Gateway {
        name: "stripe_connect",
        methods: METHODS,
        fields: &[
            opt("payment", Kind::Token),
            opt("options", Kind::Object(STRIPE_BASE_OPTIONS)),
        ],
        exclusive: &[],
        raw_card: None,
    },
    Gateway {
        name: "stripe_payment_intents",
        methods: METHODS,
        fields: &[
            opt("payment", Kind::Token),
            opt("options", Kind::Object(STRIPE_BASE_OPTIONS)),
        ],
        exclusive: &[],
        raw_card: Some(RawCard {
            names: Names::Required,
            methods: CARD_PURCHASE,
            fields: RECEIPT_ONLY,
        }),
    },
];

/// The gateway of this wire name.
pub fn find(name: &str) -> Option<&'static Gateway> {
    GATEWAYS.iter().find(|g| g.name == name)
}

/// Every gateway name, for error messages and the config check.
pub fn all_names() -> impl Iterator<Item = &'static str> {
    NAMES.into_iter()
}

/// Method names joined for an error message.
pub(super) fn method_list(methods: &[Method]) -> String {
    methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
