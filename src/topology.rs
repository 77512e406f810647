//! `Topology` and the bus's declarative methods (plan, ensure_streams,
//! verify, export, status). All the logic is in `natsbus_core::topology`.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use natsbus_core::topology::{self as core, Format, Plan as CorePlan, PlanOptions};
use natsbus_core::{Error, ErrorKind};

use crate::args::Text;
use crate::codec::{json_to_py, py_to_json};
use crate::errors::{to_pyerr, IntoPyResult};
use crate::runtime::Deliver;

/// A validated topology: streams and their consumers.
///
/// Build it with `Topology.load(path)` (YAML, JSON or TOML), `Topology.from_dict(d)`
/// or `Topology.from_text(text, format)`. Every problem in the input is
/// reported at once in a `TopologyError`, before anything talks to a server.
#[pyclass(frozen, module = "natsbus")]
pub struct Topology {
    pub inner: Arc<core::Topology>,
}

#[pymethods]
impl Topology {
    /// Load and validate a topology file (`.yaml`, `.yml`, `.json`, `.toml`);
    /// several files and directories are merged into one (a stream declared
    /// twice is a problem naming both places), and `"-"` reads stdin.
    #[staticmethod]
    #[pyo3(signature = (path, *more))]
    fn load(py: Python<'_>, path: PathBuf, more: Vec<PathBuf>) -> PyResult<Topology> {
        let t = if more.is_empty() && path.as_os_str() != "-" && !path.is_dir() {
            py.detach(|| core::Topology::load(&path))
        } else {
            let mut all = vec![path];
            all.extend(more);
            py.detach(|| core::Topology::load_many(&all))
        }
        .py_err(py)?;
        Ok(Topology { inner: Arc::new(t) })
    }

    /// Validate a topology given as a dict of the file's shape.
    #[staticmethod]
    #[pyo3(signature = (data, source=None))]
    fn from_dict(
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        source: Option<String>,
    ) -> PyResult<Topology> {
        if !data.is_instance_of::<PyDict>() {
            return Err(to_pyerr(
                py,
                &Error::invalid("Topology.from_dict needs a dict"),
            ));
        }
        let value = py_to_json(data).py_err(py)?;
        // Validation is pure Rust: other threads run meanwhile.
        let t = py
            .detach(|| core::Topology::from_value(value, source.as_deref()))
            .py_err(py)?;
        Ok(Topology { inner: Arc::new(t) })
    }

    /// Validate a topology given as text; `format` is "yaml", "json" or "toml".
    #[staticmethod]
    #[pyo3(signature = (text, format="yaml", source=None))]
    fn from_text(
        py: Python<'_>,
        text: Text,
        format: &str,
        source: Option<String>,
    ) -> PyResult<Topology> {
        let format = match format.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Format::Yaml,
            "json" => Format::Json,
            "toml" => Format::Toml,
            other => {
                return Err(to_pyerr(
                    py,
                    &Error::invalid(format!(
                        "unknown topology format {other:?}: use yaml, json or toml"
                    )),
                ))
            }
        };
        let t = py
            .detach(|| core::Topology::from_str(text.as_str(), format, source.as_deref()))
            .py_err(py)?;
        Ok(Topology { inner: Arc::new(t) })
    }

    /// The desired configuration in the file's shape, values in the server's
    /// units (nanoseconds, bytes).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.to_value())
    }

    /// Names of the declared streams, in file order.
    #[getter]
    fn streams(&self) -> Vec<String> {
        self.inner.stream_names()
    }

    /// Declared consumers as (stream, durable) pairs.
    #[getter]
    fn consumers(&self) -> Vec<(String, String)> {
        self.inner
            .streams()
            .iter()
            .flat_map(|s| {
                s.consumers
                    .iter()
                    .map(move |c| (s.name.clone(), c.name.clone()))
            })
            .collect()
    }

    /// Where the topology came from (file path), if known.
    #[getter]
    fn source(&self) -> Option<&str> {
        self.inner.source()
    }

    fn __repr__(&self) -> String {
        let n_consumers: usize = self.inner.streams().iter().map(|s| s.consumers.len()).sum();
        let from = self
            .inner
            .source()
            .map(|s| format!(" from {s:?}"))
            .unwrap_or_default();
        format!(
            "<natsbus.Topology{from} streams={:?} consumers={n_consumers}>",
            self.inner.stream_names()
        )
    }
}

/// Turn a path, dict or `Topology` into a validated topology.
pub fn resolve(obj: &Bound<'_, PyAny>) -> PyResult<Arc<core::Topology>> {
    let py = obj.py();
    if let Ok(t) = obj.cast::<Topology>() {
        return Ok(t.get().inner.clone());
    }
    if obj.is_instance_of::<PyDict>() {
        return Ok(Topology::from_dict(py, obj, None)?.inner);
    }
    let fspath = py.import("os")?.getattr("fspath")?;
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        let path: PathBuf = fspath.call1((obj,))?.extract()?;
        return Ok(Topology::load(py, path, Vec::new())?.inner);
    }
    // Several files: a list or tuple of paths, merged.
    if obj.is_instance_of::<pyo3::types::PyList>() || obj.is_instance_of::<pyo3::types::PyTuple>() {
        let mut paths = Vec::new();
        for item in obj.try_iter()? {
            paths.push(fspath.call1((item?,))?.extract::<PathBuf>()?);
        }
        if let Some((first, rest)) = paths.split_first() {
            let t = py
                .detach(|| {
                    let mut all = vec![first.clone()];
                    all.extend_from_slice(rest);
                    core::Topology::load_many(&all)
                })
                .py_err(py)?;
            return Ok(Arc::new(t));
        }
    }
    Err(to_pyerr(
        py,
        &Error::invalid(format!(
            "topology must be a path (or a list of paths), a dict or a natsbus.Topology, not {}",
            crate::codec::type_name(obj)
        )),
    ))
}

