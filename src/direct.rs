//! The publish connection the event loop drives itself.
//!
//! `await bus.publish(...)` on the main connection crosses threads twice: the
//! loop hands the message to a tokio worker, and the worker wakes the loop
//! with the ack. On a busy machine each wakeup costs tens of microseconds,
//! as much as the rest of a publish. So a `Bus` opens a second connection
//! whose socket belongs to the asyncio loop: `DirectConn` is its asyncio
//! protocol. A publish appends `HPUB` to a buffer (written once per loop
//! iteration) and returns an asyncio future; `data_received` parses the
//! acks and resolves the futures, all on the loop thread, without a wakeup
//! in between.
//!
//! Only publishes that wait for their own ack go this way. Whenever the
//! direct connection is not ready (still opening, lost, lame duck, message
//! over `max_payload`), `publish` uses the main connection, so correctness
//! never depends on it. `python/natsbus/_direct.py` opens it, upgrades it
//! to TLS and reopens it after a loss.
//!
//! Every method runs on the loop thread. The state sits behind a mutex that
//! is never held while Python code runs (asyncio may call back into the
//! protocol from `transport.write`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use natsbus_core::client::events::{Denied, Violation};
use natsbus_core::client::publish::{
    ack_timeout, lost_before_ack, parse_pub_ack, DEFAULT_PUBLISH_TIMEOUT,
};
use natsbus_core::client::wire::{self, ServerInfo, ServerOp};
use natsbus_core::client::{ConnectConfig, OutboundMessage, PubAck as CorePubAck, Publisher};
use natsbus_core::{Error, ErrorKind};

use crate::errors::to_pyerr;
use crate::runtime::{set_outcome, Completer};

/// Bytes asyncio may read per `recv_into`.
const READ_BUFFER: usize = 64 * 1024;

/// The subscription id of the ack inbox.
const INBOX_SID: u64 = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Connected, waiting for the server's INFO.
    AwaitInfo,
    /// CONNECT sent, waiting for the PONG that confirms it.
    Handshake,
    /// Takes publishes.
    Ready,
    /// Takes no new publishes; closes once the pending ones are settled.
    Closing,
    /// The socket is gone.
    Lost,
}

struct Pending {
    fut: Py<PyAny>,
    /// Kept until the ack: "no responders" hands it to the main
    /// connection's retry (the stream may be between leaders).
    msg: OutboundMessage,
    started: Instant,
    deadline: Instant,
}

/// How a future ends.
enum Outcome {
    Ack(CorePubAck),
    Value(bool),
    Done,
    Fail(Error),
}

struct Inner {
    phase: Phase,
    transport: Option<Py<PyAny>>,
    parser: wire::Parser,
    info: Option<ServerInfo>,
    info_fut: Option<Py<PyAny>>,
    handshake_fut: Option<Py<PyAny>>,
    /// Why the server refused us (`-ERR` before the handshake finished).
    refusal: Option<Error>,
    /// By token (the last inbox token), i.e. in send order.
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    out: Vec<u8>,
    flush_scheduled: bool,
    /// The timer that will sweep expired publishes: its generation (older
    /// timers find a newer generation and do nothing) and when it fires.
    timer_gen: u64,
    timer_at: Option<Instant>,
}

impl Inner {
    /// Arrange a sweep at `deadline` unless one comes earlier already.
    fn arm_timer(&mut self, deadline: Instant) -> Option<(u64, Duration)> {
        if self.timer_at.is_some_and(|t| t <= deadline) {
            return None;
        }
        self.timer_gen += 1;
        self.timer_at = Some(deadline);
        Some((
            self.timer_gen,
            deadline.saturating_duration_since(Instant::now()),
        ))
    }

    fn take_handshake_futures(&mut self) -> Vec<Py<PyAny>> {
        self.info_fut
            .take()
            .into_iter()
            .chain(self.handshake_fut.take())
            .collect()
    }
}

