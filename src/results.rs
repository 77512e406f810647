//! What awaited calls resolve to: `PubAck` and `Health`, frozen data built
//! `From` the core's values. A leaf of the bindings.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use natsbus_core::client::health::Health as CoreHealth;
use natsbus_core::client::PubAck as CorePubAck;

use crate::runtime::Deliver;

/// The server's acknowledgement of a stored message.
#[pyclass(frozen, eq, skip_from_py_object, module = "natsbus")]
#[derive(PartialEq, Clone)]
pub struct PubAck {
    /// The stream that stored the message.
    #[pyo3(get)]
    stream: String,
    /// Its sequence number in that stream.
    #[pyo3(get)]
    seq: u64,
    /// True when the server had already stored a message with this msg_id.
    #[pyo3(get)]
    duplicate: bool,
    /// The JetStream domain, if any.
    #[pyo3(get)]
    domain: Option<String>,
}

#[pymethods]
impl PubAck {
    #[new]
    #[pyo3(signature = (stream, seq, duplicate=false, domain=None))]
    fn py_new(stream: String, seq: u64, duplicate: bool, domain: Option<String>) -> Self {
        PubAck {
            stream,
            seq,
            duplicate,
            domain,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "PubAck(stream={:?}, seq={}, duplicate={})",
            self.stream,
            self.seq,
            if self.duplicate { "True" } else { "False" }
        )
    }
}

impl From<CorePubAck> for PubAck {
    fn from(a: CorePubAck) -> Self {
        PubAck {
            stream: a.stream,
            seq: a.seq,
            duplicate: a.duplicate,
            domain: a.domain,
        }
    }
}

impl Deliver for CorePubAck {
    fn into_py(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(py, PubAck::from(*self))?.into_any())
    }
}

/// A snapshot of the connection's health.
#[pyclass(frozen, get_all, skip_from_py_object, module = "natsbus")]
#[derive(Clone)]
pub struct Health {
    /// Whether the client is connected right now.
    connected: bool,
    /// The server's version, e.g. "2.15.1".
    server_version: String,
    /// The server's name.
    server_name: String,
    /// Round-trip time to the server in seconds (None if it could not be measured).
    rtt: Option<f64>,
    /// Whether JetStream answers for this account.
    jetstream: bool,
    /// Number of streams in the account.
    streams: Option<u64>,
    /// Number of consumers in the account.
    consumers: Option<u64>,
    /// Bytes of memory storage used by the account.
    memory: Option<u64>,
    /// Bytes of file storage used by the account.
    storage: Option<u64>,
    /// Why a part could not be read, if anything failed.
    error: Option<String>,
    /// What is wrong with the declared topology (a stream or consumer
    /// missing, a replicated stream without a leader or with a replica
    /// offline or behind), one line each; empty when all is well.
    problems: Vec<String>,
}

impl From<CoreHealth> for Health {
    fn from(h: CoreHealth) -> Self {
        Health {
            connected: h.connected,
            server_version: h.server_version,
            server_name: h.server_name,
            rtt: h.rtt,
            jetstream: h.jetstream,
            streams: h.streams,
            consumers: h.consumers,
            memory: h.memory,
            storage: h.storage,
            error: h.error,
            problems: Vec::new(),
        }
    }
}

#[pymethods]
impl Health {
    /// True when connected, JetStream answers and nothing is wrong with the
    /// declared topology (`problems` is empty): ready to work.
    #[getter]
    fn ok(&self) -> bool {
        self.connected && self.jetstream && self.problems.is_empty()
    }
    /// This snapshot with `problems` added to its own.
    fn with_problems(&self, problems: Vec<String>) -> Health {
        let mut h = self.clone();
        h.problems.extend(problems);
        h
    }
    /// Everything as a dict (for JSON health endpoints).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("ok", self.ok())?;
        d.set_item("connected", self.connected)?;
        d.set_item("server_version", &self.server_version)?;
        d.set_item("server_name", &self.server_name)?;
        d.set_item("rtt", self.rtt)?;
        d.set_item("jetstream", self.jetstream)?;
        d.set_item("streams", self.streams)?;
        d.set_item("consumers", self.consumers)?;
        d.set_item("memory", self.memory)?;
        d.set_item("storage", self.storage)?;
        d.set_item("error", self.error.as_deref())?;
        d.set_item("problems", self.problems.clone())?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "Health(connected={}, server_version={:?}, rtt={}, jetstream={}, streams={}, consumers={}, ok={}, problems={:?})",
            py_bool(self.connected),
            self.server_version,
            self.rtt.map(|r| format!("{r:.6}")).unwrap_or_else(|| "None".into()),
            py_bool(self.jetstream),
            self.streams.map(|n| n.to_string()).unwrap_or_else(|| "None".into()),
            self.consumers.map(|n| n.to_string()).unwrap_or_else(|| "None".into()),
            py_bool(self.ok()),
            self.problems,
        )
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}
