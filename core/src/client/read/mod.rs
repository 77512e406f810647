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

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;

use crate::client::consume::{AckKind, Acker, InboundMessage, Inbox};
use crate::client::{round_trip, Connected};
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
    let seen = conn.heal.generation();
    let info = match conn.js.consumer_info(stream, durable).await {
        // Declared, and the server lost it: re-create it and go on.
        Err(e)
            if matches!(
                e.kind,
                crate::error::ErrorKind::StreamNotFound | crate::error::ErrorKind::ConsumerNotFound
            ) && conn.heal.declares(stream, Some(durable)) =>
        {
            let why = format!("consumer {stream} > {durable} was gone");
            conn.heal.heal(&why, seen).await?;
            conn.js.consumer_info(stream, durable).await?
        }
        other => other?,
    };
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

/// A flow-control request of the server not answered yet. It is answered
/// once the application has taken the buffer below
/// [`push::FLOW_CONTROL_BELOW`] messages, so the server waits for a slow
/// application instead of the buffer growing without end.
#[derive(Debug, Default)]
pub struct FlowControl(Option<async_nats::Subject>);

impl FlowControl {
    /// The server asked (on `reply`).
    pub fn requested(&mut self, reply: async_nats::Subject) {
        self.0 = Some(reply);
    }

    /// A request is waiting for room in the inbox.
    pub fn waiting(&self) -> bool {
        self.0.is_some()
    }

    /// Forget the request (the consumer it came from is gone).
    pub fn reset(&mut self) {
        self.0 = None;
    }

    /// Answer the waiting request if the inbox has room now.
    pub async fn answer_if_room(&mut self, client: &async_nats::Client, inbox: &Inbox) {
        if self.0.is_some() && inbox.len() < push::FLOW_CONTROL_BELOW {
            if let Some(reply) = self.0.take() {
                let _ = client.publish(reply, Default::default()).await;
            }
        }
    }
}

/// How a durable reader stops once its pump was told to: wait for the pump
/// task, then release (nak) every message received and never handed out
/// (`rest`, what the task still held, what the inbox holds), after the
/// subscription is gone so that the redelivery goes to another reader, and
/// make sure the server read the acks and releases.
pub async fn release_the_rest(
    task: &Mutex<Option<JoinHandle<Vec<InboundMessage>>>>,
    inbox: &Inbox,
    mut rest: Vec<InboundMessage>,
    acker: &Acker,
    conn: &Connected,
) {
    let task = task.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(task) = task {
        if let Ok(more) = task.await {
            rest.extend(more);
        }
    }
    rest.extend(inbox.close(None));
    for m in &rest {
        if let Some(reply) = &m.reply {
            let _ = acker.send(reply.clone(), &AckKind::Nak(None));
        }
    }
    settle(acker, conn).await;
}

/// Write queued acks and wait until the server has read them.
pub async fn settle(acker: &Acker, conn: &Connected) {
    acker.flush().await;
    let _ = round_trip(&conn.client, &conn.events, pull::SETTLE_TIMEOUT).await;
}

/// `Some(error)` when the consumer or its stream is gone for good: gone,
/// and not declared by a topology this connection heals (a declared one is
/// re-created, and the reader carries on).
pub async fn consumer_gone(
    conn: &crate::client::Connected,
    stream: &str,
    durable: &str,
) -> Option<crate::error::Error> {
    use crate::error::ErrorKind;
    let seen = conn.heal.generation();
    match conn.js.consumer_info(stream, durable).await {
        Err(e)
            if matches!(
                e.kind,
                ErrorKind::StreamNotFound | ErrorKind::ConsumerNotFound
            ) =>
        {
            if !conn.heal.declares(stream, Some(durable)) {
                return Some(e);
            }
            // A failed heal (JetStream not ready yet after a restart) is
            // tried again at the reader's next check.
            let why = format!("consumer {stream} > {durable} was gone");
            let _ = conn.heal.heal(&why, seen).await;
            None
        }
        _ => None,
    }
}
