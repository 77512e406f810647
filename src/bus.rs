//! `Bus`: the connections to NATS, and everything users do with them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3::PyTypeInfo;

use natsbus_core::client::events::ConnEvent;
use natsbus_core::client::health::Health as CoreHealth;
use natsbus_core::client::read::ordered::{Replay, ReplayOptions, Start};
use natsbus_core::client::read::pull::{PullOptions, DEFAULT_MAX_BYTES};
use natsbus_core::client::read::{self, Reader};
use natsbus_core::client::stored::Lookup;
use natsbus_core::client::SubscriptionPump;

// The signatures below spell DEFAULT_MAX_BYTES out, so the text signature
// (and the stub checked against it) shows the number.
const _: () = assert!(DEFAULT_MAX_BYTES == 8388608);
use natsbus_core::client::{
    self, round_trip, Auth, ConnectConfig, Connected, OutboundMessage, PubAck as CorePubAck,
    PublishOptions, Publisher, TlsConfig,
};
use natsbus_core::{Error, ErrorKind};

use crate::args::{utf8, Text};
use crate::codec::{encode, json_to_py, py_to_json};
use crate::errors::{to_pyerr, IntoPyResult};
use crate::message::{seconds, AckCtx, Message};
use crate::publish_conn::{PublishConn, PublishSetup};
use crate::results::{Health, PubAck};
use crate::runtime::{forked_error, Completer, Deliver, ForkSafe, WithPy};
use crate::source::{MessageSource, Source};

/// Convert `{"k": "v", "k2": ["a", "b"]}` into NATS headers.
pub fn headers_from_py(obj: Option<&Bound<'_, PyAny>>) -> Result<Option<HeaderMap>, Error> {
    let Some(obj) = obj else { return Ok(None) };
    if obj.is_none() {
        return Ok(None);
    }
    let dict = obj
        .cast::<PyDict>()
        .map_err(|_| Error::invalid("headers must be a dict of str to str (or list of str)"))?;
    let mut map = HeaderMap::new();
    for (k, v) in dict.iter() {
        let name = utf8(&k, "a header name")?;
        if name.is_empty() {
            return Err(Error::invalid("header names must not be empty"));
        }
        let hname: HeaderName = name
            .parse()
            .map_err(|_| Error::invalid(format!("invalid header name {name:?}")))?;
        let what = format!("header {name:?}: the value");
        let values: Vec<String> = if v.is_instance_of::<PyString>() {
            vec![utf8(&v, &what)?]
        } else if let Ok(l) = v.cast::<PyList>() {
            l.iter()
                .map(|x| utf8(&x, &what))
                .collect::<Result<_, Error>>()?
        } else {
            return Err(Error::invalid(format!(
                "header {name:?}: value must be str or a list of str"
            )));
        };
        for value in values {
            let hv: HeaderValue = value.parse().map_err(|_| {
                Error::invalid(format!(
                    "header {name:?}: invalid value {value:?} (no newlines)"
                ))
            })?;
            map.append(hname.clone(), hv);
        }
    }
    Ok(Some(map))
}

/// Encode data + headers into a message for `subject`.
fn outbound(
    subject: &str,
    data: &Bound<'_, PyAny>,
    headers: Option<&Bound<'_, PyAny>>,
    opts: Option<&PublishOptions>,
) -> Result<OutboundMessage, Error> {
    client::publish::check_publish_subject(subject)?;
    let enc = encode(data)?;
    let mut h = headers_from_py(headers)?;
    if enc.is_json {
        let map = h.get_or_insert_with(HeaderMap::new);
        if map.get("Content-Type").is_none() {
            map.insert("Content-Type", "application/json");
        }
    }
    if let Some(o) = opts.filter(|o| !o.is_empty()) {
        o.apply(h.get_or_insert_with(HeaderMap::new))?;
    }
    Ok(OutboundMessage {
        subject: subject.to_string(),
        payload: enc.payload,
        headers: h,
    })
}

/// One `publish_many` item as a message, or why it cannot be one.
fn outbound_item(i: usize, item: &Bound<'_, PyAny>) -> Result<OutboundMessage, Error> {
    let bad_shape = || {
        Error::invalid(format!(
            "publish_many item {i}: expected (subject, data) or (subject, data, headers)"
        ))
    };
    let tuple = item.cast::<PyTuple>().map_err(|_| bad_shape())?;
    let n = tuple.len();
    if !(2..=3).contains(&n) {
        return Err(bad_shape());
    }
    let subject_obj = tuple.get_item(0).map_err(|_| bad_shape())?;
    let subject = subject_obj
        .cast::<PyString>()
        .map_err(|_| Error::invalid(format!("publish_many item {i}: subject must be str")))?
        .to_cow()
        .map_err(|e| Error::invalid(format!("publish_many item {i}: {e}")))?;
    let data = tuple.get_item(1).map_err(|_| bad_shape())?;
    let headers = if n == 3 { tuple.get_item(2).ok() } else { None };
    outbound(&subject, &data, headers.as_ref(), None).map_err(|mut e| {
        e.message = format!("publish_many item {i}: {}", e.message);
        e
    })
}

/// What the runtime side of a bus is made of (left alone, not dropped, in
/// a forked child: see `ForkSafe`).
struct BusIo {
    conn: Connected,
    publisher: Publisher,
}

