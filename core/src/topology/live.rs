//! What the server has, as plain data: its version, the streams and their
//! consumers. Read by `apply::fetch_live`, compared by `plan`, written out
//! by `export`; building one needs no server (the tests make them by hand).

use serde_json::{json, Map, Value};

use super::schema::Version;

/// A consumer on the server.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveConsumer {
    pub name: String,
    /// The consumer info as the server returned it (`config`, `num_pending`...),
    /// or `{"config": ...}` when built from a config alone.
    pub info: Value,
}

impl LiveConsumer {
    /// From a consumer info (`{"config": ...}`) or a bare consumer config.
    pub fn new(info_or_config: Value) -> LiveConsumer {
        let info = as_info(info_or_config);
        let cfg = &info["config"];
        let name = cfg
            .get("durable_name")
            .or_else(|| cfg.get("name"))
            .or_else(|| info.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        LiveConsumer { name, info }
    }

    pub fn config(&self) -> &Value {
        &self.info["config"]
    }

    pub fn config_map(&self) -> &Map<String, Value> {
        config_map(&self.info)
    }
}

/// A stream on the server with its consumers.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveStream {
    pub name: String,
    /// The stream info as the server returned it (`config`, `state`...), or
    /// `{"config": ...}` when built from a config alone.
    pub info: Value,
    pub consumers: Vec<LiveConsumer>,
}

impl LiveStream {
    /// From a stream info (`{"config": ...}`) or a bare stream config, plus consumers.
    pub fn new(info_or_config: Value, consumers: Vec<Value>) -> LiveStream {
        let info = as_info(info_or_config);
        let name = info["config"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        LiveStream {
            name,
            info,
            consumers: consumers.into_iter().map(LiveConsumer::new).collect(),
        }
    }

    pub fn config(&self) -> &Value {
        &self.info["config"]
    }

    pub fn config_map(&self) -> &Map<String, Value> {
        config_map(&self.info)
    }

    pub fn consumer(&self, name: &str) -> Option<&LiveConsumer> {
        self.consumers.iter().find(|c| c.name == name)
    }
}

/// What the server has: its version and its streams with their consumers
/// (every stream, or those a topology declares and those in its way).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveState {
    pub server_version: String,
    pub streams: Vec<LiveStream>,
    /// Streams known by name only (the rest of a shared server, read for
    /// the plan's list of unmanaged streams without their configs).
    pub others: Vec<String>,
    /// Whether the JetStream answering is clustered (`None`: not known,
    /// e.g. a domain reached through a leafnode).
    pub clustered: Option<bool>,
    /// How many servers the cluster advertises to clients (`None`: not
    /// known, e.g. `no_advertise`).
    pub cluster_size: Option<usize>,
}

impl LiveState {
    pub fn new(server_version: impl Into<String>) -> LiveState {
        LiveState {
            server_version: server_version.into(),
            streams: Vec::new(),
            others: Vec::new(),
            clustered: None,
            cluster_size: None,
        }
    }

    /// Add a stream (info or bare config) with its consumers (infos or configs).
    pub fn with_stream(mut self, config: Value, consumers: Vec<Value>) -> LiveState {
        self.streams.push(LiveStream::new(config, consumers));
        self
    }

    pub fn stream(&self, name: &str) -> Option<&LiveStream> {
        self.streams.iter().find(|s| s.name == name)
    }

    pub fn version(&self) -> Version {
        Version::parse(&self.server_version)
    }
}

/// An info as the server returns it (`{"config": ...}`), from either an
/// info or a bare config.
fn as_info(info_or_config: Value) -> Value {
    if info_or_config.get("config").is_some_and(Value::is_object) {
        info_or_config
    } else {
        json!({ "config": info_or_config })
    }
}

/// The `config` object of an info (empty when there is none).
fn config_map(info: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    info["config"]
        .as_object()
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}
