//! The protobuf codec of the gRPC service: tonic-prost's, except that a
//! request that cannot be decoded (a string field that is not UTF-8, a
//! truncated or malformed message) is INVALID_ARGUMENT naming the field, as
//! any other bad input is, rather than INTERNAL.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::core::error::{Error, Violation};

#[derive(Debug, Clone)]
pub struct RequestCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = FieldNamingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        FieldNamingDecoder(ProstDecoder::default())
    }
}

#[derive(Debug, Clone, Default)]
pub struct FieldNamingDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for FieldNamingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| Error::InvalidRequest(vec![violation(status.message())]).into())
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Turns prost's "failed to decode Protobuf message: BeginRequest.payload:
/// Payload.data: <why>" into the field `payload.data` and `<why>`.
fn violation(message: &str) -> Violation {
    let message = message.strip_prefix("failed to decode Protobuf message: ").unwrap_or(message);
    let mut path = Vec::new();
    let mut rest = message;
    while let Some((segment, tail)) = rest.split_once(": ") {
        let Some((_, field)) = segment.split_once('.') else { break };
        if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            break;
        }
        path.push(field);
        rest = tail;
    }
    let field = if path.is_empty() { "(message)".to_owned() } else { path.join(".") };
    Violation::new(field, format!("cannot be decoded: {rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prost_paths_become_request_field_paths() {
        let v = violation(
            "failed to decode Protobuf message: BeginRequest.key: invalid string value: data is not UTF-8 encoded",
        );
        assert_eq!(
            (v.field.as_str(), v.description.as_str()),
            ("key", "cannot be decoded: invalid string value: data is not UTF-8 encoded")
        );
        let nested = violation(
            "failed to decode Protobuf message: BeginRequest.payload: Payload.ignore_fields: invalid string value: data is not UTF-8 encoded",
        );
        assert_eq!(nested.field, "payload.ignore_fields");
        let whole = violation("failed to decode Protobuf message: buffer underflow");
        assert_eq!(
            (whole.field.as_str(), whole.description.as_str()),
            ("(message)", "cannot be decoded: buffer underflow")
        );
    }
}
