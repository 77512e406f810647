//! `Message`: one received message, kept as bytes in Rust and converted to
//! Python pieces only when asked (`payload`, `headers`, `data` are lazy).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::Subject;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use natsbus_core::client::consume::{
    ack_sync, parse_delivery, AckKind, Acker, Delivery, InboundMessage,
};
use natsbus_core::client::stored::StoredMessage;
use natsbus_core::{Error, ErrorKind};

use crate::codec::{decode_json, type_name};
use crate::errors::IntoPyResult;
use crate::runtime::{forked_error, ready, Completer, ForkSafe, Ready};

/// What a message needs to settle itself: the bus's acker and client, and
/// whether the bus still takes acks.
pub struct AckCtx {
    io: ForkSafe<(Acker, async_nats::Client)>,
    pub completer: Arc<Completer>,
    /// Set when the bus closes: an ack after that would never be sent.
    pub closed: Arc<AtomicBool>,
}

impl AckCtx {
    pub fn new(
        acker: Acker,
        client: async_nats::Client,
        completer: Arc<Completer>,
        closed: Arc<AtomicBool>,
    ) -> AckCtx {
        AckCtx {
            io: ForkSafe::new((acker, client)),
            completer,
            closed,
        }
    }

    pub fn acker(&self) -> &Acker {
        &self.io.0
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.io.1
    }

    /// Refuse to settle on a bus that is closed, or that this process
    /// inherited from its parent by fork. `what` names the operation; it is
    /// only called when there is an error to report.
    #[inline]
    pub fn check(&self, what: impl FnOnce() -> String) -> Result<(), Error> {
        if self.io.is_current() && !self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let what = what();
        if !self.io.is_current() {
            return Err(forked_error(&what));
        }
        Err(Error::new(
            ErrorKind::Closed,
            format!(
                "{what}: the bus is closed (closing it flushed the acks queued before; \
                 settle messages before closing the bus)"
            ),
        ))
    }
}

#[pyclass(frozen, module = "natsbus")]
pub struct Message {
    inner: InboundMessage,
    model: Option<Py<PyAny>>,
    ack: Option<Arc<AckCtx>>,
    data: PyOnceLock<Py<PyAny>>,
    delivery: OnceLock<Option<Delivery>>,
    settled: AtomicBool,
}

impl Message {
    pub fn new(
        inner: InboundMessage,
        model: Option<Py<PyAny>>,
        ack: Option<Arc<AckCtx>>,
    ) -> Message {
        Message {
            inner,
            model,
            ack,
            data: PyOnceLock::new(),
            delivery: OnceLock::new(),
            settled: AtomicBool::new(false),
        }
    }

    /// A message read from the stream's storage (`get_message`): it knows
    /// its stream, sequence and time, and has nothing to acknowledge.
    pub fn stored(stored: StoredMessage, model: Option<Py<PyAny>>) -> Message {
        let delivery = Delivery {
            stream: Some(stored.stream),
            consumer: None,
            delivered: 0,
            seq: stored.seq,
            consumer_seq: 0,
            timestamp_ns: stored.timestamp_ns,
            pending: 0,
        };
        let msg = Message::new(stored.message, model, None);
        let _ = msg.delivery.set(Some(delivery));
        msg
    }

    fn delivery(&self) -> Option<&Delivery> {
        self.delivery
            .get_or_init(|| {
                self.inner
                    .reply
                    .as_ref()
                    .and_then(|r| parse_delivery(r.as_str()))
            })
            .as_ref()
    }

    fn jetstream_reply(&self) -> PyResult<(&Arc<AckCtx>, Subject)> {
        match (&self.ack, &self.inner.reply) {
            (Some(ctx), Some(reply)) if self.delivery().is_some() => Ok((ctx, reply.clone())),
            (None, _) if self.delivery().is_some() => Err(invalid(format!(
                "{} comes from a replay or from get_message, which take no acknowledgement",
                self.where_()
            ))),
            _ => Err(invalid(format!(
                "message on {:?} is not a JetStream delivery: there is nothing to acknowledge",
                self.inner.subject.as_str()
            ))),
        }
    }

    fn settle(&self, py: Python<'_>, kind: AckKind) -> PyResult<Py<Ready>> {
        let (ctx, reply) = self.jetstream_reply()?;
        ctx.check(|| format!("settling {}", self.where_()))
            .py_err(py)?;
        let terminal = kind != AckKind::Progress;
        if self.settled.load(Ordering::Acquire) {
            return Err(invalid(
                "message was already acknowledged (ack, nak or term)".into(),
            ));
        }
        if terminal {
            self.settled.store(true, Ordering::Release);
        }
        ctx.acker().send(reply, &kind).py_err(py)?;
        ready(py)
    }

