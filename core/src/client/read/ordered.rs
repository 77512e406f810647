//! An ordered replay of a stream as a reader: an ephemeral push consumer
//! with no acks that delivers every message from a start point exactly once
//! and in stream order.
//!
//! The server keeps nothing for us (memory storage, one replica, deleted
//! when we stop or when it has had no interest for a while), so when
//! anything may have been lost, the replay makes a new consumer that starts
//! after the last message it delivered:
//!
//! * a gap in the consumer sequence (a message went missing on the way), or
//!   a heartbeat saying the server sent more than arrived;
//! * heartbeats stopping for three intervals (the consumer or the server is
//!   gone);
//! * a reconnect (the server may have restarted and lost the consumer);
//! * any other status the server sends (409 consumer deleted...).
//!
//! Stream sequences only go up: a message at or below the last one
//! delivered is dropped, so a new consumer never repeats one. Without
//! `follow`, the replay ends after the message that was last in the stream
//! when it started (or sooner, when the server says nothing more is
//! pending for the filter); with it, it goes on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{control, Control, FlowControl, Reader};
use crate::client::consume::{InboundMessage, Inbox};
use crate::client::Connected;
use crate::error::{Error, ErrorKind, Result};

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The first message in the stream.
    First,
    /// This stream sequence (or the first one after it that exists).
    Seq(u64),
    /// The first message stored at or after this RFC 3339 time.
    Time(String),
    /// The last message of every subject.
    LastPerSubject,
}

/// What a replay reads.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub start: Start,
    /// Only messages on these subjects (wildcards allowed); empty: all.
    pub subjects: Vec<String>,
    /// Go on after the messages that were in the stream at the start.
    pub follow: bool,
    /// The idle heartbeat asked of the server; three missed ones recreate
    /// the consumer.
    pub heartbeat: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            start: Start::First,
            subjects: Vec::new(),
            follow: false,
            heartbeat: Duration::from_secs(2),
        }
    }
}

/// How long the server keeps a replay's consumer once nobody listens.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);

/// A running replay.
pub struct Replay {
    pub inbox: Arc<Inbox>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    stopped: tokio::sync::OnceCell<()>,
}

/// The consumer a replay reads from right now.
struct Current {
    sub: async_nats::Subscriber,
    name: String,
}

struct Cursor {
    conn: Connected,
    stream: String,
    opts: ReplayOptions,
    seqs: Sequencer,
}

/// The sequence bookkeeping of a replay (no I/O): what to do with each
/// delivery so that nothing is skipped or repeated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequencer {
    /// The last stream sequence delivered (0: none yet).
    pub last_seq: u64,
    /// The last consumer sequence of the current consumer.
    pub last_cseq: u64,
    /// Without `follow`: the stream's last sequence at the start.
    pub end: Option<u64>,
}

/// What to do with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it over; `last`: it ends the replay.
    Deliver { last: bool },
    /// Already delivered (a new consumer started before it): drop it.
    Skip,
    /// A delivery went missing before it: recreate after `last_seq`.
    Gap,
    /// Past the end (the last message at the start was deleted or is not
    /// in the filter): the replay is over, without it.
    Past,
}

impl Sequencer {
    /// A delivery with stream sequence `seq`, consumer sequence `cseq`, and
    /// `pending` messages after it for this consumer.
    pub fn on_data(&mut self, seq: u64, cseq: u64, pending: u64) -> Verdict {
        if cseq != self.last_cseq + 1 {
            return Verdict::Gap;
        }
        self.last_cseq = cseq;
        if seq <= self.last_seq {
            return Verdict::Skip;
        }
        if self.end.is_some_and(|end| seq > end) {
            return Verdict::Past;
        }
        self.last_seq = seq;
        let last = self.end.is_some_and(|end| seq >= end || pending == 0);
        Verdict::Deliver { last }
    }

    /// A heartbeat says the server sent up to consumer sequence
    /// `last_consumer`: true when some of it never arrived.
    pub fn missed(&self, last_consumer: Option<u64>) -> bool {
        last_consumer.is_some_and(|n| n > self.last_cseq)
    }

    /// A new consumer starts counting from 1.
    pub fn new_consumer(&mut self) {
        self.last_cseq = 0;
    }
}

