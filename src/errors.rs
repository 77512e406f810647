//! Raising core errors as natsbus's exceptions, with what their kind
//! carries attached (`.err_code`, `.problems`, `.plan`, `.subject`...).

use pyo3::prelude::*;
use pyo3::types::PyList;

use natsbus_core::{Detail, Error, ErrorKind};

use crate::exceptions::class_for;

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