/// The Rust half of a `natsbus.Bus` (the Python class holds one as `_core`):
/// the main connection (async-nats), and by default the loop-driven publish
/// connection. Made by `_natsbus.connect()`.
#[pyclass(name = "BusCore", frozen, module = "natsbus._natsbus")]
pub struct Bus {
    io: ForkSafe<BusIo>,
    ack: Arc<AckCtx>,
    completer: Arc<Completer>,
    closed: Arc<AtomicBool>,
    /// The one close: later calls wait for it.
    closing: Arc<tokio::sync::OnceCell<()>>,
    /// Every source (consumer, subscription) opened on this bus, so that
    /// closing the bus closes them the way their own close would.
    sources: Mutex<Vec<Weak<Source>>>,
    servers: String,
    name: Option<String>,
    topology: std::sync::Mutex<Option<Arc<natsbus_core::topology::Topology>>>,
    config: Arc<ConnectConfig>,
    /// The loop-driven publish connection, while one is open (see publish_conn.rs).
    direct: std::sync::Mutex<Option<Py<PublishConn>>>,
    /// The task of `natsbus._publish_conn` that keeps it open.
    direct_task: std::sync::Mutex<Option<Py<PyAny>>>,
    /// The connection's events since connecting, for `next_event()`.
    events: Arc<tokio::sync::Mutex<tokio::sync::broadcast::Receiver<ConnEvent>>>,
    /// Set by `close()`: a pending `next_event()` ends then, instead of
    /// completing after the bus (and perhaps the interpreter) is gone.
    shut: tokio::sync::watch::Sender<bool>,
}

impl Bus {
    fn topology_arg(
        &self,
        py: Python<'_>,
        obj: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Arc<natsbus_core::topology::Topology>> {
        match obj {
            Some(o) if !o.is_none() => crate::topology::resolve(o),
            _ => self
                .topology
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or_else(|| to_pyerr(py, &crate::topology::no_topology())),
        }
    }

    pub fn config(&self) -> &Arc<ConnectConfig> {
        &self.config
    }

    pub fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if !self.io.is_current() {
            Err(to_pyerr(py, &forked_error("this bus")))
        } else if self.closed.load(Ordering::Acquire) {
            Err(to_pyerr(py, &Error::closed()))
        } else {
            Ok(())
        }
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.io.conn.client
    }

    fn conn(&self) -> &Connected {
        &self.io.conn
    }

    /// Spawn `open`, and hand its reader to Python as a `MessageSource`
    /// registered with the bus (which closes it when the bus closes).
    fn open_source(
        slf: &Bound<'_, Self>,
        held: Option<Py<PyAny>>,
        model: Option<Py<PyAny>>,
        acks: bool,
        open: impl std::future::Future<Output = Result<Arc<dyn Reader>, Error>> + Send + 'static,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let ack = this.ack.clone();
        let bus: Py<Bus> = slf.clone().unbind();
        this.completer.spawn(py, async move {
            let reader = open.await?;
            Ok(WithPy(move |py: Python<'_>| {
                let source = Arc::new(Source::new(reader, held, ack.clone()));
                let bus = bus.get();
                if bus.closed.load(Ordering::Acquire) {
                    // Closed while we opened it: do not hand out a source
                    // the bus will never close.
                    let s = source.clone();
                    crate::runtime::runtime().spawn(async move { s.close().await });
                    return Err(to_pyerr(py, &Error::closed()));
                }
                bus.register(&source);
                let src = MessageSource::new(source, model, ack, acks);
                Ok(Py::new(py, src)?.into_any())
            }))
        })
    }

    fn register(&self, source: &Arc<Source>) {
        let mut all = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(source));
    }

    pub fn completer(&self) -> &Arc<Completer> {
        &self.completer
    }

    pub fn publisher(&self) -> &Publisher {
        &self.io.publisher
    }
}

