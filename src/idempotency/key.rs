//! The `Idempotency-Key` request header: checked before the body is read, and scoped to
//! the storefront client that sent it (two clients may use the same key).

use http::HeaderMap;

use super::Digest;
use crate::error::{ApiError, FieldError};
use crate::keyed::KeyedHash;

/// The header's name (draft-ietf-httpapi-idempotency-key-header).
pub(crate) const HEADER: &str = "idempotency-key";
const MAX_LEN: usize = 255;

/// The key of this request scoped to `client`, as a keyed hash, or `None` without the
/// header. Stored and compared only as the hash, so whatever a client puts in its key
/// (even card data) never reaches the store. 400 naming the header when it is not 1 to
/// 255 printable ASCII characters or is sent more than once.
pub(crate) fn scoped_key(
    hasher: &KeyedHash,
    client: &str,
    headers: &HeaderMap,
) -> Result<Option<Digest>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let valid = values.next().is_none()
        && (1..=MAX_LEN).contains(&bytes.len())
        && bytes.iter().all(|b| (0x20..=0x7e).contains(b));
    if !valid {
        return Err(invalid());
    }
    let client_len = (client.len() as u32).to_le_bytes();
    Ok(Some(hasher.mac(&[
        b"idempotency-key\0",
        &client_len,
        client.as_bytes(),
        bytes,
    ])))
}

fn invalid() -> ApiError {
    ApiError::Validation(vec![FieldError {
        source: "header.Idempotency-Key".into(),
        title: "Invalid Idempotency-Key",
        detail: "The Idempotency-Key header must be sent once, with 1 to 255 printable ASCII \
                 characters"
            .into(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn accepts_printable_ascii_up_to_255() {
        let k = KeyedHash::new(b"k");
        assert_eq!(scoped_key(&k, "c", &headers(&[])).unwrap(), None);
        let long = vec![b'a'; 255];
        for v in [&b"a"[..], b"order-1 try 2 ~!", &long] {
            assert!(scoped_key(&k, "c", &headers(&[v])).unwrap().is_some());
        }
    }

    #[test]
    fn refuses_empty_long_unprintable_and_repeated() {
        let k = KeyedHash::new(b"k");
        let long = vec![b'a'; 256];
        for v in [&[][..], &long[..], b"a\tb", b"caf\xc3\xa9"] {
            let err = scoped_key(&k, "c", &headers(&[v])).unwrap_err();
            let ApiError::Validation(fields) = err else {
                panic!("not a validation error")
            };
            assert_eq!(fields[0].source, "header.Idempotency-Key");
        }
        assert!(scoped_key(&k, "c", &headers(&[b"a", b"a"])).is_err());
    }

    #[test]
    fn scoped_per_client() {
        let k = KeyedHash::new(b"k");
        let h = headers(&[b"same"]);
        let a = scoped_key(&k, "web-eu", &h).unwrap();
        let b = scoped_key(&k, "web-us", &h).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, scoped_key(&k, "web-eu", &h).unwrap());
    }
}
