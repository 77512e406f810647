//! What the server would store for a config, so that desired and live can be
//! compared without reporting the server's own defaults as drift.
//!
//! Both sides go through the same functions: a desired config gets the
//! defaults the server fills in on create, and a live config (which already
//! has them) comes out the same. The result has every known field present with
//! its effective value, which is also what a plan shows.
//!
//! Confirmed against nats-server 2.15.1 by the integration tests: an applied
//! topology plans as unchanged.

use serde_json::{Map, Value};

use super::schema::{CONSUMER_FIELDS, STREAM_FIELDS};
use super::units::{NS_PER_MS, NS_PER_SEC};
use super::MANAGED_KEY;

/// The server's default duplicate window (2 minutes).
pub const DEFAULT_DUPLICATE_WINDOW: i64 = 120 * NS_PER_SEC;
/// Default ack wait for consumers that ack (30 seconds).
pub const DEFAULT_ACK_WAIT: i64 = 30 * NS_PER_SEC;
/// Default max_ack_pending for consumers that ack.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 1000;
/// Default pull request queue length.
pub const DEFAULT_MAX_WAITING: i64 = 512;
/// Default pin timeout for `pinned_client` priority.
pub const DEFAULT_PRIORITY_TIMEOUT: i64 = 120 * NS_PER_SEC;
/// Smallest max_age / duplicate_window the server accepts.
pub const MIN_WINDOW: i64 = 100 * NS_PER_MS;

/// Fields that exist on the server but are not compared: create-only or
/// request-only ones.
pub const STREAM_IGNORED: &[&str] = &["name", "first_seq"];
pub const CONSUMER_IGNORED: &[&str] = &["durable_name", "name", "pause_until"];

pub fn int(m: &Map<String, Value>, k: &str) -> i64 {
    match m.get(k) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(i64::MAX),
        _ => 0,
    }
}

pub fn text<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The strings of the array at `k` (subjects, filters); empty when absent.
pub fn text_list(m: &Map<String, Value>, k: &str) -> Vec<String> {
    m.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn flag(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn list(m: &Map<String, Value>, k: &str) -> Vec<Value> {
    m.get(k)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn limit(v: i64) -> i64 {
    if v == 0 || v < -1 {
        -1
    } else {
        v
    }
}

/// Drop empty values (null, "", 0, false, [], {}) recursively: nested objects
/// like placement or a source compare equal whether a default was spelled out
/// or left away.
pub fn prune(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), prune(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(prune).collect()),
        other => other.clone(),
    }
}

pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

fn nested(m: &Map<String, Value>, k: &str) -> Value {
    match m.get(k).map(prune) {
        Some(v) if !is_empty(&v) => canonical_times(v),
        _ => Value::Null,
    }
}

/// Times compare as instants: rewrite RFC 3339 strings in UTC with a fixed form.
pub fn canonical_time(s: &str) -> Value {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => t
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map(Value::String)
            .unwrap_or_else(|_| Value::String(s.to_string())),
        Err(_) => Value::String(s.to_string()),
    }
}

fn canonical_times(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match (&*k, v) {
                        ("opt_start_time", Value::String(s)) => canonical_time(&s),
                        (_, v) => canonical_times(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(canonical_times).collect()),
        other => other,
    }
}

