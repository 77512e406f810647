//! The publish connection's protocol state, without I/O.
//!
//! The loop-driven publish connection (`src/publish_conn.rs` in the bindings) owns
//! the socket and the asyncio futures; everything it decides lives here:
//! the handshake phases, which publish an ack or an error belongs to, what
//! to write, when a publish has timed out, what to hand to the main
//! connection. Bytes, timestamps and calls go in; what to write, which
//! waiter settles how, and what to hand over come out. No socket, no clock,
//! no runtime: `cargo test` drives it with split frames, errors and
//! timeouts.
//!
//! `F` is whatever the caller waits on (an asyncio future in the bindings,
//! a number in the tests).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use super::connect::Auth;
use super::events::{Denied, Violation};
use super::publish::{ack_timeout, lost_before_ack, parse_pub_ack, OutboundMessage, PubAck};
use super::wire::{self, ServerInfo, ServerOp};
use crate::error::{Error, ErrorKind, Result};

/// The subscription id of the ack inbox.
const INBOX_SID: u64 = 1;

/// Where the connection is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// Connected, waiting for the server's INFO.
    AwaitInfo,
    /// CONNECT sent, waiting for the PONG that confirms it.
    Handshake,
    /// Takes publishes.
    Ready,
    /// Takes no new publishes; closes once the pending ones are settled.
    Closing,
    /// The socket is gone.
    Lost,
}

/// How a waiter ends.
#[derive(Debug)]
pub enum Outcome {
    Ack(PubAck),
    /// The INFO arrived; whether the server requires TLS.
    Value(bool),
    Done,
    Fail(Error),
}

/// A publish waiting for its ack.
pub struct Pending<F> {
    pub fut: F,
    /// Kept until the ack: "no responders" hands it to the main
    /// connection's retry (the stream may be between leaders).
    pub msg: OutboundMessage,
    pub started: Instant,
    pub deadline: Instant,
}

/// What the received bytes lead to.
pub struct Received<F> {
    /// Waiters to settle.
    pub settled: Vec<(F, Outcome)>,
    /// Publishes answered "no responders": for the main connection's retry.
    pub handoff: Vec<Pending<F>>,
    /// Bytes to write back (PONG).
    pub reply: Vec<u8>,
    /// Close the socket.
    pub close: bool,
}

/// A publish the connection took.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub token: u64,
    /// Write these bytes now (the publish is alone on the wire).
    pub write_now: Option<Vec<u8>>,
    /// Otherwise: arrange one flush for this loop iteration (none is yet).
    pub schedule_flush: bool,
    /// Arrange a sweep: its generation and when.
    pub timer: Option<(u64, Instant)>,
}

/// What a sweep found.
pub struct Swept<F> {
    pub expired: Vec<(F, Outcome)>,
    /// The next sweep: its generation and when.
    pub next: Option<(u64, Instant)>,
    pub close: bool,
}

/// What a lost socket leaves to settle.
pub struct Lost<F> {
    /// Publishes in flight, failed with "connection lost before the ack".
    pub pending: Vec<(F, Outcome)>,
    /// The INFO and handshake waiters, failed with the refusal if the server
    /// gave one, else with `None` (the caller says why).
    pub handshake: Vec<F>,
    pub refusal: Option<Error>,
}

/// The protocol state of one publish connection.
pub struct PublishConnState<F> {
    phase: Phase,
    parser: wire::Parser,
    info: Option<ServerInfo>,
    info_fut: Option<F>,
    handshake_fut: Option<F>,
    /// Why the server refused us (`-ERR` before the handshake finished).
    refusal: Option<Error>,
    /// By token (the last inbox token), i.e. in send order.
    pending: BTreeMap<u64, Pending<F>>,
    next_token: u64,
    out: Vec<u8>,
    flush_scheduled: bool,
    /// The sweep that will fail expired publishes: its generation (older
    /// timers find a newer generation and do nothing) and when it fires.
    timer_gen: u64,
    timer_at: Option<Instant>,
    /// The ack inbox prefix, `<prefix>.<random>.`; a publish replies to it plus its token.
    inbox: String,
}