    /// Claim a message the user was never given (it sat in a local buffer)
    /// so it can be released: its reply subject, unless it was settled
    /// meanwhile. The user can no longer settle it.
    pub fn claim_unhanded(&self) -> Option<Subject> {
        if self.settled.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.ack.as_ref()?;
        self.inner.reply.clone()
    }
}

fn invalid(msg: String) -> PyErr {
    crate::errors::to_pyerr_msg(ErrorKind::InvalidArgument, msg)
}

pub(crate) fn duration_arg(name: &str, secs: Option<f64>) -> PyResult<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(invalid(format!(
            "{name} must be a non-negative number of seconds, got {s}"
        ))),
    }
}

pub(crate) use duration_arg as seconds;

#[pymethods]
impl Message {
    /// The subject the message was published to.
    #[getter]
    fn subject(&self) -> &str {
        self.inner.subject.as_str()
    }

    /// The reply subject, if any.
    #[getter]
    fn reply(&self) -> Option<&str> {
        self.inner.reply.as_ref().map(|s| s.as_str())
    }

    /// The raw payload.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.payload)
    }

    /// The payload as UTF-8 text.
    #[getter]
    fn text(&self) -> PyResult<String> {
        String::from_utf8(self.inner.payload.to_vec()).map_err(|e| {
            decode_err(
                self.subject(),
                self.seq(),
                format!("payload is not UTF-8 text: {e}"),
            )
        })
    }

    /// Headers as a dict of str to str (a header sent several times keeps
    /// its last value; use `headers_all` for every value).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Some(h) = &self.inner.headers {
            for (k, values) in h.iter() {
                if let Some(last) = values.last() {
                    d.set_item(k.as_ref() as &str, last.as_str())?;
                }
            }
        }
        Ok(d)
    }

    /// Headers as a dict of str to list of every value.
    #[getter]
    fn headers_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Some(h) = &self.inner.headers {
            for (k, values) in h.iter() {
                let l = PyList::empty(py);
                for v in values {
                    l.append(v.as_str())?;
                }
                d.set_item(k.as_ref() as &str, l)?;
            }
        }
        Ok(d)
    }

    /// The decoded payload: the model instance when the consumer has a
    /// model, else JSON decoded to Python. Decoded on first access, cached.
    #[getter]
    fn data(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.data
            .get_or_try_init(py, || self.decode(py))
            .map(|v| v.clone_ref(py))
    }

    /// The stream the message was delivered from (JetStream deliveries).
    #[getter]
    fn stream(&self) -> Option<String> {
        self.delivery().and_then(|d| d.stream.clone())
    }

    /// The consumer that delivered it (JetStream deliveries).
    #[getter]
    fn consumer(&self) -> Option<String> {
        self.delivery().and_then(|d| d.consumer.clone())
    }

    /// Stream sequence (0 for a message that is not a JetStream delivery).
    #[getter]
    fn seq(&self) -> u64 {
        self.delivery().map(|d| d.seq).unwrap_or(0)
    }

    /// Consumer sequence.
    #[getter]
    fn consumer_seq(&self) -> u64 {
        self.delivery().map(|d| d.consumer_seq).unwrap_or(0)
    }

    /// How many times this message has been delivered (1 on first delivery).
    #[getter]
    fn delivered(&self) -> u64 {
        self.delivery().map(|d| d.delivered).unwrap_or(0)
    }

    /// Messages still pending for the consumer after this one.
    #[getter]
    fn pending(&self) -> u64 {
        self.delivery().map(|d| d.pending).unwrap_or(0)
    }

    /// When the message was stored, in seconds since the epoch.
    #[getter]
    fn timestamp(&self) -> Option<f64> {
        self.delivery().map(|d| d.timestamp_ns as f64 / 1e9)
    }

    /// Acknowledge: done with this message. Queued; `await` returns at once.
    fn ack(&self, py: Python<'_>) -> PyResult<Py<Ready>> {
        self.settle(py, AckKind::Ack)
    }

    /// Negative-acknowledge: redeliver, after `delay` seconds if given.
    #[pyo3(signature = (delay=None))]
    fn nak(&self, py: Python<'_>, delay: Option<f64>) -> PyResult<Py<Ready>> {
        let delay = duration_arg("delay", delay)?;
        self.settle(py, AckKind::Nak(delay))
    }

    /// Terminate: never redeliver this message. The reason is recorded in
    /// the server's advisory.
    #[pyo3(signature = (reason=None))]
    fn term(&self, py: Python<'_>, reason: Option<String>) -> PyResult<Py<Ready>> {
        self.settle(py, AckKind::Term(reason))
    }

    /// Tell the server work is still in progress (resets ack_wait).
    fn in_progress(&self, py: Python<'_>) -> PyResult<Py<Ready>> {
        self.settle(py, AckKind::Progress)
    }

    /// Acknowledge and wait until the server confirms it.
    #[pyo3(signature = (timeout=5.0))]
    fn ack_sync(&self, py: Python<'_>, timeout: f64) -> PyResult<Py<PyAny>> {
        let timeout = duration_arg("timeout", Some(timeout))?.unwrap_or_default();
        let (ctx, reply) = self.jetstream_reply()?;
        ctx.check(|| format!("settling {}", self.where_()))
            .py_err(py)?;
        if self.settled.swap(true, Ordering::AcqRel) {
            return Err(invalid(
                "message was already acknowledged (ack, nak or term)".into(),
            ));
        }
        let client = ctx.client().clone();
        ctx.completer
            .spawn(py, async move { ack_sync(&client, reply, timeout).await })
    }

    /// `Message[Task]` in annotations: a message whose `data` is a `Task`.
    #[classmethod]
    fn __class_getitem__(
        cls: &Bound<'_, pyo3::types::PyType>,
        item: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let alias = py.import("types")?.getattr("GenericAlias")?;
        Ok(alias.call1((cls, item))?.unbind())
    }

    fn __repr__(&self) -> String {
        match self.delivery() {
            Some(d) => format!(
                "<natsbus.Message subject={:?} stream={:?} seq={} delivered={} bytes={}>",
                self.inner.subject.as_str(),
                d.stream.as_deref().unwrap_or(""),
                d.seq,
                d.delivered,
                self.inner.payload.len()
            ),
            None => format!(
                "<natsbus.Message subject={:?} bytes={}>",
                self.inner.subject.as_str(),
                self.inner.payload.len()
            ),
        }
    }
}

