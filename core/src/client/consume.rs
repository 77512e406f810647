//! Inbound messages: a bounded buffer filled by a tokio task and emptied by
//! the caller without a runtime round trip, the durable pull-consumer pump
//! that keeps it full across reconnects, and the acker.
//!
//! The buffer (`Inbox`) is the boundary trick: Python takes whatever is
//! already buffered with a plain lock (no task, no wakeup), and only waits on
//! the runtime when the buffer is empty. Its capacity bounds memory: the pump
//! stops pulling while the buffer is full.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::header::HeaderMap;
use async_nats::Subject;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::client::jsapi;
use crate::error::{Error, ErrorKind, Result};

/// A message as it came off the wire.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub subject: Subject,
    pub reply: Option<Subject>,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

impl From<async_nats::Message> for InboundMessage {
    fn from(m: async_nats::Message) -> Self {
        InboundMessage {
            subject: m.subject,
            reply: m.reply,
            headers: m.headers,
            payload: m.payload,
        }
    }
}

/// What a JetStream delivery's reply subject says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub stream: Option<String>,
    pub consumer: Option<String>,
    pub delivered: u64,
    pub seq: u64,
    pub consumer_seq: u64,
    pub timestamp_ns: i64,
    pub pending: u64,
}

/// Parse `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`
/// or the newer form with domain and account hash before the stream.
pub fn parse_delivery(reply: &str) -> Option<Delivery> {
    let t: Vec<&str> = reply.split('.').collect();
    if t.len() < 9 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    let at = match t.len() {
        9 => 2,
        n if n >= 11 => 4,
        _ => return None,
    };
    Some(Delivery {
        stream: Some(t[at].to_string()),
        consumer: Some(t[at + 1].to_string()),
        delivered: t[at + 2].parse().ok()?,
        seq: t[at + 3].parse().ok()?,
        consumer_seq: t[at + 4].parse().ok()?,
        timestamp_ns: t[at + 5].parse().ok()?,
        pending: t[at + 6].parse().ok()?,
    })
}

struct InboxState {
    buf: VecDeque<InboundMessage>,
    closed: bool,
    error: Option<Error>,
}

/// A bounded, thread-safe message buffer between a producer task and a
/// consumer that may sit outside the runtime.
pub struct Inbox {
    state: Mutex<InboxState>,
    data: Notify,
    space: Notify,
    /// Most messages held at once.
    pub capacity: usize,
}

