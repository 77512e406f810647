//! The Python exception hierarchy, defined once.
//!
//! [`EXCEPTIONS`] is the single table of classes, bases and docs; the classes
//! are created from it when the module loads, and [`to_pyerr`] maps each core
//! [`ErrorKind`] to one of them. The `.pyi` stub mirrors this table and
//! `mypy.stubtest` checks that they agree.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use natsbus_core::{Error, ErrorKind};

use crate::codec::json_to_py;

struct ExceptionSpec {
    name: &'static str,
    /// Names of bases: earlier entries of this table, or builtins.
    bases: &'static [&'static str],
    doc: &'static str,
    /// Attributes with their class-level default (`None` or an empty list).
    attrs: &'static [(&'static str, Default)],
}

#[derive(Clone, Copy)]
enum Default {
    None,
    EmptyList,
}

const EXCEPTIONS: &[ExceptionSpec] = &[
    ExceptionSpec { name: "NatsbusError", bases: &["Exception"], doc: "Base class of every error natsbus raises.", attrs: &[] },
    ExceptionSpec { name: "ConnectError", bases: &["NatsbusError", "ConnectionError"], doc: "No server could be reached, or the connection is gone for good.", attrs: &[] },
    ExceptionSpec { name: "AuthError", bases: &["ConnectError"], doc: "The server rejected the credentials.", attrs: &[] },
    ExceptionSpec { name: "TimeoutError", bases: &["NatsbusError", "TimeoutError", "asyncio.TimeoutError"], doc: "An operation did not finish in time (also the builtin TimeoutError and asyncio.TimeoutError).", attrs: &[] },
    ExceptionSpec { name: "ClosedError", bases: &["NatsbusError"], doc: "The bus or consumer was closed.", attrs: &[] },
    ExceptionSpec { name: "InvalidArgumentError", bases: &["NatsbusError", "ValueError"], doc: "An argument is unusable (bad subject, bad name, negative timeout...).", attrs: &[] },
    ExceptionSpec { name: "EncodeError", bases: &["NatsbusError", "TypeError"], doc: "An object could not be encoded as a payload.", attrs: &[] },
    ExceptionSpec { name: "DecodeError", bases: &["NatsbusError", "ValueError"], doc: "A payload did not decode (as JSON, or into the model). `.subject` and `.seq` name the message.", attrs: &[("subject", Default::None), ("seq", Default::None)] },
    ExceptionSpec { name: "TopologyError", bases: &["NatsbusError", "ValueError"], doc: "A topology failed offline validation; `.problems` lists every problem.", attrs: &[("problems", Default::EmptyList)] },
    ExceptionSpec { name: "ApplyError", bases: &["NatsbusError"], doc: "The server refused a change, or a change is blocked; `.plan` holds the plan.", attrs: &[("plan", Default::None), ("err_code", Default::None), ("description", Default::None)] },
    ExceptionSpec { name: "DriftError", bases: &["NatsbusError"], doc: "The live server differs from the topology; `.plan` holds the differences.", attrs: &[("plan", Default::None)] },
    ExceptionSpec { name: "JetStreamError", bases: &["NatsbusError"], doc: "The JetStream API answered with an error; `.err_code` and `.description` are the server's.", attrs: &[("err_code", Default::None), ("description", Default::None)] },
    ExceptionSpec { name: "StreamNotFoundError", bases: &["JetStreamError"], doc: "The stream does not exist.", attrs: &[] },
    ExceptionSpec { name: "ConsumerNotFoundError", bases: &["JetStreamError"], doc: "The consumer does not exist.", attrs: &[] },
    ExceptionSpec { name: "ExpectationError", bases: &["JetStreamError"], doc: "A publish expectation failed (wrong last sequence, last msg id or stream).", attrs: &[] },
    ExceptionSpec { name: "NoRespondersError", bases: &["NatsbusError"], doc: "Nothing is listening on the subject of a request.", attrs: &[] },
    ExceptionSpec { name: "NoStreamError", bases: &["NoRespondersError"], doc: "No stream captures the subject of a publish.", attrs: &[] },
    ExceptionSpec { name: "StreamUnavailableError", bases: &["TimeoutError"], doc: "A stream captures the subject of a publish but did not answer within its timeout (no leader: an election, a restart, a lame-duck hand-over); the publish was retried until then.", attrs: &[] },
    ExceptionSpec { name: "BatchPublishError", bases: &["NatsbusError"], doc: "Some messages of publish_many failed; `.acks` has a PubAck or None per input, `.errors` maps input index to its error.", attrs: &[("acks", Default::EmptyList), ("errors", Default::None)] },
];

static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