/// What a publish connection needs from its bus: the connect settings, the
/// publisher it hands "no responders" to, and the bus's completer. Made by
/// `BusCore.publish_setup()`, so this room needs nothing of the bus.
#[pyclass(frozen, module = "natsbus._natsbus")]
pub struct PublishSetup {
    config: Arc<ConnectConfig>,
    publisher: Publisher,
    completer: Arc<Completer>,
}

impl PublishSetup {
    pub fn new(
        config: Arc<ConnectConfig>,
        publisher: Publisher,
        completer: Arc<Completer>,
    ) -> PublishSetup {
        PublishSetup {
            config,
            publisher,
            completer,
        }
    }
}

/// One loop-driven connection (an asyncio protocol). `natsbus._direct`
/// subclasses it with `asyncio.BufferedProtocol`, opens it
/// (`loop.create_connection`) and attaches it to the bus (`BusCore.attach_publish_connection`).
#[pyclass(frozen, subclass, module = "natsbus._natsbus")]
pub struct DirectConn {
    inner: Mutex<Inner>,
    /// Retries publishes answered "no responders" (see `Publisher`).
    publisher: Publisher,
    completer: Arc<Completer>,
    /// What asyncio reads into (`get_buffer`): one buffer for the life of
    /// the connection instead of a fresh bytes object per read.
    rbuf: Py<PyByteArray>,
    inbox: String,
    config: Arc<ConnectConfig>,
    event_loop: Py<PyAny>,
    lost_fut: Py<PyAny>,
}

fn settle(py: Python<'_>, fut: &Py<PyAny>, outcome: Outcome) {
    let value = match outcome {
        Outcome::Ack(a) => Py::new(py, crate::results::PubAck::from(a)).map(Py::into_any),
        Outcome::Value(b) => Ok(pyo3::types::PyBool::new(py, b)
            .to_owned()
            .into_any()
            .unbind()),
        Outcome::Done => Ok(py.None()),
        Outcome::Fail(e) => Err(to_pyerr(py, &e)),
    };
    set_outcome(py, fut.bind(py), value);
}

/// Why the server refused the connection, as the error users catch.
fn refused(text: &str) -> Error {
    let auth = ["Authorization", "Authentication", "Permissions Violation"]
        .iter()
        .any(|w| text.contains(w));
    Error::new(
        if auth {
            ErrorKind::Auth
        } else {
            ErrorKind::Connect
        },
        format!("the server refused the publish connection: {text}"),
    )
}

