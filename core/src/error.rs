//! The one error type of natsbus.
//!
//! Every failure in the core is an [`Error`] with an [`ErrorKind`]; the Python
//! bindings map each kind to exactly one exception class (see `src/errors.rs`
//! in the extension crate), so this enum is the single source of truth for the
//! hierarchy users catch.

use std::fmt;

/// What went wrong, coarsely: one kind per Python exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Could not reach any server, or the connection was lost for good.
    Connect,
    /// The server refused our credentials.
    Auth,
    /// An operation did not finish in time.
    Timeout,
    /// The bus (or consumer) was closed before or during the operation.
    Closed,
    /// A caller passed something unusable (bad subject, negative timeout...).
    InvalidArgument,
    /// A Python object could not be turned into a payload.
    Encode,
    /// A payload could not be turned into the requested Python object.
    Decode,
    /// A topology file or dict failed offline validation.
    Topology,
    /// The server refused a change, or a change is blocked.
    Apply,
    /// `verify` found the live server differs from the topology.
    Drift,
    /// Any other JetStream API error (see [`ApiError`]).
    JetStream,
    /// A core request found nobody listening on the subject.
    NoResponders,
    /// A JetStream publish found no stream capturing the subject.
    NoStream,
    /// A stream captures the subject but did not answer within the publish
    /// timeout (no leader: an election, a restart, a lame-duck hand-over).
    StreamUnavailable,
    /// The named stream does not exist.
    StreamNotFound,
    /// The named consumer does not exist.
    ConsumerNotFound,
    /// A publish expectation (last sequence, last msg id, stream) failed.
    Expectation,
    /// A bug in natsbus itself (a panic in spawned work): the message says where.
    Internal,
}

/// The error block of a JetStream API response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ApiError {
    /// HTTP-like status (404, 400, 503...).
    #[serde(default)]
    pub code: u16,
    /// The server's stable error code (10059 stream not found, ...).
    #[serde(default)]
    pub err_code: u16,
    /// The server's text.
    #[serde(default)]
    pub description: String,
}

impl ApiError {
    /// The error kind users should see for this server error code.
    pub fn kind(&self) -> ErrorKind {
        match self.err_code {
            10059 => ErrorKind::StreamNotFound,
            10014 => ErrorKind::ConsumerNotFound,
            // wrong last sequence, wrong last msg id, expected stream mismatch
            10071 | 10070 | 10060 => ErrorKind::Expectation,
            _ => ErrorKind::JetStream,
        }
    }
}

/// One problem found in a topology, with where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file the topology came from, if any.
    pub file: Option<String>,
    /// 1-based line where known.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `streams.ORDERS.max_age`.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A natsbus error: a kind, a message meant for humans, and details.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// Set when the server answered with an API error. (Boxed, like the
    /// plan, to keep `Result<T, Error>` small on every hot path.)
    pub api: Option<Box<ApiError>>,
    /// Set for [`ErrorKind::Topology`]: every problem found.
    pub problems: Vec<Problem>,
    /// Set for [`ErrorKind::Apply`] / [`ErrorKind::Drift`]: the plan, as its dict form.
    pub plan: Option<Box<serde_json::Value>>,
    /// Set for [`ErrorKind::Decode`]: subject and stream sequence of the message.
    pub subject: Option<String>,
    pub seq: Option<u64>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            api: None,
            problems: Vec::new(),
            plan: None,
            subject: None,
            seq: None,
        }
    }

    /// An error from a JetStream API response; `context` says what we were doing.
    pub fn api(context: impl fmt::Display, api: ApiError) -> Self {
        let message = format!("{context}: {} (err_code {})", api.description, api.err_code);
        let mut e = Error::new(api.kind(), message);
        e.api = Some(Box::new(api));
        e
    }

    pub fn timeout(what: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Timeout, format!("{what} timed out"))
    }

    pub fn closed() -> Self {
        Error::new(ErrorKind::Closed, "the bus is closed")
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// A panic inside natsbus, turned into an error for whoever awaited the
    /// work. `location` is where the work was started.
    pub fn internal(location: impl fmt::Display, panic: &(dyn std::any::Any + Send)) -> Self {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-text payload".to_string());
        Error::new(
            ErrorKind::Internal,
            format!(
                "natsbus internal error in work started at {location}: {what} \
                 (this is a bug in natsbus; please report it with this message)"
            ),
        )
    }

    pub fn topology(problems: Vec<Problem>) -> Self {
        let mut message = match problems.len() {
            1 => "1 problem in topology:".to_string(),
            n => format!("{n} problems in topology:"),
        };
        for p in &problems {
            message.push_str("\n  ");
            message.push_str(&p.to_string());
        }
        let mut e = Error::new(ErrorKind::Topology, message);
        e.problems = problems;
        e
    }

    pub fn with_plan(mut self, plan: serde_json::Value) -> Self {
        self.plan = Some(Box::new(plan));
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
