//! Durable pull consumption: what to ask the server for, and a thin pump
//! that asks it.
//!
//! The server counts a delivery the moment it sends a message, and a
//! delivered message holds a `max_ack_pending` slot until it is settled. So
//! a consumer must not ask for more than the application is about to
//! process: what a process holds unseen is spent when it stops (each
//! restart would burn a `max_deliver` attempt on it), and it starves the
//! other workers of the same durable. [`PullState`] is the bookkeeping
//! (no I/O, no clock: times come in as arguments). It asks for
//!
//! * a window of messages that adapts to how the application takes them.
//!   It starts at one message, so a worker that handles one job and stops
//!   held one job. It doubles when the application has to wait for a
//!   message although the last request came back full (the server has more:
//!   the window, not the stream, kept it waiting). It halves when the
//!   messages the application takes had waited more than 100 ms in the
//!   buffer (more is held than is about to be processed), and shrinks by an
//!   eighth after eight windows' worth are taken without waiting. It never
//!   exceeds two batches (`max_messages` each) nor the consumer's
//!   `max_ack_pending`, unless a taker asks for more by number
//!   (`fetch(n)`, `batches(n)`). So a fast reader may hold a thousand
//!   messages (a few milliseconds of its work) and a slow one holds one or
//!   two, leaving the rest of the durable to other workers;
//! * a byte budget (`max_bytes` in every request): what is buffered and
//!   held plus what is asked for stays within `max_bytes`, except that a
//!   request made while nothing is held may ask for one message of any size
//!   the server allows (the server's `max_payload`). A request asks for
//!   about twice what its batch needs by the largest message seen, so two
//!   fit in the budget.
//!
//! At most two requests are outstanding: the second goes out while the
//! first is served, so the server streams without a round trip's gap
//! between batches. A request ends when its batch or its bytes run out (the
//! server sends nothing then) or with a status (408 expired, 409 ...);
//! statuses name the request because each has its own reply subject
//! (`<inbox>.<token>`). Messages do not say which request they answer, so
//! they count against the oldest, which keeps the totals right.
//!
//! [`pump`] subscribes `<inbox>.*`, sends what the state asks for, feeds
//! it what arrives, and re-pulls at once after a reconnect or when
//! heartbeats stop (the server may have forgotten the request).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Reader;
use crate::client::consume::{Acker, Flow, InboundMessage, Inbox};
use crate::client::events::Denied;
use crate::client::Connected;
use crate::error::{Error, ErrorKind, Result};

/// The default byte budget of a pull consumption: 8 MiB buffered, held and
/// asked for. Well under the 64 MiB a server lets a client fall behind
/// before it cuts it off as a slow consumer, and room for a few large
/// messages at a time.
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// How long closing waits for the server to confirm it has read our acks.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the application sets for one consumption.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Most messages held at once (the window never grows past it).
    pub max_messages: usize,
    /// Most bytes held and asked for at once.
    pub max_bytes: usize,
    pub heartbeat: Duration,
    pub expires: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            max_messages: 500,
            max_bytes: DEFAULT_MAX_BYTES,
            heartbeat: Duration::from_secs(5),
            expires: Duration::from_secs(30),
        }
    }
}

/// What the server allows a pull request, from the consumer's config and
/// the server's INFO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerLimits {
    /// The consumer's `max_batch` (0: no limit).
    pub max_batch: usize,
    /// The consumer's `max_bytes` per request (0: no limit).
    pub max_request_bytes: usize,
    /// The consumer's `max_expires`.
    pub max_expires: Option<Duration>,
    /// The consumer's `max_ack_pending` (`None`: unlimited).
    pub max_ack_pending: Option<usize>,
    /// The server's `max_payload`: the largest message it takes.
    pub max_payload: usize,
}

impl ServerLimits {
    /// Read the limits from a `CONSUMER.INFO` answer's `config`.
    pub fn from_config(config: &Value, max_payload: usize) -> ServerLimits {
        let n = |k: &str| config.get(k).and_then(Value::as_i64).unwrap_or(0);
        let positive = |v: i64| usize::try_from(v).ok().filter(|v| *v > 0);
        ServerLimits {
            max_batch: positive(n("max_batch")).unwrap_or(0),
            max_request_bytes: positive(n("max_bytes")).unwrap_or(0),
            max_expires: u64::try_from(n("max_expires"))
                .ok()
                .filter(|v| *v > 0)
                .map(Duration::from_nanos),
            max_ack_pending: positive(n("max_ack_pending")),
            max_payload,
        }
    }
}

/// One pull request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// Names the request: its reply subject is `<inbox>.<token>`.
    pub token: u64,
    pub batch: usize,
    pub max_bytes: usize,
    pub expires: Duration,
    pub heartbeat: Duration,
}

impl PullRequest {
    /// The JSON body of `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    pub fn body(&self) -> Bytes {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Bytes::from(format!(
            r#"{{"batch":{},"max_bytes":{},"expires":{},"idle_heartbeat":{}}}"#,
            self.batch,
            self.max_bytes,
            ns(self.expires),
            ns(self.heartbeat)
        ))
    }
}

/// What a request's end status says it still had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Left {
    pub msgs: Option<usize>,
    pub bytes: Option<usize>,
}

impl Left {
    /// From the status message's `Nats-Pending-Messages` / `Nats-Pending-Bytes`.
    pub fn of(msg: &async_nats::Message) -> Left {
        let get = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .and_then(|v| v.as_str().parse().ok())
        };
        Left {
            msgs: get("Nats-Pending-Messages"),
            bytes: get("Nats-Pending-Bytes"),
        }
    }
}