#[pymethods]
impl Bus {
    /// Publish `data` to a JetStream subject and wait for the PubAck.
    #[pyo3(signature = (subject, data, *, headers=None, msg_id=None, expected_stream=None,
        expected_last_seq=None, expected_last_subject_seq=None, expected_last_msg_id=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        py: Python<'_>,
        subject: Text,
        data: &Bound<'_, PyAny>,
        headers: Option<&Bound<'_, PyAny>>,
        msg_id: Option<Text>,
        expected_stream: Option<Text>,
        expected_last_seq: Option<u64>,
        expected_last_subject_seq: Option<u64>,
        expected_last_msg_id: Option<Text>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let timeout = seconds("timeout", timeout)?;
        let opts = PublishOptions {
            msg_id: msg_id.map(|t| t.0),
            expected_stream: expected_stream.map(|t| t.0),
            expected_last_seq,
            expected_last_subject_seq,
            expected_last_msg_id: expected_last_msg_id.map(|t| t.0),
        };
        let msg = outbound(subject.as_str(), data, headers, Some(&opts)).py_err(py)?;
        let direct = self
            .direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.clone_ref(py));
        let msg = match direct {
            Some(conn) => {
                match PublishConn::try_publish(conn.bind(py), &self.completer, msg, timeout)? {
                    Ok(fut) => return Ok(fut),
                    Err(msg) => msg,
                }
            }
            None => msg,
        };
        let publisher = self.io.publisher.clone();
        self.completer
            .spawn(py, async move { publisher.publish(msg, timeout).await })
    }

    /// Publish many messages pipelined; acks come back in input order.
    /// Items are `(subject, data)` or `(subject, data, headers)`. Each item
    /// succeeds or fails on its own; failures (including items that cannot
    /// be encoded) are reported together in one `BatchPublishError`.
    #[pyo3(signature = (items, *, window=1024, timeout=None))]
    fn publish_many(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        window: usize,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let timeout = seconds("timeout", timeout)?;
        if window == 0 {
            return Err(to_pyerr(py, &Error::invalid("window must be at least 1")));
        }
        let iter = items.try_iter()?;
        // Encoding (here, holding the GIL) and sending (on the runtime) run
        // at the same time: each chunk goes out while the next is encoded.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let publisher = self.io.publisher.clone();
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let fut = self.completer.spawn(py, async move {
            Ok(ManyAcks(
                publisher.publish_stream(rx, window, timeout, &flag).await,
            ))
        })?;
        // A caller that cancels stops what was not sent yet.
        crate::runtime::on_cancel(py, &fut, cancelled)?;
        const CHUNK: usize = 256;
        let mut chunk = Vec::with_capacity(CHUNK);
        for (i, item) in iter.enumerate() {
            // An iterator that raises is the caller's bug: stop and raise it
            // (items already handed over are still published).
            let item = item?;
            chunk.push(outbound_item(i, &item));
            if chunk.len() == CHUNK {
                let _ = tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(chunk);
        }
        Ok(fut)
    }

    /// Send a request and wait for the reply message.
    #[pyo3(signature = (subject, data=None, *, headers=None, timeout=5.0, model=None))]
    fn request(
        &self,
        py: Python<'_>,
        subject: Text,
        data: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: f64,
        model: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let timeout = seconds("timeout", Some(timeout))?;
        let empty = pyo3::types::PyBytes::new(py, b"").into_any();
        let msg = outbound(subject.as_str(), data.unwrap_or(&empty), headers, None).py_err(py)?;
        let conn = self.conn().clone();
        self.completer.spawn(py, async move {
            let reply = client::request::request(&conn, msg, timeout).await?;
            Ok(WithPy(move |py: Python<'_>| {
                Ok(Py::new(py, Message::new(reply, model, None))?.into_any())
            }))
        })
    }

    /// Reply to a request's reply subject (queued, not awaited).
    #[pyo3(signature = (reply, data, *, headers=None))]
    fn respond(
        &self,
        py: Python<'_>,
        reply: &str,
        data: &Bound<'_, PyAny>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.check_open(py)?;
        let msg = outbound(reply, data, headers, None).py_err(py)?;
        self.ack
            .acker()
            .send_raw(msg.subject.into(), msg.headers, msg.payload)
            .py_err(py)
    }

    /// Start reading a durable consumer, pull or push (for
    /// `natsbus.Consumer`). `held` is the consumer's deque of messages taken
    /// from the source but not yet handed to the user: closing the bus
    /// releases them.
    #[pyo3(signature = (stream, durable, *, model=None, batch=500, max_bytes=8388608,
        heartbeat=5.0, expires=30.0, held=None))]
    #[allow(clippy::too_many_arguments)]
    fn open_consumer(
        slf: &Bound<'_, Self>,
        stream: Text,
        durable: Text,
        model: Option<Py<PyAny>>,
        batch: usize,
        max_bytes: usize,
        heartbeat: f64,
        expires: f64,
        held: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        slf.get().check_open(py)?;
        if batch == 0 {
            return Err(to_pyerr(py, &Error::invalid("batch must be at least 1")));
        }
        if max_bytes == 0 {
            return Err(to_pyerr(
                py,
                &Error::invalid("max_bytes must be at least 1"),
            ));
        }
        let opts = PullOptions {
            max_messages: batch,
            max_bytes,
            heartbeat: seconds("heartbeat", Some(heartbeat))?.unwrap_or_default(),
            expires: seconds("expires", Some(expires))?.unwrap_or_default(),
        };
        let this = slf.get();
        let conn = this.conn().clone();
        let acker = this.ack.acker().clone();
        Bus::open_source(slf, held, model, true, async move {
            read::open_durable(&conn, acker, &stream.0, &durable.0, opts).await
        })
    }

    /// Subscribe to `subject` (core NATS; for `natsbus.Subscription` and
    /// `natsbus.Service`).
    #[pyo3(signature = (subject, queue=None, capacity=1024, *, model=None))]
    fn subscribe(
        slf: &Bound<'_, Self>,
        subject: Text,
        queue: Option<Text>,
        capacity: usize,
        model: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        slf.get().check_open(py)?;
        if let Some(problem) = natsbus_core::subjects::subject_problem(&subject.0) {
            return Err(to_pyerr(
                py,
                &Error::invalid(format!("cannot subscribe to {:?}: {problem}", subject.0)),
            ));
        }
        if let Some(q) = &queue {
            if q.as_str().is_empty()
                || q.as_str()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(to_pyerr(
                    py,
                    &Error::invalid(format!(
                        "queue group {:?} must be non-empty, without whitespace",
                        q.as_str()
                    )),
                ));
            }
        }
        let conn = slf.get().conn().clone();
        Bus::open_source(slf, None, model, false, async move {
            let pump = SubscriptionPump::start(
                &conn.client,
                &subject.0,
                queue.as_ref().map(|q| q.as_str()),
                capacity.max(1),
            )
            .await?;
            // The server has the subscription before we return (a publish
            // on another connection right after must find it).
            let _ = round_trip(
                &conn.client,
                &conn.events,
                conn.client.timeout().unwrap_or(Duration::from_secs(5)),
            )
            .await;
            let reader: Arc<dyn Reader> = Arc::new(pump);
            Ok(reader)
        })
    }

    /// Start an ordered replay of `stream` (for `natsbus.Replay`). `start`
    /// is `("first", None)`, `("seq", n)`, `("time", rfc3339)` or
    /// `("last_per_subject", None)`.
    #[pyo3(signature = (stream, *, start_seq=None, start_time=None, last_per_subject=false,
        subjects=None, follow=false, model=None, heartbeat=2.0))]
    #[allow(clippy::too_many_arguments)]
    fn open_replay(
        slf: &Bound<'_, Self>,
        stream: Text,
        start_seq: Option<u64>,
        start_time: Option<Text>,
        last_per_subject: bool,
        subjects: Option<Vec<Text>>,
        follow: bool,
        model: Option<Py<PyAny>>,
        heartbeat: f64,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        slf.get().check_open(py)?;
        let opts = replay_options(
            start_seq,
            start_time.map(|t| t.0),
            last_per_subject,
            subjects
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.0)
                .collect(),
            follow,
            seconds("heartbeat", Some(heartbeat))?.unwrap_or_default(),
        )
        .py_err(py)?;
        client::jsapi::check_name(&stream.0, "stream").py_err(py)?;
        let conn = slf.get().conn().clone();
        Bus::open_source(slf, None, model, false, async move {
            let reader: Arc<dyn Reader> = Replay::start(&conn, &stream.0, opts).await?;
            Ok(reader)
        })
    }

    /// One stored message of `stream`: at `seq`, or the last on
    /// `last_for_subject`, or (neither given) the stream's last message.
    #[pyo3(signature = (stream, seq=None, last_for_subject=None, *, model=None))]
    fn get_message(
        &self,
        py: Python<'_>,
        stream: Text,
        seq: Option<u64>,
        last_for_subject: Option<Text>,
        model: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let at = match (seq, last_for_subject) {
            (Some(_), Some(_)) => {
                return Err(to_pyerr(
                    py,
                    &Error::invalid("give seq or last_for_subject, not both"),
                ))
            }
            (Some(n), None) => Lookup::Seq(n),
            (None, Some(subject)) => {
                if let Some(problem) = natsbus_core::subjects::subject_problem(&subject.0) {
                    return Err(to_pyerr(
                        py,
                        &Error::invalid(format!("last_for_subject {:?}: {problem}", subject.0)),
                    ));
                }
                Lookup::LastFor(subject.0)
            }
            (None, None) => Lookup::LastFor(">".to_string()),
        };
        let js = self.conn().js.clone();
        self.completer.spawn(py, async move {
            let stored = client::stored::get_message(&js, &stream.0, &at).await?;
            Ok(WithPy(move |py: Python<'_>| {
                Ok(Py::new(py, Message::stored(stored, model))?.into_any())
            }))
        })
    }

    /// Publish on core NATS, fire and forget: no stream, no ack. Queued in
    /// order with acks and replies; `flush()` waits until it is written.
    #[pyo3(signature = (subject, data, *, headers=None))]
    fn publish_core(
        &self,
        py: Python<'_>,
        subject: Text,
        data: &Bound<'_, PyAny>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.check_open(py)?;
        let msg = outbound(subject.as_str(), data, headers, None).py_err(py)?;
        self.ack
            .acker()
            .send_raw(msg.subject.into(), msg.headers, msg.payload)
            .py_err(py)
    }

    /// Raise `ClosedError` unless the bus is open (and was made in this
    /// process), and `InvalidArgumentError` for names that are not text
    /// (what `consume()` and `serve()` check before returning).
    #[pyo3(name = "check_open", signature = (*names))]
    fn py_check_open(&self, py: Python<'_>, names: Vec<Option<Text>>) -> PyResult<()> {
        let _ = names;
        self.check_open(py)
    }

    /// Call the JetStream API directly: `api("STREAM.INFO.ORDERS")` sends to
    /// `$JS.API.STREAM.INFO.ORDERS` and returns the answer as a dict. An
    /// error answer raises the matching `JetStreamError`.
    #[pyo3(signature = (subject, body=None, *, timeout=5.0))]
    fn jetstream_api(
        &self,
        py: Python<'_>,
        subject: Text,
        body: Option<&Bound<'_, PyAny>>,
        timeout: f64,
    ) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let timeout = seconds("timeout", Some(timeout))?.unwrap_or_default();
        let body = match body {
            Some(b) if !b.is_none() => py_to_json(b).py_err(py)?,
            _ => serde_json::Value::Null,
        };
        let js = self.conn().js.clone();
        let subject = subject.0;
        let subject = subject
            .strip_prefix(&format!("{}.", js.prefix()))
            .or_else(|| subject.strip_prefix("$JS.API."))
            .map(str::to_string)
            .unwrap_or(subject);
        self.completer.spawn(py, async move {
            let v: serde_json::Value = js.request_timeout(&subject, &body, timeout).await?;
            Ok(JsonValue(v))
        })
    }

    /// A stream's info (`config`, `state`...) as a dict; `StreamNotFoundError` if missing.
    fn stream_info(&self, py: Python<'_>, stream: Text) -> PyResult<Py<PyAny>> {
        let stream = stream.0;
        self.check_open(py)?;
        client::jsapi::check_name(&stream, "stream").py_err(py)?;
        let js = self.conn().js.clone();
        self.completer.spawn(
            py,
            async move { Ok(JsonValue(js.stream_info(&stream).await?)) },
        )
    }

    /// A consumer's info (`config`, `num_pending`, `num_ack_pending`...) as a dict.
    fn consumer_info(&self, py: Python<'_>, stream: Text, durable: Text) -> PyResult<Py<PyAny>> {
        let (stream, durable) = (stream.0, durable.0);
        self.check_open(py)?;
        client::jsapi::check_name(&stream, "stream").py_err(py)?;
        client::jsapi::check_name(&durable, "consumer").py_err(py)?;
        let js = self.conn().js.clone();
        self.completer.spawn(py, async move {
            Ok(JsonValue(js.consumer_info(&stream, &durable).await?))
        })
    }

    /// Use `topology` for `ensure_streams()`/`plan()`/`verify()` without
    /// arguments, and (`heal`) re-create its streams and consumers when the
    /// server loses them.
    #[pyo3(signature = (topology, *, heal=true))]
    fn set_topology(&self, topology: &Bound<'_, PyAny>, heal: bool) -> PyResult<()> {
        let t = crate::topology::resolve(topology)?;
        self.conn().heal.set(Some(t.clone()), heal);
        *self.topology.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        Ok(())
    }

    /// Whether this bus re-creates its topology's streams and consumers.
    #[getter]
    fn heals(&self) -> bool {
        self.conn().heal.enabled()
    }

    /// The next connection event as `(kind, message, time, server)`:
    /// `server` names the server connected to when it was read.
    fn next_event(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let events = self.events.clone();
        let client = self.client().clone();
        let mut shut = self.shut.subscribe();
        self.completer.spawn(py, async move {
            let received = tokio::select! {
                r = async { events.lock().await.recv().await } => r,
                _ = shut.wait_for(|s| *s) => return Err(Error::closed()),
            };
            let event = match received {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => ConnEvent {
                    kind: "lagged",
                    message: format!(
                        "{n} connection events were missed: they came faster than they were read"
                    ),
                    time: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                },
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(Error::closed())
                }
            };
            let info = client.server_info();
            let server = if info.server_name.is_empty() {
                format!("{}:{}", info.host, info.port)
            } else {
                format!("{} ({}:{})", info.server_name, info.host, info.port)
            };
            Ok(WithPy(move |py: Python<'_>| {
                Ok((event.kind, event.message, event.time, server)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind())
            }))
        })
    }

    /// The topology given to `connect(topology=...)`, if any.
    #[getter]
    fn topology(&self, py: Python<'_>) -> PyResult<Option<Py<crate::topology::Topology>>> {
        let t = self
            .topology
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        t.map(|inner| Py::new(py, crate::topology::Topology { inner }))
            .transpose()
    }

    /// What applying `topology` would do, against the live server. Changes nothing.
    #[pyo3(signature = (topology=None, *, allow_destructive=false))]
    fn plan(
        &self,
        py: Python<'_>,
        topology: Option<&Bound<'_, PyAny>>,
        allow_destructive: bool,
    ) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let t = self.topology_arg(py, topology)?;
        let js = self.conn().js.clone();
        self.completer.spawn(py, async move {
            let opts = natsbus_core::topology::PlanOptions { allow_destructive };
            let plan = natsbus_core::topology::apply::plan_live(&js, &t, &opts).await?;
            Ok(crate::topology::PlanOut(plan, opts))
        })
    }

    /// Create and update streams and consumers so the server matches the
    /// topology. Idempotent; never deletes; refuses blocked changes (and,
    /// unless `allow_destructive`, changes that can lose data) with
    /// `ApplyError` before changing anything. Returns the executed plan.
    /// With `create_only`, only what is missing is created: nothing is
    /// updated and nothing refused; the plan still lists what differs.
    #[pyo3(signature = (topology=None, *, allow_destructive=false, create_only=false))]
    fn ensure_streams(
        &self,
        py: Python<'_>,
        topology: Option<&Bound<'_, PyAny>>,
        allow_destructive: bool,
        create_only: bool,
    ) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let t = self.topology_arg(py, topology)?;
        let js = self.conn().js.clone();
        self.completer.spawn(py, async move {
            let opts = natsbus_core::topology::ApplyOptions {
                allow_destructive,
                create_only,
            };
            let plan = natsbus_core::topology::apply(&js, &t, &opts).await?;
            Ok(crate::topology::PlanOut(
                plan,
                natsbus_core::topology::PlanOptions { allow_destructive },
            ))
        })
    }

    /// Check the live server matches the topology; raises `DriftError`
    /// (with `.plan`) when it does not. Returns the (empty) plan.
    #[pyo3(signature = (topology=None))]
    fn verify(&self, py: Python<'_>, topology: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let t = self.topology_arg(py, topology)?;
        let js = self.conn().js.clone();
        self.completer.spawn(py, async move {
            let plan = natsbus_core::topology::verify(&js, &t).await?;
            Ok(crate::topology::PlanOut(
                plan,
                natsbus_core::topology::PlanOptions::default(),
            ))
        })
    }

    /// The live streams (all, or those named) and their consumers as a
    /// topology dict that `Topology.from_dict` loads back.
    #[pyo3(signature = (streams=None))]
    fn export(&self, py: Python<'_>, streams: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let only = crate::topology::names(streams)?;
        let js = self.conn().js.clone();
        self.completer.spawn(py, async move {
            let live = natsbus_core::topology::fetch_live(&js).await?;
            check_exported(&live, &only)?;
            Ok(JsonValue(natsbus_core::topology::export(&live, &only)))
        })
    }

    /// Like `export`, rendered as YAML text.
    #[pyo3(signature = (streams=None))]
    fn export_yaml(
        &self,
        py: Python<'_>,
        streams: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let only = crate::topology::names(streams)?;
        let js = self.conn().js.clone();
        self.completer.spawn(py, async move {
            let live = natsbus_core::topology::fetch_live(&js).await?;
            check_exported(&live, &only)?;
            let text = natsbus_core::topology::export_yaml(&live, &only);
            Ok(WithPy(move |py: Python<'_>| {
                Ok(PyString::new(py, &text).into_any().unbind())
            }))
        })
    }

    /// Streams (messages, bytes, subjects) and their consumers (pending, ack
    /// pending, redelivered) as a dict; `streams` limits it to those named.
    #[pyo3(signature = (streams=None))]
    fn status(&self, py: Python<'_>, streams: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let only = crate::topology::names(streams)?;
        let js = self.conn().js.clone();
        self.completer.spawn(py, async move {
            let live = natsbus_core::topology::fetch_live(&js).await?;
            Ok(JsonValue(crate::topology::status_value(&live, &only)))
        })
    }

    /// A health snapshot: connection, server version, rtt, JetStream and counts.
    #[pyo3(signature = (timeout=2.0))]
    fn health(&self, py: Python<'_>, timeout: f64) -> PyResult<Py<PyAny>> {
        let timeout = seconds("timeout", Some(timeout))?.unwrap_or_default();
        let client = self.client().clone();
        if self.closed.load(Ordering::Acquire) {
            let h = CoreHealth::from_info(
                &client.server_info(),
                false,
                Some("the bus is closed".into()),
            );
            let fut = self.completer.new_future(py)?;
            fut.bind(py)
                .call_method1("set_result", (Py::new(py, Health::from(h))?,))?;
            return Ok(fut);
        }
        let conn = self.conn().clone();
        self.completer.spawn(py, async move {
            let h = client::health::health(&conn, timeout).await?;
            Ok(WithPy(move |py: Python<'_>| {
                Ok(Py::new(py, Health::from(h))?.into_any())
            }))
        })
    }

    /// Wait until everything queued (publishes, acks) reached the server socket.
    fn flush(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.check_open(py)?;
        let client = self.client().clone();
        let acker = self.ack.acker().clone();
        self.completer.spawn(py, async move {
            acker.flush().await;
            client
                .flush()
                .await
                .map_err(|e| Error::new(ErrorKind::Connect, format!("flush failed: {e}")))
        })
    }

    /// Close the bus. Every consumer and subscription still open is closed
    /// the way its own `close()` would (nothing more is asked for, messages
    /// received and never handed out are released); every ack, nak, term and
    /// in_progress accepted before this call is written and the server
    /// confirms with a round trip that it read them; then the connections
    /// close. Later calls wait for the same close.
    fn close(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.closed.store(true, Ordering::Release);
        self.shut.send_replace(true);
        if let Some(task) = self
            .direct_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.bind(py).call_method0("cancel")?;
        }
        if let Some(conn) = self.direct.lock().unwrap_or_else(|p| p.into_inner()).take() {
            conn.get().close_when_idle(py);
        }
        if !self.io.is_current() {
            // Inherited from the parent by fork: its connections are the
            // parent's; there is nothing here to close.
            let fut = py
                .import("asyncio")?
                .call_method0("get_running_loop")?
                .call_method0("create_future")?;
            fut.call_method1("set_result", (py.None(),))?;
            return Ok(fut.unbind());
        }
        let sources: Vec<Arc<Source>> =
            std::mem::take(&mut *self.sources.lock().unwrap_or_else(|p| p.into_inner()))
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
        for source in &sources {
            // Takers now see "the bus is closed"; what the Python consumer
            // holds unhanded is released with the rest.
            source.shut(Error::closed());
            source.claim_held(py)?;
        }
        let conn = self.conn().clone();
        let acker = self.ack.acker().clone();
        let timeout = self.config.connect_timeout;
        let closing = self.closing.clone();
        let completer = self.completer.clone();
        self.completer.spawn(py, async move {
            closing
                .get_or_init(|| async move {
                    // Each step is bounded: with the server down, close must
                    // still return (what could not be sent is redelivered
                    // by the server after ack_wait).
                    let closes = futures_util::future::join_all(sources.iter().map(|s| s.close()));
                    let _ = tokio::time::timeout(timeout, closes).await;
                    let _ = tokio::time::timeout(timeout, acker.flush()).await;
                    let _ = tokio::time::timeout(timeout, conn.client.flush()).await;
                    // The server must have read the acks before the socket
                    // closes (see natsbus_core::client::roundtrip).
                    let _ = round_trip(&conn.client, &conn.events, timeout).await;
                    let _ = tokio::time::timeout(timeout, conn.client.drain()).await;
                })
                .await;
            Ok(WithPy(move |py: Python<'_>| {
                completer.detach(py);
                Ok(py.None())
            }))
        })
    }

    /// Route publishes through `conn` (None: through the main connection).
    fn attach_publish_connection(
        &self,
        py: Python<'_>,
        conn: Option<Py<PublishConn>>,
    ) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            if let Some(c) = conn {
                c.get().close_when_idle(py);
            }
            return Ok(());
        }
        *self.direct.lock().unwrap_or_else(|p| p.into_inner()) = conn;
        Ok(())
    }

    /// Keep the task that maintains the publish connection; close() cancels it.
    fn keep_publish_task(&self, py: Python<'_>, task: Py<PyAny>) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            task.bind(py).call_method0("cancel")?;
            return Ok(());
        }
        *self.direct_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(())
    }

    /// The publish connection in use, if any.
    #[getter]
    fn publish_connection(&self, py: Python<'_>) -> Option<Py<PublishConn>> {
        self.direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.clone_ref(py))
    }

    /// What a publish connection of this bus is made from (`PublishConn(setup)`).
    fn publish_setup(&self, py: Python<'_>) -> PyResult<PublishSetup> {
        self.check_open(py)?;
        Ok(PublishSetup::new(
            self.config().clone(),
            self.publisher().clone(),
            self.completer().clone(),
        ))
    }

    /// Where natsbus._publish_conn may open the publish connection: the servers as
    /// `(host, port, tls_scheme)`, the TLS files `(ca, cert, key,
    /// handshake_first)` or None, and the connect timeout in seconds.
    #[allow(clippy::type_complexity)]
    fn publish_connection_plan(
        &self,
    ) -> (
        Vec<(String, u16, bool)>,
        Option<(Option<PathBuf>, Option<PathBuf>, Option<PathBuf>, bool)>,
        f64,
    ) {
        let targets = self
            .config
            .servers
            .iter()
            .filter_map(|s| s.parse::<async_nats::ServerAddr>().ok())
            .filter(|a| !a.is_websocket())
            .map(|a| {
                let host = a
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                (host, a.port(), a.tls_required())
            })
            .collect();
        let tls = self.config.tls.as_ref().map(|t| {
            (
                t.ca.clone(),
                t.cert.clone(),
                t.key.clone(),
                t.handshake_first,
            )
        });
        (targets, tls, self.config.connect_timeout.as_secs_f64())
    }

    /// True once `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// True while the connection is up.
    #[getter]
    fn connected(&self) -> bool {
        !self.closed()
            && matches!(
                self.client().connection_state(),
                async_nats::connection::State::Connected
            )
    }

    /// The configured servers (passwords redacted).
    #[getter]
    fn servers(&self) -> &str {
        &self.servers
    }

    /// The connection name.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The version of the server we are connected to.
    #[getter]
    fn server_version(&self) -> String {
        self.client().server_info().version
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() {
            "closed"
        } else if self.connected() {
            "connected"
        } else {
            "disconnected"
        };
        match &self.name {
            Some(n) => format!(
                "<natsbus.Bus name={n:?} servers={:?} {state}>",
                self.servers
            ),
            None => format!("<natsbus.Bus servers={:?} {state}>", self.servers),
        }
    }
}

