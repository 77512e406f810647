//! The NATS client protocol without I/O: the part natsbus's loop-driven
//! publish connection speaks: from the server INFO, PING/PONG, +OK/-ERR and
//! MSG/HMSG; to the server CONNECT, PING/PONG, SUB and PUB/HPUB.
//!
//! Whoever owns the socket feeds received bytes to a [`Parser`] and writes
//! what [`connect_line`], [`write_publish`] and friends produce. Nothing here
//! blocks, spawns or touches a runtime, so the Python event loop can drive it
//! directly.

use std::io::Write as _;

use async_nats::header::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::{Buf as _, Bytes, BytesMut};

use crate::client::connect::{check_file, load_seed, Auth};
use crate::error::{Error, ErrorKind, Result};

/// Longest control line we accept before calling the stream corrupt. INFO
/// is the longest line a server sends (it lists cluster URLs).
const MAX_CONTROL_LINE: usize = 1 << 20;

/// The fields of the server's INFO that the client acts on.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ServerInfo {
    #[serde(default)]
    pub server_id: String,
    #[serde(default)]
    pub server_name: String,
    #[serde(default)]
    pub version: String,
    /// Largest message (headers + payload) the server accepts.
    #[serde(default)]
    pub max_payload: usize,
    /// Whether the server understands HPUB/HMSG.
    #[serde(default)]
    pub headers: bool,
    /// To be signed for nkey and JWT authentication.
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub tls_required: bool,
    /// Other servers of the cluster a client may use.
    #[serde(default)]
    pub connect_urls: Vec<String>,
    /// Lame duck mode: the server is about to shut down.
    #[serde(default)]
    pub ldm: bool,
}

/// One message delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub subject: String,
    pub sid: u64,
    pub reply: Option<String>,
    /// The status of a header block such as `NATS/1.0 503` (no responders).
    pub status: Option<u16>,
    /// The raw header block (`NATS/1.0...\r\n\r\n`), if the message had one.
    pub headers: Option<Bytes>,
    pub payload: Bytes,
}

/// One protocol operation from the server.
#[derive(Debug, Clone)]
pub enum ServerOp {
    Info(Box<ServerInfo>),
    Ping,
    Pong,
    Ok,
    /// `-ERR '<text>'`, quotes removed.
    Err(String),
    Msg(Delivery),
}

/// Splits the server's byte stream into operations.
#[derive(Debug, Default)]
pub struct Parser {
    buf: BytesMut,
}

fn protocol_error(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Connect,
        format!("protocol error from the server: {what}"),
    )
}

