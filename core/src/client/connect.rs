//! Connection options -> a connected `async_nats::Client`.
//!
//! Secrets (passwords, tokens, seeds, creds) never appear in an error or a
//! `Debug` print: errors name servers with their userinfo redacted and the
//! option types hand-write `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::events::ConnEvents;
use crate::client::heal::Heal;
use crate::client::jsapi::JetStream;
use crate::client::redact_url;
use crate::error::{Error, ErrorKind, Result};

/// How to authenticate. At most one scheme; user/password and token may also
/// come embedded in the server URLs.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// An nkey seed (`SU...`), or a path to a file that holds one.
    NkeySeed(String),
    /// A `.creds` file (user JWT + seed).
    CredsFile(PathBuf),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::UserPassword { user, .. } => write!(f, "Auth::UserPassword({user}, ***)"),
            Auth::Token(_) => f.write_str("Auth::Token(***)"),
            Auth::NkeySeed(_) => f.write_str("Auth::NkeySeed(***)"),
            Auth::CredsFile(p) => write!(f, "Auth::CredsFile({})", p.display()),
        }
    }
}

/// TLS settings: a CA to trust, a client certificate for mutual TLS, and
/// whether to start TLS before the server's INFO (`handshake_first`).
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub handshake_first: bool,
}

/// Everything `connect` needs.
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    pub servers: Vec<String>,
    pub auth: Auth,
    pub tls: Option<TlsConfig>,
    pub name: Option<String>,
    pub connect_timeout: Duration,
    /// `None`: reconnect forever (the default for long-running agents).
    pub max_reconnects: Option<usize>,
    /// Capacity of each subscription's channel inside async-nats.
    pub subscription_capacity: usize,
    /// Where inboxes (reply subjects) live; `_INBOX` by default. A user
    /// allowed only its own inbox needs this to name it.
    pub inbox_prefix: Option<String>,
    /// The JetStream domain to manage and consume (a leafnode's, from the
    /// hub); `None`: the account's own.
    pub domain: Option<String>,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            servers: vec!["nats://127.0.0.1:4222".to_string()],
            auth: Auth::None,
            tls: None,
            name: None,
            connect_timeout: Duration::from_secs(5),
            max_reconnects: None,
            subscription_capacity: 65_536,
            inbox_prefix: None,
            domain: None,
        }
    }
}

impl ConnectConfig {
    /// The auth to use: the configured scheme, else credentials embedded in
    /// the server URLs.
    pub fn effective_auth(&self) -> Auth {
        match &self.auth {
            Auth::None => auth_from_urls(&self.servers),
            other => other.clone(),
        }
    }

    /// Whether this client insists on TLS whatever the server says (it was
    /// given TLS settings).
    pub fn requires_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The one TLS decision both connections follow, for a server reached
    /// with a `tls://` URL or not (`scheme_tls`) whose INFO does or does not
    /// require TLS: TLS when any of the three asks for it. (With
    /// `handshake_first` TLS starts before INFO, so it is always on.)
    pub fn use_tls(&self, scheme_tls: bool, server_requires: bool) -> bool {
        self.requires_tls()
            || scheme_tls
            || server_requires
            || self.tls.as_ref().is_some_and(|t| t.handshake_first)
    }

    /// The inbox prefix in use.
    pub fn inbox_prefix(&self) -> &str {
        self.inbox_prefix.as_deref().unwrap_or("_INBOX")
    }

    /// Check the settings that need no server (inbox prefix, domain, the
    /// TLS certificate and key) before connecting.
    pub fn check(&self) -> Result<()> {
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(Error::invalid(
                    "TLS client authentication needs both a certificate and its key \
                     (TLS(cert=..., key=...); on the command line --tls-cert with --tls-key)",
                ));
            }
        }
        if let Some(p) = &self.inbox_prefix {
            if p.is_empty()
                || p.ends_with('.')
                || crate::client::publish::check_publish_subject(p).is_err()
            {
                return Err(Error::invalid(format!(
                    "inbox_prefix {p:?} must be a subject prefix without wildcards, empty tokens or a trailing '.', e.g. \"_INBOX_agent\""
                )));
            }
        }
        if let Some(d) = &self.domain {
            if let Some(problem) = crate::names::name_problem(d) {
                return Err(Error::invalid(format!(
                    "invalid JetStream domain: {problem}"
                )));
            }
        }
        Ok(())
    }

    /// The server list as it may be shown to people.
    pub fn display_servers(&self) -> String {
        self.servers
            .iter()
            .map(|s| redact_url(s))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Split `"nats://a:4222, nats://b:4222"` into its servers.
pub fn split_servers(spec: &str) -> Vec<String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Read an nkey seed given either inline or as a file path.
pub(crate) fn load_seed(seed_or_path: &str) -> Result<String> {
    let trimmed = seed_or_path.trim();
    if trimmed.starts_with('S') && !trimmed.contains(['/', '\\', '.']) {
        return Ok(trimmed.to_string());
    }
    let text = std::fs::read_to_string(trimmed).map_err(|e| {
        Error::invalid(format!(
            "nkey_seed is neither a seed (S...) nor a readable file ({trimmed}): {e}"
        ))
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU") || l.starts_with("SA") || l.starts_with('S'))
        .map(str::to_string)
        .ok_or_else(|| {
            Error::invalid(format!(
                "no nkey seed (a line starting with S) in {trimmed}"
            ))
        })
}

pub(crate) fn check_file(what: &str, path: &std::path::Path) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} file {} does not exist or is not a file",
            path.display()
        )))
    }
}