fn check_exported(live: &natsbus_core::topology::LiveState, only: &[String]) -> Result<(), Error> {
    for name in only {
        if live.stream(name).is_none() {
            return Err(Error::new(
                ErrorKind::StreamNotFound,
                format!("stream {name:?} not found"),
            ));
        }
    }
    Ok(())
}

/// A JSON answer delivered as Python objects.
pub struct JsonValue(pub serde_json::Value);

impl Deliver for JsonValue {
    fn into_py(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(json_to_py(py, &self.0)?.unbind())
    }
}

struct ManyAcks(Vec<Result<CorePubAck, Error>>);

impl Deliver for ManyAcks {
    fn cancelled(self: Box<Self>) {
        // Nobody gets the result: say in the log what was stored.
        let stored = self.0.iter().filter(|r| r.is_ok()).count();
        let unsent = self
            .0
            .iter()
            .filter(|r| matches!(r, Err(e) if e.kind == ErrorKind::Closed))
            .count();
        let msg = format!(
            "publish_many was cancelled: {stored} of {} messages were stored before it stopped, \
             {unsent} were never sent",
            self.0.len()
        );
        Python::try_attach(|py| {
            let _ = py
                .import("logging")
                .and_then(|l| l.call_method1("getLogger", ("natsbus",)))
                .and_then(|log| log.call_method1("warning", (msg,)));
        });
    }

