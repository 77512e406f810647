//! The `natsbus._natsbus` extension module: registration only. The pieces
//! live in their own modules; the pure-Rust core is the `natsbus-core` crate.

use pyo3::prelude::*;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod bus;
mod codec;
mod direct;
mod errors;
mod message;
mod plan;
mod rules;
mod runtime;
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

#[pymodule]
fn _natsbus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::configure();
    errors::check_classes(m.py())?;
    m.add_class::<bus::Bus>()?;
    m.add_class::<bus::PubAck>()?;
    m.add_class::<bus::Health>()?;
    m.add_class::<bus::MessageSource>()?;
    m.add_class::<message::Message>()?;
    m.add_class::<topology::Topology>()?;
    m.add_class::<plan::Problem>()?;
    m.add_class::<plan::Change>()?;
    m.add_class::<plan::Plan>()?;
    m.add_class::<runtime::Ready>()?;
    m.add_class::<direct::DirectConn>()?;
    m.add_class::<runtime::DrainCallback>()?;
    m.add_function(wrap_pyfunction!(bus::connect, m)?)?;
    m.add_function(wrap_pyfunction!(codec::_encode, m)?)?;
    m.add_function(wrap_pyfunction!(codec::_decode, m)?)?;
    m.add_function(wrap_pyfunction!(rules::parse_duration, m)?)?;
    m.add_function(wrap_pyfunction!(rules::redact_url, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_in_runtime, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
