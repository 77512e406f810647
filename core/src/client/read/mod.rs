//! Readers: everything that fills an [`Inbox`] for Python to take from.
//!
//! Each kind of reader is a room of its own (a file here) implementing
//! [`Reader`]; the bindings hold any of them as `Arc<dyn Reader>` and close
//! them the same way. A new reader (push, ordered replay, dead letters) is a
//! new file and one `pub mod` line.
//!
//! - [`pull`]: a durable pull consumer, prefetching only what is about to be
//!   processed.
//! - [`push`]: a durable push consumer (the server sends to its
//!   `deliver_subject`).
//! - [`ordered`]: an ordered, ephemeral replay of a stream that recreates
//!   itself after a gap, a reconnect or a server restart.
//! - [`subscription`]: a core subscription (`subscribe`, and requests for
//!   `serve`).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::client::consume::{Acker, Inbox};
use crate::client::Connected;
use crate::error::Result;

pub mod ordered;
pub mod pull;
pub mod push;
pub mod subscription;

/// A source of messages buffered in an [`Inbox`].
pub trait Reader: Send + Sync + 'static {
    /// Where its messages wait to be taken.
    fn inbox(&self) -> &Arc<Inbox>;

    /// Stop reading; what was received and not taken stays in the inbox.
    /// Idempotent: later calls wait for the first.
    fn stop(&self) -> BoxFuture<'_, ()>;

    /// After releases (naks) were queued on `acker` once stopped: make sure
    /// the server has read them. By default, write them out.
    fn settle<'a>(&'a self, acker: &'a Acker) -> BoxFuture<'a, ()> {
        Box::pin(acker.flush())
    }
}

/// Read a durable consumer, pull or push (a push consumer has a
/// `deliver_subject`): one call for both, the same messages and acks.
pub async fn open_durable(
    conn: &Connected,
    acker: Acker,
    stream: &str,
    durable: &str,
    opts: pull::PullOptions,
) -> Result<Arc<dyn Reader>> {
    let info = conn.js.consumer_info(stream, durable).await?;
    let config = info.get("config").cloned().unwrap_or_default();
    if push::deliver_subject(&config).is_some() {
        let reader = push::PushConsumer::start(conn, acker, stream, durable, &info).await?;
        return Ok(reader);
    }
    let reader = pull::PullConsumer::start_with(conn, acker, stream, durable, &info, opts)?;
    Ok(reader)
}

/// What a message on a push subscription is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A message of the stream.
    Data,
    /// A flow-control request: answer on this subject to get more.
    FlowControl(async_nats::Subject),
    /// An idle heartbeat: the last consumer and stream sequences the server
    /// sent (`Nats-Last-Consumer`, `Nats-Last-Stream`), and where to answer
    /// when the server says the consumer is stalled.
    Heartbeat {
        last_consumer: Option<u64>,
        last_stream: Option<u64>,
        stalled: Option<async_nats::Subject>,
    },
    /// Any other status (409 consumer deleted, ...), with its text.
    Status(u16, String),
}

/// Classify a message received on a push (or ordered) subscription.
pub fn control(msg: &async_nats::Message) -> Control {
    let Some(status) = msg.status else {
        return Control::Data;
    };
    let code = status.as_u16();
    if code != 100 {
        return Control::Status(code, msg.description.clone().unwrap_or_default());
    }
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let is_heartbeat = msg
        .description
        .as_deref()
        .is_some_and(|d| d.to_ascii_lowercase().contains("heartbeat"));
    match &msg.reply {
        Some(reply) if !is_heartbeat => Control::FlowControl(reply.clone()),
        _ => Control::Heartbeat {
            last_consumer: header("Nats-Last-Consumer").and_then(|v| v.parse().ok()),
            last_stream: header("Nats-Last-Stream").and_then(|v| v.parse().ok()),
            stalled: header("Nats-Consumer-Stalled").map(async_nats::Subject::from),
        },
    }
}