fn decode_err(subject: &str, seq: u64, msg: String) -> PyErr {
    Python::attach(|py| {
        let e = Error::new(ErrorKind::Decode, msg).with_message(subject, (seq > 0).then_some(seq));
        crate::errors::to_pyerr(py, &e)
    })
}

impl Message {
    fn where_(&self) -> String {
        match self.delivery() {
            Some(d) => format!(
                "message on {:?} (stream {} seq {})",
                self.inner.subject.as_str(),
                d.stream.as_deref().unwrap_or("?"),
                d.seq
            ),
            None => format!("message on {:?}", self.inner.subject.as_str()),
        }
    }

    fn decode(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let payload = &self.inner.payload;
        let Some(model) = &self.model else {
            return decode_json(py, payload).map(|v| v.unbind()).map_err(|e| {
                decode_err(
                    self.subject(),
                    self.seq(),
                    format!(
                        "{} is not JSON: {e} (use .payload for raw bytes or .text for text)",
                        self.where_()
                    ),
                )
            });
        };
        let model = model.bind(py);
        let fail = |e: String| {
            decode_err(
                self.subject(),
                self.seq(),
                format!(
                    "{} does not decode into {}: {e}",
                    self.where_(),
                    model_name(model)
                ),
            )
        };
        // pydantic v2: validate straight from the JSON bytes, in Rust.
        if let Ok(validate) = model.getattr(pyo3::intern!(py, "model_validate_json")) {
            return validate
                .call1((PyBytes::new(py, payload),))
                .map(|v| v.unbind())
                .map_err(|e| fail(e.to_string()));
        }
        let plain = decode_json(py, payload).map_err(|e| fail(format!("not JSON: {e}")))?;
        if model
            .hasattr(pyo3::intern!(py, "__dataclass_fields__"))
            .unwrap_or(false)
        {
            let kwargs = plain.cast::<PyDict>().map_err(|_| {
                fail(format!(
                    "a dataclass needs a JSON object, got {}",
                    type_name(&plain)
                ))
            })?;
            return model
                .call((), Some(kwargs))
                .map(|v| v.unbind())
                .map_err(|e| fail(e.to_string()));
        }
        model
            .call1((plain,))
            .map(|v| v.unbind())
            .map_err(|e| fail(e.to_string()))
    }
}

fn model_name(model: &Bound<'_, PyAny>) -> String {
    model
        .getattr("__qualname__")
        .ok()
        .and_then(|n| n.cast_into::<PyString>().ok())
        .map(|n| n.to_string())
        .unwrap_or_else(|| type_name(model))
}

/// Build Python messages from inbound ones, in one GIL hold.
pub fn to_py_list<'py>(
    py: Python<'py>,
    msgs: Vec<InboundMessage>,
    model: Option<&Py<PyAny>>,
    ack: Option<&Arc<AckCtx>>,
) -> PyResult<Bound<'py, PyList>> {
    let items = msgs
        .into_iter()
        .map(|m| {
            Py::new(
                py,
                Message::new(m, model.map(|x| x.clone_ref(py)), ack.cloned()),
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}
