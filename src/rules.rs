//! Rules the Python layer asks the core for instead of keeping its own copy:
//! the duration grammar of topology files (the CLI's `--wait 1w` reads the
//! same units as `max_age: 1w`) and the redaction of URLs for messages.

use pyo3::prelude::*;

use natsbus_core::topology::units;

use crate::args::Text;
use crate::errors::to_pyerr_msg;

/// Seconds in `text`, a duration with units as a topology file writes them
/// (`500ms`, `30s`, `2m`, `1h30m`, `7d`, `1w`). Raises `InvalidArgumentError`
/// saying what is accepted.
#[pyfunction]
pub fn parse_duration(text: Text) -> PyResult<f64> {
    let text = text.as_str();
    // A bare integer is nanoseconds in a topology file; here every value
    // names its unit (callers read bare numbers their own way).
    if text.trim().chars().all(|c| c.is_ascii_digit()) {
        return Err(to_pyerr_msg(
            natsbus_core::ErrorKind::InvalidArgument,
            format!("{text:?} has no unit: write e.g. 500ms, 30s, 2m, 1h, 7d or 1w"),
        ));
    }
    units::parse_duration(text)
        .map(|ns| ns as f64 / 1e9)
        .map_err(|m| to_pyerr_msg(natsbus_core::ErrorKind::InvalidArgument, m))
}

/// `url` (or a comma-separated list of them) with passwords and tokens
/// replaced by `***`, for messages and logs.
#[pyfunction]
pub fn redact_url(url: Text) -> String {
    url.as_str()
        .split(',')
        .map(natsbus_core::client::redact_url)
        .collect::<Vec<_>>()
        .join(",")
}