/// What the pump does after a request ended with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterEnd {
    /// Nothing special: pull again when there is room.
    Continue,
    /// The consumer's limits changed (409 Exceeded MaxRequest...): read them again.
    RefreshLimits,
    /// Something is wrong with the consumer (deleted, leader change, ...):
    /// check it and back off.
    CheckConsumer,
    /// The next message is larger than the consumer lets one request carry.
    TooLarge(usize),
}

/// Messages handed out after waiting this long in the buffer mean the
/// window holds more than the application is about to process: halve it.
pub const STALE_IN_BUFFER: Duration = Duration::from_millis(100);

/// Requests outstanding at once: a second goes out while the first is
/// being served, so the server streams without a round trip's gap between
/// batches.
pub const MAX_OUTSTANDING: usize = 2;

#[derive(Debug, Clone)]
struct Outstanding {
    token: u64,
    msgs: usize,
    bytes: usize,
    sent: Instant,
    delivered: usize,
}

/// Pull round trips (request sent to first message) over the last few
/// requests; the minimum is the round trip itself, the rest includes
/// waiting for messages to be published.
#[derive(Debug, Clone, Default)]
struct RecentMin {
    samples: [Duration; 8],
    len: usize,
    next: usize,
}

impl RecentMin {
    fn push(&mut self, d: Duration) {
        self.samples[self.next] = d;
        self.next = (self.next + 1) % self.samples.len();
        self.len = (self.len + 1).min(self.samples.len());
    }

    fn min(&self) -> Option<Duration> {
        self.samples[..self.len].iter().min().copied()
    }
}

/// The bookkeeping of one pull consumption. See the module docs.
#[derive(Debug, Clone)]
pub struct PullState {
    opts: PullOptions,
    limits: ServerLimits,
    /// Oldest first; at most [`MAX_OUTSTANDING`].
    out: VecDeque<Outstanding>,
    next_token: u64,
    closing: bool,
    /// Messages to hold (see the module docs).
    window: usize,
    /// `Flow::waits` when last looked at.
    seen_waits: u64,
    /// `Flow::taken` when the window last grew or shrank.
    taken_mark: u64,
    /// `Flow::taken` when the age of a handout was last looked at.
    aged_at: u64,
    /// The last request ended because its batch or bytes ran out while the
    /// server had more.
    last_full: bool,
    /// The consumer's pending count in the last message's reply subject.
    last_pending: u64,
    latency: RecentMin,
    /// The largest message seen (or known to be waiting).
    size_hint: usize,
    last_activity: Instant,
}

impl PullState {
    pub fn new(opts: PullOptions, limits: ServerLimits, now: Instant) -> PullState {
        PullState {
            opts,
            limits,
            out: VecDeque::new(),
            next_token: 1,
            closing: false,
            window: 1,
            seen_waits: 0,
            taken_mark: 0,
            aged_at: 0,
            last_full: false,
            last_pending: 0,
            latency: RecentMin::default(),
            size_hint: 0,
            last_activity: now,
        }
    }

    pub fn set_limits(&mut self, limits: ServerLimits) {
        self.limits = limits;
    }

    /// Ask for nothing more (the consumption is closing).
    pub fn set_closing(&mut self) {
        self.closing = true;
    }

    /// Whether a request is outstanding: only then can messages arrive.
    pub fn outstanding(&self) -> bool {
        !self.out.is_empty()
    }

    fn out_msgs(&self) -> usize {
        self.out.iter().map(|o| o.msgs).sum()
    }

    fn out_bytes(&self) -> usize {
        self.out.iter().map(|o| o.bytes).sum()
    }

    fn cap(&self) -> usize {
        let two_batches = self.opts.max_messages.saturating_mul(2);
        let slots = self.limits.max_ack_pending.unwrap_or(usize::MAX);
        two_batches.min(slots).max(1)
    }

    /// How many messages the consumption aims to hold (buffered, handed out
    /// and asked for) when no taker names a number.
    pub fn window(&self) -> usize {
        self.window.clamp(1, self.cap())
    }

    /// Most messages one take hands out: an eighth of the window, so most
    /// of it stays in the pipeline (buffered and on its way) rather than in
    /// the taker's hands.
    pub fn handout(&self) -> usize {
        (self.window() / 8).max(1)
    }

    fn wanted(&self, flow: &Flow) -> usize {
        self.window().max(flow.demand)
    }

    /// When a take should wake the pump to pull again: holdings (buffered +
    /// handed out) at or below the first number, or fewer than the second
    /// buffered (for the batch ahead). Both 0 when no request may be sent:
    /// then only a taker that starts to wait wakes it.
    pub fn wake_at(&self, flow: &Flow) -> (usize, usize) {
        if self.out.len() >= MAX_OUTSTANDING || self.closing {
            return (0, 0);
        }
        let out = self.out_msgs();
        let holdings = (self.wanted(flow) * 3 / 4).saturating_sub(out);
        let buffered = if flow.ahead > 0 {
            (flow.ahead / 2 + 1).saturating_sub(out)
        } else {
            0
        };
        (holdings, buffered)
    }

