//! What the server tells a connection outside any reply: permission
//! violations above all.
//!
//! The server answers a publish (or subscription) a user may not make with
//! `-ERR 'Permissions Violation for Publish to "<subject>"'` at once and
//! keeps the connection open. async-nats hands such errors only to its event
//! callback, so a request to a denied subject would otherwise wait out its
//! whole timeout. [`ConnEvents`] broadcasts every violation; an operation
//! watches for one naming its own subject and fails at once with `Auth`.
//!
//! [`ConnEvents`] also carries what an operator wants to hear about the
//! connection ([`ConnEvent`]: lost, back, lame duck, slow consumer, server
//! errors, heals), which the Python layer logs and hands to callbacks.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::error::{Error, ErrorKind};

/// What the server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Publishing to the subject.
    Publish,
    /// Publishing with this subject as the reply subject.
    Reply,
    /// Subscribing to the subject.
    Subscribe,
}

/// One `-ERR 'Permissions Violation ...'` from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub denied: Denied,
    pub subject: String,
}

impl Violation {
    /// Read the server's text; `None` for errors that are not permission
    /// violations.
    pub fn parse(text: &str) -> Option<Violation> {
        let text = text.trim().trim_matches('\'');
        let rest = text.strip_prefix("Permissions Violation for ")?;
        let (denied, rest) = if let Some(r) = rest.strip_prefix("Publish to ") {
            (Denied::Publish, r)
        } else if let Some(r) = rest.strip_prefix("Publish with Reply of ") {
            (Denied::Reply, r)
        } else if let Some(r) = rest.strip_prefix("Subscription to ") {
            (Denied::Subscribe, r)
        } else {
            return None;
        };
        // The subject is quoted (Go's %q); anything after the closing quote
        // (", too many tokens", " using queue ...") is detail.
        let rest = rest.trim_start();
        let subject = match rest.strip_prefix('"') {
            Some(q) => q.split('"').next().unwrap_or(""),
            None => rest.split_whitespace().next().unwrap_or(""),
        };
        Some(Violation {
            denied,
            subject: subject.to_string(),
        })
    }

    /// The error an operation on `what` reports for this violation.
    pub fn error(&self, what: &str) -> Error {
        let verb = match self.denied {
            Denied::Publish => "publish to",
            Denied::Reply => "use as a reply subject",
            Denied::Subscribe => "subscribe to",
        };
        let hint = match self.denied {
            Denied::Publish => "grant it in the server's authorization config",
            // Replies come to the inbox: a user allowed only its own inbox
            // needs natsbus to use that one.
            _ => {
                "grant it in the server's authorization config, or pass \
                 inbox_prefix= (--inbox-prefix) naming the inbox this user may use"
            }
        };
        Error::new(
            ErrorKind::Auth,
            format!(
                "{what}: permissions violation: this user may not {verb} {:?} ({hint})",
                self.subject
            ),
        )
    }
}

/// Something that happened to a connection, for logs and callbacks.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnEvent {
    /// `disconnected`, `reconnected`, `lame_duck`, `slow_consumer`,
    /// `server_error`, `client_error`, `closed`, `healed`, `heal_failed`.
    pub kind: &'static str,
    /// One line for a person, never holding a secret.
    pub message: String,
    /// Seconds since the Unix epoch.
    pub time: f64,
}

/// How many events a listener that falls behind may miss.
const EVENT_BACKLOG: usize = 1024;

/// The events of one connection, shared by everything that uses it.
pub struct ConnEvents {
    violations: broadcast::Sender<Arc<Violation>>,
    log: broadcast::Sender<ConnEvent>,
    /// Where this connection's inboxes live (`_INBOX` unless configured).
    inbox_prefix: String,
    /// Set for good once the server refused this user its own inbox (a
    /// subscription to it, or its use as a reply subject): every request
    /// after that fails the same way, and the server says it only once.
    inbox_denied: Mutex<Option<Arc<Violation>>>,
}

impl Default for ConnEvents {
    fn default() -> Self {
        ConnEvents::with_inbox_prefix("_INBOX")
    }
}

impl ConnEvents {
    pub fn new() -> Arc<ConnEvents> {
        Arc::new(ConnEvents::default())
    }

    fn with_inbox_prefix(prefix: &str) -> ConnEvents {
        let (violations, _) = broadcast::channel(256);
        let (log, _) = broadcast::channel(EVENT_BACKLOG);
        ConnEvents {
            violations,
            log,
            inbox_prefix: prefix.to_string(),
            inbox_denied: Mutex::new(None),
        }
    }