impl Inbox {
    pub fn new(capacity: usize) -> Arc<Inbox> {
        Arc::new(Inbox {
            state: Mutex::new(InboxState {
                buf: VecDeque::with_capacity(capacity.min(4096)),
                closed: false,
                error: None,
            }),
            data: Notify::new(),
            space: Notify::new(),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // A panic while holding this lock cannot leave the deque invalid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take up to `max` buffered messages without waiting. An empty vector
    /// means nothing is buffered yet; an error means the inbox is finished
    /// (closed, or failed for good) and holds nothing more.
    pub fn try_take(&self, max: usize) -> Result<Vec<InboundMessage>> {
        let mut st = self.lock();
        if st.buf.is_empty() {
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            if st.closed {
                return Err(Error::new(ErrorKind::Closed, "the consumer is closed"));
            }
            return Ok(Vec::new());
        }
        let n = max.max(1).min(st.buf.len());
        let out: Vec<_> = st.buf.drain(..n).collect();
        drop(st);
        self.space.notify_one();
        Ok(out)
    }

    /// Wait until at least one message is buffered and take up to `max`.
    /// Returns an empty vector when `timeout` passes first.
    pub async fn take(&self, max: usize, timeout: Option<Duration>) -> Result<Vec<InboundMessage>> {
        self.take_filled(1, max, timeout).await
    }

    /// Wait until `min` messages are buffered (or `timeout` passes, or the
    /// inbox ends), then take up to `max`: one wakeup fills a whole batch.
    pub async fn take_filled(
        &self,
        min: usize,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<InboundMessage>> {
        let min = min.clamp(1, self.capacity).min(max.max(1));
        let wait = async {
            loop {
                let notified = self.data.notified();
                let short = {
                    let st = self.lock();
                    st.buf.len() < min && !st.closed && st.error.is_none()
                };
                if short {
                    notified.await;
                    continue;
                }
                let got = self.try_take(max)?;
                if !got.is_empty() {
                    return Ok(got);
                }
                notified.await;
            }
        };
        match timeout {
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => r,
                // Time is up: whatever is there (possibly nothing).
                Err(_) => match self.try_take(max) {
                    Ok(got) => Ok(got),
                    Err(e) => Err(e),
                },
            },
            None => wait.await,
        }
    }

    /// Add a message, waiting while the buffer is full. When the inbox is
    /// closed the message comes back (it was never handed out) so the
    /// caller can release it.
    pub async fn push(&self, msg: InboundMessage) -> Result<(), InboundMessage> {
        loop {
            let space = self.space.notified();
            {
                let mut st = self.lock();
                if st.closed {
                    return Err(msg);
                }
                if st.buf.len() < self.capacity {
                    st.buf.push_back(msg);
                    drop(st);
                    self.data.notify_one();
                    return Ok(());
                }
            }
            space.await;
        }
    }

    /// Return messages that were taken but never handed to the user (for
    /// example, the awaiting task was cancelled) to the front of the buffer.
    pub fn put_back(&self, msgs: Vec<InboundMessage>) {
        if msgs.is_empty() {
            return;
        }
        let mut st = self.lock();
        for m in msgs.into_iter().rev() {
            st.buf.push_front(m);
        }
        drop(st);
        self.data.notify_one();
    }

    /// Finish the inbox. With an error, takers see it. Returns the messages
    /// still buffered so the caller can release them.
    pub fn close(&self, error: Option<Error>) -> Vec<InboundMessage> {
        let mut st = self.lock();
        st.closed = true;
        if st.error.is_none() {
            st.error = error;
        }
        let rest = st.buf.drain(..).collect();
        drop(st);
        self.data.notify_waiters();
        self.data.notify_one();
        self.space.notify_waiters();
        rest
    }

    /// Fail the inbox without dropping what is buffered.
    pub fn fail(&self, error: Error) {
        let mut st = self.lock();
        st.error.get_or_insert(error);
        drop(st);
        self.data.notify_waiters();
        self.data.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn len(&self) -> usize {
        self.lock().buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a message is settled.
#[derive(Debug, Clone, PartialEq)]
pub enum AckKind {
    Ack,
    Nak(Option<Duration>),
    Term(Option<String>),
    Progress,
}

impl AckKind {
    /// The body the server reads on the message's reply subject.
    pub fn body(&self) -> Bytes {
        match self {
            AckKind::Ack => Bytes::from_static(b"+ACK"),
            AckKind::Nak(None) => Bytes::from_static(b"-NAK"),
            AckKind::Nak(Some(d)) => Bytes::from(format!("-NAK {{\"delay\": {}}}", d.as_nanos())),
            AckKind::Term(None) => Bytes::from_static(b"+TERM"),
            AckKind::Term(Some(reason)) => Bytes::from(format!("+TERM {reason}")),
            AckKind::Progress => Bytes::from_static(b"+WPI"),
        }
    }
}

enum AckCmd {
    Send(Subject, Bytes),
    Flush(oneshot::Sender<()>),
}

/// Sends acks in order from one task, so settling a message costs the caller
/// a channel send instead of a round trip.
#[derive(Clone)]
pub struct Acker {
    tx: mpsc::UnboundedSender<AckCmd>,
}

impl Acker {
    /// Start the acker task on the current runtime.
    pub fn start(client: async_nats::Client) -> Acker {
        let (tx, mut rx) = mpsc::unbounded_channel::<AckCmd>();
        tokio::spawn(async move {
            let mut cmds = Vec::with_capacity(256);
            while rx.recv_many(&mut cmds, 256).await > 0 {
                for cmd in cmds.drain(..) {
                    match cmd {
                        AckCmd::Send(subject, body) => {
                            // Only fails once the client is closed; the
                            // server then redelivers after ack_wait.
                            let _ = client.publish(subject, body).await;
                        }
                        AckCmd::Flush(done) => {
                            let _ = client.flush().await;
                            let _ = done.send(());
                        }
                    }
                }
            }
        });
        Acker { tx }
    }

    /// Queue a settlement for a message's reply subject.
    pub fn send(&self, reply: Subject, kind: &AckKind) -> Result<()> {
        self.tx
            .send(AckCmd::Send(reply, kind.body()))
            .map_err(|_| Error::closed())
    }

    /// Queue a plain publish (used for replies of `serve`).
    pub fn send_raw(&self, subject: Subject, body: Bytes) -> Result<()> {
        self.tx
            .send(AckCmd::Send(subject, body))
            .map_err(|_| Error::closed())
    }

    /// Wait until everything queued so far has been written to the socket.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(AckCmd::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Settle a message and wait for the server to confirm it (double ack).
pub async fn ack_sync(
    client: &async_nats::Client,
    reply: Subject,
    timeout: Duration,
) -> Result<()> {
    let req = async_nats::client::Request::new()
        .payload(AckKind::Ack.body())
        .timeout(Some(timeout));
    client
        .send_request(reply, req)
        .await
        .map(|_| ())
        .map_err(|e| jsapi::request_error("ack_sync", e))
}

/// How many pull batches the buffer holds. A reader that takes a whole
/// batch at once (`batches()`) must find the next one already arriving.
pub const PREFETCH_BATCHES: usize = 2;

/// Options of a durable pull consumption.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Most messages per pull request. The buffer holds
    /// [`PREFETCH_BATCHES`] batches, so a reader taking a whole batch at
    /// once does not drain it to empty while the next pull is on its way.
    pub batch: usize,
    pub heartbeat: Duration,
    pub expires: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            batch: 500,
            heartbeat: Duration::from_secs(5),
            expires: Duration::from_secs(30),
        }
    }
}

/// A running durable pull consumption: a task keeps the inbox full.
pub struct PullConsumer {
    pub inbox: Arc<Inbox>,
    pub stream: String,
    pub durable: String,
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<Vec<InboundMessage>>>>,
}

impl PullConsumer {
    /// Check that the stream and consumer exist (the errors name them), then
    /// start pulling.
    pub async fn start(
        client: async_nats::Client,
        reconnects: crate::client::Reconnects,
        stream: &str,
        durable: &str,
        opts: PullOptions,
    ) -> Result<PullConsumer> {
        jsapi::check_name(stream, "stream")?;
        jsapi::check_name(durable, "consumer")?;
        let info = jsapi::consumer_info(&client, stream, durable).await?;
        let config = info.get("config").cloned().unwrap_or_default();
        if config
            .get("deliver_subject")
            .and_then(|v| v.as_str())
            .is_some_and(|s| !s.is_empty())
        {
            return Err(Error::invalid(format!(
                "consumer {durable:?} on stream {stream:?} is a push consumer (it has a deliver_subject); consume() needs a pull consumer"
            )));
        }
        let inbox = Inbox::new(opts.batch.max(1) * PREFETCH_BATCHES);
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(pump(
            client,
            reconnects,
            stream.to_string(),
            durable.to_string(),
            opts,
            inbox.clone(),
            stop.clone(),
        ));
        Ok(PullConsumer {
            inbox,
            stream: stream.to_string(),
            durable: durable.to_string(),
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Stop pulling and unsubscribe. Returns every message that was received
    /// but never handed out (buffered, or still in the subscription), so the
    /// caller can release them (nak) for prompt redelivery.
    pub async fn stop(&self) -> Vec<InboundMessage> {
        let mut rest = self.inbox.close(None);
        self.stop.notify_one();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            if let Ok(more) = task.await {
                rest.extend(more);
            }
        }
        rest.extend(self.inbox.close(None));
        rest
    }
}

impl Drop for PullConsumer {
    fn drop(&mut self) {
        // Not stopped by `stop()`: end the task; the server redelivers what
        // it held after ack_wait.
        self.inbox.close(None);
        self.stop.notify_one();
    }
}

/// Keep the inbox full, and survive reconnects and server restarts.
///
/// One inbox subscription lives as long as the consumption (async-nats
/// re-subscribes it after a reconnect), so a delivery answering any pull
/// request we ever sent still reaches us. Pull requests ask for no more than
/// the free buffer space, so memory is bounded by the buffer. After a
/// reconnect, or when heartbeats stop, the server may have forgotten our
/// requests: we pull again at once instead of waiting for them to expire.
async fn pump(
    client: async_nats::Client,
    mut reconnects: crate::client::Reconnects,
    stream: String,
    durable: String,
    opts: PullOptions,
    inbox: Arc<Inbox>,
    stop: Arc<Notify>,
) -> Vec<InboundMessage> {
    let deliver_to = client.new_inbox();
    let mut sub = match client.subscribe(deliver_to.clone()).await {
        Ok(s) => s,
        Err(e) => {
            inbox.fail(Error::new(
                ErrorKind::Connect,
                format!("cannot subscribe: {e}"),
            ));
            return Vec::new();
        }
    };
    let next_subject = format!("{}.CONSUMER.MSG.NEXT.{stream}.{durable}", jsapi::API_PREFIX);
    let capacity = inbox.capacity;
    let low_water = (opts.batch / 2).max(1);
    // Messages asked for and not yet received or released by the server.
    let mut pending: usize = 0;
    let mut last_activity = tokio::time::Instant::now();
    let stale_after = opts.heartbeat * 2 + Duration::from_millis(500);
    let mut backoff = Duration::from_millis(100);
    let mut leftovers = Vec::new();
    reconnects.borrow_and_update();
    'pull: loop {
        if inbox.is_closed() {
            break 'pull;
        }
        let room = capacity.saturating_sub(inbox.len() + pending);
        if room >= low_water || (pending == 0 && room > 0) {
            let ask = room.min(opts.batch.max(1));
            let request = serde_json::json!({
                "batch": ask,
                "expires": u64::try_from(opts.expires.as_nanos()).unwrap_or(u64::MAX),
                "idle_heartbeat": u64::try_from(opts.heartbeat.as_nanos()).unwrap_or(u64::MAX),
            });
            let body = Bytes::from(request.to_string());
            if client
                .publish_with_reply(next_subject.clone(), deliver_to.clone(), body)
                .await
                .is_ok()
            {
                pending += ask;
                last_activity = tokio::time::Instant::now();
            }
        }
        let heartbeat_deadline = last_activity + stale_after;
        tokio::select! {
            biased;
            _ = stop.notified() => break 'pull,
            msg = sub.next() => {
                let Some(msg) = msg else {
                    inbox.fail(Error::new(ErrorKind::Closed, "the connection is closed"));
                    return leftovers;
                };
                last_activity = tokio::time::Instant::now();
                match msg.status {
                    None => {
                        pending = pending.saturating_sub(1);
                        backoff = Duration::from_millis(100);
                        if let Err(m) = inbox.push(InboundMessage::from(msg)).await {
                            leftovers.push(m);
                            break 'pull;
                        }
                    }
                    Some(status) => match status.as_u16() {
                        // Idle heartbeat: the request is alive.
                        100 => {}
                        // A request ended (expired / no messages): what it
                        // still owed will not come.
                        404 | 408 => {
                            let left = msg
                                .headers
                                .as_ref()
                                .and_then(|h| h.get("Nats-Pending-Messages"))
                                .and_then(|v| v.as_str().parse::<usize>().ok());
                            pending = match left {
                                Some(n) => pending.saturating_sub(n),
                                None => 0,
                            };
                        }
                        // 409: consumer deleted, leadership change, limits...
                        _ => {
                            pending = 0;
                            match jsapi::consumer_info(&client, &stream, &durable).await {
                                Err(e) if matches!(e.kind, ErrorKind::StreamNotFound | ErrorKind::ConsumerNotFound) => {
                                    inbox.fail(e);
                                    break 'pull;
                                }
                                _ => {
                                    tokio::time::sleep(backoff).await;
                                    backoff = (backoff * 2).min(Duration::from_secs(2));
                                }
                            }
                        }
                    },
                }
            }
            changed = reconnects.changed() => {
                if changed.is_err() {
                    break 'pull;
                }
                // The server may have forgotten our requests.
                pending = 0;
            }
            _ = tokio::time::sleep_until(heartbeat_deadline), if pending > 0 => {
                // No message and no heartbeat: our requests are gone.
                pending = 0;
            }
            _ = inbox.space.notified(), if pending == 0 => {
                // The buffer was full and the user took some: pull again.
            }
        }
    }
    // Unsubscribing closes the channel; what it already holds still comes
    // out, and the server stops delivering to requests nobody listens to.
    let _ = sub.unsubscribe().await;
    while let Some(m) = sub.next().await {
        if m.status.is_none() {
            leftovers.push(InboundMessage::from(m));
        }
    }
    leftovers
}

/// A core subscription feeding an inbox (used by `serve`).
pub struct SubscriptionPump {
    pub inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

impl SubscriptionPump {
    pub async fn start(
        client: &async_nats::Client,
        subject: &str,
        queue: Option<&str>,
        capacity: usize,
    ) -> Result<SubscriptionPump> {
        let sub = match queue {
            Some(q) => {
                client
                    .queue_subscribe(subject.to_string(), q.to_string())
                    .await
            }
            None => client.subscribe(subject.to_string()).await,
        }
        .map_err(|e| Error::invalid(format!("cannot subscribe to {subject:?}: {e}")))?;
        let inbox = Inbox::new(capacity);
        let target = inbox.clone();
        let task = tokio::spawn(async move {
            let mut sub = sub;
            while let Some(m) = sub.next().await {
                if target.push(InboundMessage::from(m)).await.is_err() {
                    break;
                }
            }
            let _ = sub.unsubscribe().await;
            target.close(None);
        });
        Ok(SubscriptionPump { inbox, task })
    }

    pub fn stop(&self) {
        self.task.abort();
        self.inbox.close(None);
    }
}

impl Drop for SubscriptionPump {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u8) -> InboundMessage {
        InboundMessage {
            subject: Subject::from("s"),
            reply: None,
            headers: None,
            payload: Bytes::from(vec![i]),
        }
    }

    #[tokio::test]
    async fn inbox_take_put_back_and_close() {
        let inbox = Inbox::new(4);
        assert!(inbox.try_take(10).unwrap().is_empty());
        for i in 0..3 {
            assert!(inbox.push(msg(i)).await.is_ok());
        }
        let got = inbox.try_take(2).unwrap();
        assert_eq!(got.len(), 2);
        inbox.put_back(got);
        let all = inbox.take(10, None).await.unwrap();
        assert_eq!(
            all.iter().map(|m| m.payload[0]).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(inbox
            .take(1, Some(Duration::from_millis(20)))
            .await
            .unwrap()
            .is_empty());
        inbox.push(msg(9)).await.unwrap();
        let rest = inbox.close(None);
        assert_eq!(rest.len(), 1);
        assert_eq!(inbox.try_take(1).unwrap_err().kind, ErrorKind::Closed);
        let back = inbox.push(msg(1)).await.unwrap_err();
        assert_eq!(back.payload[0], 1);
    }

    #[tokio::test]
    async fn inbox_is_bounded_and_wakes_takers() {
        let inbox = Inbox::new(2);
        let producer = {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    assert!(inbox.push(msg(i)).await.is_ok());
                }
            })
        };
        let mut seen = Vec::new();
        while seen.len() < 10 {
            assert!(inbox.len() <= 2);
            for m in inbox.take(3, None).await.unwrap() {
                seen.push(m.payload[0]);
            }
        }
        producer.await.unwrap();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn take_filled_waits_for_a_whole_batch_or_the_timeout() {
        let inbox = Inbox::new(8);
        let producer = {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    inbox.push(msg(i)).await.unwrap();
                }
            })
        };
        let got = inbox
            .take_filled(5, 5, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(got.len(), 5, "one wakeup for the whole batch");
        producer.await.unwrap();
        inbox.push(msg(9)).await.unwrap();
        let partial = inbox
            .take_filled(4, 4, Some(Duration::from_millis(30)))
            .await
            .unwrap();
        assert_eq!(partial.len(), 1, "the timeout hands over what is there");
    }

    #[tokio::test]
    async fn failure_is_seen_after_the_buffer_drains() {
        let inbox = Inbox::new(4);
        inbox.push(msg(1)).await.unwrap();
        inbox.fail(Error::new(ErrorKind::ConsumerNotFound, "gone"));
        assert_eq!(inbox.try_take(5).unwrap().len(), 1);
        assert_eq!(
            inbox.try_take(5).unwrap_err().kind,
            ErrorKind::ConsumerNotFound
        );
    }

    #[test]
    fn parses_both_reply_forms() {
        let d = parse_delivery("$JS.ACK.ORDERS.worker.2.17.5.1700000000000000000.3").unwrap();
        assert_eq!(
            (d.delivered, d.seq, d.consumer_seq, d.pending),
            (2, 17, 5, 3)
        );
        assert_eq!(d.stream.as_deref(), Some("ORDERS"));
        let d = parse_delivery("$JS.ACK.hub.ACCHASH.ORDERS.worker.1.9.9.1700000000000000000.0.tok")
            .unwrap();
        assert_eq!(
            (d.delivered, d.seq, d.consumer.as_deref()),
            (1, 9, Some("worker"))
        );
        assert!(parse_delivery("_INBOX.abc").is_none());
        assert!(parse_delivery("$JS.ACK.S.c.x.1.1.1.1").is_none());
    }

    #[test]
    fn ack_bodies() {
        assert_eq!(&AckKind::Ack.body()[..], b"+ACK");
        assert_eq!(
            &AckKind::Nak(Some(Duration::from_millis(1500))).body()[..],
            b"-NAK {\"delay\": 1500000000}"
        );
        assert_eq!(&AckKind::Term(Some("bad".into())).body()[..], b"+TERM bad");
    }
}
