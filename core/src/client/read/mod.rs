//! Readers: everything that fills an [`Inbox`] for Python to take from.
//!
//! Each kind of reader is a room of its own (a file here) implementing
//! [`Reader`]; the bindings hold any of them as `Arc<dyn Reader>` and close
//! them the same way. A new reader (push, ordered replay, dead letters) is a
//! new file and one `pub mod` line.
//!
//! - [`pull`]: a durable pull consumer, prefetching only what is about to be
//!   processed.
//! - [`subscription`]: a core subscription (requests for `serve`).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::client::consume::{Acker, Inbox};

pub mod pull;
pub mod subscription;

/// A source of messages buffered in an [`Inbox`].
pub trait Reader: Send + Sync + 'static {
    /// Where its messages wait to be taken.
    fn inbox(&self) -> &Arc<Inbox>;

    /// Stop reading; what was received and not taken stays in the inbox.
    /// Idempotent: later calls wait for the first.
    fn stop(&self) -> BoxFuture<'_, ()>;

    /// After releases (naks) were queued on `acker` once stopped: make sure
    /// the server has read them. By default, write them out.
    fn settle<'a>(&'a self, acker: &'a Acker) -> BoxFuture<'a, ()> {
        Box::pin(acker.flush())
    }
}