impl Replay {
    /// Check the stream, make the first consumer (so a bad start or filter
    /// fails here, with the server's words) and start delivering.
    pub async fn start(conn: &Connected, stream: &str, opts: ReplayOptions) -> Result<Arc<Replay>> {
        let info = conn.js.stream_info(stream).await?;
        let last = info
            .pointer("/state/last_seq")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut cursor = Cursor {
            conn: conn.clone(),
            stream: stream.to_string(),
            seqs: Sequencer {
                end: (!opts.follow).then_some(last),
                ..Sequencer::default()
            },
            opts,
        };
        let inbox = Inbox::new(usize::MAX);
        let (stop, stop_rx) = watch::channel(false);
        let (current, pending) = cursor.create().await?;
        let task = if cursor.seqs.end.is_some() && (last == 0 || pending == 0) {
            // Nothing to replay.
            cursor.remove(current).await;
            inbox.finish();
            None
        } else {
            Some(tokio::spawn(
                std::panic::AssertUnwindSafe(run(cursor, current, inbox.clone(), stop_rx))
                    .catch_unwind()
                    .map({
                        let inbox = inbox.clone();
                        move |r| {
                            if let Err(panic) = r {
                                inbox.fail(Error::internal("the replay's pump", &*panic));
                            }
                        }
                    }),
            ))
        };
        Ok(Arc::new(Replay {
            inbox,
            stop,
            task: Mutex::new(task),
            stopped: tokio::sync::OnceCell::new(),
        }))
    }

    /// Stop delivering and delete the consumer. Idempotent.
    pub async fn stop(&self) {
        self.stopped
            .get_or_init(|| async {
                let _ = self.stop.send(true);
                let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(task) = task {
                    let _ = task.await;
                }
                self.inbox.close(None);
            })
            .await;
    }
}

impl Reader for Replay {
    fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(Replay::stop(self))
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.inbox.close(None);
    }
}

/// The stream and consumer sequences and the pending count of a delivery's
/// reply subject, without allocating (this runs for every message).
fn sequences(reply: &str) -> Option<(u64, u64, u64)> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens = [""; 12];
    let mut n = 0;
    for t in rest.split('.') {
        if n == tokens.len() {
            return None;
        }
        tokens[n] = t;
        n += 1;
    }
    // <stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or with
    // <domain>.<account hash> before and a token after.
    let at = match n {
        7 => 0,
        9 | 10 => 2,
        _ => return None,
    };
    let num = |i: usize| tokens[at + i].parse::<u64>().ok();
    Some((num(3)?, num(4)?, num(6)?))
}

impl Cursor {
    fn config(&self, deliver_subject: &str) -> Value {
        let opts = &self.opts;
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let mut config = Map::new();
        config.insert("deliver_subject".into(), json!(deliver_subject));
        config.insert("ack_policy".into(), json!("none"));
        config.insert("flow_control".into(), json!(true));
        config.insert("idle_heartbeat".into(), json!(ns(opts.heartbeat)));
        config.insert("mem_storage".into(), json!(true));
        config.insert("num_replicas".into(), json!(1));
        config.insert("replay_policy".into(), json!("instant"));
        config.insert("inactive_threshold".into(), json!(ns(INACTIVE_THRESHOLD)));
        let resume = (self.seqs.last_seq > 0).then_some(self.seqs.last_seq);
        match (&opts.start, resume) {
            // Sequences only go up: what is at or below the last delivered
            // one is dropped as it comes.
            (Start::LastPerSubject, _) => {
                config.insert("deliver_policy".into(), json!("last_per_subject"));
            }
            (_, Some(after)) => {
                config.insert("deliver_policy".into(), json!("by_start_sequence"));
                config.insert("opt_start_seq".into(), json!(after + 1));
            }
            (Start::First, None) => {
                config.insert("deliver_policy".into(), json!("all"));
            }
            (Start::Seq(seq), None) => {
                config.insert("deliver_policy".into(), json!("by_start_sequence"));
                config.insert("opt_start_seq".into(), json!((*seq).max(1)));
            }
            (Start::Time(t), None) => {
                config.insert("deliver_policy".into(), json!("by_start_time"));
                config.insert("opt_start_time".into(), json!(t));
            }
        }
        match opts.subjects.as_slice() {
            // The server wants a filter with last_per_subject; `>` is every
            // subject of the stream.
            [] if opts.start == Start::LastPerSubject => {
                config.insert("filter_subject".into(), json!(">"));
            }
            [] => {}
            [one] => {
                config.insert("filter_subject".into(), json!(one));
            }
            many => {
                config.insert("filter_subjects".into(), json!(many));
            }
        }
        Value::Object(config)
    }

