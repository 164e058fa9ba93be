//! Scheme and authority of the API, parsed once at start-up, with the `Host` value and the
//! URIs they make (they would otherwise be formatted again for every request).

use http::HeaderValue;
use http::Uri;
use http::uri::{self, Authority, PathAndQuery, Scheme};

use super::error::UpstreamError;

pub(crate) struct Base {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(crate) host: HeaderValue,
}

impl Base {
    pub(crate) fn new(scheme: Scheme, authority: Authority) -> Base {
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_string(),
        };
        Base {
            scheme,
            authority,
            // An authority is made of characters a header value allows.
            host: HeaderValue::from_str(&host).expect("a URI authority is a valid Host value"),
        }
    }

    /// The port to connect to: the URL's, else the scheme's default.
    pub(crate) fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.scheme == Scheme::HTTPS {
                443
            } else {
                80
            })
    }

    /// `scheme://authority/path?query`: HTTP/2 sends scheme and authority as
    /// pseudo-headers, so its requests need the absolute form.
    pub(crate) fn uri(&self, path_and_query: PathAndQuery) -> Result<Uri, UpstreamError> {
        let mut parts = uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts)
            .map_err(|_| UpstreamError::Failed("request path is not a valid URI".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_uri_joins_base_and_path() {
        let base = Base::new(Scheme::HTTPS, "api.moltin.com".parse().unwrap());
        let uri = base
            .uri(PathAndQuery::from_static("/v2/orders?page=2"))
            .unwrap();
        assert_eq!(uri.to_string(), "https://api.moltin.com/v2/orders?page=2");
        assert_eq!(base.port(), 443);
        assert_eq!(base.host, "api.moltin.com");
    }

    #[test]
    fn a_non_default_port_is_part_of_host() {
        let base = Base::new(Scheme::HTTP, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(base.port(), 8080);
        assert_eq!(base.host, "127.0.0.1:8080");
    }
}
