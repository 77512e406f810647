//! Compare a topology with the live server and decide, per stream and
//! consumer, what apply would do.
//!
//! Every difference is classified by what the server allows and what it costs:
//! an `update` happens in place; a `destructive` change can lose messages
//! (lowered limits, retention switches, removed subjects, narrowed filters on
//! an interest stream) and needs `allow_destructive`; a `blocked` change is
//! one the server refuses (immutable fields), reported with both values, the
//! reason and what to do instead. The rules are those of the server version
//! being planned against.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::live::{LiveState, LiveStream};
use super::normalize::{
    self, filters, flag, is_empty, same, text, text_list, CONSUMER_IGNORED, STREAM_IGNORED,
};
use super::render::Render;
use super::schema::{human, Field, Version, CONSUMER_FIELDS, STREAM_FIELDS};
use super::{ConsumerSpec, StreamSpec, Topology, MANAGED_KEY};
use crate::subjects::{collide, is_subset};

/// What apply does with one stream or consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    Destructive,
    Blocked,
    Unmanaged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Destructive => "destructive",
            Action::Blocked => "blocked",
            Action::Unmanaged => "unmanaged",
        }
    }

    /// The action named `text` (as [`Action::as_str`] writes it).
    pub fn parse(text: &str) -> Option<Action> {
        [
            Action::Create,
            Action::Update,
            Action::Unchanged,
            Action::Destructive,
            Action::Blocked,
            Action::Unmanaged,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }

    /// Whether a plan with this change is pending: applying would create,
    /// update, or refuse something.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            Action::Create | Action::Update | Action::Destructive | Action::Blocked
        )
    }
}

/// One planned change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub action: Action,
    pub stream: String,
    /// `None` for the stream itself.
    pub consumer: Option<String>,
    /// field -> (live, desired), in server wire form (nanoseconds, bytes).
    pub diff: BTreeMap<String, (Value, Value)>,
    /// Why a change is blocked or destructive, and what to do about it.
    pub reason: Option<String>,
    /// The request body apply will send (stream config, or consumer create request).
    pub body: Option<Value>,
    /// What became of it in an apply (`None` in a plan).
    pub outcome: Option<Outcome>,
}

/// What an apply did with one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, and the server took it.
    Applied,
    /// Sent, and the server refused it with this error.
    Failed(String),
    /// Not sent: an earlier change failed.
    NotAttempted,
    /// Not sent on purpose: create-only leaves what exists as it is.
    LeftAlone,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Failed(_) => "failed",
            Outcome::NotAttempted => "not_attempted",
            Outcome::LeftAlone => "left_alone",
        }
    }
}

impl Change {
    pub(super) fn what(&self) -> String {
        match &self.consumer {
            Some(c) => format!("consumer {} > {c}", self.stream),
            None => format!("stream {}", self.stream),
        }
    }
}

/// Options that change how a plan reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Destructive changes will be applied (render says so instead of "refused").
    pub allow_destructive: bool,
}

/// The plan: every declared stream and consumer, plus what the server has
/// that the topology does not name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    /// Anything to create, update, or that is destructive or blocked.
    pub fn is_pending(&self) -> bool {
        self.changes.iter().any(|c| c.action.is_pending())
    }

    /// Changes apply would refuse: blocked ones, and destructive ones unless allowed.
    pub fn refused(&self, allow_destructive: bool) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|c| {
                c.action == Action::Blocked
                    || (c.action == Action::Destructive && !allow_destructive)
            })
            .collect()
    }

    /// The machine form: `{"pending", "changes": [{"action", "stream", "consumer", "diff": {field: [live, desired]}, "reason"}]}`.
    pub fn to_value(&self) -> Value {
        let changes: Vec<Value> = self
            .changes
            .iter()
            .map(|c| {
                let diff: Map<String, Value> = c
                    .diff
                    .iter()
                    .map(|(k, (l, d))| (k.clone(), json!([l, d])))
                    .collect();
                let mut v = json!({
                    "action": c.action.as_str(),
                    "stream": c.stream,
                    "consumer": c.consumer,
                    "diff": diff,
                    "reason": c.reason,
                });
                if let Some(o) = &c.outcome {
                    v["outcome"] = json!(o.as_str());
                    v["error"] = match o {
                        Outcome::Failed(e) => json!(e),
                        _ => Value::Null,
                    };
                }
                v
            })
            .collect();
        json!({
            "pending": self.is_pending(),
            "changes": changes,
            "text": self.render(),
            "text_unmanaged": self.render_as(&PlanOptions::default(), Render::Everything),
            "text_changes": self.render_as(&PlanOptions::default(), Render::ChangesOnly),
        })
    }
}

