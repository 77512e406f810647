//! The publish connection the event loop drives itself.
//!
//! `await bus.publish(...)` on the main connection crosses threads twice: the
//! loop hands the message to a tokio worker, and the worker wakes the loop
//! with the ack. On a busy machine each wakeup costs tens of microseconds,
//! as much as the rest of a publish. So a `Bus` opens a second connection
//! whose socket belongs to the asyncio loop: `PublishConn` is its asyncio
//! protocol. A publish appends `HPUB` to a buffer (written once per loop
//! iteration) and returns an asyncio future; `data_received` parses the
//! acks and resolves the futures, all on the loop thread, without a wakeup
//! in between.
//!
//! Only publishes that wait for their own ack go this way. Whenever the
//! direct connection is not ready (still opening, lost, lame duck, message
//! over `max_payload`), `publish` uses the main connection, so correctness
//! never depends on it. `python/natsbus/_publish_conn.py` opens it, upgrades it
//! to TLS and reopens it after a loss.
//!
//! The protocol state (phases, pending publishes, what to write, timeouts)
//! is `natsbus_core::client::publish_conn::PublishConnState`, with no I/O
//! and cargo tests; this file only maps asyncio's callbacks to its calls and
//! its answers to writes, future results and timers.
//!
//! Every method runs on the loop thread. The state sits behind a mutex that
//! is never held while Python code runs (asyncio may call back into the
//! protocol from `transport.write`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use natsbus_core::client::publish::DEFAULT_PUBLISH_TIMEOUT;
use natsbus_core::client::publish_conn::{Outcome, Phase, PublishConnState, Received};
use natsbus_core::client::{ConnectConfig, OutboundMessage, Publisher};
use natsbus_core::{Error, ErrorKind};

use crate::errors::to_pyerr;
use crate::runtime::{set_outcome, Completer};

/// Bytes asyncio may read per `recv_into`.
const READ_BUFFER: usize = 64 * 1024;

/// The protocol state, and the transport asyncio gave us.
struct Inner {
    state: PublishConnState<Py<PyAny>>,
    transport: Option<Py<PyAny>>,
}

