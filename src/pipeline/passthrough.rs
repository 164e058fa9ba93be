//! Transaction reads and the `[[routes]]` passthrough: forwarded as they came, with the
//! storefront's headers filtered and the store token in place of its credential.

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;

use crate::upstream::{self, Outgoing};

pub(crate) fn prepare(head: &Parts, body: Bytes) -> Outgoing {
    Outgoing {
        method: head.method.clone(),
        path_and_query: head
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        headers: upstream::forwardable_headers(&head.headers),
        body,
    }
}