fn number<T: std::str::FromStr>(field: &str, line: &str) -> Result<T> {
    field
        .parse()
        .map_err(|_| protocol_error(format!("bad number {field:?} in {line:?}")))
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Add bytes read from the socket.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete operation, `Ok(None)` when more bytes are needed.
    /// An error means the stream cannot be trusted any more: close it.
    pub fn next_op(&mut self) -> Result<Option<ServerOp>> {
        let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
            if self.buf.len() > MAX_CONTROL_LINE {
                return Err(protocol_error("control line too long"));
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| protocol_error("control line is not UTF-8"))?;
        let (verb, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        let op = match verb.as_str() {
            "MSG" | "HMSG" => {
                let args: Vec<&str> = rest.split_ascii_whitespace().collect();
                let with_headers = verb == "HMSG";
                let (subject, sid, reply, hdr_len, total) = match (with_headers, args.as_slice()) {
                    (false, [s, sid, n]) => (*s, *sid, None, 0, number::<usize>(n, line)?),
                    (false, [s, sid, r, n]) => (*s, *sid, Some(*r), 0, number(n, line)?),
                    (true, [s, sid, h, n]) => (*s, *sid, None, number(h, line)?, number(n, line)?),
                    (true, [s, sid, r, h, n]) => {
                        (*s, *sid, Some(*r), number(h, line)?, number(n, line)?)
                    }
                    _ => return Err(protocol_error(format!("malformed {line:?}"))),
                };
                if hdr_len > total {
                    return Err(protocol_error(format!(
                        "header longer than message in {line:?}"
                    )));
                }
                if self.buf.len() < end + 2 + total + 2 {
                    return Ok(None);
                }
                let delivery = Delivery {
                    subject: subject.to_string(),
                    sid: number(sid, line)?,
                    reply: reply.map(str::to_string),
                    status: None,
                    headers: None,
                    payload: Bytes::new(),
                };
                self.buf.advance(end + 2);
                let mut body = self.buf.split_to(total).freeze();
                if self.buf.get(..2) != Some(b"\r\n".as_slice()) {
                    return Err(protocol_error("message not followed by CRLF"));
                }
                self.buf.advance(2);
                let headers = (hdr_len > 0).then(|| body.split_to(hdr_len));
                let status = headers.as_deref().and_then(header_status);
                return Ok(Some(ServerOp::Msg(Delivery {
                    status,
                    headers,
                    payload: body,
                    ..delivery
                })));
            }
            "PING" => ServerOp::Ping,
            "PONG" => ServerOp::Pong,
            "+OK" => ServerOp::Ok,
            "-ERR" => ServerOp::Err(rest.trim().trim_matches('\'').to_string()),
            "INFO" => ServerOp::Info(Box::new(
                serde_json::from_str(rest)
                    .map_err(|e| protocol_error(format!("unreadable INFO: {e}")))?,
            )),
            _ => return Err(protocol_error(format!("unknown operation {line:?}"))),
        };
        self.buf.advance(end + 2);
        Ok(Some(op))
    }
}

/// The status code in a header block's first line (`NATS/1.0 503 ...`).
fn header_status(block: &[u8]) -> Option<u16> {
    let first = block.split(|b| *b == b'\r').next()?;
    let rest = first.strip_prefix(b"NATS/1.0")?;
    let code = std::str::from_utf8(rest).ok()?.split_whitespace().next()?;
    code.parse().ok()
}

/// The user JWT and nkey seed of a `.creds` file.
fn read_creds(path: &std::path::Path) -> Result<(String, String)> {
    check_file("creds", path)?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::invalid(format!("could not read creds file {}: {e}", path.display()))
    })?;
    let mut jwt = None;
    let mut seed = None;
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with("---") {
            section = if line.contains("BEGIN") && line.contains("JWT") {
                "jwt"
            } else if line.contains("BEGIN") && line.contains("SEED") {
                "seed"
            } else {
                ""
            };
            continue;
        }
        if line.is_empty() {
            continue;
        }
        match section {
            "jwt" if jwt.is_none() => jwt = Some(line.to_string()),
            "seed" if seed.is_none() => seed = Some(line.to_string()),
            _ => {}
        }
    }
    match (jwt, seed) {
        (Some(j), Some(s)) => Ok((j, s)),
        _ => Err(Error::invalid(format!(
            "creds file {} holds no user JWT and nkey seed",
            path.display()
        ))),
    }
}

/// Sign the server's nonce with an nkey seed: (public key, signature).
fn sign_nonce(seed: &str, nonce: Option<&str>) -> Result<(String, Option<String>)> {
    let kp = nkeys::KeyPair::from_seed(seed)
        .map_err(|e| Error::new(ErrorKind::Auth, format!("unusable nkey seed: {e}")))?;
    let sig = match nonce {
        Some(n) => Some(URL_SAFE_NO_PAD.encode(kp.sign(n.as_bytes()).map_err(|e| {
            Error::new(
                ErrorKind::Auth,
                format!("could not sign the server nonce: {e}"),
            )
        })?)),
        None => None,
    };
    Ok((kp.public_key(), sig))
}

/// What a client says after INFO: `CONNECT {...}\r\n`, with credentials and
/// the nonce signed where the auth scheme needs it.
pub fn connect_line(
    info: &ServerInfo,
    auth: &Auth,
    name: Option<&str>,
    tls: bool,
) -> Result<Vec<u8>> {
    let mut o = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        o.insert(k.to_string(), v);
    };
    put("verbose", false.into());
    put("pedantic", false.into());
    put("tls_required", tls.into());
    put("lang", "natsbus".into());
    put("version", env!("CARGO_PKG_VERSION").into());
    put("protocol", 1.into());
    put("echo", true.into());
    put("headers", true.into());
    put("no_responders", true.into());
    if let Some(n) = name {
        put("name", n.into());
    }
    let nonce = info.nonce.as_deref();
    match auth {
        Auth::None => {}
        Auth::UserPassword { user, password } => {
            put("user", user.as_str().into());
            put("pass", password.as_str().into());
        }
        Auth::Token(t) => put("auth_token", t.as_str().into()),
        Auth::NkeySeed(seed) => {
            let (public, sig) = sign_nonce(&load_seed(seed)?, nonce)?;
            put("nkey", public.into());
            if let Some(s) = sig {
                put("sig", s.into());
            }
        }
        Auth::CredsFile(path) => {
            let (jwt, seed) = read_creds(path)?;
            let (_, sig) = sign_nonce(&seed, nonce)?;
            put("jwt", jwt.into());
            if let Some(s) = sig {
                put("sig", s.into());
            }
        }
    }
    let mut line = b"CONNECT ".to_vec();
    serde_json::to_writer(&mut line, &o).map_err(|e| Error::invalid(e.to_string()))?;
    line.extend_from_slice(b"\r\n");
    Ok(line)
}