    /// Learn from how the application takes messages: grow the window when
    /// it had to wait for what the server could have sent; halve it when
    /// the messages it took had waited in the buffer longer than
    /// [`STALE_IN_BUFFER`]; shrink it slowly after eight windows' worth
    /// taken without waiting.
    pub fn observe(&mut self, flow: &Flow) {
        if flow.taken != self.aged_at {
            self.aged_at = flow.taken;
            if flow.waited_in_buffer > STALE_IN_BUFFER && self.window > 1 {
                self.window = (self.window / 2).max(1);
                self.taken_mark = flow.taken;
                self.seen_waits = flow.waits;
                return;
            }
        }
        if flow.waits != self.seen_waits {
            self.seen_waits = flow.waits;
            if self.last_full {
                self.window = self.window.saturating_mul(2).min(self.cap());
            }
            self.taken_mark = flow.taken;
        } else if flow.taken.saturating_sub(self.taken_mark) >= 8 * self.window as u64 {
            if self.window > 1 {
                self.window -= (self.window / 8).max(1);
            }
            self.taken_mark = flow.taken;
        }
    }

    /// The request to send now, if any; it is outstanding from here on.
    pub fn next_pull(&mut self, now: Instant, flow: &Flow) -> Option<PullRequest> {
        if self.closing || self.out.len() >= MAX_OUTSTANDING {
            return None;
        }
        // Buffered and on its way; plus what the taker holds.
        let pipe = flow.buffered + self.out_msgs();
        let held = pipe + flow.held;
        let held_bytes = flow.buffered_bytes + flow.held_bytes + self.out_bytes();
        let wanted = self.wanted(flow);
        let short = wanted.saturating_sub(held);
        // A `batches(n)` reader wants the next batch on its way while it
        // works through this one.
        let ahead = flow.ahead.saturating_sub(pipe);
        let mut batch = short.max(ahead);
        // Refill in strides, not a message at a time: once a quarter of the
        // window (or half the batch ahead) is missing, or when a taker waits.
        let due = flow.waiting
            || (short > 0 && held <= wanted * 3 / 4)
            || (ahead > 0 && pipe <= flow.ahead / 2);
        if batch == 0 || !due {
            return None;
        }
        if self.limits.max_batch > 0 {
            batch = batch.min(self.limits.max_batch);
        }
        let room = self.opts.max_bytes.saturating_sub(held_bytes);
        // What the batch needs, judging by the largest message seen, so a
        // second request fits beside the first; a larger message ends the
        // request (409) and the next one asks for more.
        let needs = match self.size_hint {
            0 => usize::MAX,
            size => batch.saturating_mul(size).saturating_mul(2),
        };
        let mut bytes = if held == 0 {
            // Never stall: with nothing held, one message of any size fits.
            room.min(needs).max(self.size_hint).max(self.floor())
        } else if room >= self.size_hint.max(1) {
            room.min(needs.max(self.size_hint))
        } else {
            return None;
        };
        if self.limits.max_request_bytes > 0 {
            bytes = bytes.min(self.limits.max_request_bytes);
        }
        let mut expires = self.opts.expires;
        if let Some(max) = self.limits.max_expires {
            expires = expires.min(max);
        }
        let heartbeat = self.opts.heartbeat.min(expires / 2);
        let token = self.next_token;
        self.next_token += 1;
        self.out.push_back(Outstanding {
            token,
            msgs: batch,
            bytes,
            sent: now,
            delivered: 0,
        });
        if self.out.len() == 1 {
            self.last_activity = now;
        }
        Some(PullRequest {
            token,
            batch,
            max_bytes: bytes,
            expires,
            heartbeat,
        })
    }

    /// A request could not be sent after all.
    pub fn unsent(&mut self, token: u64) {
        self.out.retain(|o| o.token != token);
    }

    /// The largest message the server can hold, with room for its subject
    /// and reply.
    fn floor(&self) -> usize {
        self.limits.max_payload.max(1) + 8192
    }

    /// A message arrived: `length` as the server counts it, and its reply
    /// subject (which says how many more the consumer has pending).
    ///
    /// Messages do not say which request they answer (the server takes its
    /// waiting requests in turn); they count against the oldest, which
    /// keeps the totals right.
    pub fn on_message(&mut self, now: Instant, length: usize, reply: Option<&str>) {
        self.size_hint = self.size_hint.max(length);
        self.last_activity = now;
        if let Some(p) = reply.and_then(pending_of) {
            self.last_pending = p;
        }
        let single = self.out.len() == 1;
        let Some(at) = self.out.iter().position(|o| o.msgs > 0) else {
            return;
        };
        let o = &mut self.out[at];
        if o.delivered == 0 {
            self.latency.push(now.saturating_duration_since(o.sent));
        }
        o.delivered += 1;
        o.msgs -= 1;
        o.bytes = o.bytes.saturating_sub(length);
        // The server ends a request silently when its bytes run out, and
        // when its batch runs out with no bytes to spare; with bytes to spare
        // it says so ("409 Batch Completed"). With two requests served in
        // turn the count here may belong to the other one: wait for that word.
        if o.bytes == 0 || (o.msgs == 0 && single) {
            self.out.remove(at);
            // Full for a reason only if more were pending then (a trickling
            // stream fills any request in time).
            self.last_full = self.last_pending > 0;
        }
    }

