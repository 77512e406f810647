//! natsbus-core: everything natsbus does that does not need Python.
//!
//! - [`topology`]: the topology file model, offline validation, normalization
//!   with server defaults, planning against live state, and export.
//! - [`subjects`]: subject validity and the server's overlap rule.
//! - [`names`]: the rule for stream and consumer names.
//! - [`client`]: connecting, publishing, consuming, request/reply and health,
//!   written against async-nats.
//!
//! No pyo3 types appear here, so all of it is testable with `cargo test`.

pub mod client;
pub mod error;
pub mod names;
pub mod subjects;
pub mod topology;

pub use error::{ApiError, Detail, Error, ErrorKind, Problem, Result};
