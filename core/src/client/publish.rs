//! JetStream publish: one message with expectations, or many pipelined.
//!
//! A publish is a core request to the subject; the stream that captures the
//! subject answers with a PubAck. No responders means no stream captures it,
//! which we report at once instead of waiting for a timeout.

use std::time::Duration;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};

use std::future::IntoFuture;

use crate::error::{ApiError, Error, ErrorKind, Result};

pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// A message ready to send: subject, payload bytes, headers.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub subject: String,
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
}

/// Idempotency and optimistic-concurrency headers for one publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub msg_id: Option<String>,
    pub expected_stream: Option<String>,
    pub expected_last_seq: Option<u64>,
    pub expected_last_subject_seq: Option<u64>,
    pub expected_last_msg_id: Option<String>,
}

impl PublishOptions {
    pub fn is_empty(&self) -> bool {
        self.msg_id.is_none()
            && self.expected_stream.is_none()
            && self.expected_last_seq.is_none()
            && self.expected_last_subject_seq.is_none()
            && self.expected_last_msg_id.is_none()
    }

    /// Write the options as the JetStream headers the server reads.
    pub fn apply(&self, headers: &mut HeaderMap) -> Result<()> {
        fn put(h: &mut HeaderMap, name: &'static str, value: &str) -> Result<()> {
            let v: HeaderValue = value.parse().map_err(|_| {
                Error::invalid(format!("invalid value for header {name}: {value:?}"))
            })?;
            h.insert(HeaderName::from_static(name), v);
            Ok(())
        }
        if let Some(id) = &self.msg_id {
            if id.is_empty() {
                return Err(Error::invalid("msg_id must not be empty"));
            }
            put(headers, "Nats-Msg-Id", id)?;
        }
        if let Some(s) = &self.expected_stream {
            put(headers, "Nats-Expected-Stream", s)?;
        }
        if let Some(seq) = self.expected_last_seq {
            put(headers, "Nats-Expected-Last-Sequence", &seq.to_string())?;
        }
        if let Some(seq) = self.expected_last_subject_seq {
            put(
                headers,
                "Nats-Expected-Last-Subject-Sequence",
                &seq.to_string(),
            )?;
        }
        if let Some(id) = &self.expected_last_msg_id {
            put(headers, "Nats-Expected-Last-Msg-Id", id)?;
        }
        Ok(())
    }
}

/// The server's acknowledgement of a stored message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct PubAck {
    pub stream: String,
    pub seq: u64,
    #[serde(default)]
    pub duplicate: bool,
    #[serde(default)]
    pub domain: Option<String>,
}

/// Check a subject the way the server would before anything is sent.
pub fn check_publish_subject(subject: &str) -> Result<()> {
    if subject.is_empty() {
        return Err(Error::invalid("subject must not be empty"));
    }
    if subject.contains(|c: char| c.is_whitespace()) {
        return Err(Error::invalid(format!(
            "invalid subject {subject:?}: subjects cannot contain whitespace"
        )));
    }
    if subject.starts_with('.') || subject.ends_with('.') || subject.contains("..") {
        return Err(Error::invalid(format!(
            "invalid subject {subject:?}: empty token (leading, trailing or double dot)"
        )));
    }
    if subject.split('.').any(|t| t == "*" || t == ">") {
        return Err(Error::invalid(format!(
            "invalid subject {subject:?}: cannot publish to a wildcard subject"
        )));
    }
    Ok(())
}

fn api_from_jetstream(e: &async_nats::jetstream::Error) -> ApiError {
    // async-nats keeps the description private; its Display is
    // "<description> (code N, error code M)".
    let text = e.to_string();
    let description = text
        .rsplit_once(" (code ")
        .map(|(d, _)| d.to_string())
        .unwrap_or(text);
    ApiError {
        code: u16::try_from(e.code()).unwrap_or(0),
        err_code: u16::try_from(e.error_code().0).unwrap_or(0),
        description,
    }
}

