//! A durable push consumer as a reader: the server sends its messages to the
//! consumer's `deliver_subject` (shared by a queue group when it has a
//! `deliver_group`); this subscribes there and feeds the inbox.
//!
//! The server bounds what it sends by the consumer's `max_ack_pending`, and,
//! when the consumer has `flow_control`, by our answers to its flow-control
//! requests: an answer goes back only once the application has taken what
//! is buffered down to [`FLOW_CONTROL_BELOW`], so a slow application slows
//! the server instead of buffering without end. Idle heartbeats are
//! watched: when they stop for three intervals the consumer is checked, and
//! a stalled consumer (`Nats-Consumer-Stalled`) is answered. Where it stops
//! is kept by the server: a new consumption resumes there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{control, Control, FlowControl, Reader};
use crate::client::consume::{Acker, InboundMessage, Inbox};
use crate::client::read::pull::SETTLE_TIMEOUT;
use crate::client::{round_trip, Connected};
use crate::error::{Error, ErrorKind, Result};

/// Answer a flow-control request once fewer than this many messages are
/// buffered.
pub const FLOW_CONTROL_BELOW: usize = 1024;

/// A running durable push consumption.
pub struct PushConsumer {
    pub inbox: Arc<Inbox>,
    conn: Connected,
    acker: Acker,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<Vec<InboundMessage>>>>,
    stopped: tokio::sync::OnceCell<()>,
}

/// The `deliver_subject` of a consumer config, when it is a push consumer.
pub fn deliver_subject(config: &Value) -> Option<&str> {
    config
        .get("deliver_subject")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl PushConsumer {
    /// Subscribe to the consumer's deliver subject (`info` is its
    /// `CONSUMER.INFO` answer) and start feeding the inbox.
    pub async fn start(
        conn: &Connected,
        acker: Acker,
        stream: &str,
        durable: &str,
        info: &Value,
    ) -> Result<Arc<PushConsumer>> {
        let config = info.get("config").cloned().unwrap_or_default();
        let Some(subject) = deliver_subject(&config) else {
            return Err(Error::invalid(format!(
                "consumer {durable:?} on stream {stream:?} is not a push consumer"
            )));
        };
        let group = config
            .get("deliver_group")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if group.is_none() && info.get("push_bound").and_then(Value::as_bool) == Some(true) {
            return Err(Error::invalid(format!(
                "push consumer {durable:?} on stream {stream:?} is already being read by another \
                 subscriber, and without a deliver_group each subscriber would get every message: \
                 stop the other reader, or give the consumer a deliver_group to share its messages"
            )));
        }
        let client = &conn.client;
        let sub = match group {
            Some(g) => {
                client
                    .queue_subscribe(subject.to_string(), g.to_string())
                    .await
            }
            None => client.subscribe(subject.to_string()).await,
        }
        .map_err(|e| Error::new(ErrorKind::Connect, format!("cannot subscribe: {e}")))?;
        // The server knows of our interest before the caller goes on.
        let _ = round_trip(client, &conn.events, SETTLE_TIMEOUT).await;
        let heartbeat = config
            .get("idle_heartbeat")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .map(Duration::from_nanos);
        let inbox = Inbox::new(usize::MAX);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(
            std::panic::AssertUnwindSafe(pump(
                conn.clone(),
                stream.to_string(),
                durable.to_string(),
                sub,
                heartbeat,
                inbox.clone(),
                stop_rx,
            ))
            .catch_unwind()
            .map({
                let inbox = inbox.clone();
                move |r| {
                    r.unwrap_or_else(|panic| {
                        inbox.fail(Error::internal("the push consumer's pump", &*panic));
                        Vec::new()
                    })
                }
            }),
        );
        Ok(Arc::new(PushConsumer {
            inbox,
            conn: conn.clone(),
            acker,
            stop,
            task: Mutex::new(Some(task)),
            stopped: tokio::sync::OnceCell::new(),
        }))
    }

    /// Stop: unsubscribe, then release (nak) every message received and
    /// never handed out (after unsubscribing, so that a queue group's other
    /// members get them), and make sure the server read the acks and
    /// releases. Idempotent.
    pub async fn stop(&self) {
        self.stopped.get_or_init(|| self.shutdown()).await;
    }

    async fn shutdown(&self) {
        let rest = self.inbox.close(None);
        let _ = self.stop.send(true);
        super::release_the_rest(&self.task, &self.inbox, rest, &self.acker, &self.conn).await;
    }

    /// Write queued acks and wait until the server has read them.
    pub async fn settle(&self) {
        super::settle(&self.acker, &self.conn).await;
    }
}

impl Reader for PushConsumer {
    fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(PushConsumer::stop(self))
    }

    fn settle<'a>(&'a self, _acker: &'a Acker) -> BoxFuture<'a, ()> {
        Box::pin(PushConsumer::settle(self))
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        self.inbox.close(None);
        let _ = self.stop.send(true);
    }
}

async fn pump(
    conn: Connected,
    stream: String,
    durable: String,
    mut sub: async_nats::Subscriber,
    heartbeat: Option<Duration>,
    inbox: Arc<Inbox>,
    mut stop: watch::Receiver<bool>,
) -> Vec<InboundMessage> {
    let client = &conn.client;
    let mut leftovers = Vec::new();
    let mut flow_control = FlowControl::default();
    let mut last_seen = Instant::now();
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        flow_control.answer_if_room(client, &inbox).await;
        let silent = heartbeat.map(|hb| last_seen + hb * 3);
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            msg = sub.next() => {
                let Some(msg) = msg else {
                    inbox.fail(Error::new(ErrorKind::Closed, "the connection is closed"));
                    break;
                };
                last_seen = Instant::now();
                match control(&msg) {
                    Control::Data => {
                        if let Err(m) = inbox.push_now(InboundMessage::from(msg)) {
                            leftovers.push(m);
                        }
                    }
                    Control::FlowControl(reply) => flow_control.requested(reply),
                    Control::Heartbeat { stalled, .. } => {
                        if let Some(reply) = stalled {
                            let _ = client.publish(reply, Default::default()).await;
                        }
                    }
                    // Another status (409 and the like) carries no message:
                    // go on while the consumer is still there.
                    Control::Status(..) => {
                        if let Some(e) = super::consumer_gone(&conn, &stream, &durable).await {
                            inbox.fail(e);
                            break;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(silent.unwrap_or_else(Instant::now)), if silent.is_some() => {
                // Heartbeats stopped: is the consumer still there?
                if let Some(e) = super::consumer_gone(&conn, &stream, &durable).await {
                    inbox.fail(e);
                    break;
                }
                last_seen = Instant::now();
            }
            _ = inbox.taken(), if flow_control.waiting() => {}
        }
    }
    let _ = sub.unsubscribe().await;
    while let Some(Some(m)) = sub.next().now_or_never() {
        if control(&m) == Control::Data {
            leftovers.push(InboundMessage::from(m));
        }
    }
    leftovers
}