    fn into_py(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let results = self.0;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let acks = PyList::empty(py);
        let errors = PyDict::new(py);
        let mut summary = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(a) => acks.append(Py::new(py, PubAck::from(a))?)?,
                Err(e) => {
                    acks.append(py.None())?;
                    if summary.len() < 5 {
                        summary.push(format!("[{i}] {}", e.message));
                    }
                    errors.set_item(i, crate::errors::to_pyobj(py, &e)?)?;
                }
            }
        }
        if failed == 0 {
            return Ok(acks.into_any().unbind());
        }
        let total = acks.len();
        let more = if failed > summary.len() {
            format!("; and {} more", failed - summary.len())
        } else {
            String::new()
        };
        let msg = format!(
            "{failed} of {total} publishes failed: {}{more}",
            summary.join("; ")
        );
        let exc = crate::exceptions::BatchPublishError::type_object(py).call1((msg,))?;
        exc.setattr("acks", acks)?;
        exc.setattr("errors", errors)?;
        Err(PyErr::from_value(exc))
    }
}

/// `_natsbus.connect(...)`: the Python wrapper fills defaults from the
/// environment and calls this with explicit values.
#[pyfunction]
#[pyo3(signature = (servers, *, user=None, password=None, token=None, nkey_seed=None, creds=None,
    tls_ca=None, tls_cert=None, tls_key=None, tls_handshake_first=false, tls=false,
    name=None, connect_timeout=5.0, max_reconnects=None, inbox_prefix=None, domain=None))]