impl<F> PublishConnState<F> {
    /// A connection waiting for INFO; `info_fut` settles when it arrives.
    pub fn new(inbox_prefix: &str, info_fut: F) -> Self {
        PublishConnState {
            phase: Phase::AwaitInfo,
            parser: wire::Parser::new(),
            info: None,
            info_fut: Some(info_fut),
            handshake_fut: None,
            refusal: None,
            pending: BTreeMap::new(),
            next_token: 1,
            out: Vec::new(),
            flush_scheduled: false,
            timer_gen: 0,
            timer_at: None,
            inbox: wire::new_inbox_prefix(inbox_prefix),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn info(&self) -> Option<&ServerInfo> {
        self.info.as_ref()
    }

    /// Whether the INFO waiter is still waiting.
    pub fn info_pending(&self) -> Option<&F> {
        self.info_fut.as_ref()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn refusal(&self) -> Option<&Error> {
        self.refusal.as_ref()
    }

    /// Received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.parser.feed(data);
    }

    /// The CONNECT, the ack-inbox SUB and a PING, to write once the INFO is
    /// in (and TLS is up when `tls`); `fut` settles on the PONG.
    pub fn handshake(
        &mut self,
        auth: &Auth,
        name: Option<&str>,
        tls: bool,
        fut: F,
    ) -> Result<Vec<u8>> {
        if let Some(e) = &self.refusal {
            return Err(e.clone());
        }
        let Some(info) = self
            .info
            .as_ref()
            .filter(|_| self.phase == Phase::AwaitInfo)
        else {
            return Err(Error::new(
                ErrorKind::Connect,
                "the publish connection is not waiting to handshake",
            ));
        };
        let mut bytes = wire::connect_line(info, auth, name, tls)?;
        wire::write_sub(&mut bytes, &format!("{}*", self.inbox), INBOX_SID);
        bytes.extend_from_slice(b"PING\r\n");
        self.phase = Phase::Handshake;
        self.handshake_fut = Some(fut);
        Ok(bytes)
    }

    /// Take a publish when ready and the message fits; `Err(msg)` hands it
    /// back ("use the main connection").
    pub fn publish(
        &mut self,
        msg: OutboundMessage,
        fut: F,
        started: Instant,
        deadline: Instant,
    ) -> std::result::Result<Accepted, OutboundMessage> {
        let hlen = wire::header_len(msg.headers.as_ref());
        let (max, headers) = self
            .info
            .as_ref()
            .map_or((0, false), |i| (i.max_payload, i.headers));
        if self.phase != Phase::Ready
            || (max > 0 && hlen + msg.payload.len() > max)
            || (!headers && hlen > 0)
        {
            return Err(msg);
        }
        let token = self.next_token;
        self.next_token += 1;
        let mut reply = String::with_capacity(self.inbox.len() + 20);
        reply.push_str(&self.inbox);
        let _ = write!(reply, "{token}");
        wire::write_publish(
            &mut self.out,
            &msg.subject,
            &reply,
            msg.headers.as_ref(),
            &msg.payload,
        );
        self.pending.insert(
            token,
            Pending {
                fut,
                msg,
                started,
                deadline,
            },
        );
        // Alone on the wire (the usual `await publish` in a loop): write
        // now. Otherwise batch with whatever else this loop iteration sends.
        let write_now = (self.pending.len() == 1 && !self.flush_scheduled)
            .then(|| std::mem::take(&mut self.out));
        let schedule_flush =
            write_now.is_none() && !std::mem::replace(&mut self.flush_scheduled, true);
        Ok(Accepted {
            token,
            write_now,
            schedule_flush,
            timer: self.arm_timer(deadline),
        })
    }

    /// A publish whose bytes could not be written: nothing waits for it.
    pub fn unsent(&mut self, token: u64) -> Option<Pending<F>> {
        self.pending.remove(&token)
    }

    /// The batched bytes of this loop iteration, if any.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        self.flush_scheduled = false;
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// Arrange a sweep at `deadline` unless one comes earlier already.
    fn arm_timer(&mut self, deadline: Instant) -> Option<(u64, Instant)> {
        if self.timer_at.is_some_and(|t| t <= deadline) {
            return None;
        }
        self.timer_gen += 1;
        self.timer_at = Some(deadline);
        Some((self.timer_gen, deadline))
    }

    /// The sweep of `generation` fires at `now`: fail what has expired.
    pub fn sweep(&mut self, generation: u64, now: Instant) -> Swept<F> {
        if generation != self.timer_gen || self.timer_at.is_none() {
            return Swept {
                expired: Vec::new(),
                next: None,
                close: false,
            };
        }
        self.timer_at = None;
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        let expired = due
            .iter()
            .filter_map(|t| self.pending.remove(t))
            .map(|p| (p.fut, Outcome::Fail(ack_timeout(&p.msg.subject))))
            .collect();
        let next = self
            .pending
            .values()
            .map(|p| p.deadline)
            .min()
            .and_then(|d| self.arm_timer(d));
        Swept {
            expired,
            next,
            close: self.phase == Phase::Closing && self.pending.is_empty(),
        }
    }

    /// Take no new publishes; true when nothing is in flight, so the socket
    /// can close now (else it closes when the last one settles).
    pub fn close_when_idle(&mut self) -> bool {
        match self.phase {
            Phase::Lost => false,
            _ if self.pending.is_empty() => true,
            _ => {
                self.phase = Phase::Closing;
                false
            }
        }
    }

    /// The socket is gone.
    pub fn lost(&mut self) -> Lost<F> {
        self.phase = Phase::Lost;
        self.out.clear();
        self.timer_at = None;
        let pending = std::mem::take(&mut self.pending)
            .into_values()
            .map(|p| (p.fut, Outcome::Fail(lost_before_ack(&p.msg.subject))))
            .collect();
        Lost {
            pending,
            handshake: self.take_handshake_futures(),
            refusal: self.refusal.clone(),
        }
    }

    fn take_handshake_futures(&mut self) -> Vec<F> {
        self.info_fut
            .take()
            .into_iter()
            .chain(self.handshake_fut.take())
            .collect()
    }

    /// Act on every complete operation received so far.
    pub fn process(&mut self) -> Received<F> {
        let mut r = Received {
            settled: Vec::new(),
            handoff: Vec::new(),
            reply: Vec::new(),
            close: false,
        };
        loop {
            let op = match self.parser.next_op() {
                Ok(Some(op)) => op,
                Ok(None) => break,
                Err(e) => {
                    for f in self.take_handshake_futures() {
                        r.settled.push((f, Outcome::Fail(e.clone())));
                    }
                    r.close = true;
                    break;
                }
            };
            match op {
                ServerOp::Info(info) => {
                    if let Some(f) = self.info_fut.take() {
                        r.settled.push((f, Outcome::Value(info.tls_required)));
                    }
                    if info.ldm && self.phase == Phase::Ready {
                        self.phase = Phase::Closing;
                    }
                    self.info = Some(*info);
                }
                ServerOp::Ping => r.reply.extend_from_slice(b"PONG\r\n"),
                ServerOp::Pong => {
                    if self.phase == Phase::Handshake {
                        self.phase = Phase::Ready;
                        if let Some(f) = self.handshake_fut.take() {
                            r.settled.push((f, Outcome::Done));
                        }
                    }
                }
                ServerOp::Ok => {}
                ServerOp::Err(text) => self.server_error(&text, &mut r),
                ServerOp::Msg(d) => {
                    if d.sid != INBOX_SID {
                        continue;
                    }
                    let token = d
                        .subject
                        .strip_prefix(self.inbox.as_str())
                        .and_then(|t| t.parse::<u64>().ok());
                    // Unknown tokens are acks that arrived after their timeout.
                    let Some(p) = token.and_then(|t| self.pending.remove(&t)) else {
                        continue;
                    };
                    if d.status == Some(503) {
                        // No stream, or one between leaders: the main
                        // connection's publisher tells them apart and
                        // retries until the deadline.
                        r.handoff.push(p);
                        continue;
                    }
                    let outcome = match d.status {
                        Some(code) => Outcome::Fail(Error::new(
                            ErrorKind::JetStream,
                            format!(
                                "publish to {:?}: the server answered with status {code}",
                                p.msg.subject
                            ),
                        )),
                        None => match parse_pub_ack(&p.msg.subject, &d.payload) {
                            Ok(a) => Outcome::Ack(a),
                            Err(e) => Outcome::Fail(e),
                        },
                    };
                    r.settled.push((p.fut, outcome));
                }
            }
        }
        if self.phase == Phase::Closing && self.pending.is_empty() {
            r.close = true;
        }
        r
    }

    /// `-ERR`: a refusal of the connection during the handshake, or of one
    /// publish's subject afterwards.
    fn server_error(&mut self, text: &str, r: &mut Received<F>) {
        if matches!(self.phase, Phase::AwaitInfo | Phase::Handshake) {
            let e = refused(text);
            for f in self.take_handshake_futures() {
                r.settled.push((f, Outcome::Fail(e.clone())));
            }
            self.refusal = Some(e);
            r.close = true;
        } else if let Some(v) = Violation::parse(text).filter(|v| v.denied == Denied::Publish) {
            // The server refuses in order: the oldest publish to this
            // subject still waiting is the one.
            let token = self
                .pending
                .iter()
                .find(|(_, p)| p.msg.subject == v.subject)
                .map(|(t, _)| *t);
            if let Some(p) = token.and_then(|t| self.pending.remove(&t)) {
                let e = v.error(&format!("publish to {:?}", v.subject));
                r.settled.push((p.fut, Outcome::Fail(e)));
            }
        }
    }
}

/// Why the server refused the connection, as the error users catch.
fn refused(text: &str) -> Error {
    let auth = ["Authorization", "Authentication", "Permissions Violation"]
        .iter()
        .any(|w| text.contains(w));
    Error::new(
        if auth {
            ErrorKind::Auth
        } else {
            ErrorKind::Connect
        },
        format!("the server refused the publish connection: {text}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const INFO: &[u8] = b"INFO {\"server_id\":\"S\",\"server_name\":\"n1\",\"version\":\"2.15.1\",\"max_payload\":1048576,\"headers\":true,\"proto\":1}\r\n";

    fn msg(subject: &str) -> OutboundMessage {
        OutboundMessage {
            subject: subject.into(),
            payload: bytes::Bytes::from_static(b"{}"),
            headers: None,
        }
    }

    /// A connection through INFO, CONNECT and PONG.
    fn ready(now: Instant) -> PublishConnState<u32> {
        let mut c = PublishConnState::new("_INBOX", 0);
        c.feed(&INFO[..10]);
        assert!(c.process().settled.is_empty(), "half an INFO is not one");
        c.feed(&INFO[10..]);
        let r = c.process();
        assert!(matches!(r.settled.as_slice(), [(0, Outcome::Value(false))]));
        let bytes = c.handshake(&Auth::None, Some("t"), false, 1).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("CONNECT {") && text.ends_with("PING\r\n"),
            "{text}"
        );
        assert!(text.contains(&format!("SUB {}* 1\r\n", c.inbox)), "{text}");
        assert_eq!(c.phase(), Phase::Handshake);
        c.feed(b"PONG\r\n");
        assert!(matches!(
            c.process().settled.as_slice(),
            [(1, Outcome::Done)]
        ));
        assert_eq!(c.phase(), Phase::Ready);
        let _ = now;
        c
    }

    fn ack_for(c: &PublishConnState<u32>, token: u64, body: &str) -> Vec<u8> {
        format!("MSG {}{token} 1 {}\r\n{body}\r\n", c.inbox, body.len()).into_bytes()
    }

    #[test]
    fn a_publish_alone_is_written_at_once_and_its_ack_settles_it() {
        let now = Instant::now();
        let mut c = ready(now);
        let a = c
            .publish(msg("orders.1"), 7, now, now + Duration::from_secs(5))
            .unwrap();
        let bytes = String::from_utf8(a.write_now.clone().unwrap()).unwrap();
        assert!(
            bytes.starts_with(&format!("PUB orders.1 {}{} 2\r\n", c.inbox, a.token)),
            "{bytes}"
        );
        assert!(!a.schedule_flush && a.timer.is_some());
        // a second one while the first waits is batched for one flush
        let b = c
            .publish(msg("orders.2"), 8, now, now + Duration::from_secs(5))
            .unwrap();
        assert!(b.write_now.is_none() && b.schedule_flush && b.timer.is_none());
        assert!(c.flush().is_some() && c.flush().is_none());
        // the ack arrives split in two
        let ack = ack_for(&c, a.token, r#"{"stream":"O","seq":3}"#);
        c.feed(&ack[..5]);
        assert!(c.process().settled.is_empty());
        c.feed(&ack[5..]);
        let r = c.process();
        match r.settled.as_slice() {
            [(7, Outcome::Ack(p))] => assert_eq!((p.stream.as_str(), p.seq), ("O", 3)),
            _ => panic!("expected the ack of the first publish"),
        }
        assert_eq!(c.pending_len(), 1);
    }

    #[test]
    fn no_responders_is_handed_over_and_a_denial_fails_the_oldest_of_its_subject() {
        let now = Instant::now();
        let mut c = ready(now);
        let deadline = now + Duration::from_secs(5);
        let a = c.publish(msg("a"), 1, now, deadline).unwrap();
        let b = c.publish(msg("denied"), 2, now, deadline).unwrap();
        c.feed(
            format!(
                "HMSG {}{} 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
                c.inbox, a.token
            )
            .as_bytes(),
        );
        let r = c.process();
        assert_eq!(r.handoff.len(), 1);
        assert_eq!(r.handoff[0].msg.subject, "a");
        c.feed(b"-ERR 'Permissions Violation for Publish to \"denied\"'\r\n");
        let r = c.process();
        match r.settled.as_slice() {
            [(2, Outcome::Fail(e))] => {
                assert_eq!(e.kind, ErrorKind::Auth);
                assert!(e.message.contains("\"denied\""), "{}", e.message);
            }
            _ => panic!("expected the denied publish to fail"),
        }
        let _ = b;
        assert_eq!(c.pending_len(), 0);
    }

    #[test]
    fn refusals_timeouts_lame_duck_and_loss() {
        // refused during the handshake: both waiters fail, the socket closes
        let mut c: PublishConnState<u32> = PublishConnState::new("_INBOX", 0);
        c.feed(INFO);
        c.process();
        c.handshake(&Auth::None, None, false, 1).unwrap();
        c.feed(b"-ERR 'Authorization Violation'\r\n");
        let r = c.process();
        assert!(r.close);
        assert!(
            matches!(r.settled.as_slice(), [(1, Outcome::Fail(e))] if e.kind == ErrorKind::Auth)
        );
        assert!(c.refusal().is_some());

        // a publish past its deadline fails at the sweep; a stale sweep does nothing
        let now = Instant::now();
        let mut c = ready(now);
        let a = c
            .publish(msg("x"), 5, now, now + Duration::from_millis(10))
            .unwrap();
        let (generation, at) = a.timer.unwrap();
        assert!(c.sweep(generation + 1, at).expired.is_empty());
        let s = c.sweep(generation, at);
        assert!(
            matches!(s.expired.as_slice(), [(5, Outcome::Fail(e))] if e.kind == ErrorKind::Timeout)
        );

        // lame duck: no new publishes; closes when the last one settles
        let b = c
            .publish(msg("y"), 6, now, now + Duration::from_secs(5))
            .unwrap();
        c.feed(
            b"INFO {\"server_id\":\"S\",\"ldm\":true,\"max_payload\":1048576,\"headers\":true}\r\n",
        );
        assert!(!c.process().close);
        assert_eq!(c.phase(), Phase::Closing);
        assert!(
            c.publish(msg("z"), 9, now, now).is_err(),
            "refused: use the main connection"
        );
        c.feed(&ack_for(&c, b.token, r#"{"stream":"O","seq":4}"#));
        assert!(c.process().close);

        // loss fails what is in flight
        let mut c = ready(now);
        c.publish(msg("w"), 3, now, now + Duration::from_secs(5))
            .unwrap();
        let lost = c.lost();
        assert!(
            matches!(lost.pending.as_slice(), [(3, Outcome::Fail(e))] if e.kind == ErrorKind::Connect)
        );
        assert_eq!(c.phase(), Phase::Lost);
    }

    #[test]
    fn oversized_messages_and_headers_the_server_cannot_take_go_elsewhere() {
        let now = Instant::now();
        let mut c = ready(now);
        let big = OutboundMessage {
            subject: "big".into(),
            payload: bytes::Bytes::from(vec![0u8; 1048577]),
            headers: None,
        };
        assert!(c.publish(big, 1, now, now).is_err());
        assert_eq!(c.pending_len(), 0);
    }
}
