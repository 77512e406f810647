//! Inbound messages: a buffer filled by a tokio task and emptied by the
//! caller without a runtime round trip, the core subscription that feeds
//! one, and the acker. The durable pull consumer is in `pull.rs`.
//!
//! The buffer (`Inbox`) is the boundary trick: Python takes whatever is
//! already buffered with a plain lock (no task, no wakeup), and only waits on
//! the runtime when the buffer is empty. It also tells its producer how the
//! application takes messages (how many it holds, how many it waits for),
//! which is what a pull consumer sizes its requests by.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::header::HeaderMap;
use async_nats::Subject;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::client::jsapi;
use crate::error::{Error, ErrorKind, Result};

/// A message as it came off the wire.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub subject: Subject,
    pub reply: Option<Subject>,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
    /// Subject + reply + headers + payload bytes: what the server counts
    /// against a pull request's `max_bytes`.
    pub length: usize,
    /// When it came off the wire.
    pub arrived: std::time::Instant,
}

impl From<async_nats::Message> for InboundMessage {
    fn from(m: async_nats::Message) -> Self {
        InboundMessage {
            subject: m.subject,
            reply: m.reply,
            headers: m.headers,
            payload: m.payload,
            length: m.length,
            arrived: std::time::Instant::now(),
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
    /// Sum of `length` over `buf`.
    bytes: usize,
    closed: bool,
    error: Option<Error>,
    /// The reader delivered everything it was to deliver (a replay's end).
    finished: bool,
    flow: Flow,
}

/// How the application takes messages, as the producer sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    /// Messages buffered, not yet taken.
    pub buffered: usize,
    /// Their bytes.
    pub buffered_bytes: usize,
    /// The last handout: taken and, until the next take, in use.
    pub held: usize,
    pub held_bytes: usize,
    /// Messages taken in all.
    pub taken: u64,
    /// Someone waits for messages right now.
    pub waiting: bool,
    /// The most messages a waiting taker asked for by number (0: none did).
    pub demand: usize,
    /// How many times a taker found nothing buffered and had to wait.
    pub waits: u64,
    /// Messages to keep buffered or on their way for the next take
    /// (`batches(n)`: the next batch), besides what the taker holds.
    pub ahead: usize,
    /// How long the oldest message of the last handout had been buffered.
    pub waited_in_buffer: Duration,
}

/// A thread-safe message buffer between a producer task and a consumer
/// that may sit outside the runtime.
pub struct Inbox {
    state: Mutex<InboxState>,
    data: Notify,
    /// Woken when the application took messages (or started to wait) and
    /// its holdings fell to `wake_at`: the producer may ask for more.
    space: Notify,
    /// Most messages a blocking [`push`](Self::push) lets in.
    pub capacity: usize,
    /// Most messages one take hands out when the taker names no number.
    handout: AtomicUsize,
    /// Wake the producer when buffered + held falls to this many.
    wake_at: AtomicUsize,
    /// ... or when fewer than this many are buffered (0: never).
    wake_below: AtomicUsize,
}

impl Inbox {
    pub fn new(capacity: usize) -> Arc<Inbox> {
        Arc::new(Inbox {
            state: Mutex::new(InboxState {
                buf: VecDeque::with_capacity(capacity.min(4096)),
                bytes: 0,
                closed: false,
                error: None,
                finished: false,
                flow: Flow::default(),
            }),
            data: Notify::new(),
            space: Notify::new(),
            capacity: capacity.max(1),
            handout: AtomicUsize::new(usize::MAX),
            wake_at: AtomicUsize::new(usize::MAX),
            wake_below: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // A panic while holding this lock cannot leave the deque invalid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the producer sizes its requests by.
    pub fn flow(&self) -> Flow {
        let st = self.lock();
        Flow {
            buffered: st.buf.len(),
            buffered_bytes: st.bytes,
            ..st.flow
        }
    }

    /// The most messages a take without a number hands out.
    pub fn set_handout(&self, n: usize) {
        self.handout.store(n.max(1), Ordering::Relaxed);
    }

    /// Keep `n` messages buffered or on their way for the next take.
    pub fn set_ahead(&self, n: usize) {
        self.lock().flow.ahead = n;
        self.space.notify_one();
    }

    /// Wake the producer when buffered + held falls to `n` (`usize::MAX`:
    /// on every take; 0 with nothing outstanding is still woken when a
    /// taker starts to wait).
    pub fn set_wake_at(&self, n: usize) {
        self.wake_at.store(n, Ordering::Relaxed);
    }

    /// Also wake the producer when a take leaves fewer than `n` buffered
    /// (0: never).
    pub fn set_wake_below(&self, n: usize) {
        self.wake_below.store(n, Ordering::Relaxed);
    }

    /// Wait until the application takes messages or starts to wait.
    pub async fn taken(&self) {
        self.space.notified().await;
    }

    fn hand_out(&self, st: &mut InboxState, want: Option<usize>) -> Vec<InboundMessage> {
        let limit = want.unwrap_or_else(|| self.handout.load(Ordering::Relaxed));
        let n = limit.max(1).min(st.buf.len());
        let out: Vec<InboundMessage> = st.buf.drain(..n).collect();
        if let Some(first) = out.first() {
            st.flow.waited_in_buffer = first.arrived.elapsed();
        }
        let bytes: usize = out.iter().map(|m| m.length).sum();
        st.bytes = st.bytes.saturating_sub(bytes);
        // Taking again means the previous handout is done with.
        st.flow.held = out.len();
        st.flow.held_bytes = bytes;
        st.flow.taken += out.len() as u64;
        out
    }

    fn wake_producer(&self, st: &InboxState) {
        if st.buf.len() + st.flow.held <= self.wake_at.load(Ordering::Relaxed)
            || st.buf.len() < self.wake_below.load(Ordering::Relaxed)
            || st.flow.waiting
        {
            self.space.notify_one();
        }
    }

    /// Take up to `want` buffered messages (`None`: as many as the producer
    /// lets one take hand out) without waiting. An empty vector means
    /// nothing is buffered yet; an error means the inbox is finished
    /// (closed, or failed for good) and holds nothing more.
    pub fn try_take(&self, want: Option<usize>) -> Result<Vec<InboundMessage>> {
        let mut st = self.lock();
        if st.closed {
            // What is still buffered is for the closer to release.
            return Err(st
                .error
                .clone()
                .unwrap_or_else(|| Error::new(ErrorKind::Closed, "the consumer is closed")));
        }
        if st.buf.is_empty() {
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            st.flow.held = 0;
            st.flow.held_bytes = 0;
            self.wake_producer(&st);
            return Ok(Vec::new());
        }
        let out = self.hand_out(&mut st, want);
        self.wake_producer(&st);
        Ok(out)
    }

    /// Wait until at least one message is buffered and take up to `want`.
    /// Returns an empty vector when `timeout` passes first.
    pub async fn take(
        &self,
        want: Option<usize>,
        timeout: Option<Duration>,
    ) -> Result<Vec<InboundMessage>> {
        self.take_filled(1, want, timeout).await
    }

    /// Wait until `min` messages are buffered (or `timeout` passes, or the
    /// inbox ends), then take up to `want`: one wakeup fills a whole batch.
    /// While it waits, the producer sees `want` as the application's demand.
    pub async fn take_filled(
        &self,
        min: usize,
        want: Option<usize>,
        timeout: Option<Duration>,
    ) -> Result<Vec<InboundMessage>> {
        let min = min.max(1).min(want.unwrap_or(usize::MAX).max(1));
        let wait = async {
            loop {
                let notified = self.data.notified();
                {
                    let mut st = self.lock();
                    if st.closed {
                        drop(st);
                        return self.try_take(want);
                    }
                    let ready = st.buf.len() >= min || st.error.is_some();
                    if ready && !st.buf.is_empty() {
                        st.flow.waiting = false;
                        st.flow.demand = 0;
                        let out = self.hand_out(&mut st, want);
                        self.wake_producer(&st);
                        return Ok(out);
                    }
                    if ready {
                        drop(st);
                        return self.try_take(want);
                    }
                    st.flow.held = 0;
                    st.flow.held_bytes = 0;
                    if !st.flow.waiting && st.buf.is_empty() {
                        st.flow.waits += 1;
                    }
                    let demand = want.unwrap_or(0).max(min);
                    let changed = !st.flow.waiting || st.flow.demand < demand;
                    st.flow.waiting = true;
                    st.flow.demand = st.flow.demand.max(demand);
                    if changed {
                        self.space.notify_one();
                    }
                }
                notified.await;
            }
        };
        match timeout {
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(r) => r,
                // Time is up: whatever is there (possibly nothing).
                Err(_) => {
                    self.end_wait();
                    self.try_take(want)
                }
            },
            None => wait.await,
        }
    }

    fn end_wait(&self) {
        let mut st = self.lock();
        st.flow.waiting = false;
        st.flow.demand = 0;
    }

    fn add(st: &mut InboxState, msg: InboundMessage) {
        st.bytes += msg.length;
        st.buf.push_back(msg);
    }

    /// Add a message, waiting while `capacity` messages are buffered. When
    /// the inbox is closed the message comes back (it was never handed out)
    /// so the caller can release it.
    pub async fn push(&self, msg: InboundMessage) -> Result<(), InboundMessage> {
        loop {
            let space = self.space.notified();
            {
                let mut st = self.lock();
                if st.closed {
                    return Err(msg);
                }
                if st.buf.len() < self.capacity {
                    Self::add(&mut st, msg);
                    drop(st);
                    self.data.notify_one();
                    return Ok(());
                }
            }
            space.await;
        }
    }

    /// Add a message without waiting (the producer bounds what it asks
    /// for). When the inbox is closed the message comes back.
    // The message itself comes back so the caller can release it; boxing it
    // would cost an allocation per message on the hot path.
    #[allow(clippy::result_large_err)]
    pub fn push_now(&self, msg: InboundMessage) -> Result<(), InboundMessage> {
        let mut st = self.lock();
        if st.closed {
            return Err(msg);
        }
        Self::add(&mut st, msg);
        drop(st);
        self.data.notify_one();
        Ok(())
    }

    /// Add messages without waiting, under one lock. When the inbox is
    /// closed they come back.
    pub fn push_all(&self, msgs: Vec<InboundMessage>) -> Vec<InboundMessage> {
        if msgs.is_empty() {
            return msgs;
        }
        let mut st = self.lock();
        if st.closed {
            return msgs;
        }
        for m in msgs {
            Self::add(&mut st, m);
        }
        drop(st);
        self.data.notify_one();
        Vec::new()
    }

    /// Return messages that were taken but never handed to the user (for
    /// example, the awaiting task was cancelled) to the front of the buffer.
    pub fn put_back(&self, msgs: Vec<InboundMessage>) {
        if msgs.is_empty() {
            return;
        }
        let mut st = self.lock();
        let n = msgs.len();
        for m in msgs.into_iter().rev() {
            st.bytes += m.length;
            st.buf.push_front(m);
        }
        st.flow.held = st.flow.held.saturating_sub(n);
        st.flow.taken = st.flow.taken.saturating_sub(n as u64);
        drop(st);
        self.data.notify_one();
    }

    /// Hand out nothing more (takers see `error`, or "closed"), keeping what
    /// is buffered for [`close`](Self::close) to return.
    pub fn shut(&self, error: Option<Error>) {
        let mut st = self.lock();
        st.closed = true;
        if st.error.is_none() {
            st.error = error;
        }
        drop(st);
        self.data.notify_waiters();
        self.data.notify_one();
        self.space.notify_waiters();
        self.space.notify_one();
    }

    /// Finish the inbox. With an error, takers see it. Returns the messages
    /// still buffered so the caller can release them.
    pub fn close(&self, error: Option<Error>) -> Vec<InboundMessage> {
        let mut st = self.lock();
        st.closed = true;
        if st.error.is_none() {
            st.error = error;
        }
        st.bytes = 0;
        let rest = st.buf.drain(..).collect();
        drop(st);
        self.data.notify_waiters();
        self.data.notify_one();
        self.space.notify_waiters();
        self.space.notify_one();
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

    /// The reader has delivered all it was to: takers get what is buffered,
    /// then a `Closed` error, and [`is_finished`](Self::is_finished) says
    /// it was the end rather than a failure.
    pub fn finish(&self) {
        let mut st = self.lock();
        st.finished = true;
        st.error
            .get_or_insert_with(|| Error::new(ErrorKind::Closed, "the reader reached its end"));
        drop(st);
        self.data.notify_waiters();
        self.data.notify_one();
    }

    /// True once the reader delivered everything it was to (see [`finish`](Self::finish)).
    pub fn is_finished(&self) -> bool {
        self.lock().finished
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
    SendWithHeaders(Subject, HeaderMap, Bytes),
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
                        AckCmd::SendWithHeaders(subject, headers, body) => {
                            let _ = client.publish_with_headers(subject, headers, body).await;
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

    /// Queue a core publish (replies of `serve`, `publish_core`), in order
    /// with everything else queued here.
    pub fn send_raw(
        &self,
        subject: Subject,
        headers: Option<HeaderMap>,
        body: Bytes,
    ) -> Result<()> {
        let cmd = match headers {
            None => AckCmd::Send(subject, body),
            Some(h) => AckCmd::SendWithHeaders(subject, h, body),
        };
        self.tx.send(cmd).map_err(|_| Error::closed())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u8) -> InboundMessage {
        InboundMessage {
            subject: Subject::from("s"),
            reply: None,
            headers: None,
            payload: Bytes::from(vec![i]),
            length: 10,
            arrived: std::time::Instant::now(),
        }
    }

    #[tokio::test]
    async fn inbox_take_put_back_and_close() {
        let inbox = Inbox::new(4);
        assert!(inbox.try_take(Some(10)).unwrap().is_empty());
        for i in 0..3 {
            assert!(inbox.push(msg(i)).await.is_ok());
        }
        let got = inbox.try_take(Some(2)).unwrap();
        assert_eq!(got.len(), 2);
        inbox.put_back(got);
        let all = inbox.take(Some(10), None).await.unwrap();
        assert_eq!(
            all.iter().map(|m| m.payload[0]).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(inbox
            .take(Some(1), Some(Duration::from_millis(20)))
            .await
            .unwrap()
            .is_empty());
        inbox.push(msg(9)).await.unwrap();
        let rest = inbox.close(None);
        assert_eq!(rest.len(), 1);
        assert_eq!(inbox.try_take(None).unwrap_err().kind, ErrorKind::Closed);
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
            for m in inbox.take(Some(3), None).await.unwrap() {
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
            .take_filled(5, Some(5), Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(got.len(), 5, "one wakeup for the whole batch");
        producer.await.unwrap();
        inbox.push(msg(9)).await.unwrap();
        let partial = inbox
            .take_filled(4, Some(4), Some(Duration::from_millis(30)))
            .await
            .unwrap();
        assert_eq!(partial.len(), 1, "the timeout hands over what is there");
    }

    #[tokio::test]
    async fn a_shut_inbox_hands_out_nothing_and_keeps_its_buffer() {
        let inbox = Inbox::new(4);
        inbox.push_now(msg(1)).unwrap();
        inbox.push_now(msg(2)).unwrap();
        inbox.shut(Some(Error::closed()));
        let e = inbox.try_take(None).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Closed, "the bus is closed")
        );
        assert!(inbox.take(None, None).await.is_err());
        assert_eq!(inbox.close(None).len(), 2, "kept for the closer to release");
    }

    #[tokio::test]
    async fn failure_is_seen_after_the_buffer_drains() {
        let inbox = Inbox::new(4);
        inbox.push(msg(1)).await.unwrap();
        inbox.fail(Error::new(ErrorKind::ConsumerNotFound, "gone"));
        assert_eq!(inbox.try_take(Some(5)).unwrap().len(), 1);
        assert_eq!(
            inbox.try_take(Some(5)).unwrap_err().kind,
            ErrorKind::ConsumerNotFound
        );
    }

    #[tokio::test]
    async fn the_producer_sees_holdings_and_demand() {
        let inbox = Inbox::new(100);
        inbox.set_handout(2);
        for i in 0..5 {
            inbox.push_now(msg(i)).unwrap();
        }
        let f = inbox.flow();
        assert_eq!((f.buffered, f.buffered_bytes, f.held), (5, 50, 0));
        // Without a number a take hands out at most `handout`.
        assert_eq!(inbox.try_take(None).unwrap().len(), 2);
        let f = inbox.flow();
        assert_eq!((f.buffered, f.held, f.held_bytes, f.taken), (3, 2, 20, 2));
        // A named number overrides it; taking again releases the last handout.
        assert_eq!(inbox.try_take(Some(10)).unwrap().len(), 3);
        assert_eq!((inbox.flow().held, inbox.flow().taken), (3, 5));
        assert!(inbox.try_take(None).unwrap().is_empty());
        assert_eq!(inbox.flow().held, 0);
        // A waiting taker shows its demand until it is served.
        let waiter = {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.take_filled(3, Some(7), None).await })
        };
        // The waiter wakes the producer when it starts to wait.
        while !inbox.flow().waiting {
            inbox.taken().await;
        }
        let f = inbox.flow();
        assert_eq!(f.demand, 7);
        for i in 0..3 {
            inbox.push_now(msg(i)).unwrap();
        }
        assert_eq!(waiter.await.unwrap().unwrap().len(), 3);
        let f = inbox.flow();
        assert!(!f.waiting);
        assert_eq!((f.demand, f.held), (0, 3));
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
