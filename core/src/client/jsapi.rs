//! Raw JetStream API requests: JSON in, JSON out, server errors kept intact.
//!
//! async-nats wraps API errors in its own kinds; natsbus needs the server's
//! `err_code` and text (users catch `StreamNotFoundError`, tooling reads
//! `err_code`), so the few API calls the client half makes go through here.

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, Error, ErrorKind, Result};

/// The default JetStream API prefix.
pub const API_PREFIX: &str = "$JS.API";

/// How long an API request may take before it is reported as a timeout.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(5);

/// Send `body` to `$JS.API.<subject>` and decode the answer, turning an
/// `{"error": ...}` answer into an [`Error`] built from the server's code.
pub async fn request<T: DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    body: &Value,
    timeout: Duration,
) -> Result<T> {
    let payload = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(body).map_err(|e| Error::invalid(e.to_string()))?)
    };
    let raw = request_raw(client, subject, payload, timeout).await?;
    decode_response(subject, &raw)
}

/// Like [`request`] but returns the raw answer.
pub async fn request_raw(
    client: &async_nats::Client,
    subject: &str,
    payload: Bytes,
    timeout: Duration,
) -> Result<Bytes> {
    let full = format!("{API_PREFIX}.{subject}");
    let req = async_nats::client::Request::new()
        .payload(payload)
        .timeout(Some(timeout));
    match client.send_request(full, req).await {
        Ok(msg) => Ok(msg.payload),
        Err(e) => Err(request_error(&format!("JetStream API {subject}"), e)),
    }
}

/// Decode a JetStream API answer, mapping an error block to an [`Error`].
pub fn decode_response<T: DeserializeOwned>(what: &str, raw: &[u8]) -> Result<T> {
    #[derive(serde::Deserialize)]
    struct ErrorOnly {
        error: Option<ApiError>,
    }
    if let Ok(ErrorOnly { error: Some(api) }) = serde_json::from_slice::<ErrorOnly>(raw) {
        return Err(Error::api(what, api));
    }
    serde_json::from_slice(raw).map_err(|e| {
        Error::new(
            ErrorKind::JetStream,
            format!("{what}: could not read the server's answer: {e}"),
        )
    })
}

/// Map a core request failure to the natsbus error users expect.
pub fn request_error(what: &str, e: async_nats::RequestError) -> Error {
    use async_nats::RequestErrorKind as K;
    match e.kind() {
        K::TimedOut => Error::timeout(what),
        K::NoResponders => Error::new(
            ErrorKind::NoResponders,
            format!("{what}: no responders (is JetStream enabled on the server?)"),
        ),
        K::InvalidSubject => Error::invalid(format!("{what}: invalid subject")),
        K::MaxPayloadExceeded => Error::invalid(format!("{what}: {e}")),
        _ => Error::new(ErrorKind::Connect, format!("{what}: {e}")),
    }
}

/// Fetch a consumer's info; the error names the stream or consumer that is missing.
pub async fn consumer_info(
    client: &async_nats::Client,
    stream: &str,
    consumer: &str,
) -> Result<Value> {
    let subject = format!("CONSUMER.INFO.{stream}.{consumer}");
    request::<Value>(client, &subject, &Value::Null, DEFAULT_API_TIMEOUT)
        .await
        .map_err(|mut e| {
            match e.kind {
                ErrorKind::StreamNotFound => {
                    e.message = format!("stream {stream:?} not found (consuming {stream}/{consumer})");
                }
                ErrorKind::ConsumerNotFound => {
                    e.message = format!(
                        "consumer {consumer:?} not found on stream {stream:?}: declare it in the topology or create it first"
                    );
                }
                _ => {}
            }
            e
        })
}

/// Fetch a stream's info.
pub async fn stream_info(client: &async_nats::Client, stream: &str) -> Result<Value> {
    let subject = format!("STREAM.INFO.{stream}");
    request::<Value>(client, &subject, &Value::Null, DEFAULT_API_TIMEOUT)
        .await
        .map_err(|mut e| {
            if e.kind == ErrorKind::StreamNotFound {
                e.message = format!("stream {stream:?} not found");
            }
            e
        })
}

/// Check a stream or consumer name the way the server does, so a bad name
/// fails with a clear message instead of a confusing API subject.
pub fn check_name(name: &str, what: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} name must not be empty")));
    }
    if name.len() > 255 {
        return Err(Error::invalid(format!(
            "{what} name {name:?} is longer than 255 characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '\\' | '/'))
    {
        return Err(Error::invalid(format!(
            "invalid {what} name {name:?}: it cannot contain {c:?} (no whitespace, '.', '*', '>', '/' or '\\\\')"
        )));
    }
    Ok(())
}