impl Inner {
    fn transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.transport.as_ref().map(|t| t.clone_ref(py))
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

/// One loop-driven connection (an asyncio protocol). `natsbus._publish_conn`
/// subclasses it with `asyncio.BufferedProtocol`, opens it
/// (`loop.create_connection`) and attaches it to the bus (`BusCore.attach_publish_connection`).
#[pyclass(frozen, subclass, module = "natsbus._natsbus")]
pub struct PublishConn {
    inner: Mutex<Inner>,
    /// Retries publishes answered "no responders" (see `Publisher`).
    publisher: Publisher,
    completer: Arc<Completer>,
    /// What asyncio reads into (`get_buffer`): one buffer for the life of
    /// the connection instead of a fresh bytes object per read.
    rbuf: Py<PyByteArray>,
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

impl PublishConn {
    pub fn new(
        py: Python<'_>,
        config: Arc<ConnectConfig>,
        publisher: Publisher,
        completer: Arc<Completer>,
    ) -> PyResult<PublishConn> {
        let event_loop = completer.event_loop().bind(py).clone();
        let info_fut = event_loop.call_method0("create_future")?.unbind();
        let lost_fut = event_loop.call_method0("create_future")?.unbind();
        Ok(PublishConn {
            inner: Mutex::new(Inner {
                state: PublishConnState::new(config.inbox_prefix(), info_fut),
                transport: None,
            }),
            rbuf: PyByteArray::new_with(py, READ_BUFFER, |_| Ok(()))?.unbind(),
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
        if this.lock().state.phase() != Phase::Ready || !completer.in_loop(py) {
            return Ok(Err(msg));
        }
        let fut = completer.create_future(py)?;
        let started = Instant::now();
        let deadline = started + timeout.unwrap_or(DEFAULT_PUBLISH_TIMEOUT);
        let (accepted, transport) = {
            let mut g = this.lock();
            match g.state.publish(msg, fut.clone_ref(py), started, deadline) {
                Ok(a) => (a, g.transport(py)),
                Err(msg) => return Ok(Err(msg)),
            }
        };
        let ev = this.event_loop.bind(py);
        if let Some(bytes) = &accepted.write_now {
            if let Err(e) = this.write(py, transport.as_ref(), bytes) {
                // The caller gets the error; nothing waits for an ack.
                this.lock().state.unsent(accepted.token);
                return Err(e);
            }
        }
        if accepted.schedule_flush {
            ev.call_method1(
                pyo3::intern!(py, "call_soon"),
                (slf.getattr(pyo3::intern!(py, "flush_batched"))?,),
            )?;
        }
        if let Some((generation, at)) = accepted.timer {
            this.arm_sweep(slf, generation, at)?;
        }
        Ok(Ok(fut))
    }

    /// Call `sweep(generation)` at `at`.
    fn arm_sweep(&self, slf: &Bound<'_, Self>, generation: u64, at: Instant) -> PyResult<()> {
        let py = slf.py();
        let delay = at.saturating_duration_since(Instant::now());
        self.event_loop.bind(py).call_method1(
            pyo3::intern!(py, "call_later"),
            (
                delay.as_secs_f64(),
                slf.getattr(pyo3::intern!(py, "sweep"))?,
                generation,
            ),
        )?;
        Ok(())
    }

    /// Take no new publishes; close once those in flight are settled.
    pub fn close_when_idle(&self, py: Python<'_>) {
        let transport = {
            let mut g = self.lock();
            if g.state.close_when_idle() {
                g.transport(py)
            } else {
                None
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
impl PublishConn {
    /// A connection made from `setup` (`BusCore.publish_setup()`);
    /// natsbus._publish_conn subclasses this as an `asyncio.BufferedProtocol`
    /// and opens it.
    #[new]
    fn py_new(py: Python<'_>, setup: &Bound<'_, PublishSetup>) -> PyResult<Self> {
        let s = setup.get();
        PublishConn::new(
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
            self.lock().state.feed(&bytes[..n]);
        }
        self.process(py)
    }

    fn data_received(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.lock().state.feed(data);
        self.process(py)
    }

    fn eof_received(&self) -> bool {
        // Let the transport close itself; connection_lost follows.
        false
    }

    #[pyo3(signature = (exc=None))]
    fn connection_lost(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) {
        let lost = {
            let mut g = self.lock();
            g.transport = None;
            g.state.lost()
        };
        let why = exc
            .map(|e| e.to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "closed by the server".into());
        for f in lost.handshake {
            let e = lost.refusal.clone().unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Connect,
                    format!("the publish connection closed during its handshake: {why}"),
                )
            });
            settle(py, &f, Outcome::Fail(e));
        }
        for (fut, outcome) in lost.pending {
            settle(py, &fut, outcome);
        }
        settle(py, &self.lost_fut, Outcome::Done);
    }

    fn pause_writing(&self) {
        // The transport buffers; callers are bounded by their own acks.
    }

    fn resume_writing(&self) {}

    // -- driven by natsbus._publish_conn --

    /// A future that resolves with the server's `tls_required` once INFO arrives.
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (pending, arrived) = {
            let g = self.lock();
            (
                g.state.info_pending().map(|f| f.clone_ref(py)),
                g.state.info().map(|i| i.tls_required),
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
    /// Whether to use TLS with this server (reached by a `tls://` URL or
    /// not), now that its INFO is in: the same decision as the main
    /// connection's (`ConnectConfig::use_tls`).
    fn use_tls(&self, tls_scheme: bool) -> bool {
        let server_requires = self.lock().state.info().is_some_and(|i| i.tls_required);
        self.config.use_tls(tls_scheme, server_requires)
    }

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
            let auth = self.config.effective_auth();
            let bytes = g
                .state
                .handshake(&auth, self.config.name.as_deref(), tls, fut.clone_ref(py))
                .map_err(|e| to_pyerr(py, &e))?;
            (bytes, g.transport(py))
        };
        self.write(py, transport.as_ref(), &bytes)?;
        Ok(fut)
    }

    fn lost(&self, py: Python<'_>) -> Py<PyAny> {
        self.lost_fut.clone_ref(py)
    }

    /// Close now; publishes in flight fail as "connection lost".
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let t = self.lock().transport(py);
        if let Some(t) = t {
            t.bind(py).call_method0("close")?;
        }
        Ok(())
    }

    /// Whether publishes go through this connection now.
    #[getter]
    fn ready(&self) -> bool {
        self.lock().state.phase() == Phase::Ready
    }

    /// Publishes sent and not yet settled.
    #[getter]
    fn pending(&self) -> usize {
        self.lock().state.pending_len()
    }

    /// The name of the server this connection is on ("" before INFO).
    #[getter]
    fn server_name(&self) -> String {
        self.lock()
            .state
            .info()
            .map(|i| i.server_name.clone())
            .unwrap_or_default()
    }

    /// Other servers of the cluster, from the server's INFO.
    #[getter]
    fn connect_urls(&self) -> Vec<String> {
        self.lock()
            .state
            .info()
            .map(|i| i.connect_urls.clone())
            .unwrap_or_default()
    }

    /// Write what publishes queued in this loop iteration.
    fn flush_batched(&self, py: Python<'_>) -> PyResult<()> {
        let (bytes, transport) = {
            let mut g = self.lock();
            match g.state.flush() {
                Some(bytes) => (bytes, g.transport(py)),
                None => return Ok(()),
            }
        };
        self.write(py, transport.as_ref(), &bytes)
    }

    /// Fail publishes whose timeout has passed; arrange the next sweep.
    fn sweep(slf: &Bound<'_, Self>, generation: u64) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (swept, transport) = {
            let mut g = this.lock();
            (g.state.sweep(generation, Instant::now()), g.transport(py))
        };
        for (fut, outcome) in swept.expired {
            settle(py, &fut, outcome);
        }
        if let Some((generation, at)) = swept.next {
            this.arm_sweep(slf, generation, at)?;
        }
        if swept.close {
            if let Some(t) = transport {
                t.bind(py).call_method0("close")?;
            }
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        let g = self.lock();
        format!(
            "<natsbus publish connection {:?} pending={}>",
            g.state.phase(),
            g.state.pending_len()
        )
    }
}

impl PublishConn {
    /// Act on every complete operation received so far.
    fn process(&self, py: Python<'_>) -> PyResult<()> {
        let (received, transport) = {
            let mut g = self.lock();
            (g.state.process(), g.transport(py))
        };
        let Received {
            settled,
            handoff,
            reply,
            close,
        } = received;
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
