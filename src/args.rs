//! Argument types that fail with natsbus errors.
//!
//! A Python `str` can hold text that is not valid UTF-8 (a lone surrogate,
//! from a bad decode or `surrogateescape`). Extracted as a Rust string it
//! would raise `UnicodeEncodeError` from deep inside PyO3; [`Text`] says
//! what is wrong as an `InvalidArgumentError` instead.

use pyo3::prelude::*;
use pyo3::types::PyString;

use natsbus_core::{Error, ErrorKind};

use crate::codec::type_name;
use crate::errors::to_pyerr_msg;

/// A `str` argument that must be valid UTF-8 text.
pub struct Text(pub String);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `obj` as UTF-8 text, or an invalid-argument error naming `what`.
pub fn utf8(obj: &Bound<'_, PyAny>, what: &str) -> Result<String, Error> {
    let s = obj
        .cast::<PyString>()
        .map_err(|_| Error::invalid(format!("{what} must be str, got {}", type_name(obj))))?;
    match s.to_str() {
        Ok(t) => Ok(t.to_owned()),
        Err(_) => {
            let shown: String = s
                .to_string_lossy()
                .chars()
                .take(60)
                .collect::<String>()
                .escape_debug()
                .to_string();
            Err(Error::invalid(format!(
                "{what} \"{shown}\" is not valid text: it contains a lone surrogate \
                 (decode the bytes it came from properly, or use bytes)"
            )))
        }
    }
}

/// [`utf8`] as a Python error.
pub fn text(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    utf8(obj, what).map_err(|e| to_pyerr_msg(ErrorKind::InvalidArgument, e.message))
}

impl<'a, 'py> FromPyObject<'a, 'py> for Text {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        // PyO3 adds "while processing '<argument>'" to the error.
        text(&obj, "the argument").map(Text)
    }
}