    /// An idle heartbeat: a request is alive.
    pub fn on_heartbeat(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// A request ended with a status: `token` from its reply subject, and
    /// what the server says it still had (`Nats-Pending-Messages`,
    /// `Nats-Pending-Bytes`).
    pub fn on_end(
        &mut self,
        now: Instant,
        token: Option<u64>,
        code: u16,
        text: &str,
        left: Left,
    ) -> AfterEnd {
        self.last_activity = now;
        let at = match token {
            Some(t) => self.out.iter().position(|o| o.token == t),
            None => (!self.out.is_empty()).then_some(0),
        };
        // Not found: a request we already gave up on (reconnect, stale), or
        // counted as done: it says no more than that it is gone.
        let Some(ended) = at.and_then(|i| self.out.remove(i)) else {
            return AfterEnd::Continue;
        };
        // Its messages were counted against the oldest request; the server
        // knows what it really got. The difference belongs to the others.
        if let Some(next) = self.out.front_mut() {
            let really_left = left.msgs.unwrap_or(ended.msgs);
            if ended.msgs >= really_left {
                next.msgs += ended.msgs - really_left;
            } else {
                next.msgs = next.msgs.saturating_sub(really_left - ended.msgs);
            }
            let really_left = left.bytes.unwrap_or(ended.bytes);
            if ended.bytes >= really_left {
                next.bytes += ended.bytes - really_left;
            } else {
                next.bytes = next.bytes.saturating_sub(really_left - ended.bytes);
            }
        }
        self.last_full = false;
        match code {
            404 | 408 => AfterEnd::Continue,
            // The batch ran out with bytes to spare.
            409 if text.contains("Batch Completed") => {
                self.last_full = self.last_pending > 0;
                AfterEnd::Continue
            }
            409 if text.contains("Message Size Exceeds MaxBytes") => {
                if ended.delivered > 0 || left.msgs.is_some_and(|m| m < ended.msgs) {
                    // Full in bytes: the server has more.
                    self.last_full = true;
                    return AfterEnd::Continue;
                }
                // Nothing fit: the next message is larger than we asked for.
                let asked = left.bytes.unwrap_or(ended.bytes);
                if self.limits.max_request_bytes > 0 && asked >= self.limits.max_request_bytes {
                    return AfterEnd::TooLarge(self.limits.max_request_bytes);
                }
                self.size_hint = self.size_hint.max(asked.saturating_mul(2));
                AfterEnd::Continue
            }
            409 if text.contains("Exceeded Max") => AfterEnd::RefreshLimits,
            _ => AfterEnd::CheckConsumer,
        }
    }

    /// The connection was lost and is back, or heartbeats stopped: the
    /// server may have forgotten the requests.
    pub fn on_reset(&mut self) {
        self.out.clear();
    }

    /// When an outstanding request is presumed lost (no message, no
    /// heartbeat for two heartbeats).
    pub fn stale_deadline(&self) -> Option<Instant> {
        self.outstanding()
            .then(|| self.last_activity + self.opts.heartbeat * 2 + Duration::from_millis(500))
    }

    /// How long closing waits after the last message before it stops
    /// listening (redeliveries of messages nak'ed just before closing come
    /// within a round trip or two).
    pub fn quiet_period(&self) -> Duration {
        let rtt = self.latency.min().unwrap_or(Duration::from_millis(1));
        (rtt * 4).clamp(Duration::from_millis(5), Duration::from_millis(50))
    }
}

/// Where a pull consumption is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Run,
    /// Closing: ask for nothing more, keep receiving.
    Quiesce,
    /// Stop listening (after the outstanding request went quiet).
    Stop,
}

/// A running durable pull consumption: a task keeps the inbox supplied.
pub struct PullConsumer {
    pub inbox: Arc<Inbox>,
    pub stream: String,
    pub durable: String,
    conn: Connected,
    acker: Acker,
    phase: watch::Sender<Phase>,
    task: Mutex<Option<JoinHandle<Vec<InboundMessage>>>>,
    stopped: tokio::sync::OnceCell<()>,
}

impl PullConsumer {
    /// Check that the stream and consumer exist (the errors name them) and
    /// that the consumer is a pull consumer, then start pulling.
    pub async fn start(
        conn: &Connected,
        acker: Acker,
        stream: &str,
        durable: &str,
        opts: PullOptions,
    ) -> Result<Arc<PullConsumer>> {
        let info = conn.js.consumer_info(stream, durable).await?;
        PullConsumer::start_with(conn, acker, stream, durable, &info, opts)
    }

    /// Start pulling from a consumer whose `CONSUMER.INFO` answer is `info`.
    pub fn start_with(
        conn: &Connected,
        acker: Acker,
        stream: &str,
        durable: &str,
        info: &Value,
        opts: PullOptions,
    ) -> Result<Arc<PullConsumer>> {
        if opts.max_messages == 0 {
            return Err(Error::invalid("batch must be at least 1"));
        }
        if opts.max_bytes == 0 {
            return Err(Error::invalid("max_bytes must be at least 1"));
        }
        let config = info.get("config").cloned().unwrap_or_default();
        if super::push::deliver_subject(&config).is_some() {
            return Err(Error::invalid(format!(
                "consumer {durable:?} on stream {stream:?} is a push consumer (it has a deliver_subject): read it with consume(), which handles both kinds"
            )));
        }
        let limits = ServerLimits::from_config(&config, conn.client.server_info().max_payload);
        let inbox = Inbox::new(usize::MAX);
        let state = PullState::new(opts, limits, Instant::now());
        inbox.set_handout(state.handout());
        let (phase, phase_rx) = watch::channel(Phase::Run);
        let task = tokio::spawn(
            std::panic::AssertUnwindSafe(pump(
                conn.clone(),
                stream.to_string(),
                durable.to_string(),
                state,
                inbox.clone(),
                phase_rx,
            ))
            .catch_unwind()
            .map({
                let inbox = inbox.clone();
                move |r| {
                    r.unwrap_or_else(|panic| {
                        inbox.fail(Error::internal("the pull consumer's pump", &*panic));
                        Vec::new()
                    })
                }
            }),
        );
        Ok(Arc::new(PullConsumer {
            inbox,
            stream: stream.to_string(),
            durable: durable.to_string(),
            conn: conn.clone(),
            acker,
            phase,
            task: Mutex::new(Some(task)),
            stopped: tokio::sync::OnceCell::new(),
        }))
    }