/// User metadata: without the server's `_nats.*` keys and natsbus's marker.
pub fn user_metadata(m: &Map<String, Value>) -> Value {
    let meta: Map<String, Value> = m
        .get("metadata")
        .and_then(Value::as_object)
        .map(|meta| {
            meta.iter()
                .filter(|(k, _)| !k.starts_with("_nats.") && k.as_str() != MANAGED_KEY)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    Value::Object(meta)
}

/// The stream config as the server stores it, every known field present.
pub fn stream(cfg: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let name = text(cfg, "name").to_string();
    let mirror = nested(cfg, "mirror");
    let sources: Vec<Value> = list(cfg, "sources")
        .iter()
        .map(|s| canonical_times(prune(s)))
        .collect();
    let derived = !mirror.is_null() || !sources.is_empty();
    let mut subjects = list(cfg, "subjects");
    if subjects.is_empty() && !derived {
        subjects.push(Value::String(name.clone()));
    }
    let max_age = int(cfg, "max_age").max(0);
    let mut dup = int(cfg, "duplicate_window");
    if dup == 0 && !derived {
        dup = if max_age != 0 && max_age < DEFAULT_DUPLICATE_WINDOW {
            max_age
        } else {
            DEFAULT_DUPLICATE_WINDOW
        };
    }
    let sdm_ttl = int(cfg, "subject_delete_marker_ttl");
    let schedules = flag(cfg, "allow_msg_schedules");
    // Delete markers and schedules switch on what they need (server, non-pedantic).
    let allow_ttl = flag(cfg, "allow_msg_ttl") || sdm_ttl > 0;
    let rollup = flag(cfg, "allow_rollup_hdrs") || sdm_ttl > 0 || schedules;
    let deny_purge = flag(cfg, "deny_purge") && !(sdm_ttl > 0 || schedules);
    let mut republish = nested(cfg, "republish");
    if let Value::Object(r) = &mut republish {
        if text(r, "src").is_empty() {
            r.insert("src".into(), Value::String(">".into()));
        }
    }
    let mut consumer_limits = prune(cfg.get("consumer_limits").unwrap_or(&Value::Null));
    if consumer_limits.is_null() {
        consumer_limits = Value::Object(Map::new());
    }
    let or = |k: &str, d: &str| -> Value {
        let v = text(cfg, k);
        Value::String(if v.is_empty() { d } else { v }.to_string())
    };
    let replicas = match int(cfg, "num_replicas") {
        0 => 1,
        n => n,
    };
    let entries: Vec<(&str, Value)> = vec![
        ("name", Value::String(name)),
        (
            "description",
            Value::String(text(cfg, "description").into()),
        ),
        ("subjects", Value::Array(subjects)),
        ("retention", or("retention", "limits")),
        ("max_consumers", limit(int(cfg, "max_consumers")).into()),
        ("max_msgs", limit(int(cfg, "max_msgs")).into()),
        ("max_bytes", limit(int(cfg, "max_bytes")).into()),
        ("max_age", max_age.into()),
        (
            "max_msgs_per_subject",
            limit(int(cfg, "max_msgs_per_subject")).into(),
        ),
        ("max_msg_size", limit(int(cfg, "max_msg_size")).into()),
        ("discard", or("discard", "old")),
        ("storage", or("storage", "file")),
        ("num_replicas", replicas.into()),
        ("no_ack", flag(cfg, "no_ack").into()),
        ("duplicate_window", dup.into()),
        ("placement", nested(cfg, "placement")),
        ("mirror", mirror),
        ("sources", Value::Array(sources)),
        ("compression", or("compression", "none")),
        (
            "first_seq",
            cfg.get("first_seq").cloned().unwrap_or(Value::from(0)),
        ),
        ("subject_transform", nested(cfg, "subject_transform")),
        ("republish", republish),
        ("allow_direct", flag(cfg, "allow_direct").into()),
        ("mirror_direct", flag(cfg, "mirror_direct").into()),
        (
            "discard_new_per_subject",
            flag(cfg, "discard_new_per_subject").into(),
        ),
        ("sealed", flag(cfg, "sealed").into()),
        ("deny_delete", flag(cfg, "deny_delete").into()),
        ("deny_purge", deny_purge.into()),
        ("allow_rollup_hdrs", rollup.into()),
        ("consumer_limits", consumer_limits),
        ("metadata", user_metadata(cfg)),
        ("allow_msg_ttl", allow_ttl.into()),
        ("subject_delete_marker_ttl", sdm_ttl.into()),
        ("allow_msg_counter", flag(cfg, "allow_msg_counter").into()),
        ("allow_atomic", flag(cfg, "allow_atomic").into()),
        ("allow_msg_schedules", schedules.into()),
        ("persist_mode", or("persist_mode", "default")),
        ("allow_batched", flag(cfg, "allow_batched").into()),
    ];
    debug_assert_eq!(entries.len(), STREAM_FIELDS.len());
    for (k, v) in entries {
        out.insert(k.to_string(), v);
    }
    out
}

/// The consumer config as the server stores it on `stream` (a normalized
/// stream config: its consumer_limits supply defaults).
pub fn consumer(cfg: &Map<String, Value>, stream: &Map<String, Value>) -> Map<String, Value> {
    let limits = stream
        .get("consumer_limits")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let ack = {
        let a = text(cfg, "ack_policy");
        if a.is_empty() {
            "none"
        } else {
            a
        }
    };
    let push = !text(cfg, "deliver_subject").is_empty();
    let backoff = list(cfg, "backoff");
    let mut ack_wait = int(cfg, "ack_wait");
    if ack_wait == 0 && (ack == "explicit" || ack == "all") {
        ack_wait = DEFAULT_ACK_WAIT;
    }
    if let Some(first) = backoff.first().and_then(Value::as_i64) {
        ack_wait = first;
    }
    let mut max_deliver = int(cfg, "max_deliver");
    if max_deliver == 0 || max_deliver < -1 {
        max_deliver = -1;
    }
    let mut max_waiting = int(cfg, "max_waiting").max(0);
    if !push && max_waiting == 0 {
        max_waiting = DEFAULT_MAX_WAITING;
    }
    let mut max_ack_pending = int(cfg, "max_ack_pending");
    if max_ack_pending < -1 {
        max_ack_pending = -1;
    }
    if max_ack_pending == 0 {
        max_ack_pending = int(&limits, "max_ack_pending");
    }
    if max_ack_pending == 0 && ack != "none" {
        max_ack_pending = DEFAULT_MAX_ACK_PENDING;
    }
    let mut inactive = int(cfg, "inactive_threshold").max(0);
    if inactive == 0 {
        inactive = int(&limits, "inactive_threshold");
    }
    let policy = {
        let p = text(cfg, "priority_policy");
        if p.is_empty() {
            "none"
        } else {
            p
        }
    };
    let mut priority_timeout = int(cfg, "priority_timeout").max(0);
    if policy == "pinned_client" && priority_timeout == 0 {
        priority_timeout = DEFAULT_PRIORITY_TIMEOUT;
    }
    let mut flow_control = flag(cfg, "flow_control");
    let mut heartbeat = int(cfg, "idle_heartbeat").max(0);
    if ack == "flow_control" {
        flow_control = true;
        heartbeat = NS_PER_SEC;
    }
    let opt_start_time = match cfg.get("opt_start_time") {
        Some(Value::String(s)) if !s.is_empty() => canonical_time(s),
        _ => Value::Null,
    };
    let durable = text(cfg, "durable_name").to_string();
    let name = match text(cfg, "name") {
        "" => durable.clone(),
        n => n.to_string(),
    };
    let entries: Vec<(&str, Value)> = vec![
        ("durable_name", Value::String(durable)),
        ("name", Value::String(name)),
        (
            "description",
            Value::String(text(cfg, "description").into()),
        ),
        (
            "deliver_policy",
            Value::String(non_empty(text(cfg, "deliver_policy"), "all")),
        ),
        (
            "opt_start_seq",
            cfg.get("opt_start_seq").cloned().unwrap_or(Value::from(0)),
        ),
        ("opt_start_time", opt_start_time),
        ("ack_policy", Value::String(ack.into())),
        ("ack_wait", ack_wait.into()),
        ("max_deliver", max_deliver.into()),
        ("backoff", Value::Array(backoff)),
        (
            "filter_subject",
            Value::String(text(cfg, "filter_subject").into()),
        ),
        (
            "filter_subjects",
            Value::Array(list(cfg, "filter_subjects")),
        ),
        (
            "replay_policy",
            Value::String(non_empty(text(cfg, "replay_policy"), "instant")),
        ),
        (
            "rate_limit_bps",
            cfg.get("rate_limit_bps").cloned().unwrap_or(Value::from(0)),
        ),
        (
            "sample_freq",
            Value::String(text(cfg, "sample_freq").into()),
        ),
        ("max_waiting", max_waiting.into()),
        ("max_ack_pending", max_ack_pending.into()),
        ("flow_control", flow_control.into()),
        ("headers_only", flag(cfg, "headers_only").into()),
        ("max_batch", int(cfg, "max_batch").max(0).into()),
        ("max_expires", int(cfg, "max_expires").max(0).into()),
        ("max_bytes", int(cfg, "max_bytes").max(0).into()),
        (
            "deliver_subject",
            Value::String(text(cfg, "deliver_subject").into()),
        ),
        (
            "deliver_group",
            Value::String(text(cfg, "deliver_group").into()),
        ),
        ("idle_heartbeat", heartbeat.into()),
        ("inactive_threshold", inactive.into()),
        ("num_replicas", int(cfg, "num_replicas").into()),
        ("mem_storage", flag(cfg, "mem_storage").into()),
        ("metadata", user_metadata(cfg)),
        (
            "pause_until",
            cfg.get("pause_until").cloned().unwrap_or(Value::Null),
        ),
        (
            "priority_groups",
            Value::Array(list(cfg, "priority_groups")),
        ),
        ("priority_policy", Value::String(policy.into())),
        ("priority_timeout", priority_timeout.into()),
    ];
    debug_assert_eq!(entries.len(), CONSUMER_FIELDS.len());
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn non_empty(v: &str, default: &str) -> String {
    if v.is_empty() { default } else { v }.to_string()
}

/// The filter subjects of a consumer config as a set (both spellings merged).
pub fn filters(cfg: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = list(cfg, "filter_subjects")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let single = text(cfg, "filter_subject");
    if !single.is_empty() {
        out.push(single.to_string());
    }
    out.sort();
    out.dedup();
    out
}

/// Fields compared as sets (order carries no meaning on the server).
const SET_FIELDS: &[&str] = &["subjects", "filter_subjects", "priority_groups", "tags"];

/// Equality of two normalized field values, treating lists of names as sets.
pub fn same(field: &str, a: &Value, b: &Value) -> bool {
    if SET_FIELDS.contains(&field) {
        if let (Value::Array(x), Value::Array(y)) = (a, b) {
            let mut x: Vec<String> = x.iter().map(|v| v.to_string()).collect();
            let mut y: Vec<String> = y.iter().map(|v| v.to_string()).collect();
            x.sort();
            x.dedup();
            y.sort();
            y.dedup();
            return x == y;
        }
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same(k, v, w)))
        }
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x == y,
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    /// What nats-server 2.15.1 returned for `{"name": "S1"}` (probed).
    fn server_s1() -> Map<String, Value> {
        obj(json!({
            "name": "S1", "subjects": ["S1"], "retention": "limits", "max_consumers": -1,
            "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msgs_per_subject": -1,
            "max_msg_size": -1, "discard": "old", "storage": "file", "num_replicas": 1,
            "duplicate_window": 120000000000u64, "compression": "none", "allow_direct": false,
            "mirror_direct": false, "sealed": false, "deny_delete": false, "deny_purge": false,
            "allow_rollup_hdrs": false, "consumer_limits": {}, "allow_msg_ttl": false,
            "metadata": {"_nats.level": "5", "_nats.req.level": "0", "_nats.ver": "2.15.1"}
        }))
    }

    #[test]
    fn minimal_stream_matches_server_defaults() {
        let desired = stream(&obj(json!({"name": "S1"})));
        let live = stream(&server_s1());
        for (k, v) in &desired {
            assert!(same(k, v, &live[k]), "{k}: {v} vs {}", live[k]);
        }
        assert_eq!(desired["subjects"], json!(["S1"]));
        assert_eq!(desired["duplicate_window"], json!(DEFAULT_DUPLICATE_WINDOW));
        assert_eq!(desired["metadata"], json!({}));
    }

    #[test]
    fn duplicate_window_follows_short_max_age() {
        let s = stream(&obj(json!({"name": "S", "max_age": 60 * NS_PER_SEC})));
        assert_eq!(s["duplicate_window"], json!(60 * NS_PER_SEC));
        let s = stream(&obj(json!({"name": "S", "max_age": 3600 * NS_PER_SEC})));
        assert_eq!(s["duplicate_window"], json!(DEFAULT_DUPLICATE_WINDOW));
        let m = stream(&obj(json!({"name": "M", "mirror": {"name": "S"}})));
        assert_eq!(m["duplicate_window"], json!(0));
        assert_eq!(m["subjects"], json!([]));
    }

    #[test]
    fn consumer_defaults() {
        let s = stream(&obj(json!({"name": "S"})));
        let pull = consumer(
            &obj(json!({"durable_name": "c", "ack_policy": "explicit"})),
            &s,
        );
        assert_eq!(pull["name"], "c");
        assert_eq!(pull["ack_wait"], json!(DEFAULT_ACK_WAIT));
        assert_eq!(pull["max_deliver"], json!(-1));
        assert_eq!(pull["max_waiting"], json!(512));
        assert_eq!(pull["max_ack_pending"], json!(1000));
        let push = consumer(
            &obj(json!({"durable_name": "p", "deliver_subject": "x"})),
            &s,
        );
        assert_eq!(push["ack_policy"], "none");
        assert_eq!(push["ack_wait"], json!(0));
        assert_eq!(push["max_waiting"], json!(0));
        assert_eq!(push["max_ack_pending"], json!(0));
        let bo = consumer(
            &obj(
                json!({"durable_name": "b", "ack_policy": "explicit", "backoff": [NS_PER_SEC, 5 * NS_PER_SEC]}),
            ),
            &s,
        );
        assert_eq!(bo["ack_wait"], json!(NS_PER_SEC));
        let limited = stream(&obj(
            json!({"name": "L", "consumer_limits": {"max_ack_pending": 50, "inactive_threshold": 5 * NS_PER_SEC}}),
        ));
        let c = consumer(
            &obj(json!({"durable_name": "d", "ack_policy": "explicit"})),
            &limited,
        );
        assert_eq!(c["max_ack_pending"], json!(50));
        assert_eq!(c["inactive_threshold"], json!(5 * NS_PER_SEC));
    }

    #[test]
    fn sets_and_times() {
        assert!(same("subjects", &json!(["a", "b"]), &json!(["b", "a"])));
        assert!(!same("subjects", &json!(["a"]), &json!(["a", "b"])));
        assert!(!same("backoff", &json!([1, 2]), &json!([2, 1])));
        assert_eq!(
            canonical_time("2024-01-31T13:00:00+01:00"),
            json!("2024-01-31T12:00:00Z")
        );
        assert_eq!(
            filters(&obj(
                json!({"filter_subject": "a", "filter_subjects": ["b"]})
            )),
            vec!["a", "b"]
        );
    }

    #[test]
    fn side_effects_of_delete_markers() {
        let s = stream(&obj(
            json!({"name": "S", "subject_delete_marker_ttl": NS_PER_SEC, "deny_purge": true}),
        ));
        assert_eq!(s["allow_msg_ttl"], json!(true));
        assert_eq!(s["allow_rollup_hdrs"], json!(true));
        assert_eq!(s["deny_purge"], json!(false));
        let r = stream(&obj(json!({"name": "S", "republish": {"dest": "x.>"}})));
        assert_eq!(r["republish"], json!({"dest": "x.>", "src": ">"}));
        let p = stream(&obj(
            json!({"name": "S", "placement": {"cluster": "", "tags": []}}),
        ));
        assert_eq!(p["placement"], Value::Null);
    }
}
