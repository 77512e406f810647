//! One stored message, read by sequence or as the last on a subject
//! (`STREAM.MSG.GET`), decoded into the same shape as a delivery.

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use async_nats::Subject;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::client::consume::InboundMessage;
use crate::client::jsapi::{check_name, JetStream};
use crate::error::{Error, ErrorKind, Result};

/// Which stored message to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The message at this stream sequence.
    Seq(u64),
    /// The last message on this subject (wildcards allowed: `>` is the
    /// stream's last message).
    LastFor(String),
}

/// A message as the stream stores it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub message: InboundMessage,
    pub stream: String,
    pub seq: u64,
    /// When it was stored, nanoseconds since the epoch.
    pub timestamp_ns: i64,
}

/// Read one message of `stream`. A missing message raises
/// `MessageNotFound` naming the stream and what was asked for.
pub async fn get_message(js: &JetStream, stream: &str, at: &Lookup) -> Result<StoredMessage> {
    check_name(stream, "stream")?;
    let (body, what) = match at {
        Lookup::Seq(0) => {
            return Err(Error::invalid(
                "seq must be at least 1 (stream sequences start at 1)",
            ))
        }
        Lookup::Seq(seq) => (json!({"seq": seq}), format!("at sequence {seq}")),
        Lookup::LastFor(subject) => (
            json!({"last_by_subj": subject}),
            format!("for subject {subject:?}"),
        ),
    };
    let answer: Value = js
        .request(&format!("STREAM.MSG.GET.{stream}"), &body)
        .await
        .map_err(|mut e| {
            match e.kind {
                ErrorKind::MessageNotFound => {
                    e.message = format!("stream {stream:?} holds no message {what}");
                }
                ErrorKind::StreamNotFound => {
                    e.message = format!("stream {stream:?} not found");
                }
                _ => {}
            }
            e
        })?;
    decode(stream, &answer["message"])
}

fn decode(stream: &str, m: &Value) -> Result<StoredMessage> {
    let bad = |what: &str| {
        Error::new(
            ErrorKind::JetStream,
            format!("stream {stream:?} answered STREAM.MSG.GET with {what}"),
        )
    };
    let b64 = |field: &str| -> Result<Bytes> {
        match m.get(field).and_then(Value::as_str) {
            None | Some("") => Ok(Bytes::new()),
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(Bytes::from)
                .map_err(|_| bad(&format!("{field} that is not base64"))),
        }
    };
    let subject = m
        .get("subject")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no subject"))?;
    let seq = m
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no seq"))?;
    let timestamp_ns = m
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos()).ok())
        .unwrap_or(0);
    let raw_headers = b64("hdrs")?;
    let headers = if raw_headers.is_empty() {
        None
    } else {
        Some(parse_headers(&raw_headers).ok_or_else(|| bad("a header block it cannot read"))?)
    };
    let payload = b64("data")?;
    let length = subject.len() + raw_headers.len() + payload.len();
    Ok(StoredMessage {
        message: InboundMessage {
            subject: Subject::from(subject),
            reply: None,
            headers,
            payload,
            length,
            arrived: std::time::Instant::now(),
        },
        stream: stream.to_string(),
        seq,
        timestamp_ns,
    })
}

/// Parse a `NATS/1.0` header block (`Name: value` lines after the status
/// line, a name may repeat).
pub fn parse_headers(block: &[u8]) -> Option<HeaderMap> {
    let text = std::str::from_utf8(block).ok()?;
    let mut lines = text.split("\r\n");
    if !lines.next()?.starts_with("NATS/1.0") {
        return None;
    }
    let mut headers = HeaderMap::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        let name: HeaderName = name.trim().parse().ok()?;
        let value: HeaderValue = value.trim().parse().ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stored_message() {
        let hdrs = base64::engine::general_purpose::STANDARD
            .encode("NATS/1.0\r\nA: 1\r\nA: 2\r\nNats-Msg-Id: x\r\n\r\n");
        let data = base64::engine::general_purpose::STANDARD.encode("{\"k\":1}");
        let m = json!({"subject": "a.b", "seq": 7, "hdrs": hdrs, "data": data,
                       "time": "2026-12-02T07:00:00.5Z"});
        let s = decode("S", &m).unwrap();
        assert_eq!((s.seq, s.message.subject.as_str()), (7, "a.b"));
        assert_eq!(&s.message.payload[..], b"{\"k\":1}");
        let h = s.message.headers.unwrap();
        let all: Vec<&str> = h.get_all("A").map(|v| v.as_str()).collect();
        assert_eq!(all, vec!["1", "2"]);
        assert_eq!(s.timestamp_ns, 1_796_194_800_500_000_000);
        let bare = decode("S", &json!({"subject": "a", "seq": 1})).unwrap();
        assert!(bare.message.headers.is_none() && bare.message.payload.is_empty());
        assert!(decode("S", &json!({"subject": "a", "seq": 1, "data": "%%"})).is_err());
    }
}