/// Build the plan for `desired` against `live`.
pub fn plan(desired: &Topology, live: &LiveState, opts: &PlanOptions) -> Plan {
    let _ = opts;
    let version = Version::parse(&live.server_version);
    let declared: Vec<&str> = desired.streams().iter().map(|s| s.name.as_str()).collect();
    let foreign: Vec<(String, String)> = live
        .streams
        .iter()
        .filter(|s| !declared.contains(&s.name.as_str()))
        .flat_map(|s| {
            let n = normalize::stream(s.config_map());
            text_list(&n, "subjects")
                .into_iter()
                .map(move |subj| (s.name.clone(), subj))
        })
        .collect();
    let mut stream_changes = Vec::new();
    let mut consumer_changes = Vec::new();
    for spec in desired.streams() {
        let (mut s, c) = plan_stream(spec, live.stream(&spec.name), version, &foreign);
        refuse_replicas(&mut s, spec, live.clustered, live.cluster_size);
        stream_changes.push(s);
        consumer_changes.extend(c);
    }
    let mut changes = Vec::new();
    // Interleave for reading: each stream followed by its consumers.
    for s in stream_changes {
        let name = s.stream.clone();
        changes.push(s);
        changes.extend(
            consumer_changes
                .iter()
                .filter(|c| c.stream == name)
                .cloned(),
        );
    }
    let mut unmanaged: Vec<Change> = live
        .streams
        .iter()
        .map(|s| s.name.as_str())
        .chain(live.others.iter().map(String::as_str))
        .filter(|name| !declared.contains(name))
        .collect::<std::collections::BTreeSet<&str>>()
        .into_iter()
        .map(|name| unmanaged(name, None))
        .collect();
    unmanaged.sort_by(|a, b| a.stream.cmp(&b.stream));
    changes.extend(unmanaged);
    Plan { changes }
}