/// No stream captures `subject`: the publish got "no responders".
pub fn no_stream_error(subject: &str) -> Error {
    Error::new(
        ErrorKind::NoStream,
        format!("no stream captures subject {subject:?} (publish got no responders): add the subject to a stream in the topology"),
    )
}

/// The connection went away while a publish waited for its ack: the message
/// may or may not be stored.
pub fn lost_before_ack(subject: &str) -> Error {
    Error::new(
        ErrorKind::Connect,
        format!("publish to {subject:?}: connection lost before the ack arrived"),
    )
}

/// A publish did not get its ack within its timeout.
pub fn ack_timeout(subject: &str) -> Error {
    Error::timeout(format!("publish to {subject:?}"))
}

/// Read the server's answer to a publish: a PubAck or a JetStream error.
pub fn parse_pub_ack(subject: &str, payload: &[u8]) -> Result<PubAck> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        stream: Option<String>,
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        duplicate: bool,
        #[serde(default)]
        domain: Option<String>,
        #[serde(default)]
        error: Option<ApiError>,
    }
    let what = || format!("publish to {subject:?}");
    let body: Body = serde_json::from_slice(payload).map_err(|e| {
        Error::new(
            ErrorKind::JetStream,
            format!("{}: the server's answer is not a PubAck ({e})", what()),
        )
    })?;
    if let Some(api) = body.error {
        return Err(Error::api(what(), api));
    }
    match (body.stream, body.seq) {
        (Some(stream), Some(seq)) => Ok(PubAck {
            stream,
            seq,
            duplicate: body.duplicate,
            domain: body.domain.filter(|d| !d.is_empty()),
        }),
        _ => Err(Error::new(
            ErrorKind::JetStream,
            format!("{}: the server's answer has no stream and sequence", what()),
        )),
    }
}

fn publish_error(subject: &str, e: async_nats::jetstream::context::PublishError) -> Error {
    use async_nats::jetstream::context::PublishErrorKind as K;
    let what = format!("publish to {subject:?}");
    match e.kind() {
        K::StreamNotFound => no_stream_error(subject),
        K::TimedOut => ack_timeout(subject),
        K::MaxPayloadExceeded => Error::invalid(format!("{what}: {e}")),
        K::BrokenPipe => lost_before_ack(subject),
        _ => {
            use std::error::Error as _;
            match e
                .source()
                .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
            {
                Some(js) => Error::api(what, api_from_jetstream(js)),
                None => Error::new(ErrorKind::JetStream, format!("{what}: {e}")),
            }
        }
    }
}

/// Publishes through one JetStream context. Each publish is enqueued on the
/// connection in call order before its ack is awaited, so pipelined
/// publishes are stored in input order.
#[derive(Clone)]
pub struct Publisher {
    js: async_nats::jetstream::Context,
}

impl Publisher {
    pub fn new(client: async_nats::Client) -> Publisher {
        let js = async_nats::jetstream::context::ContextBuilder::new()
            // Our own timeouts bound every wait; the context's must not cut in first.
            .timeout(Duration::from_secs(3600))
            .max_ack_inflight(1 << 20)
            .backpressure_on_inflight(true)
            .build(client);
        Publisher { js }
    }

    /// Put the message on the wire; returns the future of its ack.
    pub async fn send(
        &self,
        msg: OutboundMessage,
    ) -> Result<(String, async_nats::jetstream::context::PublishAckFuture)> {
        let mut p = async_nats::jetstream::message::PublishMessage::build().payload(msg.payload);
        if let Some(h) = msg.headers {
            p = p.headers(h);
        }
        match self.js.send_publish(msg.subject.clone(), p).await {
            Ok(f) => Ok((msg.subject, f)),
            Err(e) => Err(publish_error(&msg.subject, e)),
        }
    }

    async fn settle(
        subject: String,
        fut: async_nats::jetstream::context::PublishAckFuture,
        timeout: Duration,
    ) -> Result<PubAck> {
        match tokio::time::timeout(timeout, fut.into_future()).await {
            Ok(Ok(a)) => Ok(PubAck {
                stream: a.stream,
                seq: a.sequence,
                duplicate: a.duplicate,
                domain: (!a.domain.is_empty()).then_some(a.domain),
            }),
            Ok(Err(e)) => Err(publish_error(&subject, e)),
            Err(_) => Err(ack_timeout(&subject)),
        }
    }