#[allow(clippy::too_many_arguments)]
pub fn connect(
    py: Python<'_>,
    servers: Vec<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    nkey_seed: Option<String>,
    creds: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_handshake_first: bool,
    tls: bool,
    name: Option<String>,
    connect_timeout: f64,
    max_reconnects: Option<usize>,
    inbox_prefix: Option<String>,
    domain: Option<String>,
) -> PyResult<Py<PyAny>> {
    let schemes = [
        user.is_some() || password.is_some(),
        token.is_some(),
        nkey_seed.is_some(),
        creds.is_some(),
    ];
    if schemes.iter().filter(|b| **b).count() > 1 {
        return Err(to_pyerr(
            py,
            &Error::invalid("give only one of user/password, token, nkey_seed, creds"),
        ));
    }
    let auth = match (user, password, token, nkey_seed, creds) {
        (Some(user), Some(password), ..) => Auth::UserPassword { user, password },
        (Some(_), None, ..) | (None, Some(_), ..) => {
            return Err(to_pyerr(
                py,
                &Error::invalid("user and password go together: give both"),
            ))
        }
        (_, _, Some(t), ..) => Auth::Token(t),
        (_, _, _, Some(seed), _) => Auth::NkeySeed(seed),
        (_, _, _, _, Some(path)) => Auth::CredsFile(path),
        _ => Auth::None,
    };
    let tls_cfg = if tls
        || tls_ca.is_some()
        || tls_cert.is_some()
        || tls_key.is_some()
        || tls_handshake_first
    {
        Some(TlsConfig {
            ca: tls_ca,
            cert: tls_cert,
            key: tls_key,
            handshake_first: tls_handshake_first,
        })
    } else {
        None
    };
    let connect_timeout =
        seconds("connect_timeout", Some(connect_timeout))?.unwrap_or(Duration::from_secs(5));
    if connect_timeout.is_zero() {
        return Err(to_pyerr(
            py,
            &Error::invalid("connect_timeout must be greater than 0"),
        ));
    }
    let config = ConnectConfig {
        servers,
        auth,
        tls: tls_cfg,
        name: name.clone(),
        connect_timeout,
        max_reconnects,
        inbox_prefix,
        domain,
        ..ConnectConfig::default()
    };
    config.check().py_err(py)?;
    let completer = Completer::for_running_loop(py)?;
    let completer_for_bus = completer.clone();
    let config = Arc::new(config);
    completer.spawn(py, async move {
        let conn = client::connect(&config).await?;
        let events = Arc::new(tokio::sync::Mutex::new(conn.events.listen()));
        let acker = natsbus_core::client::Acker::start(conn.client.clone());
        let publisher = Publisher::new(&conn);
        let servers = config.display_servers();
        Ok(WithPy(move |py: Python<'_>| {
            let closed = Arc::new(AtomicBool::new(false));
            let ack = Arc::new(AckCtx::new(
                acker,
                conn.client.clone(),
                completer_for_bus.clone(),
                closed.clone(),
            ));
            let bus = Bus {
                io: ForkSafe::new(BusIo { conn, publisher }),
                ack,
                completer: completer_for_bus,
                closed,
                closing: Arc::new(tokio::sync::OnceCell::new()),
                sources: Mutex::new(Vec::new()),
                servers,
                name,
                topology: std::sync::Mutex::new(None),
                config,
                direct: std::sync::Mutex::new(None),
                direct_task: std::sync::Mutex::new(None),
                events,
                shut: tokio::sync::watch::Sender::new(false),
            };
            Ok(Py::new(py, bus)?.into_any())
        }))
    })
}