/// Connection events other parts listen to: the count of (re)connects, so a
/// consumer can restart its pull at once after a reconnect instead of
/// waiting for the old pull request to expire.
pub type Reconnects = tokio::sync::watch::Receiver<u64>;

/// A connected client, what listens to its events, and its JetStream API.
#[derive(Clone)]
pub struct Connected {
    pub client: async_nats::Client,
    pub reconnects: Reconnects,
    pub events: std::sync::Arc<ConnEvents>,
    pub js: JetStream,
    /// The declared topology this connection re-creates when it goes missing.
    pub heal: std::sync::Arc<Heal>,
}

/// Connect, authenticate, and return the client. Fails with `Auth` when the
/// server rejects the credentials and with `Connect` when no server answers,
/// in either case within `connect_timeout`.
pub async fn connect(config: &ConnectConfig) -> Result<Connected> {
    if config.servers.is_empty() {
        return Err(Error::invalid(
            "no server given: pass a URL or set $NATS_URL",
        ));
    }
    config.check()?;
    let mut opts = async_nats::ConnectOptions::new()
        .connection_timeout(config.connect_timeout)
        .max_reconnects(config.max_reconnects)
        .subscription_capacity(config.subscription_capacity)
        // Our own request timeouts are explicit per call.
        .request_timeout(Some(Duration::from_secs(5)));
    let (connects_tx, connects_rx) = tokio::sync::watch::channel(0u64);
    let connects_tx = std::sync::Arc::new(connects_tx);
    let events = ConnEvents::for_inbox(config.inbox_prefix());
    let events_in_cb = events.clone();
    if let Some(prefix) = &config.inbox_prefix {
        opts = opts.custom_inbox_prefix(prefix);
    }
    opts = opts.event_callback(move |event| {
        let tx = connects_tx.clone();
        let events = events_in_cb.clone();
        async move {
            use async_nats::Event;
            match event {
                Event::Connected => {
                    tx.send_modify(|n| *n += 1);
                    if *tx.borrow() > 1 {
                        events.emit("reconnected", "reconnected");
                    }
                }
                Event::Disconnected => {
                    events.emit(
                        "disconnected",
                        "lost the connection; reconnecting (publishes and acks wait for it)",
                    );
                }
                Event::LameDuckMode => events.emit(
                    "lame_duck",
                    "the server entered lame duck mode (it is shutting down); \
                     the client moves to another server",
                ),
                Event::SlowConsumer(sid) => events.emit(
                    "slow_consumer",
                    format!(
                        "slow consumer: messages for subscription {sid} were dropped because \
                         it was not read fast enough"
                    ),
                ),
                Event::ServerError(e) => {
                    if let async_nats::ServerError::Other(text) = &e {
                        events.server_error(text);
                    }
                    let text = match &e {
                        async_nats::ServerError::Other(t) => t.clone(),
                        other => other.to_string(),
                    };
                    events.emit("server_error", format!("server error: {text}"));
                }
                Event::ClientError(e) => {
                    events.emit("client_error", format!("client error: {e}"));
                }
                Event::Closed => events.emit("closed", "the connection is closed"),
                Event::Draining => {}
            }
        }
    });
    if let Some(name) = &config.name {
        opts = opts.name(name);
    }
    opts = match &config.effective_auth() {
        Auth::None => opts,
        Auth::UserPassword { user, password } => {
            opts.user_and_password(user.clone(), password.clone())
        }
        Auth::Token(token) => opts.token(token.clone()),
        Auth::NkeySeed(seed) => opts.nkey(load_seed(seed)?),
        Auth::CredsFile(path) => {
            check_file("creds", path)?;
            opts.credentials_file(path).await.map_err(|e| {
                Error::invalid(format!("could not read creds file {}: {e}", path.display()))
            })?
        }
    };
    // async-nats applies `use_tls` itself for the scheme and the server's
    // INFO; what it needs from us is whether the client insists.
    opts = opts.require_tls(config.requires_tls());
    if let Some(tls) = &config.tls {
        if let Some(ca) = &tls.ca {
            check_file("TLS CA", ca)?;
            opts = opts.add_root_certificates(ca.clone());
        }
        // A certificate without its key was refused by `check`.
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            check_file("TLS certificate", cert)?;
            check_file("TLS key", key)?;
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if tls.handshake_first {
            opts = opts.tls_first();
        }
    }
    let servers: Vec<async_nats::ServerAddr> = config
        .servers
        .iter()
        .map(|s| {
            s.parse::<async_nats::ServerAddr>().map_err(|e| {
                Error::invalid(format!("invalid server address {}: {e}", redact_url(s)))
            })
        })
        .collect::<Result<_>>()?;

    let shown = config.display_servers();
    let timeout = config.connect_timeout;
    match tokio::time::timeout(timeout, opts.connect(servers)).await {
        Ok(Ok(client)) => {
            let js = JetStream::new(client.clone(), events.clone(), config.domain.as_deref());
            let heal = Heal::new(js.clone(), events.clone());
            Heal::after_reconnects(&heal, connects_rx.clone());
            Ok(Connected {
                js,
                client,
                reconnects: connects_rx,
                events,
                heal,
            })
        }
        Ok(Err(e)) => Err(connect_error(&shown, e)),
        Err(_) => Err(Error::new(
            ErrorKind::Connect,
            format!(
                "could not connect to {shown} within {:.1}s (connect_timeout)",
                timeout.as_secs_f64()
            ),
        )),
    }
}