    /// Subscribe to a new inbox and make a consumer delivering there.
    /// Returns it and the number of messages it has pending.
    async fn create(&mut self) -> Result<(Current, u64)> {
        let client = &self.conn.client;
        let deliver = client.new_inbox();
        let sub = client
            .subscribe(deliver.clone())
            .await
            .map_err(|e| Error::new(ErrorKind::Connect, format!("cannot subscribe: {e}")))?;
        let body = json!({"stream_name": self.stream, "config": self.config(&deliver)});
        let answer: Value = self
            .conn
            .js
            .request(&format!("CONSUMER.CREATE.{}", self.stream), &body)
            .await
            .map_err(|mut e| {
                if e.kind == ErrorKind::StreamNotFound {
                    e.message = format!("stream {:?} not found (replaying it)", self.stream);
                } else {
                    e.message = format!("cannot replay stream {:?}: {}", self.stream, e.message);
                }
                e
            })?;
        let name = answer
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let pending = answer
            .get("num_pending")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        self.seqs.new_consumer();
        Ok((Current { sub, name }, pending))
    }

    /// Delete a consumer we are done with (best effort: the server drops it
    /// after its inactive threshold anyway).
    async fn remove(&self, current: Current) {
        let Current { mut sub, name } = current;
        let _ = sub.unsubscribe().await;
        if !name.is_empty() {
            let subject = format!("CONSUMER.DELETE.{}.{name}", self.stream);
            let _ = self
                .conn
                .js
                .request_timeout::<Value>(&subject, &Value::Null, Duration::from_secs(1))
                .await;
        }
    }