/// A replay's options from `replay()`'s arguments, or what is wrong with them.
fn replay_options(
    start_seq: Option<u64>,
    start_time: Option<String>,
    last_per_subject: bool,
    subjects: Vec<String>,
    follow: bool,
    heartbeat: Duration,
) -> Result<ReplayOptions, Error> {
    let start = match (start_seq, start_time, last_per_subject) {
        (None, None, false) => Start::First,
        (Some(0), None, false) => {
            return Err(Error::invalid(
                "start_seq must be at least 1 (stream sequences start at 1)",
            ))
        }
        (Some(n), None, false) => Start::Seq(n),
        (None, Some(t), false) => Start::Time(t),
        (None, None, true) => Start::LastPerSubject,
        _ => {
            return Err(Error::invalid(
                "give at most one of start_seq, start_time and last_per_subject",
            ))
        }
    };
    for s in &subjects {
        if let Some(problem) = natsbus_core::subjects::subject_problem(s) {
            return Err(Error::invalid(format!("subjects: {s:?}: {problem}")));
        }
    }
    if heartbeat < Duration::from_millis(100) {
        return Err(Error::invalid("heartbeat must be at least 0.1 seconds"));
    }
    Ok(ReplayOptions {
        start,
        subjects,
        follow,
        heartbeat,
    })
}