    /// Stop consuming, the same way however often and from wherever it is
    /// called (concurrent callers wait for the one stop):
    ///
    /// 1. the inbox closes (takers see `Closed`) and no new request goes out;
    /// 2. queued acks are written and one round trip makes sure the server
    ///    read them (a nak it read may bring its message back to us);
    /// 3. while a request is outstanding, messages are taken until the
    ///    server goes quiet, then the subscription ends;
    /// 4. every message received and never handed out is released (nak),
    ///    after the subscription is gone so its redelivery goes to someone
    ///    else, and step 2 runs again for the releases.
    pub async fn stop(&self) {
        self.stopped.get_or_init(|| self.shutdown()).await;
    }

    async fn shutdown(&self) {
        let rest = self.inbox.close(None);
        let _ = self.phase.send(Phase::Quiesce);
        self.settle().await;
        let _ = self.phase.send(Phase::Stop);
        super::release_the_rest(&self.task, &self.inbox, rest, &self.acker, &self.conn).await;
    }

    /// Write queued acks and wait until the server has read them.
    pub async fn settle(&self) {
        super::settle(&self.acker, &self.conn).await;
    }
}

impl Reader for PullConsumer {
    fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(PullConsumer::stop(self))
    }

    /// Its releases are settled with a round trip through the server.
    fn settle<'a>(&'a self, _acker: &'a Acker) -> BoxFuture<'a, ()> {
        Box::pin(PullConsumer::settle(self))
    }
}

impl Drop for PullConsumer {
    fn drop(&mut self) {
        // Not stopped by `stop()`: end the task; the server redelivers what
        // it held after ack_wait.
        self.inbox.close(None);
        let _ = self.phase.send(Phase::Stop);
    }
}

/// The consumer's pending count in a delivery's reply subject
/// (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`,
/// or the longer form with domain and account hash before the stream and a
/// token after).
fn pending_of(reply: &str) -> Option<u64> {
    // One pass over the bytes (this runs for every message).
    let b = reply.as_bytes();
    if !b.starts_with(b"$JS.ACK.") {
        return None;
    }
    let mut dots = [0usize; 12];
    let mut n = 0;
    for (i, c) in b.iter().enumerate() {
        if *c == b'.' {
            if n == dots.len() {
                return None;
            }
            dots[n] = i;
            n += 1;
        }
    }
    // Tokens = dots + 1: 9 (pending last) or 11-12 (pending 11th).
    let (start, end) = match n + 1 {
        9 => (dots[7] + 1, b.len()),
        11 => (dots[9] + 1, b.len()),
        12 => (dots[9] + 1, dots[10]),
        _ => return None,
    };
    reply.get(start..end)?.parse().ok()
}

