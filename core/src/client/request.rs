//! Core request/reply.

use std::time::Duration;

use bytes::Bytes;

use crate::client::consume::InboundMessage;
use crate::client::publish::OutboundMessage;
use crate::client::Connected;
use crate::error::{Error, ErrorKind, Result};

pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Send a request and wait for the first reply. Nobody listening is an
/// immediate `NoResponders` error, not a timeout; so is a subject (or inbox)
/// this user may not use, as `Auth`.
pub async fn request(
    conn: &Connected,
    msg: OutboundMessage,
    timeout: Option<Duration>,
) -> Result<InboundMessage> {
    let subject = msg.subject;
    let mut req = async_nats::client::Request::new()
        .payload(msg.payload)
        .timeout(Some(timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)));
    if let Some(h) = msg.headers {
        req = req.headers(h);
    }
    let what = format!("request to {subject:?}");
    conn.events
        .guard(&what, &subject, async {
            match conn.client.send_request(subject.clone(), req).await {
                Ok(m) => Ok(InboundMessage::from(m)),
                Err(e) => {
                    use async_nats::RequestErrorKind as K;
                    Err(match e.kind() {
                        K::NoResponders => Error::new(
                            ErrorKind::NoResponders,
                            format!(
                                "no responders on {subject:?}: nothing is serving this subject"
                            ),
                        ),
                        K::TimedOut => Error::timeout(&what),
                        _ => super::jsapi::request_error(&what, e),
                    })
                }
            }
        })
        .await
}

/// Publish without waiting for anything (used for replies).
pub async fn publish_core(
    client: &async_nats::Client,
    subject: String,
    payload: Bytes,
) -> Result<()> {
    client
        .publish(subject, payload)
        .await
        .map_err(|e| Error::new(ErrorKind::Connect, format!("publish failed: {e}")))
}
