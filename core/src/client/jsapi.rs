//! The one JetStream API client: JSON in, JSON out, server errors kept
//! intact.
//!
//! async-nats wraps API errors in its own kinds; natsbus needs the server's
//! `err_code` and text (users catch `StreamNotFoundError`, tooling reads
//! `err_code`), so every API call of natsbus (consumers, topology apply,
//! health, `Bus.jetstream_api`) goes through [`JetStream`]. It knows the API
//! prefix (`$JS.API`, or `$JS.<domain>.API` for a JetStream domain such as a
//! leafnode's), one default timeout, and the connection's events, so that a
//! user who may not publish to the API (or receive on its inbox) is told at
//! once instead of waiting for the timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::events::ConnEvents;
use crate::error::{ApiError, Error, ErrorKind, Result};

/// The default JetStream API prefix.
pub const API_PREFIX: &str = "$JS.API";

/// How long an API request may take before it is reported as a timeout.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(5);

/// The JetStream API of one connection, in one domain.
#[derive(Clone)]
pub struct JetStream {
    pub client: async_nats::Client,
    pub events: Arc<ConnEvents>,
    prefix: Arc<str>,
    /// The timeout of a request that names none.
    pub timeout: Duration,
}

impl JetStream {
    /// The API of `domain` (`None`: the connection's own JetStream).
    pub fn new(client: async_nats::Client, events: Arc<ConnEvents>, domain: Option<&str>) -> Self {
        let prefix = match domain {
            Some(d) if !d.is_empty() => format!("$JS.{d}.API"),
            _ => API_PREFIX.to_string(),
        };
        JetStream {
            client,
            events,
            prefix: prefix.into(),
            timeout: DEFAULT_API_TIMEOUT,
        }
    }

    /// `$JS.API` or `$JS.<domain>.API`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full subject of an API call (`STREAM.INFO.X` -> `$JS.API.STREAM.INFO.X`).
    pub fn subject(&self, api: &str) -> String {
        format!("{}.{api}", self.prefix)
    }

    /// Send `body` to `<prefix>.<subject>` and decode the answer, turning an
    /// `{"error": ...}` answer into an [`Error`] built from the server's code.
    pub async fn request<T: DeserializeOwned>(&self, subject: &str, body: &Value) -> Result<T> {
        self.request_timeout(subject, body, self.timeout).await
    }

    /// [`request`](Self::request) with its own timeout.
    pub async fn request_timeout<T: DeserializeOwned>(
        &self,
        subject: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<T> {
        let payload = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(serde_json::to_vec(body).map_err(|e| Error::invalid(e.to_string()))?)
        };
        let raw = self.request_raw(subject, payload, timeout).await?;
        decode_response(&format!("JetStream API {subject}"), &raw)
    }

    /// Like [`request`](Self::request) but returns the raw answer.
    pub async fn request_raw(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let full = self.subject(subject);
        let what = format!("JetStream API {subject}");
        let req = async_nats::client::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        self.events
            .guard(&what, &full, async {
                match self.client.send_request(full.clone(), req).await {
                    Ok(msg) => Ok(msg.payload),
                    Err(e) => Err(request_error(&what, e)),
                }
            })
            .await
    }

    /// A consumer's info; the error names the stream or consumer that is missing.
    pub async fn consumer_info(&self, stream: &str, consumer: &str) -> Result<Value> {
        check_name(stream, "stream")?;
        check_name(consumer, "consumer")?;
        let subject = format!("CONSUMER.INFO.{stream}.{consumer}");
        self.request::<Value>(&subject, &Value::Null)
            .await
            .map_err(|mut e| {
                match e.kind {
                    ErrorKind::StreamNotFound => {
                        e.message =
                            format!("stream {stream:?} not found (consuming {stream}/{consumer})");
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

    /// A stream's info.
    pub async fn stream_info(&self, stream: &str) -> Result<Value> {
        check_name(stream, "stream")?;
        let subject = format!("STREAM.INFO.{stream}");
        self.request::<Value>(&subject, &Value::Null)
            .await
            .map_err(|mut e| {
                if e.kind == ErrorKind::StreamNotFound {
                    e.message = format!("stream {stream:?} not found");
                }
                e
            })
    }

    /// The streams whose subjects capture `subject` (the server's own rule).
    pub async fn streams_capturing(&self, subject: &str, timeout: Duration) -> Result<Vec<String>> {
        let answer: Value = self
            .request_timeout(
                "STREAM.NAMES",
                &serde_json::json!({ "subject": subject }),
                timeout,
            )
            .await?;
        Ok(answer
            .get("streams")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
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

/// Check a stream or consumer name the way the server does (see
/// [`crate::names`]), so a bad name fails with a clear message instead of a
/// confusing API subject.
pub fn check_name(name: &str, what: &str) -> Result<()> {
    match crate::names::name_problem(name) {
        None => Ok(()),
        Some(p) => Err(Error::invalid(format!("invalid {what} name: {p}"))),
    }
}
