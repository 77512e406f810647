//! `Problem`, `Change` and `Plan`: what offline validation found and what
//! applying a topology would do, as frozen classes built straight from the
//! core's values (one machine form, `core::Plan::to_value`).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};

use natsbus_core::topology::Action;

use crate::codec::{json_to_py, py_to_json};
use crate::exceptions::InvalidArgumentError;

/// One problem found while validating a topology. Unpacks like a tuple:
/// ``file, line, field, message = problem``.
#[pyclass(frozen, get_all, eq, hash, skip_from_py_object, module = "natsbus")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// The file the topology came from, if any.
    file: Option<String>,
    /// 1-based line, where known.
    line: Option<usize>,
    /// Dotted path of the field, e.g. ``streams.ORDERS.max_age``.
    field: String,
    /// What is wrong and what to do about it.
    message: String,
}

impl From<&natsbus_core::Problem> for Problem {
    fn from(p: &natsbus_core::Problem) -> Self {
        Problem {
            file: p.file.clone(),
            line: p.line,
            field: p.field.clone(),
            message: p.message.clone(),
        }
    }
}

impl Problem {
    fn core(&self) -> natsbus_core::Problem {
        natsbus_core::Problem {
            file: self.file.clone(),
            line: self.line,
            field: self.field.clone(),
            message: self.message.clone(),
        }
    }

    fn as_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (
            self.file.as_deref(),
            self.line,
            self.field.as_str(),
            self.message.as_str(),
        )
            .into_pyobject(py)
    }
}

#[pymethods]
impl Problem {
    #[new]
    #[pyo3(signature = (file, line, field, message))]
    fn py_new(file: Option<String>, line: Option<usize>, field: String, message: String) -> Self {
        Problem {
            file,
            line,
            field,
            message,
        }
    }

    fn __str__(&self) -> String {
        self.core().to_string()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let t = self.as_tuple(py)?;
        Ok(format!(
            "Problem(file={}, line={}, field={}, message={})",
            t.get_item(0)?.repr()?,
            t.get_item(1)?.repr()?,
            t.get_item(2)?.repr()?,
            t.get_item(3)?.repr()?
        ))
    }

    fn __len__(&self) -> usize {
        4
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        self.as_tuple(py)?.as_any().get_item(index)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.as_tuple(py)?.as_any().try_iter()?.into_any())
    }
}

/// One stream or consumer in a plan and what applying would do to it.
///
/// ``action`` is one of ``create``, ``update``, ``destructive``, ``blocked``,
/// ``unchanged`` or ``unmanaged``; ``diff`` maps a field to ``(live, desired)``;
/// ``reason`` explains a blocked or destructive change. In the plan an
/// apply returns or raises with, ``outcome`` says what became of it
/// (``applied``, ``failed`` with the server's ``error``, ``not_attempted``
/// after an earlier failure, ``left_alone`` under create-only; ``None`` for
/// what needed nothing and in a plan).
#[pyclass(frozen, get_all, module = "natsbus")]
pub struct Change {
    action: String,
    stream: String,
    consumer: Option<String>,
    diff: Py<PyDict>,
    reason: Option<String>,
    outcome: Option<String>,
    error: Option<String>,
}

impl Change {
    fn from_value(py: Python<'_>, v: &serde_json::Value) -> PyResult<Change> {
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let diff = PyDict::new(py);
        if let Some(d) = v.get("diff").and_then(|d| d.as_object()) {
            for (field, pair) in d {
                let live = json_to_py(py, &pair[0])?;
                let desired = json_to_py(py, &pair[1])?;
                diff.set_item(field, (live, desired))?;
            }
        }
        Ok(Change {
            action: text("action").unwrap_or_default(),
            stream: text("stream").unwrap_or_default(),
            consumer: text("consumer"),
            diff: diff.unbind(),
            reason: text("reason"),
            outcome: text("outcome"),
            error: text("error"),
        })
    }

    fn pending(&self) -> bool {
        Action::parse(&self.action).is_some_and(Action::is_pending)
    }
}

#[pymethods]
impl Change {
    #[new]
    #[pyo3(signature = (action, stream, consumer=None, diff=None, reason=None, outcome=None, error=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        action: String,
        stream: String,
        consumer: Option<String>,
        diff: Option<&Bound<'_, PyDict>>,
        reason: Option<String>,
        outcome: Option<String>,
        error: Option<String>,
    ) -> PyResult<Self> {
        let copy = PyDict::new(py);
        if let Some(d) = diff {
            for (k, pair) in d.iter() {
                let live = pair.get_item(0)?;
                let desired = pair.get_item(1)?;
                copy.set_item(k, (live, desired))?;
            }
        }
        Ok(Change {
            action,
            stream,
            consumer,
            diff: copy.unbind(),
            reason,
            outcome,
            error,
        })
    }

    /// A change from its ``to_dict()`` form.
    #[classmethod]
    fn from_dict(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        d: &Bound<'_, PyAny>,
    ) -> PyResult<Change> {
        let v = py_to_json(d).map_err(|e| InvalidArgumentError::new_err(e.message))?;
        Change::from_value(py, &v)
    }

    /// ``stream STREAM`` or ``consumer STREAM/NAME``.
    #[getter]
    fn target(&self) -> String {
        match &self.consumer {
            None => format!("stream {}", self.stream),
            Some(c) => format!("consumer {}/{c}", self.stream),
        }
    }

    /// ``{"action", "stream", "consumer", "diff": {field: [live, desired]}, "reason"}``.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("action", &self.action)?;
        d.set_item("stream", &self.stream)?;
        d.set_item("consumer", self.consumer.as_deref())?;
        let diff = PyDict::new(py);
        for (k, pair) in self.diff.bind(py).iter() {
            diff.set_item(k, PyList::new(py, [pair.get_item(0)?, pair.get_item(1)?])?)?;
        }
        d.set_item("diff", diff)?;
        d.set_item("reason", self.reason.as_deref())?;
        if self.outcome.is_some() {
            d.set_item("outcome", self.outcome.as_deref())?;
            d.set_item("error", self.error.as_deref())?;
        }
        Ok(d)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        match other.cast::<Change>() {
            Ok(o) => self.to_dict(py)?.eq(o.get().to_dict(py)?),
            Err(_) => Ok(false),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let diff = self.diff.bind(py);
        let extra = if diff.is_empty() {
            String::new()
        } else {
            format!(", diff={}", diff.repr()?)
        };
        Ok(format!(
            "Change({}, {}{extra})",
            PyString::new(py, &self.action).repr()?,
            PyString::new(py, &self.target()).repr()?
        ))
    }
}