/// `SUB <subject> <sid>\r\n`
pub fn write_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    let _ = write!(out, "SUB {subject} {sid}\r\n");
}

fn non_empty(headers: Option<&HeaderMap>) -> Option<&HeaderMap> {
    headers.filter(|h| !h.is_empty())
}

/// Bytes the header block of `headers` takes on the wire (0 when there are
/// none): what counts against `max_payload` besides the payload.
pub fn header_len(headers: Option<&HeaderMap>) -> usize {
    non_empty(headers).map_or(0, |h| {
        let lines: usize = h
            .iter()
            .map(|(name, values)| {
                let name: &str = name.as_ref();
                values
                    .iter()
                    .map(|v| name.len() + 2 + v.as_str().len() + 2)
                    .sum::<usize>()
            })
            .sum();
        b"NATS/1.0\r\n".len() + lines + 2
    })
}

/// `PUB`/`HPUB` of one message with a reply subject, headers written straight
/// into `out`. The caller has checked the subject (and header names and
/// values: no CR or LF).
pub fn write_publish(
    out: &mut Vec<u8>,
    subject: &str,
    reply: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) {
    match non_empty(headers) {
        None => {
            let _ = write!(out, "PUB {subject} {reply} {}\r\n", payload.len());
        }
        Some(h) => {
            let hlen = header_len(Some(h));
            let _ = write!(
                out,
                "HPUB {subject} {reply} {hlen} {}\r\n",
                hlen + payload.len()
            );
            out.extend_from_slice(b"NATS/1.0\r\n");
            for (name, values) in h.iter() {
                for value in values {
                    out.extend_from_slice(name.as_ref());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value.as_str().as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// A fresh, unguessable inbox prefix: `_INBOX.<nuid>.`
pub fn new_inbox_prefix(prefix: &str) -> String {
    format!("{prefix}.{}.", nuid::next())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(chunks: &[&[u8]]) -> Vec<ServerOp> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c);
            while let Some(op) = p.next_op().unwrap() {
                out.push(op);
            }
        }
        out
    }

    #[test]
    fn parses_control_lines_and_info() {
        let got = ops(&[
            b"INFO {\"server_id\":\"X\",\"max_payload\":1048576,\"headers\":true,\"nonce\":\"abc\",\"connect_urls\":[\"10.0.0.1:4222\"]}\r\nPING\r\n+OK\r\n",
            b"-ERR 'Authorization Violation'\r\npong\r\n",
        ]);
        assert_eq!(got.len(), 5);
        match &got[0] {
            ServerOp::Info(i) => {
                assert_eq!(i.max_payload, 1_048_576);
                assert!(i.headers);
                assert_eq!(i.nonce.as_deref(), Some("abc"));
                assert_eq!(i.connect_urls, vec!["10.0.0.1:4222".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(got[1], ServerOp::Ping));
        assert!(matches!(got[2], ServerOp::Ok));
        assert!(matches!(&got[3], ServerOp::Err(t) if t == "Authorization Violation"));
        assert!(matches!(got[4], ServerOp::Pong));
    }

    #[test]
    fn messages_split_anywhere_come_out_whole() {
        let wire = b"MSG _INBOX.a.1 1 5\r\nhello\r\nHMSG _INBOX.a.2 1 reply.x 16 16\r\nNATS/1.0 503\r\n\r\n\r\n";
        for cut in 0..wire.len() {
            let got = ops(&[&wire[..cut], &wire[cut..]]);
            assert_eq!(got.len(), 2, "cut at {cut}");
            let ServerOp::Msg(a) = &got[0] else { panic!() };
            assert_eq!((a.subject.as_str(), a.sid), ("_INBOX.a.1", 1));
            assert_eq!(&a.payload[..], b"hello");
            assert_eq!(
                (a.status, a.headers.is_none(), a.reply.is_none()),
                (None, true, true)
            );
            let ServerOp::Msg(b) = &got[1] else { panic!() };
            assert_eq!(b.status, Some(503));
            assert_eq!(b.reply.as_deref(), Some("reply.x"));
            assert!(b.payload.is_empty());
        }
    }

    #[test]
    fn binary_payloads_with_crlf_inside_survive() {
        let got = ops(&[b"MSG s 1 4\r\n\r\n\r\n\r\n"]);
        let ServerOp::Msg(m) = &got[0] else { panic!() };
        assert_eq!(&m.payload[..], b"\r\n\r\n");
    }

    #[test]
    fn garbage_is_an_error_not_a_hang() {
        for bad in [
            &b"BOGUS\r\n"[..],
            b"MSG a 1\r\n",
            b"MSG a one 3\r\nabc\r\n",
            b"HMSG a 1 9 3\r\nabc\r\n",
            b"MSG a 1 3\r\nabcXY",
            b"INFO {nope\r\n",
        ] {
            let mut p = Parser::new();
            p.feed(bad);
            assert!(p.next_op().is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut p = Parser::new();
        p.feed(&vec![b'x'; MAX_CONTROL_LINE + 1]);
        assert!(p.next_op().is_err());
    }

    #[test]
    fn publish_framing() {
        let mut out = Vec::new();
        write_publish(&mut out, "a.b", "_INBOX.x.1", None, b"{}");
        assert_eq!(out, b"PUB a.b _INBOX.x.1 2\r\n{}\r\n");
        let mut out = Vec::new();
        write_publish(&mut out, "a.b", "r", Some(&HeaderMap::new()), b"{}");
        assert_eq!(out, b"PUB a.b r 2\r\n{}\r\n");
        assert_eq!(header_len(Some(&HeaderMap::new())), 0);

        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "m1");
        let block = b"NATS/1.0\r\nNats-Msg-Id: m1\r\n\r\n";
        assert_eq!(header_len(Some(&h)), block.len());
        let mut out = Vec::new();
        write_publish(&mut out, "a.b", "r", Some(&h), b"xy");
        let mut expect = format!("HPUB a.b r {} {}\r\n", block.len(), block.len() + 2).into_bytes();
        expect.extend_from_slice(block);
        expect.extend_from_slice(b"xy\r\n");
        assert_eq!(out, expect);

        // Several values of one name: one line each, and the length agrees.
        let mut h = HeaderMap::new();
        h.append("X", "1");
        h.append("X", "22");
        let mut out = Vec::new();
        write_publish(&mut out, "s", "r", Some(&h), b"");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("X: 1\r\nX: 22\r\n"), "{text}");
        let hlen = header_len(Some(&h));
        assert!(
            text.starts_with(&format!("HPUB s r {hlen} {hlen}\r\n")),
            "{text}"
        );
        assert_eq!(hlen, "NATS/1.0\r\nX: 1\r\nX: 22\r\n\r\n".len());
    }

    fn connect_json(info: &ServerInfo, auth: &Auth) -> serde_json::Value {
        let line = connect_line(info, auth, Some("agent"), false).unwrap();
        let text = std::str::from_utf8(&line).unwrap();
        let json = text
            .strip_prefix("CONNECT ")
            .unwrap()
            .strip_suffix("\r\n")
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn connect_carries_credentials() {
        let info = ServerInfo {
            nonce: Some("n0nce".into()),
            ..Default::default()
        };
        let v = connect_json(&info, &Auth::None);
        assert_eq!(v["headers"], true);
        assert_eq!(v["no_responders"], true);
        assert_eq!(v["name"], "agent");
        assert!(v.get("user").is_none());
        let v = connect_json(
            &info,
            &Auth::UserPassword {
                user: "u".into(),
                password: "p".into(),
            },
        );
        assert_eq!(
            (v["user"].as_str(), v["pass"].as_str()),
            (Some("u"), Some("p"))
        );
        let v = connect_json(&info, &Auth::Token("t".into()));
        assert_eq!(v["auth_token"], "t");

        let kp = nkeys::KeyPair::new_user();
        let v = connect_json(&info, &Auth::NkeySeed(kp.seed().unwrap()));
        assert_eq!(v["nkey"], kp.public_key());
        let sig = URL_SAFE_NO_PAD.decode(v["sig"].as_str().unwrap()).unwrap();
        kp.verify(b"n0nce", &sig).unwrap();
    }

    #[test]
    fn creds_files_give_jwt_and_signature() {
        let kp = nkeys::KeyPair::new_user();
        let dir = std::env::temp_dir().join(format!("natsbus-wire-{}", nuid::next()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("u.creds");
        std::fs::write(
            &path,
            format!(
                "-----BEGIN NATS USER JWT-----\neyJ0.fake.jwt\n------END NATS USER JWT------\n\n\
                 ************************* IMPORTANT *************************\n\n\
                 -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
                kp.seed().unwrap()
            ),
        )
        .unwrap();
        let info = ServerInfo {
            nonce: Some("xyz".into()),
            ..Default::default()
        };
        let v = connect_json(&info, &Auth::CredsFile(path.clone()));
        assert_eq!(v["jwt"], "eyJ0.fake.jwt");
        let sig = URL_SAFE_NO_PAD.decode(v["sig"].as_str().unwrap()).unwrap();
        kp.verify(b"xyz", &sig).unwrap();
        std::fs::write(&path, "nothing useful").unwrap();
        let e = connect_line(&info, &Auth::CredsFile(path), None, false).unwrap_err();
        assert!(e.message.contains("no user JWT"), "{}", e.message);
        let _ = std::fs::remove_dir_all(dir);
    }
}