/// Act on how a request ended; an error fails the consumption.
async fn after_end(
    after: AfterEnd,
    state: &mut PullState,
    conn: &Connected,
    stream: &str,
    durable: &str,
    backoff: &mut Duration,
) -> Option<Error> {
    let client = &conn.client;
    match after {
        AfterEnd::Continue => return None,
        AfterEnd::TooLarge(limit) => {
            return Some(Error::invalid(format!(
                "a message on stream {stream:?} is larger than consumer {durable:?} lets one pull \
                 request carry (its max_bytes is {limit}): raise the consumer's max_bytes"
            )))
        }
        AfterEnd::RefreshLimits => {
            if let Ok(info) = conn.js.consumer_info(stream, durable).await {
                let config = info.get("config").cloned().unwrap_or_default();
                state.set_limits(ServerLimits::from_config(
                    &config,
                    client.server_info().max_payload,
                ));
            }
        }
        AfterEnd::CheckConsumer => {
            if let Some(e) = super::consumer_gone(conn, stream, durable).await {
                return Some(e);
            }
            // Healed or there all along: what was asked of it is gone.
            state.on_reset();
        }
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
    None
}

/// Drive a [`PullState`]: send what it asks for, feed it what arrives.
async fn pump(
    conn: Connected,
    stream: String,
    durable: String,
    mut state: PullState,
    inbox: Arc<Inbox>,
    mut phase: watch::Receiver<Phase>,
) -> Vec<InboundMessage> {
    let client = &conn.client;
    let prefix = client.new_inbox();
    let mut watch = conn.events.watch();
    let mut sub = match client.subscribe(format!("{prefix}.*")).await {
        Ok(s) => s,
        Err(e) => {
            inbox.fail(Error::new(
                ErrorKind::Connect,
                format!("cannot subscribe: {e}"),
            ));
            return Vec::new();
        }
    };
    let next_subject = conn
        .js
        .subject(&format!("CONSUMER.MSG.NEXT.{stream}.{durable}"));
    let mut reconnects = conn.reconnects.clone();
    reconnects.borrow_and_update();
    let mut backoff = Duration::from_millis(100);
    let mut leftovers = Vec::new();
    'pull: loop {
        let now = Instant::now();
        let current = *phase.borrow_and_update();
        if current == Phase::Stop {
            break;
        }
        if current == Phase::Quiesce {
            state.set_closing();
        }
        let flow = inbox.flow();
        state.observe(&flow);
        if let Some(req) = state.next_pull(now, &flow) {
            let reply = format!("{prefix}.{}", req.token);
            if client
                .publish_with_reply(next_subject.clone(), reply, req.body())
                .await
                .is_err()
            {
                state.unsent(req.token);
            }
        }
        let after = inbox.flow();
        inbox.set_handout(state.handout());
        let (holdings, buffered) = state.wake_at(&after);
        inbox.set_wake_at(holdings);
        inbox.set_wake_below(buffered);
        // A take between the snapshot and setting `wake_at` may not have
        // woken us: look again before sleeping.
        if inbox.flow() != after {
            continue;
        }
        let stale = state.stale_deadline();
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break 'pull;
                }
            }
            msg = sub.next() => {
                let Some(mut msg) = msg else {
                    inbox.fail(Error::new(ErrorKind::Closed, "the connection is closed"));
                    return leftovers;
                };
                let now = Instant::now();
                let mut burst = Vec::new();
                loop {
                    match msg.status {
                        None => {
                            backoff = Duration::from_millis(100);
                            state.on_message(now, msg.length, msg.reply.as_deref());
                            burst.push(InboundMessage::from(msg));
                        }
                        Some(s) if s.as_u16() == 100 => state.on_heartbeat(now),
                        Some(s) => {
                            let token = msg
                                .subject
                                .as_str()
                                .strip_prefix(prefix.as_str())
                                .and_then(|t| t.strip_prefix('.'))
                                .and_then(|t| t.parse::<u64>().ok());
                            let text = msg.description.as_deref().unwrap_or_default();
                            leftovers.extend(inbox.push_all(std::mem::take(&mut burst)));
                            let after = state.on_end(now, token, s.as_u16(), text, Left::of(&msg));
                            if let Some(e) = after_end(after, &mut state, &conn, &stream, &durable, &mut backoff).await {
                                inbox.fail(e);
                                break 'pull;
                            }
                        }
                    }
                    // A request's messages come in a burst: take what is
                    // already here without going round the loop for each,
                    // and hand it over under one lock.
                    match sub.next().now_or_never() {
                        Some(Some(m)) => msg = m,
                        Some(None) => {
                            leftovers.extend(inbox.push_all(burst));
                            inbox.fail(Error::new(ErrorKind::Closed, "the connection is closed"));
                            return leftovers;
                        }
                        None => break,
                    }
                }
                leftovers.extend(inbox.push_all(burst));
            }
            changed = reconnects.changed() => {
                if changed.is_err() {
                    break 'pull;
                }
                state.on_reset();
            }
            _ = tokio::time::sleep_until(stale.unwrap_or_else(Instant::now)), if stale.is_some() => {
                state.on_reset();
            }
            denied = watch.denied(|v| {
                (v.denied == Denied::Publish && v.subject == next_subject)
                    || v.subject.starts_with(prefix.as_str())
            }) => {
                inbox.fail(denied.error(&format!("consuming {stream}/{durable}")));
                break 'pull;
            }
            _ = inbox.taken() => {}
        }
    }
    settle_on_close(sub, &mut state, leftovers).await
}

