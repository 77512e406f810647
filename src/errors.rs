//! Raising natsbus's exceptions from Rust.
//!
//! The classes are defined once, in Python (`python/natsbus/errors.py`),
//! and imported here; [`class_for`] is the one exhaustive match from the
//! core's [`ErrorKind`] to them, so a new kind without a class does not
//! compile. [`check_classes`] resolves every one at module load, so a class
//! missing from `errors.py` fails the import instead of a later raise.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyType};
use pyo3::PyTypeInfo;

use natsbus_core::{Detail, Error, ErrorKind};

/// The classes of `natsbus.errors`.
mod py {
    pyo3::import_exception!(natsbus.errors, NatsbusError);
    pyo3::import_exception!(natsbus.errors, ConnectError);
    pyo3::import_exception!(natsbus.errors, AuthError);
    pyo3::import_exception!(natsbus.errors, TimeoutError);
    pyo3::import_exception!(natsbus.errors, ClosedError);
    pyo3::import_exception!(natsbus.errors, InvalidArgumentError);
    pyo3::import_exception!(natsbus.errors, EncodeError);
    pyo3::import_exception!(natsbus.errors, DecodeError);
    pyo3::import_exception!(natsbus.errors, TopologyError);
    pyo3::import_exception!(natsbus.errors, ApplyError);
    pyo3::import_exception!(natsbus.errors, DriftError);
    pyo3::import_exception!(natsbus.errors, JetStreamError);
    pyo3::import_exception!(natsbus.errors, StreamNotFoundError);
    pyo3::import_exception!(natsbus.errors, ConsumerNotFoundError);
    pyo3::import_exception!(natsbus.errors, ExpectationError);
    pyo3::import_exception!(natsbus.errors, NoRespondersError);
    pyo3::import_exception!(natsbus.errors, NoStreamError);
    pyo3::import_exception!(natsbus.errors, StreamUnavailableError);
    pyo3::import_exception!(natsbus.errors, BatchPublishError);
}

pub use py::BatchPublishError;

/// The exception class users catch for `kind`.
fn class_for(py: Python<'_>, kind: ErrorKind) -> Bound<'_, PyType> {
    match kind {
        ErrorKind::Connect => py::ConnectError::type_object(py),
        ErrorKind::Auth => py::AuthError::type_object(py),
        ErrorKind::Timeout => py::TimeoutError::type_object(py),
        ErrorKind::Closed => py::ClosedError::type_object(py),
        ErrorKind::InvalidArgument => py::InvalidArgumentError::type_object(py),
        ErrorKind::Encode => py::EncodeError::type_object(py),
        ErrorKind::Decode => py::DecodeError::type_object(py),
        ErrorKind::Topology => py::TopologyError::type_object(py),
        ErrorKind::Apply => py::ApplyError::type_object(py),
        ErrorKind::Drift => py::DriftError::type_object(py),
        ErrorKind::JetStream => py::JetStreamError::type_object(py),
        ErrorKind::NoResponders => py::NoRespondersError::type_object(py),
        ErrorKind::NoStream => py::NoStreamError::type_object(py),
        ErrorKind::StreamUnavailable => py::StreamUnavailableError::type_object(py),
        ErrorKind::StreamNotFound => py::StreamNotFoundError::type_object(py),
        ErrorKind::ConsumerNotFound => py::ConsumerNotFoundError::type_object(py),
        ErrorKind::Expectation => py::ExpectationError::type_object(py),
        ErrorKind::Internal => py::NatsbusError::type_object(py),
    }
}

/// Import `natsbus.errors` and resolve the class of every kind (and the
/// batch error), so that a class missing there fails the module import.
pub fn check_classes(py: Python<'_>) -> PyResult<()> {
    let errors = py.import("natsbus.errors")?;
    for kind in ErrorKind::ALL {
        let name = class_for(py, *kind).name()?;
        errors.getattr(name)?;
    }
    errors.getattr(BatchPublishError::type_object(py).name()?)?;
    Ok(())
}

/// Build the Python exception instance for a core error.
pub fn to_pyobj<'py>(py: Python<'py>, e: &Error) -> PyResult<Bound<'py, PyAny>> {
    let exc = class_for(py, e.kind).call1((e.message.as_str(),))?;
    let set_api = |api: &natsbus_core::ApiError| -> PyResult<()> {
        exc.setattr("err_code", api.err_code)?;
        exc.setattr("description", api.description.as_str())
    };
    match e.detail.as_deref() {
        None => {}
        Some(Detail::Api(api)) => set_api(api)?,
        Some(Detail::Problems(problems)) => {
            let list = PyList::empty(py);
            for p in problems {
                list.append(Py::new(py, crate::plan::Problem::from(p))?)?;
            }
            exc.setattr("problems", list)?;
        }
        Some(Detail::Plan { plan, api }) => {
            exc.setattr(
                "plan",
                Py::new(py, crate::plan::Plan::from_value(py, plan)?)?,
            )?;
            if let Some(api) = api {
                set_api(api)?;
            }
        }
        Some(Detail::Message { subject, seq }) => {
            exc.setattr("subject", subject.as_str())?;
            if let Some(seq) = seq {
                exc.setattr("seq", *seq)?;
            }
        }
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
