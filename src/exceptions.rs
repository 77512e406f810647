//! The classes of `natsbus.errors`, imported from Python.
//!
//! The classes are defined once, in Python (`python/natsbus/errors.py`),
//! and imported here; [`class_for`] is the one exhaustive match from the
//! core's [`ErrorKind`] to them, so a new kind without a class does not
//! compile. [`check_classes`] resolves every one at module load, so a class
//! missing from `errors.py` fails the import instead of a later raise. A
//! leaf: it needs nothing else of the bindings.

use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::PyTypeInfo;

use natsbus_core::ErrorKind;

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
    pyo3::import_exception!(natsbus.errors, MessageNotFoundError);
    pyo3::import_exception!(natsbus.errors, ExpectationError);
    pyo3::import_exception!(natsbus.errors, NoRespondersError);
    pyo3::import_exception!(natsbus.errors, NoStreamError);
    pyo3::import_exception!(natsbus.errors, StreamUnavailableError);
    pyo3::import_exception!(natsbus.errors, BatchPublishError);
}

pub use py::{BatchPublishError, InvalidArgumentError};

/// The exception class users catch for `kind`.
pub fn class_for(py: Python<'_>, kind: ErrorKind) -> Bound<'_, PyType> {
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
        ErrorKind::MessageNotFound => py::MessageNotFoundError::type_object(py),
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