impl DirectConn {
    pub fn new(
        py: Python<'_>,
        config: Arc<ConnectConfig>,
        publisher: Publisher,
        completer: Arc<Completer>,
    ) -> PyResult<DirectConn> {
        let event_loop = completer.event_loop().bind(py).clone();
        let info_fut = event_loop.call_method0("create_future")?.unbind();
        let lost_fut = event_loop.call_method0("create_future")?.unbind();
        Ok(DirectConn {
            inner: Mutex::new(Inner {
                phase: Phase::AwaitInfo,
                transport: None,
                parser: wire::Parser::new(),
                info: None,
                info_fut: Some(info_fut),
                handshake_fut: None,
                refusal: None,
                pending: BTreeMap::new(),
                next_token: 1,
                out: Vec::new(),
                flush_scheduled: false,
                timer_gen: 0,
                timer_at: None,
            }),
            rbuf: PyByteArray::new_with(py, READ_BUFFER, |_| Ok(()))?.unbind(),
            inbox: wire::new_inbox_prefix(config.inbox_prefix()),
            publisher,
            completer,
            config,
            event_loop: event_loop.clone().unbind(),
            lost_fut,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send `msg` on this connection if it is ready; `Err(msg)` hands it
    /// back: "use the main connection". Call on the loop thread, after
    /// checking the loop.
    pub fn try_publish(
        slf: &Bound<'_, Self>,
        completer: &Completer,
        msg: OutboundMessage,
        timeout: Option<Duration>,
    ) -> PyResult<Result<Py<PyAny>, OutboundMessage>> {
        let py = slf.py();
        let this = slf.get();
        if this.lock().phase != Phase::Ready || !completer.in_loop(py) {
            return Ok(Err(msg));
        }
        let fut = completer.create_future(py)?;
        let hlen = wire::header_len(msg.headers.as_ref());
        let started = Instant::now();
        let deadline = started + timeout.unwrap_or(DEFAULT_PUBLISH_TIMEOUT);
        let (token, now, flush, timer) = {
            let mut g = this.lock();
            let (max, headers) = g
                .info
                .as_ref()
                .map_or((0, false), |i| (i.max_payload, i.headers));
            if g.phase != Phase::Ready
                || (max > 0 && hlen + msg.payload.len() > max)
                || (!headers && hlen > 0)
            {
                return Ok(Err(msg));
            }
            let token = g.next_token;
            g.next_token += 1;
            let mut reply = String::with_capacity(this.inbox.len() + 20);
            reply.push_str(&this.inbox);
            let _ = write!(reply, "{token}");
            wire::write_publish(
                &mut g.out,
                &msg.subject,
                &reply,
                msg.headers.as_ref(),
                &msg.payload,
            );
            g.pending.insert(
                token,
                Pending {
                    fut: fut.clone_ref(py),
                    msg,
                    started,
                    deadline,
                },
            );
            // Alone on the wire (the usual `await publish` in a loop): write
            // now. Otherwise batch with whatever else this loop iteration sends.
            let now = match &g.transport {
                Some(t) if g.pending.len() == 1 && !g.flush_scheduled => Some(t.clone_ref(py)),
                _ => None,
            }
            .map(|t| (t, std::mem::take(&mut g.out)));
            let flush = now.is_none() && !std::mem::replace(&mut g.flush_scheduled, true);
            (token, now, flush, g.arm_timer(deadline))
        };
        let ev = this.event_loop.bind(py);
        if let Some((transport, bytes)) = now {
            if let Err(e) = this.write(py, Some(&transport), &bytes) {
                // The caller gets the error; nothing waits for an ack.
                this.lock().pending.remove(&token);
                return Err(e);
            }
        }
        if flush {
            ev.call_method1(
                pyo3::intern!(py, "call_soon"),
                (slf.getattr(pyo3::intern!(py, "_flush"))?,),
            )?;
        }
        if let Some((generation, delay)) = timer {
            ev.call_method1(
                pyo3::intern!(py, "call_later"),
                (
                    delay.as_secs_f64(),
                    slf.getattr(pyo3::intern!(py, "_sweep"))?,
                    generation,
                ),
            )?;
        }
        Ok(Ok(fut))
    }

    /// Take no new publishes; close once those in flight are settled.
    pub fn close_when_idle(&self, py: Python<'_>) {
        let transport = {
            let mut g = self.lock();
            match g.phase {
                Phase::Lost => None,
                _ if g.pending.is_empty() => g.transport.as_ref().map(|t| t.clone_ref(py)),
                _ => {
                    g.phase = Phase::Closing;
                    None
                }
            }
        };
        if let Some(t) = transport {
            let _ = t.bind(py).call_method0("close");
        }
    }

    fn write(&self, py: Python<'_>, transport: Option<&Py<PyAny>>, bytes: &[u8]) -> PyResult<()> {
        if let Some(t) = transport {
            t.bind(py)
                .call_method1(pyo3::intern!(py, "write"), (PyBytes::new(py, bytes),))?;
        }
        Ok(())
    }
}

#[pymethods]
impl DirectConn {
    /// A connection made from `setup` (`BusCore.publish_setup()`);
    /// natsbus._direct subclasses this as an `asyncio.BufferedProtocol`
    /// and opens it.
    #[new]
    fn py_new(py: Python<'_>, setup: &Bound<'_, PublishSetup>) -> PyResult<Self> {
        let s = setup.get();
        DirectConn::new(
            py,
            s.config.clone(),
            s.publisher.clone(),
            s.completer.clone(),
        )
    }

    // -- asyncio.Protocol / BufferedProtocol --

    fn connection_made(&self, transport: Py<PyAny>) {
        self.lock().transport = Some(transport);
    }

    fn get_buffer(&self, py: Python<'_>, sizehint: isize) -> Py<PyByteArray> {
        // Always the whole buffer: asyncio passes -1 ("any size") anyway.
        let _ = sizehint;
        self.rbuf.clone_ref(py)
    }

    fn buffer_updated(&self, py: Python<'_>, nbytes: usize) -> PyResult<()> {
        {
            let buf = self.rbuf.bind(py);
            // SAFETY: we hold the GIL and run no Python code while the slice
            // lives, so nothing can resize or write the bytearray meanwhile.
            let bytes = unsafe { buf.as_bytes() };
            let n = nbytes.min(bytes.len());
            self.lock().parser.feed(&bytes[..n]);
        }
        self.process(py)
    }

    fn data_received(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.lock().parser.feed(data);
        self.process(py)
    }

    fn eof_received(&self) -> bool {
        // Let the transport close itself; connection_lost follows.
        false
    }

    #[pyo3(signature = (exc=None))]
    fn connection_lost(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) {
        let (pending, handshake, refusal) = {
            let mut g = self.lock();
            g.phase = Phase::Lost;
            g.transport = None;
            g.out.clear();
            g.timer_at = None;
            (
                std::mem::take(&mut g.pending),
                g.take_handshake_futures(),
                g.refusal.clone(),
            )
        };
        let why = exc
            .map(|e| e.to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "closed by the server".into());
        for f in handshake {
            let e = refusal.clone().unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Connect,
                    format!("the publish connection closed during its handshake: {why}"),
                )
            });
            settle(py, &f, Outcome::Fail(e));
        }
        for (_, p) in pending {
            settle(py, &p.fut, Outcome::Fail(lost_before_ack(&p.msg.subject)));
        }
        settle(py, &self.lost_fut, Outcome::Done);
    }