/// A core plan delivered as a Python `natsbus.Plan`.
pub struct PlanOut(pub CorePlan, pub PlanOptions);

impl Deliver for PlanOut {
    fn into_py(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut v = self.0.to_value();
        v["text"] = serde_json::Value::String(self.0.render_with(&self.1));
        Ok(Py::new(py, crate::plan::Plan::from_value(py, &v)?)?.into_any())
    }
}

/// What `natsbus status` shows: per stream its state, per consumer its counters.
pub fn status_value(live: &core::LiveState, only: &[String]) -> serde_json::Value {
    use serde_json::{json, Value};
    let num = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let streams: Vec<Value> = live
        .streams
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .map(|s| {
            let state = s.info.get("state").cloned().unwrap_or_default();
            let config = s.info.get("config").cloned().unwrap_or_default();
            let consumers: Vec<Value> = s
                .consumers
                .iter()
                .map(|c| {
                    let cfg = c.info.get("config").cloned().unwrap_or_default();
                    let ack_floor = c.info.get("ack_floor").cloned().unwrap_or_default();
                    json!({
                        "name": c.name,
                        "num_pending": num(&c.info, "num_pending"),
                        "num_ack_pending": num(&c.info, "num_ack_pending"),
                        "num_redelivered": num(&c.info, "num_redelivered"),
                        "num_waiting": num(&c.info, "num_waiting"),
                        "pull": cfg.get("deliver_subject").is_none(),
                        "max_ack_pending": num(&cfg, "max_ack_pending"),
                        "ack_floor": num(&ack_floor, "stream_seq"),
                        "delivered": c.info.get("delivered").map(|d| num(d, "stream_seq")).unwrap_or(Value::Null),
                        "last_active": last_active(&c.info),
                        "replicas": c.info.get("cluster").map(replica_count).unwrap_or(Value::Null),
                        "leader": c.info.get("cluster").map(|cl| num(cl, "leader")).unwrap_or(Value::Null),
                        "metadata": num(&cfg, "metadata"),
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "subjects": num(&config, "subjects"),
                "retention": num(&config, "retention"),
                "storage": num(&config, "storage"),
                "messages": num(&state, "messages"),
                "bytes": num(&state, "bytes"),
                "first_seq": num(&state, "first_seq"),
                "last_seq": num(&state, "last_seq"),
                "num_replicas": num(&config, "num_replicas"),
                "leader": s.info.get("cluster").map(|cl| num(cl, "leader")).unwrap_or(Value::Null),
                "replicas": s.info.get("cluster").map(replica_list).unwrap_or(Value::Array(Vec::new())),
                "consumers": consumers,
            })
        })
        .collect();
    json!({"server_version": live.server_version, "streams": streams})
}

/// The later of a consumer's last delivery and last ack (RFC 3339 text),
/// or null when it never did either.
fn last_active(info: &serde_json::Value) -> serde_json::Value {
    let at = |k: &str| {
        info.get(k)
            .and_then(|v| v.get("last_active"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    // RFC 3339 with the same offset sorts as text; the server writes UTC.
    match (at("delivered"), at("ack_floor")) {
        (Some(a), Some(b)) => serde_json::Value::String(a.max(b)),
        (Some(a), None) | (None, Some(a)) => serde_json::Value::String(a),
        (None, None) => serde_json::Value::Null,
    }
}

/// The other peers of a clustered stream: name, current, offline, lag,
/// active (seconds since last heard from, as the server counts it in ns).
fn replica_list(cluster: &serde_json::Value) -> serde_json::Value {
    use serde_json::{json, Value};
    let peers = cluster
        .get("replicas")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Value::Array(
        peers
            .iter()
            .map(|p| {
                json!({
                    "name": p.get("name").cloned().unwrap_or(Value::Null),
                    "current": p.get("current").and_then(Value::as_bool).unwrap_or(false),
                    "offline": p.get("offline").and_then(Value::as_bool).unwrap_or(false),
                    "lag": p.get("lag").cloned().unwrap_or(json!(0)),
                    "active": p.get("active").and_then(Value::as_f64).map(|ns| ns / 1e9),
                })
            })
            .collect(),
    )
}

/// How many peers a clustered consumer has (leader included).
fn replica_count(cluster: &serde_json::Value) -> serde_json::Value {
    let others = cluster
        .get("replicas")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    serde_json::Value::from(others + 1)
}

/// Names given as a list of str (or None for all).
pub fn names(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match obj {
        None => Ok(Vec::new()),
        Some(o) if o.is_none() => Ok(Vec::new()),
        Some(o) if o.is_instance_of::<PyString>() => Ok(vec![o.extract()?]),
        Some(o) => {
            let list = o.cast::<PyList>().ok();
            match list {
                Some(l) => l.extract(),
                None => o.extract(),
            }
        }
    }
}

/// Error when a bus method needs a topology and none was given.
pub fn no_topology() -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        "no topology: pass one (path, dict or natsbus.Topology) or connect(topology=...)",
    )
}
