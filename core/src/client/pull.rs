//! Durable pull consumption: what to ask the server for, and a thin pump
//! that asks it.
//!
//! The server counts a delivery the moment it sends a message, and a
//! delivered message holds a `max_ack_pending` slot until it is settled. So
//! a consumer must not ask for more than the application is about to
//! process: what a process holds unseen is spent when it stops (each
//! restart would burn a `max_deliver` attempt on it), and it starves the
//! other workers of the same durable. [`PullState`] is the bookkeeping
//! (no I/O, no clock: times come in as arguments). It keeps one pull
//! request outstanding at a time, sized to
//!
//! * a window of messages that adapts to how fast the application takes
//!   them: about four times what it takes during one pull round trip, plus
//!   one; it starts at one message, so a worker that handles one job and
//!   stops held one job; it never exceeds `max_messages`, nor a quarter of
//!   the consumer's `max_ack_pending`, unless a taker asks for more by number
//!   (`fetch(n)`, `batches(n)`);
//! * a byte budget (`max_bytes` in every request): what is buffered and
//!   held plus what is asked for stays within `max_bytes`, except that a
//!   request made while nothing is held may ask for one message of any size
//!   the server allows (the server's `max_payload`).
//!
//! One request at a time also makes the accounting exact: a request ends
//! when its batch or its bytes run out (the server sends nothing then) or
//! with a status (408 expired, 409 ...), and statuses name the request
//! because each has its own reply subject (`<inbox>.<token>`).
//!
//! [`pump`] subscribes `<inbox>.*`, sends what the state asks for, feeds
//! it what arrives, and re-pulls at once after a reconnect or when
//! heartbeats stop (the server may have forgotten the request).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::consume::{AckKind, Acker, Flow, InboundMessage, Inbox};
use crate::client::events::Denied;
use crate::client::{jsapi, round_trip, Connected};
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
    out: Option<Outstanding>,
    next_token: u64,
    closing: bool,
    /// Messages the application takes per second (smoothed).
    rate: f64,
    sampled: Option<(Instant, u64)>,
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
            out: None,
            next_token: 1,
            closing: false,
            rate: 0.0,
            sampled: None,
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
        self.out.is_some()
    }

    fn cap(&self) -> usize {
        let share = self
            .limits
            .max_ack_pending
            .map_or(usize::MAX, |m| (m / 4).max(1));
        self.opts.max_messages.min(share).max(1)
    }

    /// How many messages the consumption aims to hold (buffered, handed out
    /// and asked for) when no taker names a number.
    pub fn window(&self) -> usize {
        let rtt = self.latency.min().unwrap_or_default().as_secs_f64();
        let per_round_trip = self.rate * rtt;
        let w = 1.0 + (4.0 * per_round_trip + 0.75).floor();
        let w = if w.is_finite() && w < 1e9 {
            w as usize
        } else {
            usize::MAX
        };
        w.clamp(1, self.cap())
    }

    /// Most messages one take hands out: half the window, so the other half
    /// can be on its way.
    pub fn handout(&self) -> usize {
        (self.window() / 2).max(1)
    }

    fn wanted(&self, flow: &Flow) -> usize {
        self.window().max(flow.demand)
    }

    /// The holdings (buffered + handed out) at or below which a take wakes
    /// the pump to pull again (0 while a request is outstanding: then only a
    /// taker that starts to wait wakes it).
    pub fn wake_at(&self, flow: &Flow) -> usize {
        if self.out.is_some() || self.closing {
            0
        } else {
            self.wanted(flow) / 2
        }
    }

    /// Learn how fast the application takes messages.
    pub fn observe(&mut self, now: Instant, flow: &Flow) {
        match self.sampled {
            None => self.sampled = Some((now, flow.taken)),
            Some((at, taken)) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let n = flow.taken.saturating_sub(taken);
                if dt >= 0.002 || n >= 64 {
                    let inst = n as f64 / dt.max(1e-6);
                    self.rate = if self.rate == 0.0 {
                        inst
                    } else {
                        0.5 * self.rate + 0.5 * inst
                    };
                    self.sampled = Some((now, flow.taken));
                }
            }
        }
    }

    /// The request to send now, if any; it is outstanding from here on.
    pub fn next_pull(&mut self, now: Instant, flow: &Flow) -> Option<PullRequest> {
        if self.closing || self.out.is_some() {
            return None;
        }
        let held = flow.buffered + flow.held;
        let held_bytes = flow.buffered_bytes + flow.held_bytes;
        let wanted = self.wanted(flow);
        if held >= wanted || (held > wanted / 2 && !flow.waiting) {
            return None;
        }
        let mut batch = wanted - held;
        if self.limits.max_batch > 0 {
            batch = batch.min(self.limits.max_batch);
        }
        let room = self.opts.max_bytes.saturating_sub(held_bytes);
        let mut bytes = if held == 0 {
            // Never stall: with nothing held, one message of any size fits.
            room.max(self.size_hint).max(self.floor())
        } else if room >= self.size_hint.max(1) {
            room
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
        self.out = Some(Outstanding {
            token,
            msgs: batch,
            bytes,
            sent: now,
            delivered: 0,
        });
        self.last_activity = now;
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
        if self.out.as_ref().is_some_and(|o| o.token == token) {
            self.out = None;
        }
    }

    /// The largest message the server can hold, with room for its subject
    /// and reply.
    fn floor(&self) -> usize {
        self.limits.max_payload.max(1) + 8192
    }

    /// A message arrived (`length` as the server counts it).
    pub fn on_message(&mut self, now: Instant, length: usize) {
        self.size_hint = self.size_hint.max(length);
        self.last_activity = now;
        if let Some(o) = &mut self.out {
            if o.delivered == 0 {
                self.latency.push(now.saturating_duration_since(o.sent));
            }
            o.delivered += 1;
            o.msgs = o.msgs.saturating_sub(1);
            o.bytes = o.bytes.saturating_sub(length);
            // The server ends a request silently when its batch or its
            // bytes run out.
            if o.msgs == 0 || o.bytes == 0 {
                self.out = None;
            }
        }
    }

    /// An idle heartbeat: the request is alive.
    pub fn on_heartbeat(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// A request ended with a status (`token` from its reply subject).
    pub fn on_end(&mut self, now: Instant, token: Option<u64>, code: u16, text: &str) -> AfterEnd {
        self.last_activity = now;
        let current = match (&self.out, token) {
            (Some(o), Some(t)) if o.token == t => self.out.take(),
            (Some(_), None) => self.out.take(),
            // A request we already gave up on (reconnect, stale): it says
            // no more than that it is gone.
            _ => None,
        };
        let Some(ended) = current else {
            return AfterEnd::Continue;
        };
        match code {
            404 | 408 => AfterEnd::Continue,
            409 if text.contains("Message Size Exceeds MaxBytes") => {
                if ended.delivered > 0 {
                    return AfterEnd::Continue;
                }
                // Nothing fit: the next message is larger than we asked for.
                let asked = ended.bytes;
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
    /// server may have forgotten the request.
    pub fn on_reset(&mut self) {
        self.out = None;
    }

    /// When an outstanding request is presumed lost (no message, no
    /// heartbeat for two heartbeats).
    pub fn stale_deadline(&self) -> Option<Instant> {
        self.out
            .as_ref()
            .map(|_| self.last_activity + self.opts.heartbeat * 2 + Duration::from_millis(500))
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
        jsapi::check_name(stream, "stream")?;
        jsapi::check_name(durable, "consumer")?;
        if opts.max_messages == 0 {
            return Err(Error::invalid("batch must be at least 1"));
        }
        if opts.max_bytes == 0 {
            return Err(Error::invalid("max_bytes must be at least 1"));
        }
        let info = jsapi::consumer_info(&conn.client, stream, durable).await?;
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
        let mut rest = self.inbox.close(None);
        let _ = self.phase.send(Phase::Quiesce);
        self.settle().await;
        let _ = self.phase.send(Phase::Stop);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            if let Ok(more) = task.await {
                rest.extend(more);
            }
        }
        rest.extend(self.inbox.close(None));
        for m in &rest {
            if let Some(reply) = &m.reply {
                let _ = self.acker.send(reply.clone(), &AckKind::Nak(None));
            }
        }
        self.settle().await;
    }

    /// Write queued acks and wait until the server has read them.
    pub async fn settle(&self) {
        self.acker.flush().await;
        let _ = round_trip(&self.conn.client, &self.conn.events, SETTLE_TIMEOUT).await;
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
    let next_subject = format!("{}.CONSUMER.MSG.NEXT.{stream}.{durable}", jsapi::API_PREFIX);
    let mut reconnects = conn.reconnects.clone();
    reconnects.borrow_and_update();
    let mut backoff = Duration::from_millis(100);
    let mut leftovers = Vec::new();
    loop {
        let now = Instant::now();
        let current = *phase.borrow_and_update();
        if current == Phase::Stop {
            break;
        }
        if current == Phase::Quiesce {
            state.set_closing();
        }
        let flow = inbox.flow();
        state.observe(now, &flow);
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
        inbox.set_wake_at(state.wake_at(&after));
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
                    break;
                }
            }
            msg = sub.next() => {
                let Some(msg) = msg else {
                    inbox.fail(Error::new(ErrorKind::Closed, "the connection is closed"));
                    return leftovers;
                };
                let now = Instant::now();
                let Some(status) = msg.status else {
                    backoff = Duration::from_millis(100);
                    state.on_message(now, msg.length);
                    if let Err(m) = inbox.push_now(InboundMessage::from(msg)) {
                        leftovers.push(m);
                    }
                    continue;
                };
                let code = status.as_u16();
                if code == 100 {
                    state.on_heartbeat(now);
                    continue;
                }
                let token = msg
                    .subject
                    .as_str()
                    .strip_prefix(prefix.as_str())
                    .and_then(|t| t.strip_prefix('.'))
                    .and_then(|t| t.parse::<u64>().ok());
                let text = msg.description.clone().unwrap_or_default();
                match state.on_end(now, token, code, &text) {
                    AfterEnd::Continue => {}
                    AfterEnd::TooLarge(limit) => {
                        inbox.fail(Error::invalid(format!(
                            "a message on stream {stream:?} is larger than consumer {durable:?} lets one pull request carry (its max_bytes is {limit}): raise the consumer's max_bytes"
                        )));
                        break;
                    }
                    AfterEnd::RefreshLimits => {
                        if let Ok(info) = jsapi::consumer_info(client, &stream, &durable).await {
                            let config = info.get("config").cloned().unwrap_or_default();
                            state.set_limits(ServerLimits::from_config(
                                &config,
                                client.server_info().max_payload,
                            ));
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                    AfterEnd::CheckConsumer => {
                        match jsapi::consumer_info(client, &stream, &durable).await {
                            Err(e) if matches!(e.kind, ErrorKind::StreamNotFound | ErrorKind::ConsumerNotFound) => {
                                inbox.fail(e);
                                break;
                            }
                            _ => {
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(2));
                            }
                        }
                    }
                }
            }
            changed = reconnects.changed() => {
                if changed.is_err() {
                    break;
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
                break;
            }
            _ = inbox.taken() => {}
        }
    }
    // Closing: what an outstanding request still brings (a nak'ed message
    // coming back, say) is taken until the server goes quiet, so it can be
    // released instead of waiting out ack_wait on an inbox nobody reads.
    let quiet = state.quiet_period();
    let give_up = Instant::now() + Duration::from_millis(250);
    while state.outstanding() {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                let now = Instant::now();
                match msg.status {
                    None => {
                        state.on_message(now, msg.length);
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
        s.on_message(now + MS, 200);
        assert!(!s.outstanding(), "a batch of one ends with its message");
        // The application holds it: nothing more is asked for.
        assert!(s.next_pull(now + MS, &flow(0, 1)).is_none());
        assert!(s.next_pull(now + MS, &flow(1, 0)).is_none());
        assert!(s.next_pull(now + MS, &flow(0, 0)).is_some());
    }

    #[test]
    fn the_window_follows_the_rate_the_application_takes_messages() {
        let (mut s, mut now) = state(500, DEFAULT_MAX_BYTES);
        let mut taken = 0u64;
        // A fast taker: 100k messages/s, pull round trip 1 ms.
        for _ in 0..20 {
            let f = Flow {
                taken,
                ..Flow::default()
            };
            s.observe(now, &f);
            if let Some(r) = s.next_pull(now, &f) {
                s.on_message(now + MS, 100);
                for _ in 1..r.batch {
                    s.on_message(now + MS, 100);
                }
            }
            now += Duration::from_millis(10);
            taken += 1000;
        }
        assert_eq!(s.window(), 250, "capped at a quarter of max_ack_pending");
        // A slow taker (20/s) brings it back to one.
        for _ in 0..20 {
            now += Duration::from_millis(50);
            taken += 1;
            s.observe(
                now,
                &Flow {
                    taken,
                    ..Flow::default()
                },
            );
        }
        assert_eq!(s.window(), 1);
        assert_eq!(s.handout(), 1);
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
            s.on_message(now + MS, big);
        }
        // The 8th does not fit: the server ends the request with 409.
        assert_eq!(
            s.on_end(
                now + MS,
                Some(r.token),
                409,
                "Message Size Exceeds MaxBytes"
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
            s.on_end(now, Some(r.token), 409, "Message Size Exceeds MaxBytes"),
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
            s.on_end(now, Some(r.token), 408, "Request Timeout"),
            AfterEnd::Continue
        );
        assert!(s.outstanding());
        assert_eq!(
            s.on_end(now, Some(r2.token), 409, "Consumer Deleted"),
            AfterEnd::CheckConsumer
        );
        assert!(!s.outstanding());
        let r3 = s.next_pull(now, &flow(0, 0)).unwrap();
        assert_eq!(
            s.on_end(now, Some(r3.token), 409, "Exceeded MaxRequestBatch of 5"),
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
        assert_eq!(s.wake_at(&flow(0, 0)), 0);
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