    /// Publish one message and wait for its PubAck.
    pub async fn publish(&self, msg: OutboundMessage, timeout: Option<Duration>) -> Result<PubAck> {
        let (subject, fut) = self.send(msg).await?;
        Self::settle(subject, fut, timeout.unwrap_or(DEFAULT_PUBLISH_TIMEOUT)).await
    }

    /// Publish messages that arrive in chunks while they are still being
    /// prepared (the caller encodes the next chunk while this one is on the
    /// wire). Items that failed to prepare keep their place as errors.
    /// Sent in input order, at most `window` awaiting acks; results come back
    /// in input order, one per item.
    pub async fn publish_stream(
        &self,
        mut chunks: tokio::sync::mpsc::UnboundedReceiver<Vec<Result<OutboundMessage>>>,
        window: usize,
        timeout: Option<Duration>,
    ) -> Vec<Result<PubAck>> {
        let window = window.max(1);
        let timeout = timeout.unwrap_or(DEFAULT_PUBLISH_TIMEOUT);
        let mut out = Vec::new();
        let mut inflight = FuturesOrdered::new();
        while let Some(chunk) = chunks.recv().await {
            out.reserve(chunk.len());
            for item in chunk {
                while inflight.len() >= window {
                    if let Some(r) = inflight.next().await {
                        out.push(r);
                    }
                }
                let sent = match item {
                    Ok(msg) => self.send(msg).await,
                    Err(e) => Err(e),
                };
                match sent {
                    Ok((subject, fut)) => inflight.push_back(futures_util::future::Either::Left(
                        Self::settle(subject, fut, timeout),
                    )),
                    Err(e) => inflight.push_back(futures_util::future::Either::Right(
                        futures_util::future::ready(Err(e)),
                    )),
                }
            }
        }
        while let Some(r) = inflight.next().await {
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_the_server_code() {
        let js: async_nats::jetstream::Error = serde_json::from_str(
            r#"{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}"#,
        )
        .unwrap();
        let api = api_from_jetstream(&js);
        assert_eq!((api.code, api.err_code), (400, 10071));
        assert_eq!(api.description, "wrong last sequence: 3");
        assert_eq!(api.kind(), ErrorKind::Expectation);
    }

    #[test]
    fn pub_acks_and_their_errors() {
        let a = parse_pub_ack("a", br#"{"stream":"S","seq":7,"duplicate":true}"#).unwrap();
        assert_eq!(
            (a.stream.as_str(), a.seq, a.duplicate, a.domain),
            ("S", 7, true, None)
        );
        let a = parse_pub_ack("a", br#"{"stream":"S","seq":1,"domain":"hub"}"#).unwrap();
        assert_eq!(a.domain.as_deref(), Some("hub"));
        let e = parse_pub_ack(
            "a",
            br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Expectation);
        assert!(
            e.message.contains("wrong last sequence: 3"),
            "{}",
            e.message
        );
        assert_eq!(
            parse_pub_ack("a", b"not json").unwrap_err().kind,
            ErrorKind::JetStream
        );
        assert_eq!(
            parse_pub_ack("a", b"{}").unwrap_err().kind,
            ErrorKind::JetStream
        );
    }

    #[test]
    fn rejects_bad_subjects() {
        assert!(check_publish_subject("a.b").is_ok());
        for bad in ["", "a b", "a..b", ".a", "a.", "a.*", "a.>"] {
            assert!(check_publish_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_become_headers() {
        let mut h = HeaderMap::new();
        PublishOptions {
            msg_id: Some("m1".into()),
            expected_last_seq: Some(4),
            ..Default::default()
        }
        .apply(&mut h)
        .unwrap();
        assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), "m1");
        assert_eq!(h.get("Nats-Expected-Last-Sequence").unwrap().as_str(), "4");
    }
}