/// Credentials embedded in a server URL (`nats://user:pass@host` or
/// `nats://token@host`), used when no other auth is configured.
fn auth_from_urls(servers: &[String]) -> Auth {
    for s in servers {
        let rest = s.split_once("://").map(|(_, r)| r).unwrap_or(s);
        let Some((userinfo, _)) = rest.rsplit_once('@') else {
            continue;
        };
        return match userinfo.split_once(':') {
            Some((user, password)) => Auth::UserPassword {
                user: percent_decode(user),
                password: percent_decode(password),
            },
            None => Auth::Token(percent_decode(userinfo)),
        };
    }
    Auth::None
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn connect_error(shown: &str, e: async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as K;
    let kind = match e.kind() {
        K::AuthorizationViolation | K::Authentication => ErrorKind::Auth,
        K::TimedOut => ErrorKind::Connect,
        _ => ErrorKind::Connect,
    };
    let detail = match e.kind() {
        K::AuthorizationViolation => {
            "authorization violation: the server rejected the credentials".to_string()
        }
        // async-nats' text for the other kinds names no secret; keep it, it
        // carries the cause (refused, TLS error...).
        _ => redact_url(&e.to_string()),
    };
    Error::new(kind, format!("could not connect to {shown}: {detail}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_tls_decision_for_both_connections() {
        let plain = super::ConnectConfig::default();
        assert!(!plain.requires_tls() && !plain.use_tls(false, false));
        assert!(plain.use_tls(true, false), "a tls:// URL");
        assert!(plain.use_tls(false, true), "a server that requires TLS");
        let with_ca = super::ConnectConfig {
            tls: Some(super::TlsConfig::default()),
            ..Default::default()
        };
        assert!(with_ca.requires_tls() && with_ca.use_tls(false, false));
    }

    use super::*;

    #[test]
    fn credentials_from_urls() {
        match auth_from_urls(&["nats://h:1".into(), "nats://u:p%40ss@h:2".into()]) {
            Auth::UserPassword { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("u", "p@ss"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(auth_from_urls(&["nats://tok@h".into()]), Auth::Token(t) if t == "tok"));
        assert!(matches!(auth_from_urls(&["nats://h".into()]), Auth::None));
    }

    #[test]
    fn splits_server_lists() {
        assert_eq!(
            split_servers("nats://a:1, nats://b:2,,"),
            vec!["nats://a:1".to_string(), "nats://b:2".to_string()]
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let a = Auth::UserPassword {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        assert!(!format!("{:?}", Auth::Token("tok123".into())).contains("tok123"));
    }

    #[test]
    fn seed_inline_or_file() {
        assert_eq!(load_seed(" SUABC ").unwrap(), "SUABC");
        let dir = std::env::temp_dir().join(format!("natsbus-seed-{}", std::process::id()));
        std::fs::write(&dir, "# comment\nSUXYZ\n").unwrap();
        assert_eq!(load_seed(dir.to_str().unwrap()).unwrap(), "SUXYZ");
        std::fs::remove_file(&dir).ok();
        assert!(load_seed("/nonexistent/seed").is_err());
    }
}
