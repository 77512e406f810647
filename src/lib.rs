//! The `natsbus._natsbus` extension module: registration only. The pieces
//! live in their own modules; the pure-Rust core is the `natsbus-core` crate.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod bus;
mod codec;
mod errors;
mod exceptions;
mod message;
mod plan;
mod publish_conn;
mod results;
mod rules;
mod runtime;
mod source;
mod topology;

/// For tests: work spawned on `bus`'s runtime that panics with `message`.
/// The awaitable fails with an internal `NatsbusError` instead of hanging.
#[pyfunction]
fn _panic_in_runtime(
    py: Python<'_>,
    bus: &Bound<'_, bus::Bus>,
    message: String,
) -> PyResult<Py<PyAny>> {
    bus.get().check_open(py)?;
    bus.get().completer().spawn(py, async move {
        if !message.is_empty() {
            panic!("{message}");
        }
        Ok::<(), natsbus_core::Error>(())
    })
}

/// `_natsbus._codec::encode(obj) -> (bytes, is_json)`: the publish encoder, exposed
/// for tests and benchmarks.
#[pyfunction]
pub fn _encode<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyBytes>, bool)> {
    let enc = codec::encode(obj).map_err(|e| errors::to_pyerr(py, &e))?;
    Ok((PyBytes::new(py, &enc.payload), enc.is_json))
}

/// `_natsbus._decode(payload) -> object`: the JSON decoder behind `Message.data`.
#[pyfunction]
pub fn _decode<'py>(py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    codec::decode_json(py, payload).map_err(|e| {
        errors::to_pyerr(
            py,
            &natsbus_core::Error::new(natsbus_core::ErrorKind::Decode, e),
        )
    })
}

#[pymodule]
fn _natsbus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::configure();
    exceptions::check_classes(m.py())?;
    m.add_class::<bus::Bus>()?;
    m.add_class::<results::PubAck>()?;
    m.add_class::<results::Health>()?;
    m.add_class::<source::MessageSource>()?;
    m.add_class::<message::Message>()?;
    m.add_class::<topology::Topology>()?;
    m.add_class::<plan::Problem>()?;
    m.add_class::<plan::Change>()?;
    m.add_class::<plan::Plan>()?;
    m.add_class::<runtime::Ready>()?;
    m.add_class::<publish_conn::PublishConn>()?;
    m.add_class::<publish_conn::PublishSetup>()?;
    m.add_class::<runtime::DrainCallback>()?;
    m.add_function(wrap_pyfunction!(bus::connect, m)?)?;
    m.add_function(wrap_pyfunction!(_encode, m)?)?;
    m.add_function(wrap_pyfunction!(_decode, m)?)?;
    m.add_function(wrap_pyfunction!(rules::parse_duration, m)?)?;
    m.add_function(wrap_pyfunction!(rules::redact_url, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_in_runtime, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
