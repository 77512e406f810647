//! A health snapshot for readiness probes.

use std::time::Duration;

use serde_json::Value;

use crate::client::{round_trip, Connected};
use crate::error::{ErrorKind, Result};

/// What a readiness probe wants to know about the connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub connected: bool,
    pub server_version: String,
    pub server_name: String,
    /// Round trip to the server and back, in seconds.
    pub rtt: Option<f64>,
    pub jetstream: bool,
    pub streams: Option<u64>,
    pub consumers: Option<u64>,
    pub memory: Option<u64>,
    pub storage: Option<u64>,
    /// Why a part could not be read (JetStream disabled, timed out...).
    pub error: Option<String>,
}

impl Health {
    /// What is known without asking the server: the connection state and
    /// the server's INFO. `error` says why nothing more is known.
    pub fn from_info(
        info: &async_nats::ServerInfo,
        connected: bool,
        error: Option<String>,
    ) -> Health {
        Health {
            connected,
            server_version: info.version.clone(),
            server_name: info.server_name.clone(),
            rtt: None,
            jetstream: false,
            streams: None,
            consumers: None,
            memory: None,
            storage: None,
            error,
        }
    }
}

/// A health snapshot within `timeout` in all: the round trip through the
/// server (see [`round_trip`]: answered by the server itself, so it needs no
/// permission and waits for nobody) and the JetStream account info, asked at
/// the same time.
pub async fn health(conn: &Connected, timeout: Duration) -> Result<Health> {
    let client = &conn.client;
    let info = client.server_info();
    let connected = matches!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
    if !connected {
        return Ok(Health::from_info(
            &info,
            false,
            Some("not connected".into()),
        ));
    }
    let mut h = Health::from_info(&info, true, None);
    let (rtt, account) = tokio::join!(
        round_trip(client, &conn.events, timeout),
        conn.js
            .request_timeout::<Value>("INFO", &Value::Null, timeout),
    );
    h.rtt = rtt.ok().map(|d| d.as_secs_f64());
    match account {
        Ok(acct) => {
            h.jetstream = true;
            let num = |k: &str| acct.get(k).and_then(Value::as_u64);
            h.streams = num("streams");
            h.consumers = num("consumers");
            h.memory = num("memory");
            h.storage = num("storage");
        }
        Err(e) => {
            h.error = Some(match e.kind {
                ErrorKind::NoResponders => "JetStream is not enabled on the server".to_string(),
                _ => e.message,
            });
        }
    }
    Ok(h)
}
