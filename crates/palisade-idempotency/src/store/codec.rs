//! The byte format of a stored response in the shared stores:
//! `version (1) | status (2) | header count (2) | per header: name length (2),
//! name, value length (4), value | body`. Integers are big-endian.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::StoredResponse;
use crate::error::StoreError;

const VERSION: u8 = 1;

pub(crate) fn encode(response: &StoredResponse) -> Vec<u8> {
    let headers_len: usize = response
        .headers
        .iter()
        .map(|(n, v)| 6 + n.as_str().len() + v.len())
        .sum();
    let mut out = BytesMut::with_capacity(5 + headers_len + response.body.len());
    out.put_u8(VERSION);
    out.put_u16(response.status.as_u16());
    // More than 65535 headers cannot come from an HTTP response parser; clamp anyway.
    let count = response.headers.len().min(usize::from(u16::MAX));
    out.put_u16(count as u16);
    for (name, value) in response.headers.iter().take(count) {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(&response.body);
    out.to_vec()
}

pub(crate) fn decode(bytes: Bytes) -> Result<StoredResponse, StoreError> {
    let corrupt = || StoreError::corrupt("stored response");
    let mut buf = bytes;
    if buf.remaining() < 5 || buf.get_u8() != VERSION {
        return Err(corrupt());
    }
    let status = StatusCode::from_u16(buf.get_u16()).map_err(|_| corrupt())?;
    let count = buf.get_u16();
    // Every header takes at least 7 bytes, so a count the bytes cannot hold is
    // corrupt before it sizes anything; `try_` calls refuse what a map cannot hold.
    if usize::from(count) > buf.remaining() / 7 {
        return Err(corrupt());
    }
    let mut headers = HeaderMap::try_with_capacity(usize::from(count)).map_err(|_| corrupt())?;
    for _ in 0..count {
        if buf.remaining() < 2 {
            return Err(corrupt());
        }
        let len = usize::from(buf.get_u16());
        if buf.remaining() < len + 4 {
            return Err(corrupt());
        }
        let name = HeaderName::from_bytes(&buf.split_to(len)).map_err(|_| corrupt())?;
        let len = buf.get_u32() as usize;
        if buf.remaining() < len {
            return Err(corrupt());
        }
        let value = HeaderValue::from_maybe_shared(buf.split_to(len)).map_err(|_| corrupt())?;
        headers.try_append(name, value).map_err(|_| corrupt())?;
    }
    Ok(StoredResponse {
        status,
        headers,
        body: buf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreErrorKind;

    #[test]
    fn round_trips_status_repeated_headers_and_binary_body() {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("1"));
        headers.append("x-multi", HeaderValue::from_static("2"));
        let response = StoredResponse {
            status: StatusCode::ACCEPTED,
            headers,
            body: Bytes::from_static(&[0, 255, 1]),
        };
        assert_eq!(decode(encode(&response).into()).unwrap(), response);
        let empty = StoredResponse {
            status: StatusCode::NO_CONTENT,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        assert_eq!(decode(encode(&empty).into()).unwrap(), empty);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_corrupt_not_a_panic() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("value"));
        let encoded = encode(&StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::new(),
        });
        for len in 0..encoded.len() {
            let result = decode(Bytes::copy_from_slice(&encoded[..len]));
            assert_eq!(
                result.unwrap_err().kind(),
                StoreErrorKind::Corrupt,
                "truncated at {len}"
            );
        }
        assert!(decode(Bytes::from_static(b"\x02\x00\xc8\x00\x00")).is_err());
    }

    #[test]
    fn a_header_count_beyond_what_a_header_map_holds_is_corrupt_not_a_panic() {
        let mut bytes = vec![VERSION, 0, 200, 0xff, 0xff];
        assert_eq!(decode(bytes.clone().into()).unwrap_err().kind(), StoreErrorKind::Corrupt);
        // Every header present and well formed, but more than a `HeaderMap` can hold.
        for i in 0..u16::MAX {
            let name = format!("x-{i}");
            bytes.extend_from_slice(&(name.len() as u16).to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&0u32.to_be_bytes());
        }
        assert_eq!(decode(bytes.into()).unwrap_err().kind(), StoreErrorKind::Corrupt);
    }
}