    /// Replace the consumer with one starting after the last delivered
    /// message, retrying (while the server comes back) until it works, the
    /// stream is gone, or we are stopped. `Ok(None)`: stopped.
    async fn recreate(
        &mut self,
        old: Current,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<(Current, u64)>> {
        self.remove(old).await;
        let mut backoff = Duration::from_millis(50);
        loop {
            if *stop.borrow() {
                return Ok(None);
            }
            match self.create().await {
                Ok(made) => return Ok(Some(made)),
                Err(e) if matches!(e.kind, ErrorKind::StreamNotFound | ErrorKind::Auth) => {
                    return Err(e)
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// What the loop does after a message.
enum Next {
    Go,
    Recreate,
    Finish,
}

async fn run(
    mut cursor: Cursor,
    mut current: Current,
    inbox: Arc<Inbox>,
    mut stop: watch::Receiver<bool>,
) {
    let client = cursor.conn.client.clone();
    let mut reconnects = cursor.conn.reconnects.clone();
    reconnects.borrow_and_update();
    let heartbeat = cursor.opts.heartbeat;
    let mut flow_control = FlowControl::default();
    let mut last_seen = Instant::now();
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        flow_control.answer_if_room(&client, &inbox).await;
        let next = tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
                Next::Go
            }
            msg = current.sub.next() => match msg {
                None => {
                    inbox.fail(Error::new(ErrorKind::Closed, "the connection is closed"));
                    return;
                }
                Some(msg) => {
                    last_seen = Instant::now();
                    let mut burst = Vec::new();
                    let mut next = on_message(&mut cursor, msg, &mut burst, &mut flow_control, &client).await;
                    // Take what is already here in one go.
                    while matches!(next, Next::Go) {
                        match current.sub.next().now_or_never() {
                            Some(Some(m)) => {
                                next = on_message(&mut cursor, m, &mut burst, &mut flow_control, &client).await;
                            }
                            _ => break,
                        }
                    }
                    inbox.push_all(burst);
                    next
                }
            },
            changed = reconnects.changed() => {
                if changed.is_err() {
                    break;
                }
                Next::Recreate
            }
            _ = tokio::time::sleep_until(last_seen + heartbeat * 3) => Next::Recreate,
            _ = inbox.taken(), if flow_control.waiting() => Next::Go,
        };
        match next {
            Next::Go => {}
            Next::Finish => {
                cursor.remove(current).await;
                inbox.finish();
                return;
            }
            Next::Recreate => {
                flow_control.reset();
                match cursor.recreate(current, &mut stop).await {
                    Ok(Some((made, pending))) => {
                        current = made;
                        last_seen = Instant::now();
                        if cursor.seqs.end.is_some() && pending == 0 {
                            cursor.remove(current).await;
                            inbox.finish();
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        inbox.fail(e);
                        return;
                    }
                }
            }
        }
    }
    cursor.remove(current).await;
}

async fn on_message(
    cursor: &mut Cursor,
    msg: async_nats::Message,
    burst: &mut Vec<InboundMessage>,
    flow_control: &mut FlowControl,
    client: &async_nats::Client,
) -> Next {
    match control(&msg) {
        Control::Data => {
            let Some((seq, cseq, pending)) = msg.reply.as_deref().and_then(sequences) else {
                return Next::Go;
            };
            match cursor.seqs.on_data(seq, cseq, pending) {
                Verdict::Skip => Next::Go,
                Verdict::Gap => Next::Recreate,
                Verdict::Past => Next::Finish,
                Verdict::Deliver { last } => {
                    burst.push(InboundMessage::from(msg));
                    if last {
                        Next::Finish
                    } else {
                        Next::Go
                    }
                }
            }
        }
        Control::FlowControl(reply) => {
            flow_control.requested(reply);
            Next::Go
        }
        Control::Heartbeat {
            last_consumer,
            stalled,
            ..
        } => {
            if let Some(reply) = stalled {
                let _ = client.publish(reply, Default::default()).await;
            }
            if cursor.seqs.missed(last_consumer) {
                Next::Recreate
            } else {
                Next::Go
            }
        }
        Control::Status(..) => Next::Recreate,
    }
}

#[cfg(test)]
mod tests {
    use super::{sequences, Sequencer, Verdict};

    #[test]
    fn in_order_deliveries_and_the_end() {
        let mut s = Sequencer {
            end: Some(3),
            ..Sequencer::default()
        };
        assert_eq!(s.on_data(1, 1, 2), Verdict::Deliver { last: false });
        assert_eq!(s.on_data(2, 2, 1), Verdict::Deliver { last: false });
        assert_eq!(s.on_data(3, 3, 5), Verdict::Deliver { last: true });
        // Nothing pending for the filter: over, even before the end.
        let mut f = Sequencer {
            end: Some(10),
            ..Sequencer::default()
        };
        assert_eq!(f.on_data(4, 1, 0), Verdict::Deliver { last: true });
        // The end itself is gone: the next one past it ends the replay.
        let mut g = Sequencer {
            end: Some(10),
            ..Sequencer::default()
        };
        assert_eq!(g.on_data(9, 1, 3), Verdict::Deliver { last: false });
        assert_eq!(g.on_data(11, 2, 2), Verdict::Past);
        // Following: never ends.
        let mut h = Sequencer::default();
        assert_eq!(h.on_data(1, 1, 0), Verdict::Deliver { last: false });
    }

    #[test]
    fn a_gap_recreates_and_the_new_consumer_repeats_nothing() {
        let mut s = Sequencer::default();
        assert_eq!(s.on_data(1, 1, 9), Verdict::Deliver { last: false });
        assert_eq!(s.on_data(2, 2, 8), Verdict::Deliver { last: false });
        // Consumer sequence 3 never arrived.
        assert_eq!(s.on_data(4, 4, 6), Verdict::Gap);
        assert_eq!(s.last_seq, 2, "recreate after the last delivered");
        s.new_consumer();
        // A last-per-subject consumer starts over: what was delivered is dropped.
        assert_eq!(s.on_data(1, 1, 9), Verdict::Skip);
        assert_eq!(s.on_data(2, 2, 9), Verdict::Skip);
        assert_eq!(s.on_data(3, 3, 7), Verdict::Deliver { last: false });
        // A heartbeat telling of more than arrived.
        assert!(s.missed(Some(4)));
        assert!(!s.missed(Some(3)));
        assert!(!s.missed(None));
    }

    #[test]
    fn sequences_from_both_reply_forms() {
        assert_eq!(
            sequences("$JS.ACK.ORDERS.c1.1.17.5.1700000000000000000.3"),
            Some((17, 5, 3))
        );
        assert_eq!(
            sequences("$JS.ACK.hub.ACC.ORDERS.c1.1.9.2.1700000000000000000.0.tok"),
            Some((9, 2, 0))
        );
        assert_eq!(sequences("_INBOX.x"), None);
        assert_eq!(sequences("$JS.ACK.S.c.1.x.1.1.1"), None);
    }
}
