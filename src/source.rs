//! Sources: what a consumer, a subscription or a replay reads from. The
//! Rust half is a [`Reader`] filling an inbox; [`MessageSource`] hands its
//! messages to Python (`take` without touching the runtime, `wait` when
//! nothing is buffered) and [`Source`] closes it the same way whether its
//! owner or the bus closes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::Subject;
use pyo3::prelude::*;
use pyo3::types::PyList;

use natsbus_core::client::consume::{AckKind, InboundMessage, Inbox};
use natsbus_core::client::Reader;
use natsbus_core::Error;

use crate::errors::{to_pyerr, IntoPyResult};
use crate::message::{seconds, to_py_list, AckCtx, Message};
use crate::runtime::{forked_error, Deliver, ForkSafe};

/// One consumer or subscription of a bus: shared by its `MessageSource`
/// and the bus, which closes it when the bus closes.
pub struct Source {
    inbox: Arc<Inbox>,
    /// The reader filling `inbox` (a pull consumer, a subscription...).
    reader: ForkSafe<Arc<dyn Reader>>,
    /// The Python consumer's deque of messages taken from the inbox but not
    /// yet handed to the user.
    held: Option<Py<PyAny>>,
    ack: Arc<AckCtx>,
    /// Reply subjects of messages never handed out, to release (nak) once
    /// the subscription is gone, so their redelivery goes to someone else.
    release: Mutex<Vec<Subject>>,
    stopped: AtomicBool,
}

impl Source {
    pub fn new(reader: Arc<dyn Reader>, held: Option<Py<PyAny>>, ack: Arc<AckCtx>) -> Self {
        Source {
            inbox: reader.inbox().clone(),
            reader: ForkSafe::new(reader),
            held,
            ack,
            release: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        }
    }

    /// Hand out nothing more: takers see `error` (the bus closed).
    pub fn shut(&self, error: Error) {
        self.inbox.shut(Some(error));
    }

    pub fn is_current(&self) -> bool {
        self.reader.is_current()
    }

    /// Claim messages that were never handed to the user; they are released
    /// when the source has stopped (at once if it has already).
    fn claim(&self, msgs: impl IntoIterator<Item = Subject>) {
        let mut pending = self.release.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend(msgs);
        if self.stopped.load(Ordering::Acquire) {
            for reply in pending.drain(..) {
                let _ = self.ack.acker().send(reply, &AckKind::Nak(None));
            }
        }
    }