/// What applying a topology would do (or did).
///
/// ``pending`` is true when anything would change; ``changes`` lists every
/// stream and consumer; ``str(plan)`` is the readable plan and ``to_dict()``
/// the machine form.
#[pyclass(frozen, module = "natsbus")]
pub struct Plan {
    changes: Vec<Py<Change>>,
    text: Option<String>,
    /// The text with every unmanaged stream and consumer named.
    text_unmanaged: Option<String>,
    /// The text of the changes alone.
    text_changes: Option<String>,
}

impl Plan {
    /// From the core's machine form (`core::Plan::to_value`, with `text`).
    pub fn from_value(py: Python<'_>, v: &serde_json::Value) -> PyResult<Plan> {
        let mut changes = Vec::new();
        for c in v
            .get("changes")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
        {
            changes.push(Py::new(py, Change::from_value(py, c)?)?);
        }
        let text = |k: &str| v.get(k).and_then(|t| t.as_str()).map(str::to_string);
        Ok(Plan {
            changes,
            text: text("text"),
            text_unmanaged: text("text_unmanaged"),
            text_changes: text("text_changes"),
        })
    }

    fn pending(&self, py: Python<'_>) -> bool {
        self.changes.iter().any(|c| c.bind(py).get().pending())
    }
}

#[pymethods]
impl Plan {
    #[new]
    #[pyo3(signature = (changes, text=None))]
    fn py_new(changes: Vec<Py<Change>>, text: Option<String>) -> Self {
        Plan {
            changes,
            text,
            text_unmanaged: None,
            text_changes: None,
        }
    }

    /// The readable plan: ``str(plan)`` counts what is unmanaged in one line;
    /// ``unmanaged=True`` names each unmanaged stream and consumer;
    /// ``changes_only=True`` shows only what is to change or was refused.
    #[pyo3(signature = (*, unmanaged=false, changes_only=false))]
    fn render(&self, py: Python<'_>, unmanaged: bool, changes_only: bool) -> String {
        let chosen = if changes_only {
            self.text_changes.as_ref()
        } else if unmanaged {
            self.text_unmanaged.as_ref()
        } else {
            None
        };
        match chosen {
            Some(t) => t.clone(),
            None => self.__str__(py),
        }
    }

    /// A plan from its ``to_dict()`` form.
    #[classmethod]
    fn from_dict(_cls: &Bound<'_, PyType>, py: Python<'_>, d: &Bound<'_, PyAny>) -> PyResult<Plan> {
        let v = py_to_json(d).map_err(|e| InvalidArgumentError::new_err(e.message))?;
        Plan::from_value(py, &v)
    }

    /// Every declared stream and consumer, and what the server has that the
    /// topology does not name.
    #[getter]
    fn changes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.changes.iter().map(|c| c.clone_ref(py)))
    }

    /// True when applying would create, update or refuse something.
    #[getter(pending)]
    fn py_pending(&self, py: Python<'_>) -> bool {
        self.pending(py)
    }

    /// The changes with the given action.
    fn by_action(&self, py: Python<'_>, action: &str) -> Vec<Py<Change>> {
        self.changes
            .iter()
            .filter(|c| c.bind(py).get().action == action)
            .map(|c| c.clone_ref(py))
            .collect()
    }

    /// ``{"pending": bool, "changes": [change.to_dict(), ...]}``.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("pending", self.pending(py))?;
        let changes = PyList::empty(py);
        for c in &self.changes {
            changes.append(c.bind(py).get().to_dict(py)?)?;
        }
        d.set_item("changes", changes)?;
        Ok(d)
    }

    fn __str__(&self, py: Python<'_>) -> String {
        if let Some(text) = &self.text {
            return text.clone();
        }
        if self.changes.is_empty() {
            return "nothing to do".to_string();
        }
        self.changes
            .iter()
            .map(|c| {
                let c = c.bind(py).get();
                format!("{:12} {}", c.action, c.target())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for c in &self.changes {
            *counts.entry(c.bind(py).get().action.as_str()).or_default() += 1;
        }
        let pending = if self.pending(py) { "True" } else { "False" };
        if counts.is_empty() {
            return format!("Plan(pending={pending})");
        }
        let inner: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("Plan(pending={pending}, {})", inner.join(", "))
    }

    fn __bool__(&self, py: Python<'_>) -> bool {
        self.pending(py)
    }
}