    /// Events of a connection whose inboxes start with `prefix`.
    pub fn for_inbox(prefix: &str) -> Arc<ConnEvents> {
        Arc::new(ConnEvents::with_inbox_prefix(prefix))
    }

    /// Tell the listeners `kind` happened.
    pub fn emit(&self, kind: &'static str, message: impl Into<String>) {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = self.log.send(ConnEvent {
            kind,
            message: message.into(),
            time,
        });
    }

    /// Listen to the events from now on.
    pub fn listen(&self) -> broadcast::Receiver<ConnEvent> {
        self.log.subscribe()
    }

    /// Whether `subject` is one of this connection's inboxes.
    pub fn is_inbox(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.inbox_prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    }

    /// Record a server error; returns the violation when it was one.
    pub fn server_error(&self, text: &str) -> Option<Arc<Violation>> {
        let v = Arc::new(Violation::parse(text)?);
        if v.denied != Denied::Publish && self.is_inbox(&v.subject) {
            self.inbox_denied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| v.clone());
        }
        let _ = self.violations.send(v.clone());
        Some(v)
    }

    /// The server's refusal of this user's inbox, if it came.
    pub fn inbox_denied(&self) -> Option<Arc<Violation>> {
        self.inbox_denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Start watching before sending, so a violation cannot slip by between
    /// the send and the watch.
    pub fn watch(&self) -> Watch {
        Watch {
            rx: self.violations.subscribe(),
        }
    }

    /// Run `request`, an operation that publishes to `subject` and waits for
    /// a reply on this connection's inbox; fail at once with `Auth` (saying
    /// `what` was refused) when the server refuses either.
    pub async fn guard<T>(
        &self,
        what: &str,
        subject: &str,
        request: impl std::future::Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        self.guard_watched(what, subject, self.watch(), request)
            .await
    }

    /// [`ConnEvents::guard`] with a watch started earlier: before the
    /// message that `request` waits on was sent, so that a refusal the
    /// server sends at once cannot pass before anyone watches.
    pub async fn guard_watched<T>(
        &self,
        what: &str,
        subject: &str,
        mut watch: Watch,
        request: impl std::future::Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        if let Some(v) = self.inbox_denied() {
            return Err(v.error(what));
        }
        tokio::select! {
            r = request => r,
            v = watch.denied(|v| v.subject == subject || (v.denied != Denied::Publish && self.is_inbox(&v.subject))) => {
                Err(v.error(what))
            }
        }
    }
}

/// A watch on one connection's permission violations.
pub struct Watch {
    rx: broadcast::Receiver<Arc<Violation>>,
}

impl Watch {
    /// Resolves with the first violation `matches` accepts; never resolves
    /// when none comes.
    pub async fn denied(&mut self, matches: impl Fn(&Violation) -> bool) -> Arc<Violation> {
        loop {
            match self.rx.recv().await {
                Ok(v) if matches(&v) => return v,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }

    /// Resolves with the first violation naming `subject` (as published to,
    /// used as a reply, or subscribed to).
    pub async fn denied_subject(&mut self, subject: &str) -> Arc<Violation> {
        self.denied(|v| v.subject == subject).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_server_texts() {
        let v = Violation::parse("Permissions Violation for Publish to \"$JS.API.STREAM.LIST\"")
            .unwrap();
        assert_eq!(
            (v.denied, v.subject.as_str()),
            (Denied::Publish, "$JS.API.STREAM.LIST")
        );
        let v = Violation::parse(
            "'Permissions Violation for Subscription to \"_INBOX.>\" using queue \"q\"'",
        )
        .unwrap();
        assert_eq!(
            (v.denied, v.subject.as_str()),
            (Denied::Subscribe, "_INBOX.>")
        );
        let v = Violation::parse("Permissions Violation for Publish with Reply of \"_INBOX.a.b\"")
            .unwrap();
        assert_eq!(
            (v.denied, v.subject.as_str()),
            (Denied::Reply, "_INBOX.a.b")
        );
        assert!(Violation::parse("Maximum Payload Violation").is_none());
        assert!(Violation::parse("Permissions Violation for Something Else").is_none());
    }

    #[tokio::test]
    async fn a_watch_sees_only_its_subject() {
        let ev = ConnEvents::new();
        let mut w = ev.watch();
        ev.server_error("Permissions Violation for Publish to \"other\"");
        ev.server_error("not a violation");
        ev.server_error("Permissions Violation for Publish to \"mine\"");
        let v = w.denied_subject("mine").await;
        assert_eq!(v.subject, "mine");
        let e = v.error("publish to \"mine\"");
        assert_eq!(e.kind, ErrorKind::Auth);
        assert!(
            e.message.contains("may not publish to \"mine\""),
            "{}",
            e.message
        );
    }
}
