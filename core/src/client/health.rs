//! A health snapshot for readiness probes.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::client::jsapi;
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

/// Measure one round trip: subscribe to a fresh inbox, publish to it and
/// wait for the message to come back through the server.
async fn round_trip(client: &async_nats::Client, timeout: Duration) -> Option<f64> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.ok()?;
    let start = Instant::now();
    client.publish(inbox, "".into()).await.ok()?;
    let got = tokio::time::timeout(timeout, sub.next())
        .await
        .ok()
        .flatten();
    let rtt = start.elapsed().as_secs_f64();
    let _ = sub.unsubscribe().await;
    got.map(|_| rtt)
}

pub async fn health(client: &async_nats::Client, timeout: Duration) -> Result<Health> {
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
    h.rtt = round_trip(client, timeout).await;
    match jsapi::request::<Value>(client, "INFO", &Value::Null, timeout).await {
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