/// A server that is not clustered refuses a stream with more than one
/// replica (10074): say so in the plan, before anything is sent.
fn refuse_replicas(
    change: &mut Change,
    spec: &StreamSpec,
    clustered: Option<bool>,
    cluster_size: Option<usize>,
) {
    let replicas = spec
        .config
        .get("num_replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if replicas <= 1
        || !matches!(
            change.action,
            Action::Create | Action::Update | Action::Destructive
        )
    {
        return;
    }
    let why = match (clustered, cluster_size) {
        (Some(false), _) => format!(
            "replicas {replicas} on a server that is not clustered: the server refuses it (10074); \
             declare replicas: 1 for this server (e.g. replicas: ${{NATS_REPLICAS:-1}}) or apply it to a cluster"
        ),
        (Some(true), Some(size)) if replicas as usize > size => format!(
            "replicas {replicas} on a cluster of {size} servers (as it advertises them to clients): \
             the server can not place that many (10074); declare replicas: {size} or fewer"
        ),
        _ => return,
    };
    change.action = Action::Blocked;
    change.reason = Some(match change.reason.take() {
        Some(r) => format!("{why}; {r}"),
        None => why,
    });
}

fn unmanaged(stream: &str, consumer: Option<&str>) -> Change {
    Change {
        action: Action::Unmanaged,
        stream: stream.to_string(),
        consumer: consumer.map(str::to_string),
        diff: BTreeMap::new(),
        reason: None,
        body: None,
        outcome: None,
    }
}

/// Plan one stream and its consumers. `foreign` lists (stream, subject) of
/// live streams the topology does not declare.
pub(crate) fn plan_stream(
    spec: &StreamSpec,
    live: Option<&LiveStream>,
    version: Version,
    foreign: &[(String, String)],
) -> (Change, Vec<Change>) {
    let desired = normalize::stream(&spec.config);
    let mut verdict = Verdict::default();
    unsupported_fields(&mut verdict, &spec.config, STREAM_FIELDS, version, "stream");
    for subj in text_list(&desired, "subjects") {
        if let Some((other, theirs)) = foreign.iter().find(|(_, s)| collide(&subj, s)) {
            verdict.block(format!(
                "subject {subj:?} overlaps {theirs:?} of stream {other}, which is on the server but not in this topology; the server would refuse it (10065): change the subject or move it out of {other} first"
            ));
        }
    }
    let (stream_change, live_norm) = match live {
        None => {
            if flag(&spec.config, "sealed") {
                verdict.block("a stream can not be created sealed: create it unsealed, then set sealed: true in a later apply".into());
            }
            let diff = spec
                .config
                .iter()
                .filter(|(k, _)| k.as_str() != "name")
                .map(|(k, v)| (k.clone(), (Value::Null, v.clone())))
                .collect();
            let body = create_stream_body(&spec.config, version);
            (
                verdict.change(Action::Create, &spec.name, None, diff, Some(body)),
                None,
            )
        }
        Some(live) => {
            let live_norm = normalize::stream(live.config_map());
            let mut diff = BTreeMap::new();
            for f in STREAM_FIELDS {
                if STREAM_IGNORED.contains(&f.name) {
                    continue;
                }
                let (l, d) = (&live_norm[f.name], &desired[f.name]);
                if !same(f.name, l, d) {
                    classify_stream_field(&mut verdict, f.name, l, d, version);
                    diff.insert(f.name.to_string(), (l.clone(), d.clone()));
                }
            }
            let body = (!diff.is_empty())
                .then(|| update_body(live.config_map(), &desired, &diff, version, &[]));
            let action = if diff.is_empty() && verdict.is_clear() {
                Action::Unchanged
            } else {
                verdict.action()
            };
            (
                verdict.change(action, &spec.name, None, diff, body),
                Some(live_norm),
            )
        }
    };
    let stream_for_consumers = live_norm.clone().unwrap_or_else(|| desired.clone());
    let mut consumers = Vec::new();
    for c in &spec.consumers {
        let live_c = live.and_then(|l| l.consumer(&c.name));
        consumers.push(plan_consumer(
            spec,
            c,
            &desired,
            &stream_for_consumers,
            live_c.map(|c| c.config_map()),
            version,
        ));
    }
    if let Some(live) = live {
        for lc in &live.consumers {
            let durable = text(lc.config_map(), "durable_name");
            if durable.is_empty() {
                continue; // ephemeral: not something a topology declares
            }
            if !spec.consumers.iter().any(|c| c.name == lc.name) {
                consumers.push(unmanaged(&spec.name, Some(&lc.name)));
            }
        }
    }
    (stream_change, consumers)
}

fn plan_consumer(
    spec: &StreamSpec,
    c: &ConsumerSpec,
    desired_stream: &Map<String, Value>,
    live_stream: &Map<String, Value>,
    live: Option<&Map<String, Value>>,
    version: Version,
) -> Change {
    let mut verdict = Verdict::default();
    unsupported_fields(
        &mut verdict,
        &c.config,
        CONSUMER_FIELDS,
        version,
        "consumer",
    );
    // Defaults that come from the stream use the stream as it will be after apply.
    let desired = normalize::consumer(&c.config, desired_stream);
    let Some(live) = live else {
        let diff = c
            .config
            .iter()
            .filter(|(k, _)| k.as_str() != "durable_name")
            .map(|(k, v)| (k.clone(), (Value::Null, v.clone())))
            .collect();
        let mut config = c.config.clone();
        mark(&mut config, version);
        let body = consumer_request(&spec.name, config);
        return verdict.change(Action::Create, &spec.name, Some(&c.name), diff, Some(body));
    };
    let live_norm = normalize::consumer(live, live_stream);
    let mut diff = BTreeMap::new();
    let retention = text(desired_stream, "retention");
    for f in CONSUMER_FIELDS {
        if CONSUMER_IGNORED.contains(&f.name)
            || f.name == "filter_subject"
            || f.name == "filter_subjects"
        {
            continue;
        }
        let (l, d) = (&live_norm[f.name], &desired[f.name]);
        if !same(f.name, l, d) {
            classify_consumer_field(&mut verdict, f.name, l, d);
            diff.insert(f.name.to_string(), (l.clone(), d.clone()));
        }
    }
    super::settings::split_diff(&mut diff);
    let (lf, df) = (filters(live), filters(&c.config));
    if lf != df {
        let field = if c.config.contains_key("filter_subjects") {
            "filter_subjects"
        } else {
            "filter_subject"
        };
        let shown = |set: &[String]| -> Value {
            if field == "filter_subject" && set.len() <= 1 {
                Value::String(set.first().cloned().unwrap_or_default())
            } else {
                json!(set)
            }
        };
        diff.insert(field.to_string(), (shown(&lf), shown(&df)));
        // Narrowing drops the messages outside the new filters on an interest stream.
        let covered = |f: &String| df.is_empty() || df.iter().any(|d| is_subset(f, d));
        let narrows = if lf.is_empty() {
            !df.is_empty()
        } else {
            !lf.iter().all(covered)
        };
        if retention == "interest" && narrows {
            verdict.destroy("narrowing the filter of a consumer on an interest stream deletes the messages only this consumer was still interested in".into());
        }
    }
    if !same(
        "deliver_subject",
        &live_norm["deliver_subject"],
        &desired["deliver_subject"],
    ) {
        let was_push = !text(&live_norm, "deliver_subject").is_empty();
        let is_push = !text(&desired, "deliver_subject").is_empty();
        if was_push != is_push {
            verdict.block(format!(
                "a {} consumer can not become a {} consumer: declare a new consumer under another name, move the readers, then delete the old one",
                if was_push { "push" } else { "pull" },
                if is_push { "push" } else { "pull" }
            ));
        }
    }
    if diff.is_empty() && verdict.is_clear() {
        return verdict.change(Action::Unchanged, &spec.name, Some(&c.name), diff, None);
    }
    // Settings travel in the metadata update_body writes, never as fields.
    let mut skip = vec!["filter_subject", "filter_subjects"];
    skip.extend_from_slice(super::settings::CONSUMER_SETTING_FIELDS);
    let mut config = update_body(live, &desired, &diff, version, &skip);
    if let Some(obj) = config.as_object_mut() {
        if diff.contains_key("filter_subject") || diff.contains_key("filter_subjects") {
            obj.remove("filter_subject");
            obj.remove("filter_subjects");
            for k in ["filter_subject", "filter_subjects"] {
                if let Some(v) = c.config.get(k) {
                    obj.insert(k.into(), v.clone());
                }
            }
        }
    }
    let body = consumer_request(&spec.name, config.as_object().cloned().unwrap_or_default());
    let action = verdict.action();
    verdict.change(action, &spec.name, Some(&c.name), diff, Some(body))
}

fn consumer_request(stream: &str, config: Map<String, Value>) -> Value {
    json!({"stream_name": stream, "config": Value::Object(config), "action": ""})
}

/// Set natsbus's marker in a config's metadata (servers with metadata only).
fn mark(config: &mut Map<String, Value>, version: Version) {
    if version < Version(2, 10, 0) {
        return;
    }
    let meta = config
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = meta {
        m.retain(|k, _| !k.starts_with("_nats."));
        m.insert(MANAGED_KEY.into(), Value::String("true".into()));
    }
}

fn create_stream_body(config: &Map<String, Value>, version: Version) -> Value {
    let mut body = config.clone();
    mark(&mut body, version);
    Value::Object(body)
}

/// Update replaces the whole config: start from the live one (so fields
/// natsbus does not know survive), drop the server's `_nats.*` metadata, and
/// write the desired value of every field that differs.
fn update_body(
    live: &Map<String, Value>,
    desired: &Map<String, Value>,
    diff: &BTreeMap<String, (Value, Value)>,
    version: Version,
    skip: &[&str],
) -> Value {
    let mut body = live.clone();
    for field in diff.keys() {
        if skip.contains(&field.as_str()) || field == "metadata" {
            continue;
        }
        let value = desired.get(field).cloned().unwrap_or(Value::Null);
        if is_empty(&value) {
            body.remove(field);
        } else {
            body.insert(field.clone(), value);
        }
    }
    // Metadata: the user's keys plus the marker, never the server's own.
    let mut meta = desired
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if version >= Version(2, 10, 0) {
        meta.insert(MANAGED_KEY.into(), Value::String("true".into()));
        body.insert("metadata".into(), Value::Object(meta));
    } else {
        body.remove("metadata");
    }
    Value::Object(body)
}

/// The worst classification among a change's fields, and why.
#[derive(Default)]
struct Verdict {
    destructive: Vec<String>,
    blocked: Vec<String>,
}

impl Verdict {
    fn block(&mut self, why: String) {
        if !self.blocked.contains(&why) {
            self.blocked.push(why);
        }
    }
    fn destroy(&mut self, why: String) {
        if !self.destructive.contains(&why) {
            self.destructive.push(why);
        }
    }
    fn is_clear(&self) -> bool {
        self.blocked.is_empty() && self.destructive.is_empty()
    }
    fn action(&self) -> Action {
        if !self.blocked.is_empty() {
            Action::Blocked
        } else if !self.destructive.is_empty() {
            Action::Destructive
        } else {
            Action::Update
        }
    }
    fn change(
        self,
        proposed: Action,
        stream: &str,
        consumer: Option<&str>,
        diff: BTreeMap<String, (Value, Value)>,
        body: Option<Value>,
    ) -> Change {
        let action = if !self.blocked.is_empty() {
            Action::Blocked
        } else if !self.destructive.is_empty() && proposed != Action::Create {
            Action::Destructive
        } else {
            proposed
        };
        let reasons: Vec<String> = self.blocked.into_iter().chain(self.destructive).collect();
        Change {
            action,
            stream: stream.to_string(),
            consumer: consumer.map(str::to_string),
            diff,
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            body,
            outcome: None,
        }
    }
}

fn unsupported_fields(
    v: &mut Verdict,
    config: &Map<String, Value>,
    fields: &[Field],
    version: Version,
    what: &str,
) {
    for (k, value) in config {
        if let Some(f) = fields.iter().find(|f| f.name == k) {
            if f.since > version && !is_empty(value) {
                v.block(format!(
                    "the server runs {version}, which does not know the {what} field {k} (it needs {} or newer): upgrade the server or remove {k}",
                    f.since
                ));
            }
        }
    }
}

fn lowered(field: &str, live: &Value, desired: &Value) -> bool {
    let unlimited = |n: i64| if field == "max_age" { n == 0 } else { n < 0 };
    match (live.as_i64(), desired.as_i64()) {
        (Some(l), Some(d)) => match (unlimited(l), unlimited(d)) {
            (true, false) => true,
            (false, false) => d < l,
            _ => false,
        },
        _ => false,
    }
}

fn classify_stream_field(
    v: &mut Verdict,
    field: &str,
    live: &Value,
    desired: &Value,
    version: Version,
) {
    let shown = |x: &Value| human(STREAM_FIELDS, field, x);
    let (l, d) = (shown(live), shown(desired));
    match field {
        "storage" => v.block(format!(
            "the storage type of a stream can not change ({l} -> {d}): create a new stream with storage {d}, copy the messages into it with sources (or a mirror), move publishers and consumers over, then delete the old stream"
        )),
        "retention" => {
            if l == "workqueue" || d == "workqueue" || version < Version(2, 10, 0) {
                v.block(format!(
                    "retention can not change {l} -> {d}{}: create a new stream with retention {d} and move the data with sources",
                    if version < Version(2, 10, 0) { format!(" on server {version}") } else { " (to or from workqueue)".into() }
                ));
            } else if d == "interest" {
                v.destroy(format!(
                    "switching retention {l} -> {d} can delete messages (interest retention drops messages no consumer is waiting for; a stream with no consumers is emptied)"
                ));
            }
            // interest -> limits keeps every message: a plain update.
        }
        "max_consumers" if version < Version(2, 12, 5) => v.block(format!(
            "max_consumers can not change on server {version} (mutable from 2.12.5 / 2.14.0): upgrade the server or keep max_consumers at {l}"
        )),
        "max_msgs" | "max_bytes" | "max_age" | "max_msgs_per_subject" | "max_msg_size" if lowered(field, live, desired) => {
            v.destroy(format!(
                "lowering {field} ({l} -> {d}) deletes the stored messages above the new limit"
            ));
        }
        "subjects" => {
            let want: Vec<&Value> = desired.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            let removed: Vec<String> = live
                .as_array()
                .map(|a| a.iter().filter(|s| !want.contains(s)).filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if !removed.is_empty() {
                v.destroy(format!(
                    "removing subjects {} stops storing them: publishes there will fail or be lost",
                    removed.join(", ")
                ));
            }
        }
        "mirror" => {
            if desired.is_null() && version >= Version(2, 12, 0) {
                v.destroy("removing mirror promotes the stream to a normal stream; this can not be undone".into());
            } else {
                v.block(format!(
                    "the mirror of a stream can not be changed ({l} -> {d}): create a new stream with the mirror you want"
                ));
            }
        }
        "sealed" => {
            if desired == &Value::Bool(true) {
                v.destroy("sealing a stream is permanent: no more messages, deletes or purges".into());
            } else {
                v.block("a sealed stream can not be unsealed: create a new stream and copy the data with sources".into());
            }
        }
        "deny_delete" | "deny_purge" if desired == &Value::Bool(false) => v.block(format!(
            "{field} can only be switched on, never off again: create a new stream without it and copy the data with sources"
        )),
        "allow_msg_ttl" => {
            if desired == &Value::Bool(false) {
                v.block("per-message TTLs can not be switched off once on: create a new stream without them".into());
            } else if version < Version(2, 11, 2) {
                v.block(format!("server {version} can not switch on allow_msg_ttl for an existing stream (2.11.2 or newer can)"));
            }
        }
        "allow_msg_schedules" if desired == &Value::Bool(false) => {
            v.block("message schedules can not be switched off once on".into())
        }
        "allow_msg_counter" | "persist_mode" => v.block(format!(
            "{field} is fixed when a stream is created ({l} -> {d}): create a new stream and copy the data with sources"
        )),
        "republish" if version < Version(2, 10, 0) => {
            v.block(format!("republish can not be changed on server {version} (2.10 or newer can)"))
        }
        _ => {}
    }
}

const CONSUMER_IMMUTABLE: &[&str] = &[
    "deliver_policy",
    "opt_start_seq",
    "opt_start_time",
    "ack_policy",
    "replay_policy",
    "idle_heartbeat",
    "flow_control",
    "max_waiting",
    "mem_storage",
];

fn classify_consumer_field(v: &mut Verdict, field: &str, live: &Value, desired: &Value) {
    if CONSUMER_IMMUTABLE.contains(&field) {
        let shown = |x: &Value| human(CONSUMER_FIELDS, field, x);
        v.block(format!(
            "{field} of an existing consumer can not change ({} -> {}): declare a new consumer under another name, move the readers, then delete the old one",
            shown(live),
            shown(desired)
        ));
    }
}

/// Convenience for tests and callers that hold only configs.
pub fn stream_config_is_managed(config: &Value) -> bool {
    config
        .get("metadata")
        .and_then(|m| m.get(MANAGED_KEY))
        .and_then(Value::as_str)
        == Some("true")
}