/// After the pull loop: take what an outstanding request still brings (a
/// nak'ed message coming back, say) until the server goes quiet, so it can
/// be released instead of waiting out ack_wait on an inbox nobody reads;
/// then unsubscribe and collect what the channel already held.
async fn settle_on_close(
    mut sub: async_nats::Subscriber,
    state: &mut PullState,
    mut leftovers: Vec<InboundMessage>,
) -> Vec<InboundMessage> {
    let quiet = state.quiet_period();
    let give_up = Instant::now() + Duration::from_millis(250);
    while state.outstanding() {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                let now = Instant::now();
                match msg.status {
                    None => {
                        state.on_message(now, msg.length, msg.reply.as_deref());
                        leftovers.push(InboundMessage::from(msg));
                    }
                    Some(s) if s.as_u16() == 100 => state.on_heartbeat(now),
                    Some(_) => state.on_reset(),
                }
            }
            _ = tokio::time::sleep(quiet) => break,
            _ = tokio::time::sleep_until(give_up) => break,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerLimits {
        ServerLimits {
            max_payload: 1 << 20,
            max_ack_pending: Some(1000),
            ..ServerLimits::default()
        }
    }

    fn state(max_messages: usize, max_bytes: usize) -> (PullState, Instant) {
        let now = Instant::now();
        let opts = PullOptions {
            max_messages,
            max_bytes,
            ..PullOptions::default()
        };
        (PullState::new(opts, limits(), now), now)
    }

    fn flow(buffered: usize, held: usize) -> Flow {
        Flow {
            buffered,
            held,
            ..Flow::default()
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_with_one_message_and_one_request() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        let r = s.next_pull(now, &flow(0, 0)).unwrap();
        assert_eq!((r.batch, r.token), (1, 1));
        assert_eq!(r.max_bytes, DEFAULT_MAX_BYTES);
        assert!(s.next_pull(now, &flow(0, 0)).is_none(), "one at a time");
        s.on_message(now + MS, 200, DRAINED);
        assert!(!s.outstanding(), "a batch of one ends with its message");
        // The application holds it: nothing more is asked for.
        assert!(s.next_pull(now + MS, &flow(0, 1)).is_none());
        assert!(s.next_pull(now + MS, &flow(1, 0)).is_none());
        assert!(s.next_pull(now + MS, &flow(0, 0)).is_some());
    }

    const BACKLOG: Option<&str> = Some("$JS.ACK.S.c.1.1.1.1700000000000000000.5000");
    const DRAINED: Option<&str> = Some("$JS.ACK.S.c.1.1.1.1700000000000000000.0");

    /// Serve every request at once in full, as a server with a backlog does.
    fn serve_in_full(s: &mut PullState, now: Instant, r: &PullRequest) {
        for _ in 0..r.batch {
            s.on_message(now, 100, BACKLOG);
        }
    }

    #[test]
    fn pending_counts_from_both_reply_forms() {
        assert_eq!(
            pending_of("$JS.ACK.S.c.2.17.5.1700000000000000000.3"),
            Some(3)
        );
        assert_eq!(
            pending_of("$JS.ACK.hub.ACCHASH.S.c.1.9.9.1700000000000000000.7.tok"),
            Some(7)
        );
        assert_eq!(pending_of("_INBOX.a.b"), None);
        assert_eq!(pending_of("$JS.ACK.S.c.x"), None);
    }

    #[test]
    fn the_window_grows_while_the_application_waits_for_a_backlog() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        let mut f = Flow::default();
        for expected in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000] {
            s.observe(&f);
            assert_eq!(s.window(), expected);
            let r = s.next_pull(now, &f).unwrap();
            serve_in_full(&mut s, now, &r);
            // The application took it all and waits again.
            f.taken += r.batch as u64;
            f.waits += 1;
        }
        assert_eq!(s.handout(), 125);
    }

    #[test]
    fn the_window_stays_put_when_the_stream_is_what_keeps_the_application_waiting() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        let mut f = Flow::default();
        let r = s.next_pull(now, &f).unwrap();
        // The request expires unfilled: nothing to fetch.
        s.on_end(now, Some(r.token), 408, "Request Timeout", Left::default());
        for _ in 0..10 {
            f.waits += 1;
            s.observe(&f);
            let r = s.next_pull(now, &f).unwrap();
            // A message trickles in and fills the request of one: nothing
            // else was pending, so that is no reason to ask for more.
            assert_eq!(r.batch, 1);
            s.on_message(now, 100, DRAINED);
        }
        assert_eq!(s.window(), 1);
    }

    #[test]
    fn the_window_halves_when_messages_wait_in_the_buffer() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        let mut f = Flow::default();
        for _ in 0..6 {
            s.observe(&f);
            let r = s.next_pull(now, &f).unwrap();
            serve_in_full(&mut s, now, &r);
            f.taken += r.batch as u64;
            f.waits += 1;
        }
        s.observe(&f);
        assert_eq!(s.window(), 64);
        // The application slows down: what it takes sat 150 ms in the buffer.
        for expected in [32, 16, 8, 4, 2, 1, 1] {
            f.taken += 1;
            f.waited_in_buffer = Duration::from_millis(150);
            s.observe(&f);
            assert_eq!(s.window(), expected);
        }
    }

    #[test]
    fn the_window_shrinks_when_the_application_never_waits() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        let mut f = Flow::default();
        for _ in 0..5 {
            s.observe(&f);
            let r = s.next_pull(now, &f).unwrap();
            serve_in_full(&mut s, now, &r);
            f.taken += r.batch as u64;
            f.waits += 1;
        }
        s.observe(&f);
        assert_eq!(s.window(), 32);
        // A slow application: a message at a time, always one buffered.
        for _ in 0..4000 {
            f.taken += 1;
            s.observe(&f);
        }
        assert_eq!(s.window(), 1);
    }

    #[test]
    fn two_requests_served_in_turn_are_counted_right() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        let f = Flow {
            waiting: true,
            demand: 20,
            ..Flow::default()
        };
        let a = s.next_pull(now, &f).unwrap();
        assert_eq!(a.batch, 20);
        // Half taken: a second request goes out beside the first.
        for _ in 0..12 {
            s.on_message(now, 100, BACKLOG);
        }
        let f = Flow {
            buffered: 2,
            demand: 20,
            waiting: true,
            ..Flow::default()
        };
        let b = s.next_pull(now, &f).unwrap();
        assert_eq!(
            b.batch, 10,
            "20 wanted, 2 buffered, 8 still due from the first"
        );
        assert!(s.next_pull(now, &f).is_none(), "two at most");
        // The server serves them in turn: 8 more arrive (counted against the
        // first), then it says the first got all 20 of its batch.
        for _ in 0..8 {
            s.on_message(now, 100, BACKLOG);
        }
        assert_eq!(s.out_msgs(), 10);
        let left = Left {
            msgs: Some(0),
            bytes: Some(1000),
        };
        assert_eq!(
            s.on_end(now, Some(a.token), 409, "Batch Completed", left),
            AfterEnd::Continue
        );
        assert_eq!(s.out_msgs(), 10, "the second is still owed all 10");
        // Had the first got only 15, the second would have had 5 already.
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        let a = s
            .next_pull(
                now,
                &Flow {
                    waiting: true,
                    demand: 20,
                    ..Flow::default()
                },
            )
            .unwrap();
        for _ in 0..12 {
            s.on_message(now, 100, BACKLOG);
        }
        let b = s
            .next_pull(
                now,
                &Flow {
                    buffered: 2,
                    demand: 20,
                    waiting: true,
                    ..Flow::default()
                },
            )
            .unwrap();
        for _ in 0..8 {
            s.on_message(now, 100, BACKLOG);
        }
        let left = Left {
            msgs: Some(5),
            bytes: None,
        };
        s.on_end(now, Some(a.token), 408, "Request Timeout", left);
        assert_eq!(s.out_msgs(), 5);
        assert_eq!(s.out.front().map(|o| o.token), Some(b.token));
    }

    #[test]
    fn a_named_demand_is_asked_for() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        let f = Flow {
            waiting: true,
            demand: 100,
            ..Flow::default()
        };
        assert_eq!(s.next_pull(now, &f).unwrap().batch, 100);
    }

    #[test]
    fn bytes_bound_what_is_asked_for() {
        let (mut s, now) = state(500, 8 << 20);
        let big = (1 << 20) + 100;
        let f = Flow {
            waiting: true,
            demand: 100,
            ..Flow::default()
        };
        let r = s.next_pull(now, &f).unwrap();
        assert_eq!(r.max_bytes, 8 << 20);
        for _ in 0..7 {
            s.on_message(now + MS, big, BACKLOG);
        }
        // The 8th does not fit: the server ends the request with 409.
        assert_eq!(
            s.on_end(
                now + MS,
                Some(r.token),
                409,
                "Message Size Exceeds MaxBytes",
                Left::default()
            ),
            AfterEnd::Continue
        );
        // 7 MiB buffered: less room than one message, so no request.
        let f = Flow {
            buffered: 7,
            buffered_bytes: 7 * big,
            demand: 100,
            waiting: true,
            ..Flow::default()
        };
        assert!(s.next_pull(now, &f).is_none());
        // Two taken and done with: room for one more.
        let f = Flow {
            buffered: 5,
            buffered_bytes: 5 * big,
            demand: 100,
            waiting: true,
            ..Flow::default()
        };
        let r = s.next_pull(now, &f).unwrap();
        assert_eq!(r.max_bytes, (8 << 20) - 5 * big);
    }

    #[test]
    fn a_message_larger_than_the_room_is_still_fetched_when_nothing_is_held() {
        let (mut s, now) = state(500, 1000);
        let r = s.next_pull(now, &flow(0, 0)).unwrap();
        assert!(
            r.max_bytes > (1 << 20),
            "nothing held: room for the largest message"
        );
        // A consumer that caps request bytes below the message size says so.
        let mut l = limits();
        l.max_request_bytes = 500;
        let mut s = PullState::new(
            PullOptions {
                max_bytes: 1000,
                ..PullOptions::default()
            },
            l,
            now,
        );
        let r = s.next_pull(now, &flow(0, 0)).unwrap();
        assert_eq!(r.max_bytes, 500);
        assert_eq!(
            s.on_end(
                now,
                Some(r.token),
                409,
                "Message Size Exceeds MaxBytes",
                Left::default()
            ),
            AfterEnd::TooLarge(500)
        );
    }

    #[test]
    fn the_consumer_limits_cap_each_request() {
        let now = Instant::now();
        let mut l = limits();
        l.max_batch = 10;
        l.max_expires = Some(Duration::from_secs(4));
        let mut s = PullState::new(PullOptions::default(), l, now);
        let f = Flow {
            waiting: true,
            demand: 100,
            ..Flow::default()
        };
        let r = s.next_pull(now, &f).unwrap();
        assert_eq!(r.batch, 10);
        assert_eq!(r.expires, Duration::from_secs(4));
        assert_eq!(r.heartbeat, Duration::from_secs(2));
    }

    #[test]
    fn statuses_end_only_the_request_they_name() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        let r = s.next_pull(now, &flow(0, 0)).unwrap();
        s.on_reset();
        let r2 = s.next_pull(now, &flow(0, 0)).unwrap();
        assert_ne!(r.token, r2.token);
        // The forgotten request's timeout does not end the new one.
        assert_eq!(
            s.on_end(now, Some(r.token), 408, "Request Timeout", Left::default()),
            AfterEnd::Continue
        );
        assert!(s.outstanding());
        assert_eq!(
            s.on_end(
                now,
                Some(r2.token),
                409,
                "Consumer Deleted",
                Left::default()
            ),
            AfterEnd::CheckConsumer
        );
        assert!(!s.outstanding());
        let r3 = s.next_pull(now, &flow(0, 0)).unwrap();
        assert_eq!(
            s.on_end(
                now,
                Some(r3.token),
                409,
                "Exceeded MaxRequestBatch of 5",
                Left::default()
            ),
            AfterEnd::RefreshLimits
        );
    }

    #[test]
    fn a_request_that_goes_silent_is_given_up() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        assert!(s.stale_deadline().is_none());
        s.next_pull(now, &flow(0, 0)).unwrap();
        let d = s.stale_deadline().unwrap();
        assert_eq!(d, now + Duration::from_millis(10_500));
        s.on_heartbeat(now + Duration::from_secs(4));
        assert_eq!(
            s.stale_deadline().unwrap(),
            now + Duration::from_millis(14_500)
        );
    }

    #[test]
    fn closing_asks_for_nothing() {
        let (mut s, now) = state(500, DEFAULT_MAX_BYTES);
        s.set_closing();
        assert!(s.next_pull(now, &flow(0, 0)).is_none());
        assert_eq!(s.wake_at(&flow(0, 0)), (0, 0));
    }

    #[test]
    fn request_bodies() {
        let r = PullRequest {
            token: 3,
            batch: 10,
            max_bytes: 1024,
            expires: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
        };
        let v: Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"batch": 10, "max_bytes": 1024, "expires": 30_000_000_000u64, "idle_heartbeat": 5_000_000_000u64})
        );
    }

    #[test]
    fn limits_from_a_consumer_config() {
        let cfg = serde_json::json!({"max_batch": 20, "max_bytes": 0, "max_expires": 5_000_000_000u64, "max_ack_pending": -1});
        let l = ServerLimits::from_config(&cfg, 100);
        assert_eq!(l.max_batch, 20);
        assert_eq!(l.max_request_bytes, 0);
        assert_eq!(l.max_expires, Some(Duration::from_secs(5)));
        assert_eq!(l.max_ack_pending, None);
    }
}
