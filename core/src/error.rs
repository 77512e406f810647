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
    /// The stream holds no message at that sequence (or for that subject).
    MessageNotFound,
    /// A publish expectation (last sequence, last msg id, stream) failed.
    Expectation,
    /// A bug in natsbus itself (a panic in spawned work): the message says where.
    Internal,
}

impl ErrorKind {
    /// Every kind, for checks that each has its exception class.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::Connect,
        ErrorKind::Auth,
        ErrorKind::Timeout,
        ErrorKind::Closed,
        ErrorKind::InvalidArgument,
        ErrorKind::Encode,
        ErrorKind::Decode,
        ErrorKind::Topology,
        ErrorKind::Apply,
        ErrorKind::Drift,
        ErrorKind::JetStream,
        ErrorKind::NoResponders,
        ErrorKind::NoStream,
        ErrorKind::StreamUnavailable,
        ErrorKind::StreamNotFound,
        ErrorKind::ConsumerNotFound,
        ErrorKind::Expectation,
        ErrorKind::Internal,
        ErrorKind::MessageNotFound,
    ];

    /// Where this kind sits in [`ErrorKind::ALL`] (an exhaustive match: a
    /// new kind must be placed, and the test below checks the list).
    pub fn index(self) -> usize {
        match self {
            ErrorKind::Connect => 0,
            ErrorKind::Auth => 1,
            ErrorKind::Timeout => 2,
            ErrorKind::Closed => 3,
            ErrorKind::InvalidArgument => 4,
            ErrorKind::Encode => 5,
            ErrorKind::Decode => 6,
            ErrorKind::Topology => 7,
            ErrorKind::Apply => 8,
            ErrorKind::Drift => 9,
            ErrorKind::JetStream => 10,
            ErrorKind::NoResponders => 11,
            ErrorKind::NoStream => 12,
            ErrorKind::StreamUnavailable => 13,
            ErrorKind::StreamNotFound => 14,
            ErrorKind::ConsumerNotFound => 15,
            ErrorKind::Expectation => 16,
            ErrorKind::Internal => 17,
            ErrorKind::MessageNotFound => 18,
        }
    }
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
            10037 => ErrorKind::MessageNotFound,
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

/// What an error carries beyond its message, by kind of error.
#[derive(Debug, Clone)]
pub enum Detail {
    /// The server answered with a JetStream API error.
    Api(ApiError),
    /// [`ErrorKind::Topology`]: every problem found.
    Problems(Vec<Problem>),
    /// [`ErrorKind::Apply`] / [`ErrorKind::Drift`]: the plan (its dict
    /// form), and the server's error when it refused a change.
    Plan {
        plan: serde_json::Value,
        api: Option<ApiError>,
    },
    /// [`ErrorKind::Decode`]: the message that did not decode.
    Message { subject: String, seq: Option<u64> },
}

/// A natsbus error: a kind, a message meant for humans, and what else the
/// kind carries.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// Boxed to keep `Result<T, Error>` small on every hot path.
    pub detail: Option<Box<Detail>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            detail: None,
        }
    }

    fn with_detail(mut self, detail: Detail) -> Self {
        self.detail = Some(Box::new(detail));
        self
    }

    /// An error from a JetStream API response; `context` says what we were doing.
    pub fn api(context: impl fmt::Display, api: ApiError) -> Self {
        let message = format!("{context}: {} (err_code {})", api.description, api.err_code);
        Error::new(api.kind(), message).with_detail(Detail::Api(api))
    }

    /// The server's API error, when the server refused.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self.detail.as_deref() {
            Some(Detail::Api(api)) => Some(api),
            Some(Detail::Plan { api, .. }) => api.as_ref(),
            _ => None,
        }
    }

    /// Every problem of a topology error (empty for other errors).
    pub fn problems(&self) -> &[Problem] {
        match self.detail.as_deref() {
            Some(Detail::Problems(p)) => p,
            _ => &[],
        }
    }

    /// The plan an apply or drift error carries.
    pub fn plan(&self) -> Option<&serde_json::Value> {
        match self.detail.as_deref() {
            Some(Detail::Plan { plan, .. }) => Some(plan),
            _ => None,
        }
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
        Error::new(ErrorKind::Topology, message).with_detail(Detail::Problems(problems))
    }

    /// Attach the plan (keeping the server's API error, if any).
    pub fn with_plan(self, plan: serde_json::Value) -> Self {
        let api = self.api_error().cloned();
        self.with_detail(Detail::Plan { plan, api })
    }

    /// Name the message a decode error is about.
    pub fn with_message(self, subject: impl Into<String>, seq: Option<u64>) -> Self {
        self.with_detail(Detail::Message {
            subject: subject.into(),
            seq,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
        }
    }

    #[test]
    fn details_travel_with_the_error() {
        let api = ApiError {
            code: 400,
            err_code: 10058,
            description: "stream name already in use".into(),
        };
        let e = Error::api("create stream", api.clone());
        assert_eq!(e.api_error(), Some(&api));
        let e = e.with_plan(serde_json::json!({"pending": true}));
        assert_eq!(
            e.api_error(),
            Some(&api),
            "the plan keeps the server's error"
        );
        assert_eq!(e.plan().unwrap()["pending"], true);
        assert!(e.problems().is_empty());
        let e = Error::new(ErrorKind::Decode, "bad").with_message("a.b", Some(3));
        assert!(matches!(
            e.detail.as_deref(),
            Some(Detail::Message { seq: Some(3), .. })
        ));
    }
}