    fn pause_writing(&self) {
        // The transport buffers; callers are bounded by their own acks.
    }

    fn resume_writing(&self) {}

    // -- driven by natsbus._direct --

    /// A future that resolves with the server's `tls_required` once INFO arrives.
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (pending, arrived) = {
            let g = self.lock();
            (
                g.info_fut.as_ref().map(|f| f.clone_ref(py)),
                g.info.as_ref().map(|i| i.tls_required),
            )
        };
        match (pending, arrived) {
            (Some(f), _) => Ok(f),
            (None, Some(tls_required)) => {
                let f = self.event_loop.bind(py).call_method0("create_future")?;
                f.call_method1("set_result", (tls_required,))?;
                Ok(f.unbind())
            }
            (None, None) => Err(to_pyerr(
                py,
                &Error::new(
                    ErrorKind::Connect,
                    "the publish connection closed before INFO",
                ),
            )),
        }
    }

    /// Replace the transport (after `loop.start_tls`).
    fn set_transport(&self, transport: Py<PyAny>) {
        self.lock().transport = Some(transport);
    }

    /// Send CONNECT, subscribe the ack inbox and PING; the returned future
    /// resolves on the PONG, or fails with the server's refusal.
    fn handshake(&self, py: Python<'_>, tls: bool) -> PyResult<Py<PyAny>> {
        let fut = self
            .event_loop
            .bind(py)
            .call_method0("create_future")?
            .unbind();
        let (bytes, transport) = {
            let mut g = self.lock();
            if let Some(e) = &g.refusal {
                return Err(to_pyerr(py, e));
            }
            let Some(info) = g.info.as_ref().filter(|_| g.phase == Phase::AwaitInfo) else {
                return Err(to_pyerr(
                    py,
                    &Error::new(
                        ErrorKind::Connect,
                        "the publish connection is not waiting to handshake",
                    ),
                ));
            };
            let auth = self.config.effective_auth();
            let mut bytes = wire::connect_line(info, &auth, self.config.name.as_deref(), tls)
                .map_err(|e| to_pyerr(py, &e))?;
            wire::write_sub(&mut bytes, &format!("{}*", self.inbox), INBOX_SID);
            bytes.extend_from_slice(b"PING\r\n");
            g.phase = Phase::Handshake;
            g.handshake_fut = Some(fut.clone_ref(py));
            (bytes, g.transport.as_ref().map(|t| t.clone_ref(py)))
        };
        self.write(py, transport.as_ref(), &bytes)?;
        Ok(fut)
    }

    /// A future that resolves when the connection is gone.
    fn lost(&self, py: Python<'_>) -> Py<PyAny> {
        self.lost_fut.clone_ref(py)
    }

    /// Close now; publishes in flight fail as "connection lost".
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let t = self.lock().transport.as_ref().map(|t| t.clone_ref(py));
        if let Some(t) = t {
            t.bind(py).call_method0("close")?;
        }
        Ok(())
    }

    /// Whether publishes go through this connection now.
    #[getter]
    fn ready(&self) -> bool {
        self.lock().phase == Phase::Ready
    }

    /// Publishes sent and not yet settled.
    #[getter]
    fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// The name of the server this connection is on ("" before INFO).
    #[getter]
    fn server_name(&self) -> String {
        self.lock()
            .info
            .as_ref()
            .map(|i| i.server_name.clone())
            .unwrap_or_default()
    }

    /// Other servers of the cluster, from the server's INFO.
    #[getter]
    fn connect_urls(&self) -> Vec<String> {
        self.lock()
            .info
            .as_ref()
            .map(|i| i.connect_urls.clone())
            .unwrap_or_default()
    }

    /// Write what publishes queued in this loop iteration.
    fn _flush(&self, py: Python<'_>) -> PyResult<()> {
        let (bytes, transport) = {
            let mut g = self.lock();
            g.flush_scheduled = false;
            if g.out.is_empty() {
                return Ok(());
            }
            (
                std::mem::take(&mut g.out),
                g.transport.as_ref().map(|t| t.clone_ref(py)),
            )
        };
        self.write(py, transport.as_ref(), &bytes)
    }

    /// Fail publishes whose timeout has passed; arrange the next sweep.
    fn _sweep(slf: &Bound<'_, Self>, generation: u64) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (expired, next, close) = {
            let mut g = this.lock();
            if generation != g.timer_gen || g.timer_at.is_none() {
                return Ok(());
            }
            g.timer_at = None;
            let now = Instant::now();
            let due: Vec<u64> = g
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(t, _)| *t)
                .collect();
            let expired: Vec<Pending> = due.iter().filter_map(|t| g.pending.remove(t)).collect();
            let next = g
                .pending
                .values()
                .map(|p| p.deadline)
                .min()
                .and_then(|d| g.arm_timer(d));
            let close = (g.phase == Phase::Closing && g.pending.is_empty())
                .then(|| g.transport.as_ref().map(|t| t.clone_ref(py)))
                .flatten();
            (expired, next, close)
        };
        for p in expired {
            settle(py, &p.fut, Outcome::Fail(ack_timeout(&p.msg.subject)));
        }
        if let Some((generation, delay)) = next {
            this.event_loop.bind(py).call_method1(
                "call_later",
                (delay.as_secs_f64(), slf.getattr("_sweep")?, generation),
            )?;
        }
        if let Some(t) = close {
            t.bind(py).call_method0("close")?;
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        let g = self.lock();
        format!(
            "<natsbus direct publish connection {:?} pending={}>",
            g.phase,
            g.pending.len()
        )
    }
}

