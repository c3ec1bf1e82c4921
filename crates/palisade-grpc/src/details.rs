//! The `grpc-status-details-bin` of a rejection: a `google.rpc.Status`
//! carrying a `google.rpc.RetryInfo`, encoded with prost from the few
//! fields they need (the messages of googleapis' `google/rpc/status.proto`,
//! `google/rpc/error_details.proto` and protobuf's `duration.proto` and
//! `any.proto`).

use std::time::Duration;

use base64::Engine;
use prost::Message;

/// The type URL of `google.rpc.RetryInfo` inside an `Any`.
pub(crate) const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Status {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Any {
    #[prost(string, tag = "1")]
    pub(crate) type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub(crate) retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub(crate) seconds: i64,
    #[prost(int32, tag = "2")]
    pub(crate) nanos: i32,
}

/// The header value: a `Status` with `code`, `message` and a `RetryInfo`
/// of `delay`, base64 without padding as gRPC sends binary headers.
pub(crate) fn retry_info_details(code: i32, message: &str, delay: Duration) -> String {
    let retry_info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let status = Status {
        code,
        message: message.to_owned(),
        details: vec![Any {
            type_url: RETRY_INFO_TYPE_URL.to_owned(),
            value: retry_info.encode_to_vec(),
        }],
    };
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_details_decode_as_a_status_with_retry_info() {
        let value = retry_info_details(14, "unavailable", Duration::from_millis(2_500));
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(value).unwrap();
        let status = Status::decode(&bytes[..]).unwrap();
        assert_eq!(status.code, 14);
        assert_eq!(status.message, "unavailable");
        assert_eq!(status.details.len(), 1);
        assert_eq!(status.details[0].type_url, RETRY_INFO_TYPE_URL);
        let info = RetryInfo::decode(&status.details[0].value[..]).unwrap();
        assert_eq!(
            info.retry_delay,
            Some(ProtoDuration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
    }

    #[test]
    fn the_encoding_is_protobufs() {
        // Status{code: 14, details: [Any{type_url: "t", value: [0x08, 0x01]}]}, by hand.
        let any = Any {
            type_url: "t".into(),
            value: vec![0x08, 0x01],
        };
        let status = Status {
            code: 14,
            message: String::new(),
            details: vec![any],
        };
        assert_eq!(
            status.encode_to_vec(),
            [0x08, 14, 0x1a, 7, 0x0a, 1, b't', 0x12, 2, 0x08, 0x01]
        );
    }
}
