//! One round trip through the server: proof that it has read everything
//! this connection sent before.
//!
//! async-nats 0.51 has no PING/PONG call (its `flush` only writes the
//! buffer, and `drain` closes the socket right after writing its own PING).
//! Closing a socket that still has unread data makes the kernel send RST,
//! and the server then discards what it had received but not yet read: the
//! last acks before a close. So natsbus asks the server something it
//! answers from its read loop, in order with everything before it: a
//! request to a fresh inbox subject nobody listens on. The server replies
//! "no responders" at once (or, for a user who may not publish there,
//! `-ERR Permissions Violation`, which is just as much a round trip).

use std::time::{Duration, Instant};

use crate::client::events::{ConnEvents, Denied};
use crate::error::{Error, ErrorKind, Result};

/// Wait for one round trip through the server; returns how long it took.
pub async fn round_trip(
    client: &async_nats::Client,
    events: &ConnEvents,
    timeout: Duration,
) -> Result<Duration> {
    // `<inbox prefix>.<nuid>`: two tokens, so no request multiplexer
    // (`<prefix>.<id>.*`) matches it.
    let subject = client.new_inbox();
    let mut watch = events.watch();
    let start = Instant::now();
    let request = async_nats::client::Request::new().timeout(Some(timeout));
    tokio::select! {
        answer = client.send_request(subject.clone(), request) => {
            use async_nats::RequestErrorKind as K;
            match answer {
                Ok(_) => Ok(start.elapsed()),
                Err(e) => match e.kind() {
                    K::NoResponders => Ok(start.elapsed()),
                    K::TimedOut => Err(Error::timeout("a round trip to the server")),
                    _ => Err(Error::new(ErrorKind::Connect, format!("a round trip to the server failed: {e}"))),
                },
            }
        }
        _ = watch.denied(|v| v.subject == subject || v.denied == Denied::Reply) => Ok(start.elapsed()),
    }
}