impl DirectConn {
    /// Act on every complete operation the parser holds.
    fn process(&self, py: Python<'_>) -> PyResult<()> {
        let mut settled: Vec<(Py<PyAny>, Outcome)> = Vec::new();
        let mut handoff: Vec<Pending> = Vec::new();
        let mut reply = Vec::new();
        let mut close = false;
        let transport = {
            let mut g = self.lock();
            loop {
                let op = match g.parser.next_op() {
                    Ok(Some(op)) => op,
                    Ok(None) => break,
                    Err(e) => {
                        for f in g.take_handshake_futures() {
                            settled.push((f, Outcome::Fail(e.clone())));
                        }
                        close = true;
                        break;
                    }
                };
                match op {
                    ServerOp::Info(info) => {
                        if let Some(f) = g.info_fut.take() {
                            settled.push((f, Outcome::Value(info.tls_required)));
                        }
                        if info.ldm && g.phase == Phase::Ready {
                            g.phase = Phase::Closing;
                        }
                        g.info = Some(*info);
                    }
                    ServerOp::Ping => reply.extend_from_slice(b"PONG\r\n"),
                    ServerOp::Pong => {
                        if g.phase == Phase::Handshake {
                            g.phase = Phase::Ready;
                            if let Some(f) = g.handshake_fut.take() {
                                settled.push((f, Outcome::Done));
                            }
                        }
                    }
                    ServerOp::Ok => {}
                    ServerOp::Err(text) => {
                        if matches!(g.phase, Phase::AwaitInfo | Phase::Handshake) {
                            let e = refused(&text);
                            for f in g.take_handshake_futures() {
                                settled.push((f, Outcome::Fail(e.clone())));
                            }
                            g.refusal = Some(e);
                            close = true;
                        } else if let Some(v) =
                            Violation::parse(&text).filter(|v| v.denied == Denied::Publish)
                        {
                            // The server refuses in order: the oldest publish
                            // to this subject still waiting is the one.
                            let token = g
                                .pending
                                .iter()
                                .find(|(_, p)| p.msg.subject == v.subject)
                                .map(|(t, _)| *t);
                            if let Some(p) = token.and_then(|t| g.pending.remove(&t)) {
                                let e = v.error(&format!("publish to {:?}", v.subject));
                                settled.push((p.fut, Outcome::Fail(e)));
                            }
                        }
                    }
                    ServerOp::Msg(d) => {
                        if d.sid != INBOX_SID {
                            continue;
                        }
                        let token = d
                            .subject
                            .strip_prefix(self.inbox.as_str())
                            .and_then(|t| t.parse::<u64>().ok());
                        // Unknown tokens are acks that arrived after their timeout.
                        if let Some(p) = token.and_then(|t| g.pending.remove(&t)) {
                            if d.status == Some(503) {
                                // No stream, or one between leaders: the
                                // main connection's publisher tells them
                                // apart and retries until the deadline.
                                handoff.push(p);
                                continue;
                            }
                            let outcome = match d.status {
                                Some(code) => Outcome::Fail(Error::new(
                                    ErrorKind::JetStream,
                                    format!(
                                        "publish to {:?}: the server answered with status {code}",
                                        p.msg.subject
                                    ),
                                )),
                                None => match parse_pub_ack(&p.msg.subject, &d.payload) {
                                    Ok(a) => Outcome::Ack(a),
                                    Err(e) => Outcome::Fail(e),
                                },
                            };
                            settled.push((p.fut, outcome));
                        }
                    }
                }
            }
            if g.phase == Phase::Closing && g.pending.is_empty() {
                close = true;
            }
            g.transport.as_ref().map(|t| t.clone_ref(py))
        };
        if !reply.is_empty() {
            self.write(py, transport.as_ref(), &reply)?;
        }
        for (fut, outcome) in settled {
            settle(py, &fut, outcome);
        }
        for p in handoff {
            let publisher = self.publisher.clone();
            let completer = self.completer.clone();
            crate::runtime::runtime().spawn(async move {
                let r = publisher
                    .publish_after_no_responders(p.msg, p.started.into(), p.deadline.into())
                    .await
                    .map(|a| Box::new(a) as Box<dyn crate::runtime::Deliver>);
                completer.complete(p.fut, r);
            });
        }
        if close {
            if let Some(t) = transport {
                t.bind(py).call_method0("close")?;
            }
        }
        Ok(())
    }
}