    /// Claim what the Python consumer holds unhanded (its deque).
    pub fn claim_held(&self, py: Python<'_>) -> PyResult<()> {
        let Some(held) = &self.held else {
            return Ok(());
        };
        let held = held.bind(py);
        let items = PyList::new(py, held.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
        held.call_method0("clear")?;
        let subjects: Vec<Subject> = items
            .iter()
            .filter_map(|m| {
                m.cast::<Message>()
                    .ok()
                    .and_then(|m| m.get().claim_unhanded())
            })
            .collect();
        self.claim(subjects);
        Ok(())
    }

    /// Stop it (see `PullConsumer::stop`), release what was claimed, and
    /// make sure the server read the releases. Idempotent.
    pub async fn close(&self) {
        self.reader.stop().await;
        let claimed = {
            let mut pending = self.release.lock().unwrap_or_else(|p| p.into_inner());
            self.stopped.store(true, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        for reply in &claimed {
            let _ = self.ack.acker().send(reply.clone(), &AckKind::Nak(None));
        }
        if claimed.is_empty() {
            self.ack.acker().flush().await;
        } else {
            self.reader.settle(self.ack.acker()).await;
        }
    }
}

/// A buffered source of messages (a durable pull consumer or a core
/// subscription). `take` hands out what is buffered without touching the
/// runtime; `wait` is the slow path when the buffer is empty.
#[pyclass(frozen, module = "natsbus._natsbus")]
pub struct MessageSource {
    source: Arc<Source>,
    model: Option<Py<PyAny>>,
    ack: Arc<AckCtx>,
    /// Its messages can be settled (a replay's cannot: it takes no acks).
    acks: bool,
}

struct Batch {
    msgs: Vec<InboundMessage>,
    inbox: Arc<Inbox>,
    model: Option<Py<PyAny>>,
    ack: Option<Arc<AckCtx>>,
}

impl Deliver for Batch {
    fn into_py(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(
            to_py_list(py, self.msgs, self.model.as_ref(), self.ack.as_ref())?
                .into_any()
                .unbind(),
        )
    }
    fn cancelled(self: Box<Self>) {
        // The awaiting task was cancelled: nothing was handed out, keep order.
        self.inbox.put_back(self.msgs);
    }
}

impl MessageSource {
    pub fn new(
        source: Arc<Source>,
        model: Option<Py<PyAny>>,
        ack: Arc<AckCtx>,
        acks: bool,
    ) -> MessageSource {
        MessageSource {
            source,
            model,
            ack,
            acks,
        }
    }

    fn settle_ctx(&self) -> Option<&Arc<AckCtx>> {
        self.acks.then_some(&self.ack)
    }

    fn check(&self, py: Python<'_>) -> PyResult<()> {
        if self.source.is_current() {
            Ok(())
        } else {
            Err(to_pyerr(py, &forked_error("this consumer")))
        }
    }
}

#[pymethods]
impl MessageSource {
    /// Buffered messages, at once (possibly none): up to `max`, or when
    /// `max` is None as many as the consumer's prefetch lets one take have.
    #[pyo3(signature = (max=None))]
    fn take<'py>(&self, py: Python<'py>, max: Option<usize>) -> PyResult<Bound<'py, PyList>> {
        self.check(py)?;
        let msgs = self.source.inbox.try_take(max).py_err(py)?;
        to_py_list(py, msgs, self.model.as_ref(), self.settle_ctx())
    }

    /// Wait for at least `min` messages (default 1) and take up to `max`
    /// (None: as `take`); after `timeout` seconds, take what is there
    /// (possibly an empty list). A `max` also tells the consumer how many
    /// messages to fetch.
    #[pyo3(signature = (max=None, timeout=None, min=1))]
    fn wait(
        &self,
        py: Python<'_>,
        max: Option<usize>,
        timeout: Option<f64>,
        min: usize,
    ) -> PyResult<Py<PyAny>> {
        self.check(py)?;
        let timeout = seconds("timeout", timeout)?;
        let inbox = self.source.inbox.clone();
        let model = self.model.as_ref().map(|m| m.clone_ref(py));
        let ack = self.settle_ctx().cloned();
        self.ack.completer.clone().spawn(py, async move {
            let msgs = inbox.take_filled(min, max, timeout).await?;
            Ok(Batch {
                msgs,
                inbox,
                model,
                ack,
            })
        })
    }

    /// Number of messages buffered right now.
    #[getter]
    fn buffered(&self) -> usize {
        self.source.inbox.len()
    }

    /// True once the reader delivered everything it was to (a replay
    /// without `follow` reached the stream's end as it was at the start):
    /// the `ClosedError` that follows is the end of the iteration.
    #[getter]
    fn finished(&self) -> bool {
        self.source.inbox.is_finished()
    }

    /// Keep `n` messages buffered or on their way for the next take, besides
    /// those handed out (`batches(n)`: the next batch while this one is
    /// processed); 0 to stop.
    fn keep_ahead(&self, n: usize) {
        self.source.inbox.set_ahead(n);
    }

    /// Release (nak) messages taken from this source that will never be
    /// handed to the user (they arrived for a consumer that was closed
    /// meanwhile): at once when the source has stopped, else when it stops.
    fn release(&self, msgs: Vec<Py<Message>>) {
        let subjects: Vec<Subject> = msgs
            .iter()
            .filter_map(|m| m.get().claim_unhanded())
            .collect();
        self.source.claim(subjects);
    }

    /// Stop receiving; see `Bus.close` for what happens to queued acks and
    /// to messages never handed out. `release` are messages taken from this
    /// source but never handed to the user: they are released too.
    #[pyo3(signature = (release=Vec::new()))]
    fn close(&self, py: Python<'_>, release: Vec<Py<Message>>) -> PyResult<Py<PyAny>> {
        if !self.source.is_current() {
            return Err(to_pyerr(py, &forked_error("this consumer")));
        }
        let subjects: Vec<Subject> = release
            .iter()
            .filter_map(|m| m.get().claim_unhanded())
            .collect();
        self.source.claim(subjects);
        let source = self.source.clone();
        self.ack.completer.clone().spawn(py, async move {
            source.close().await;
            Ok(())
        })
    }
}