fn create_classes(py: Python<'_>) -> PyResult<Vec<Py<PyType>>> {
    let builtins = py.import("builtins")?;
    let type_ = builtins.getattr("type")?;
    let mut made: Vec<Py<PyType>> = Vec::with_capacity(EXCEPTIONS.len());
    for spec in EXCEPTIONS {
        let mut bases = Vec::with_capacity(spec.bases.len());
        for base in spec.bases {
            // Our own classes shadow builtins of the same name (TimeoutError).
            let ours = EXCEPTIONS[..made.len()]
                .iter()
                .position(|s| s.name == *base);
            let cls = match (ours, base.split_once('.')) {
                (Some(i), _) if *base != spec.name => made[i].bind(py).clone().into_any(),
                (_, Some((module, name))) => py.import(module)?.getattr(name)?,
                _ => builtins.getattr(*base)?,
            };
            // asyncio.TimeoutError is the builtin TimeoutError from 3.11 on.
            if !bases.iter().any(|b: &Bound<'_, PyAny>| b.is(&cls)) {
                bases.push(cls);
            }
        }
        let ns = PyDict::new(py);
        ns.set_item("__module__", "natsbus")?;
        ns.set_item("__doc__", spec.doc)?;
        for (attr, default) in spec.attrs {
            match default {
                Default::None => ns.set_item(attr, py.None())?,
                Default::EmptyList => ns.set_item(attr, PyTuple::empty(py))?,
            }
        }
        let cls = type_.call1((spec.name, PyTuple::new(py, bases)?, ns))?;
        made.push(cls.cast_into::<PyType>()?.unbind());
    }
    Ok(made)
}

fn classes(py: Python<'_>) -> &Vec<Py<PyType>> {
    CLASSES
        .get_or_try_init(py, || create_classes(py))
        .expect("creating natsbus exception classes cannot fail")
}

/// The class called `name` from the table.
pub fn class<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyType> {
    let i = EXCEPTIONS.iter().position(|s| s.name == name).unwrap_or(0);
    classes(py)[i].bind(py).clone()
}

/// Add every exception class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    CLASSES.get_or_try_init(py, || create_classes(py))?;
    for (spec, cls) in EXCEPTIONS.iter().zip(classes(py)) {
        m.add(spec.name, cls.bind(py))?;
    }
    Ok(())
}

fn class_for(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Connect => "ConnectError",
        ErrorKind::Auth => "AuthError",
        ErrorKind::Timeout => "TimeoutError",
        ErrorKind::Closed => "ClosedError",
        ErrorKind::InvalidArgument => "InvalidArgumentError",
        ErrorKind::Encode => "EncodeError",
        ErrorKind::Decode => "DecodeError",
        ErrorKind::Topology => "TopologyError",
        ErrorKind::Apply => "ApplyError",
        ErrorKind::Drift => "DriftError",
        ErrorKind::JetStream => "JetStreamError",
        ErrorKind::NoResponders => "NoRespondersError",
        ErrorKind::NoStream => "NoStreamError",
        ErrorKind::StreamUnavailable => "StreamUnavailableError",
        ErrorKind::StreamNotFound => "StreamNotFoundError",
        ErrorKind::ConsumerNotFound => "ConsumerNotFoundError",
        ErrorKind::Expectation => "ExpectationError",
        ErrorKind::Internal => "NatsbusError",
    }
}

/// Build the Python exception instance for a core error.
pub fn to_pyobj<'py>(py: Python<'py>, e: &Error) -> PyResult<Bound<'py, PyAny>> {
    let cls = class(py, class_for(e.kind));
    let exc = cls.call1((e.message.as_str(),))?;
    if let Some(api) = &e.api {
        exc.setattr("err_code", api.err_code)?;
        exc.setattr("description", api.description.as_str())?;
    }
    if !e.problems.is_empty() {
        let problems = PyList::empty(py);
        for p in &e.problems {
            problems.append(problem_to_py(py, p)?)?;
        }
        exc.setattr("problems", problems)?;
    }
    if let Some(plan) = &e.plan {
        exc.setattr("plan", plan_to_py(py, plan)?)?;
    }
    if let Some(s) = &e.subject {
        exc.setattr("subject", s.as_str())?;
    }
    if let Some(seq) = e.seq {
        exc.setattr("seq", seq)?;
    }
    Ok(exc)
}

/// Turn a core error into a raisable `PyErr`.
pub fn to_pyerr(py: Python<'_>, e: &Error) -> PyErr {
    match to_pyobj(py, e) {
        Ok(obj) => PyErr::from_value(obj),
        Err(err) => err,
    }
}

/// A `Problem` as the Python `natsbus.Problem` named tuple.
pub fn problem_to_py<'py>(
    py: Python<'py>,
    p: &natsbus_core::Problem,
) -> PyResult<Bound<'py, PyAny>> {
    let cls = py.import("natsbus._types")?.getattr("Problem")?;
    cls.call1((
        p.file.as_deref(),
        p.line,
        p.field.as_str(),
        p.message.as_str(),
    ))
}

/// A plan's dict form as a Python `natsbus.Plan`.
pub fn plan_to_py<'py>(py: Python<'py>, plan: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    let cls = py.import("natsbus._types")?.getattr("Plan")?;
    cls.call_method1("from_dict", (json_to_py(py, plan)?,))
}

/// Shorthand used across the bindings.
pub trait IntoPyResult<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_pyerr(py, &e))
    }
}

/// Raise the class for `kind` with a plain message.
pub fn to_pyerr_msg(kind: ErrorKind, message: String) -> PyErr {
    Python::attach(|py| to_pyerr(py, &Error::new(kind, message)))
}
