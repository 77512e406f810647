//! JetStream publish: one message with expectations, or many pipelined.
//!
//! A publish is a core request to the subject; the stream that captures the
//! subject answers with a PubAck. "No responders" (503) means nobody
//! answered: either no stream captures the subject (a configuration error,
//! reported at once as `NoStream`) or the stream that does has no leader
//! right now (an R3 election, a server shutting down, a lame-duck
//! hand-over). The server tells the two apart (`STREAM.NAMES` with a subject
//! filter): while a stream captures the subject the publish is retried,
//! within its timeout, and still unavailable at the deadline it fails as
//! `StreamUnavailable`. nats.go's JetStream publish retries on no responders
//! the same way.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::time::Instant;

use crate::client::jsapi::JetStream;
use crate::client::Connected;
use crate::error::{ApiError, Error, ErrorKind, Result};

pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest subject a publish may carry. The server reads a command line of
/// at most 4096 bytes (`HPUB <subject> <reply> <header bytes> <total
/// bytes>`); a longer one makes it close the connection, failing every other
/// publish in flight on it. The rest of the line (the reply inbox, the
/// lengths) gets 256 bytes.
pub const MAX_SUBJECT_LEN: usize = 4096 - 256;

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
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(Error::invalid(format!(
            "subject is {} bytes long; at most {MAX_SUBJECT_LEN} are allowed (the server reads at most 4096 bytes per protocol line and closes the connection on a longer one)",
            subject.len()
        )));
    }
    // The one subject rule (core/src/subjects.rs), plus: no wildcards.
    if let Some(problem) = crate::subjects::subject_problem(subject) {
        return Err(Error::invalid(format!("invalid subject {problem}")));
    }
    if !crate::subjects::is_literal(subject) {
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

/// No stream captures `subject`: the publish got "no responders" and the
/// server says no stream's subjects match it.
pub fn no_stream_error(subject: &str) -> Error {
    Error::new(
        ErrorKind::NoStream,
        format!("no stream captures subject {subject:?} (publish got no responders): add the subject to a stream in the topology"),
    )
}

/// A stream captures `subject` but did not answer before the deadline.
pub fn unavailable_error(
    subject: &str,
    stream: Option<&str>,
    attempts: u32,
    waited: Duration,
) -> Error {
    let who = match stream {
        Some(s) => format!("stream {s:?} captures this subject but"),
        None => "no stream answered, and JetStream could not say which captures it: it".to_string(),
    };
    Error::new(
        ErrorKind::StreamUnavailable,
        format!(
            "publish to {subject:?}: {who} did not answer for {:.1}s (timeout), {attempts} attempt(s): \
             it has no leader right now (an election, a server restarting or in lame duck mode); \
             retry later or raise the publish timeout",
            waited.as_secs_f64()
        ),
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

/// How long the answer "stream X captures subject Y" is trusted while a
/// publish is retried, before the server is asked again.
const CAPTURE_TTL: Duration = Duration::from_secs(2);

/// Pause between attempts while a stream is unavailable: 25 ms doubling up
/// to 250 ms, as nats.go waits (a leader election takes a few seconds).
const FIRST_RETRY: Duration = Duration::from_millis(25);
const MAX_RETRY: Duration = Duration::from_millis(250);

/// What the server says captures a subject.
enum Capture {
    /// No stream: the configuration error.
    Nothing,
    /// This stream: it exists and has no leader right now.
    Stream(String),
    /// JetStream did not answer either.
    Unknown,
}

/// Publishes through one JetStream context. Each publish is enqueued on the
/// connection in call order before its ack is awaited, so pipelined
/// publishes are stored in input order (a publish retried while its stream
/// was unavailable is stored when it gets through).
/// A message on the wire: the future of its ack, and the watch for a
/// permission violation started before it was sent.
struct Sent {
    ack: async_nats::jetstream::context::PublishAckFuture,
    watch: super::events::Watch,
}

#[derive(Clone)]
pub struct Publisher {
    js: async_nats::jetstream::Context,
    api: JetStream,
    heal: Arc<crate::client::heal::Heal>,
    captured: Arc<Mutex<HashMap<String, (Instant, String)>>>,
}

impl Publisher {
    pub fn new(conn: &Connected) -> Publisher {
        let js = async_nats::jetstream::context::ContextBuilder::new()
            // Our own timeouts bound every wait; the context's must not cut in first.
            .timeout(Duration::from_secs(3600))
            .max_ack_inflight(1 << 20)
            .backpressure_on_inflight(true)
            .build(conn.client.clone());
        Publisher {
            js,
            api: conn.js.clone(),
            heal: conn.heal.clone(),
            captured: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Put the message on the wire; returns the future of its ack, watched
    /// for a refusal from before it was sent.
    async fn send(&self, msg: &OutboundMessage) -> Result<Sent> {
        let watch = self.api.events.watch();
        let mut p =
            async_nats::jetstream::message::PublishMessage::build().payload(msg.payload.clone());
        if let Some(h) = &msg.headers {
            p = p.headers(h.clone());
        }
        self.js
            .send_publish(msg.subject.clone(), p)
            .await
            .map(|ack| Sent { ack, watch })
            .map_err(|e| publish_error(&msg.subject, e))
    }

    /// Wait for the ack until `deadline`; a permission violation for the
    /// subject (or the inbox) fails it at once.
    async fn settle(&self, subject: &str, sent: Sent, deadline: Instant) -> Result<PubAck> {
        let what = format!("publish to {subject:?}");
        let Sent { ack, watch } = sent;
        let wait = async {
            match tokio::time::timeout_at(deadline, ack.into_future()).await {
                Ok(Ok(a)) => Ok(PubAck {
                    stream: a.stream,
                    seq: a.sequence,
                    duplicate: a.duplicate,
                    domain: (!a.domain.is_empty()).then_some(a.domain),
                }),
                Ok(Err(e)) => Err(publish_error(subject, e)),
                Err(_) => Err(ack_timeout(subject)),
            }
        };
        self.api
            .events
            .guard_watched(&what, subject, watch, wait)
            .await
    }

    /// Which stream captures `subject`, as the server says.
    async fn capture(&self, subject: &str, deadline: Instant) -> Capture {
        let now = Instant::now();
        {
            let mut known = self.captured.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, stream)) = known.get(subject) {
                if now.saturating_duration_since(*at) < CAPTURE_TTL {
                    return Capture::Stream(stream.clone());
                }
            }
            if known.len() > 1024 {
                known.clear();
            }
        }
        let timeout = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(500))
            .max(Duration::from_millis(50));
        match self.api.streams_capturing(subject, timeout).await {
            Ok(streams) => match streams.into_iter().next() {
                None => Capture::Nothing,
                Some(stream) => {
                    self.captured
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(subject.to_string(), (now, stream.clone()));
                    Capture::Stream(stream)
                }
            },
            Err(_) => Capture::Unknown,
        }
    }

    /// After "no responders": fail with `NoStream` when no stream captures
    /// the subject, else send again until an ack or the deadline.
    async fn retry_unavailable(
        &self,
        msg: &OutboundMessage,
        started: Instant,
        deadline: Instant,
        mut attempts: u32,
    ) -> Result<PubAck> {
        let mut pause = FIRST_RETRY;
        let mut healed = false;
        loop {
            let seen = self.heal.generation();
            let stream = match self.capture(&msg.subject, deadline).await {
                // A declared stream the server lost: re-create it, once,
                // and send again.
                Capture::Nothing if !healed && self.heal.declares_subject(&msg.subject) => {
                    healed = true;
                    let why = format!("a publish to {:?} found no stream", msg.subject);
                    if self.heal.heal(&why, seen).await.is_ok() {
                        attempts += 1;
                        let answer = match self.send(msg).await {
                            Ok(fut) => self.settle(&msg.subject, fut, deadline).await,
                            Err(e) => Err(e),
                        };
                        match answer {
                            Err(e) if e.kind == ErrorKind::NoStream => continue,
                            other => return other,
                        }
                    }
                    continue;
                }
                Capture::Nothing => return Err(no_stream_error(&msg.subject)),
                Capture::Stream(s) => Some(s),
                Capture::Unknown => None,
            };
            let now = Instant::now();
            if now + pause >= deadline {
                return Err(unavailable_error(
                    &msg.subject,
                    stream.as_deref(),
                    attempts,
                    now.saturating_duration_since(started),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY);
            attempts += 1;
            let answer = match self.send(msg).await {
                Ok(fut) => self.settle(&msg.subject, fut, deadline).await,
                Err(e) => Err(e),
            };
            match answer {
                Err(e) if e.kind == ErrorKind::NoStream => continue,
                Err(e) if e.kind == ErrorKind::Timeout => {
                    return Err(unavailable_error(
                        &msg.subject,
                        stream.as_deref(),
                        attempts,
                        Instant::now().saturating_duration_since(started),
                    ))
                }
                other => return other,
            }
        }
    }

    /// Publish one message and wait for its PubAck (see the module docs for
    /// what "no responders" leads to).
    pub async fn publish(&self, msg: OutboundMessage, timeout: Option<Duration>) -> Result<PubAck> {
        let started = Instant::now();
        let deadline = started + timeout.unwrap_or(DEFAULT_PUBLISH_TIMEOUT);
        let fut = self.send(&msg).await?;
        self.finish(msg, fut, started, deadline).await
    }

    /// The ack of a message already sent, with the retry after "no responders".
    async fn finish(
        &self,
        msg: OutboundMessage,
        fut: Sent,
        started: Instant,
        deadline: Instant,
    ) -> Result<PubAck> {
        match self.settle(&msg.subject, fut, deadline).await {
            Err(e) if e.kind == ErrorKind::NoStream => {
                self.retry_unavailable(&msg, started, deadline, 1).await
            }
            other => other,
        }
    }

    /// A message another connection sent got "no responders": classify it
    /// and retry through this one until `deadline` (the loop-driven publish
    /// connection hands such publishes over here).
    pub async fn publish_after_no_responders(
        &self,
        msg: OutboundMessage,
        started: Instant,
        deadline: Instant,
    ) -> Result<PubAck> {
        self.retry_unavailable(&msg, started, deadline, 1).await
    }

    /// Publish messages that arrive in chunks while they are still being
    /// prepared (the caller encodes the next chunk while this one is on the
    /// wire). Items that failed to prepare keep their place as errors.
    /// Sent in input order, at most `window` awaiting acks; results come back
    /// in input order, one per item. Once `cancelled` is set nothing more is
    /// sent: the rest come back as `Closed` errors.
    pub async fn publish_stream(
        &self,
        mut chunks: tokio::sync::mpsc::UnboundedReceiver<Vec<Result<OutboundMessage>>>,
        window: usize,
        timeout: Option<Duration>,
        cancelled: &std::sync::atomic::AtomicBool,
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
                if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                    inflight.push_back(futures_util::future::Either::Right(
                        futures_util::future::ready(Err(Error::new(
                            ErrorKind::Closed,
                            "publish_many was cancelled before this item was sent",
                        ))),
                    ));
                    continue;
                }
                let started = Instant::now();
                let sent = match item {
                    Ok(msg) => self.send(&msg).await.map(|fut| (msg, fut)),
                    Err(e) => Err(e),
                };
                match sent {
                    Ok((msg, fut)) => inflight.push_back(futures_util::future::Either::Left(
                        self.finish(msg, fut, started, started + timeout),
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
