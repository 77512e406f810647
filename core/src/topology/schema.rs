//! The fields natsbus knows, and turning what a person wrote into wire form.
//!
//! Field names are the server's own JSON names so a config printed by
//! `nats stream info --json` maps 1:1. Each field has a kind that says how a
//! human value is read (`7d`, `1GB`, `unlimited`) and the first server version
//! that knows it: from 2.12 the server rejects unknown JSON fields, so apply
//! must never send a field the target server does not know.

use serde_json::{Map, Value};

use super::source::{join, Lines};
use super::units::{format_duration, format_size, parse_duration, parse_size};
use crate::error::Problem;

/// A server version, for deciding which fields and rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parse `2.15.1`, `v2.12.0-RC.1`; unknown text reads as the newest rules.
    pub fn parse(text: &str) -> Version {
        let core = text.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next().unwrap_or("");
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        match (
            parts.next().flatten(),
            parts.next().flatten(),
            parts.next().flatten(),
        ) {
            (Some(a), Some(b), c) => Version(a, b, c.unwrap_or(0)),
            _ => Version(u32::MAX, 0, 0),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bool,
    /// Signed integer.
    Int,
    /// Non-negative integer.
    UInt,
    /// A count where -1 (or `unlimited`) means no limit.
    Count,
    /// Bytes; human sizes; -1/`unlimited` for no limit.
    Size,
    /// Like `Size` but the server stores an int32.
    Size32,
    /// Nanoseconds; human durations.
    Duration,
    /// Like `Duration`, and `unlimited`/-1 mean 0 (the server's "no limit" for max_age).
    MaxAge,
    DurationList,
    Enum(&'static [&'static str]),
    Subject,
    Subjects,
    StrList,
    /// RFC 3339 time.
    Time,
    /// String to string map (metadata).
    Map,
    Object(&'static [Field]),
    ObjectList(&'static [Field]),
    /// Sampling: `"100"`, `"50%"` or a number.
    SampleFreq,
    /// Passed through untouched.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// First server version that accepts this field.
    pub since: Version,
}

const fn f(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        since: Version(2, 9, 0),
    }
}

const fn fv(name: &'static str, kind: Kind, since: Version) -> Field {
    Field { name, kind, since }
}

const V210: Version = Version(2, 10, 0);
const V211: Version = Version(2, 11, 0);
const V212: Version = Version(2, 12, 0);
const V214: Version = Version(2, 14, 0);

pub const RETENTION: &[&str] = &["limits", "interest", "workqueue"];
pub const STORAGE: &[&str] = &["file", "memory"];
pub const DISCARD: &[&str] = &["old", "new"];
pub const COMPRESSION: &[&str] = &["none", "s2"];
pub const PERSIST_MODE: &[&str] = &["default", "async"];
pub const DELIVER_POLICY: &[&str] = &[
    "all",
    "last",
    "new",
    "by_start_sequence",
    "by_start_time",
    "last_per_subject",
];
pub const ACK_POLICY: &[&str] = &["none", "all", "explicit", "flow_control"];
pub const REPLAY_POLICY: &[&str] = &["instant", "original"];
pub const PRIORITY_POLICY: &[&str] = &["none", "overflow", "pinned_client", "prioritized"];

const TRANSFORM: &[Field] = &[f("src", Kind::Str), f("dest", Kind::Str)];
const EXTERNAL: &[Field] = &[f("api", Kind::Str), f("deliver", Kind::Str)];
pub const SOURCE: &[Field] = &[
    f("name", Kind::Str),
    f("opt_start_seq", Kind::UInt),
    f("opt_start_time", Kind::Time),
    f("filter_subject", Kind::Str),
    fv("subject_transforms", Kind::ObjectList(TRANSFORM), V210),
    f("external", Kind::Object(EXTERNAL)),
    fv("consumer", Kind::Raw, V214),
];
const PLACEMENT: &[Field] = &[
    f("cluster", Kind::Str),
    f("tags", Kind::StrList),
    f("preferred", Kind::Str),
];
const REPUBLISH: &[Field] = &[
    f("src", Kind::Str),
    f("dest", Kind::Str),
    f("headers_only", Kind::Bool),
];
const CONSUMER_LIMITS: &[Field] = &[
    f("inactive_threshold", Kind::Duration),
    f("max_ack_pending", Kind::Int),
];

pub const STREAM_FIELDS: &[Field] = &[
    f("name", Kind::Str),
    f("description", Kind::Str),
    f("subjects", Kind::Subjects),
    f("retention", Kind::Enum(RETENTION)),
    f("max_consumers", Kind::Count),
    f("max_msgs", Kind::Count),
    f("max_bytes", Kind::Size),
    f("max_age", Kind::MaxAge),
    f("max_msgs_per_subject", Kind::Count),
    f("max_msg_size", Kind::Size32),
    f("discard", Kind::Enum(DISCARD)),
    f("storage", Kind::Enum(STORAGE)),
    f("num_replicas", Kind::Int),
    f("no_ack", Kind::Bool),
    f("duplicate_window", Kind::Duration),
    f("placement", Kind::Object(PLACEMENT)),
    f("mirror", Kind::Object(SOURCE)),
    f("sources", Kind::ObjectList(SOURCE)),
    fv("compression", Kind::Enum(COMPRESSION), V210),
    fv("first_seq", Kind::UInt, V210),
    fv("subject_transform", Kind::Object(TRANSFORM), V210),
    f("republish", Kind::Object(REPUBLISH)),
    f("allow_direct", Kind::Bool),
    f("mirror_direct", Kind::Bool),
    f("discard_new_per_subject", Kind::Bool),
    f("sealed", Kind::Bool),
    f("deny_delete", Kind::Bool),
    f("deny_purge", Kind::Bool),
    f("allow_rollup_hdrs", Kind::Bool),
    fv("consumer_limits", Kind::Object(CONSUMER_LIMITS), V210),
    fv("metadata", Kind::Map, V210),
    fv("allow_msg_ttl", Kind::Bool, V211),
    fv("subject_delete_marker_ttl", Kind::Duration, V211),
    fv("allow_msg_counter", Kind::Bool, V212),
    fv("allow_atomic", Kind::Bool, V212),
    fv("allow_msg_schedules", Kind::Bool, V212),
    fv("persist_mode", Kind::Enum(PERSIST_MODE), V212),
    fv("allow_batched", Kind::Bool, V214),
];

pub const CONSUMER_FIELDS: &[Field] = &[
    f("durable_name", Kind::Str),
    f("name", Kind::Str),
    f("description", Kind::Str),
    f("deliver_policy", Kind::Enum(DELIVER_POLICY)),
    f("opt_start_seq", Kind::UInt),
    f("opt_start_time", Kind::Time),
    f("ack_policy", Kind::Enum(ACK_POLICY)),
    f("ack_wait", Kind::Duration),
    f("max_deliver", Kind::Count),
    f("backoff", Kind::DurationList),
    f("filter_subject", Kind::Subject),
    fv("filter_subjects", Kind::Subjects, V210),
    f("replay_policy", Kind::Enum(REPLAY_POLICY)),
    f("rate_limit_bps", Kind::UInt),
    f("sample_freq", Kind::SampleFreq),
    f("max_waiting", Kind::Int),
    f("max_ack_pending", Kind::Count),
    f("flow_control", Kind::Bool),
    f("headers_only", Kind::Bool),
    f("max_batch", Kind::Int),
    f("max_expires", Kind::Duration),
    f("max_bytes", Kind::Size),
    f("deliver_subject", Kind::Subject),
    f("deliver_group", Kind::Str),
    f("idle_heartbeat", Kind::Duration),
    f("inactive_threshold", Kind::Duration),
    f("num_replicas", Kind::Int),
    f("mem_storage", Kind::Bool),
    fv("metadata", Kind::Map, V210),
    fv("pause_until", Kind::Time, V211),
    fv("priority_groups", Kind::StrList, V211),
    fv("priority_policy", Kind::Enum(PRIORITY_POLICY), V211),
    fv("priority_timeout", Kind::Duration, V211),
];

pub fn field(fields: &'static [Field], name: &str) -> Option<&'static Field> {
    fields.iter().find(|f| f.name == name)
}

/// Accepted spellings people use for enum values (natscli's `work`, `mem`).
fn enum_alias(value: &str) -> &str {
    match value {
        "work" | "work_queue" | "wq" => "workqueue",
        "mem" => "memory",
        "by_start_seq" => "by_start_sequence",
        _ => value,
    }
}

/// Where problems go while converting: the file, its lines, and the list.
pub struct Ctx<'a> {
    pub file: Option<&'a str>,
    pub lines: &'a Lines,
    pub problems: Vec<Problem>,
}

impl Ctx<'_> {
    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    pub fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.map(str::to_string),
            line: self.line(path),
            field: path.to_string(),
            message: message.into(),
        });
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest name among `candidates`, if it is close enough to be a typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, c), c))
        .filter(|(d, c)| {
            *d <= (c.len() / 3).max(2)
                || (lower.len() >= 3
                    && c.len() >= 3
                    && (c.starts_with(lower.as_str()) || lower.starts_with(c)))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub fn unknown_field_message(name: &str, candidates: &[&str]) -> String {
    match closest(name, candidates.iter().copied()) {
        Some(c) => format!("unknown field {name:?}: did you mean {c:?}?"),
        None => format!(
            "unknown field {name:?}: known fields are {}",
            candidates.join(", ")
        ),
    }
}

/// Convert an object of human values into wire form, reporting every problem.
/// `extra` names keys the caller handles itself (e.g. `consumers`).
pub fn convert_object(
    ctx: &mut Ctx,
    raw: &Map<String, Value>,
    fields: &'static [Field],
    path: &str,
    extra: &[&str],
) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in raw {
        let p = join(path, key);
        if extra.contains(&key.as_str()) {
            continue;
        }
        // `replicas` is the name people use; the server calls it num_replicas.
        let name = if key == "replicas" && field(fields, "num_replicas").is_some() {
            if raw.contains_key("num_replicas") {
                ctx.problem(&p, "both replicas and num_replicas are given: keep one");
                continue;
            }
            "num_replicas"
        } else {
            key.as_str()
        };
        let Some(spec) = field(fields, name) else {
            // A consumer's field written on its stream (Pulse's `--max-deliver 3`
            // on `nats stream add`, say): say where it belongs.
            if field(fields, "retention").is_some()
                && (field(CONSUMER_FIELDS, key).is_some()
                    || super::settings::CONSUMER_SETTING_FIELDS.contains(&key.as_str()))
            {
                ctx.problem(
                    &p,
                    format!(
                        "{key} is a consumer field, not a stream one: give it on a consumer, \
                         under this stream's consumers: (e.g. consumers: {{worker: {{{key}: ...}}}})"
                    ),
                );
                continue;
            }
            let mut names: Vec<&str> = fields.iter().map(|f| f.name).collect();
            names.extend_from_slice(extra);
            ctx.problem(&p, unknown_field_message(key, &names));
            continue;
        };
        if value.is_null() {
            // `field:` with nothing after it: treat as not given.
            continue;
        }
        if let Some(v) = convert_value(ctx, value, spec.kind, &p) {
            out.insert(name.to_string(), v);
        }
    }
    out
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// A whole number that fits the server's 64-bit fields; `None` for anything
/// else, including whole numbers out of range (never clamped).
fn as_int(v: &Value) -> Option<i64> {
    // 2^63 as f64: a float at or above it does not fit an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= -LIMIT && *f < LIMIT)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The problem with a whole number that does not fit, if that is the problem.
fn range_problem(v: &Value) -> Option<String> {
    let whole_but_too_big = match v {
        Value::Number(n) => {
            n.as_i64().is_none() && (n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0))
        }
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix('-').unwrap_or(t);
            !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && t.parse::<i64>().is_err()
        }
        _ => false,
    };
    whole_but_too_big.then(|| {
        format!(
            "{} is out of range: the server takes whole numbers from {} to {}",
            describe(v),
            i64::MIN,
            i64::MAX
        )
    })
}

/// Convert `value` to the wire form of `kind`, reporting a problem at `p`
/// when it does not fit. One function per kind below.
pub fn convert_value(ctx: &mut Ctx, value: &Value, kind: Kind, p: &str) -> Option<Value> {
    match kind {
        Kind::Raw => Some(value.clone()),
        Kind::Str => convert_text(ctx, value, p),
        Kind::Bool => convert_boolean(ctx, value, p),
        Kind::Int | Kind::UInt => convert_integer(ctx, value, kind, p),
        Kind::Count => convert_count(ctx, value, p),
        Kind::Size | Kind::Size32 => convert_size(ctx, value, kind, p),
        Kind::Duration | Kind::MaxAge => convert_duration(ctx, value, kind, p),
        Kind::DurationList => convert_duration_list(ctx, value, p),
        Kind::Enum(allowed) => convert_enumerated(ctx, value, allowed, p),
        Kind::Subject => convert_subject(ctx, value, p),
        Kind::Subjects | Kind::StrList => convert_string_list(ctx, value, kind, p),
        Kind::Time => convert_time(ctx, value, p),
        Kind::Map => convert_map(ctx, value, p),
        Kind::Object(fields) => convert_one_object(ctx, value, fields, p),
        Kind::ObjectList(fields) => convert_object_list(ctx, value, fields, p),
        Kind::SampleFreq => convert_sample_frequency(ctx, value, p),
    }
}

fn is_unlimited(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.trim().eq_ignore_ascii_case("unlimited"))
}

fn convert_text(ctx: &mut Ctx, value: &Value, p: &str) -> Option<Value> {
    match value {
        Value::String(s) => Some(Value::String(s.clone())),
        Value::Number(n) => Some(Value::String(n.to_string())),
        other => {
            ctx.problem(p, format!("expected text, got {}", describe(other)));
            None
        }
    }
}

fn convert_boolean(ctx: &mut Ctx, value: &Value, p: &str) -> Option<Value> {
    match value {
        Value::Bool(b) => Some(Value::Bool(*b)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Some(Value::Bool(true)),
            "false" | "no" | "off" => Some(Value::Bool(false)),
            _ => {
                ctx.problem(p, format!("expected true or false, got {s:?}"));
                None
            }
        },
        other => {
            ctx.problem(
                p,
                format!("expected true or false, got {}", describe(other)),
            );
            None
        }
    }
}

fn convert_integer(ctx: &mut Ctx, value: &Value, kind: Kind, p: &str) -> Option<Value> {
    match (value, as_int(value)) {
        (Value::Number(n), _) if kind == Kind::UInt && n.is_u64() => Some(value.clone()),
        (_, Some(i)) if kind == Kind::UInt && i < 0 => {
            ctx.problem(p, format!("must not be negative, got {i}"));
            None
        }
        (_, Some(i)) => Some(Value::from(i)),
        (other, None) => {
            let problem = range_problem(other)
                .unwrap_or_else(|| format!("expected a whole number, got {}", describe(other)));
            ctx.problem(p, problem);
            None
        }
    }
}

fn convert_count(ctx: &mut Ctx, value: &Value, p: &str) -> Option<Value> {
    if is_unlimited(value) {
        return Some(Value::from(-1));
    }
    match as_int(value) {
        Some(i) if i >= -1 => Some(Value::from(i)),
        Some(i) => {
            ctx.problem(
                p,
                format!("{i} is not allowed: use a positive number, or -1/unlimited for no limit"),
            );
            None
        }
        None => {
            let problem = range_problem(value).unwrap_or_else(|| {
                format!(
                    "expected a whole number or unlimited, got {}",
                    describe(value)
                )
            });
            ctx.problem(p, problem);
            None
        }
    }
}

fn convert_size(ctx: &mut Ctx, value: &Value, kind: Kind, p: &str) -> Option<Value> {
    let bytes = if is_unlimited(value) {
        Ok(-1)
    } else {
        match value {
            Value::Number(_) => as_int(value).ok_or_else(|| {
                range_problem(value)
                    .unwrap_or_else(|| format!("{value} is not a whole number of bytes"))
            }),
            Value::String(s) => parse_size(s),
            other => Err(format!(
                "expected a size (like 512KB, 1GB) or bytes, got {}",
                describe(other)
            )),
        }
    };
    match bytes {
        Ok(b) if b < -1 => {
            ctx.problem(
                p,
                format!("{b} is not allowed: use a size, or -1/unlimited for no limit"),
            );
            None
        }
        Ok(b) if kind == Kind::Size32 && b > i64::from(i32::MAX) => {
            ctx.problem(p, format!("{b} bytes is more than the server allows here (at most {} bytes, just under 2GiB)", i32::MAX));
            None
        }
        Ok(b) => Some(Value::from(b)),
        Err(e) => {
            ctx.problem(p, e);
            None
        }
    }
}

fn convert_duration(ctx: &mut Ctx, value: &Value, kind: Kind, p: &str) -> Option<Value> {
    if kind == Kind::MaxAge && (is_unlimited(value) || as_int(value) == Some(-1)) {
        return Some(Value::from(0));
    }
    match duration_of(value) {
        Ok(ns) if ns < 0 => {
            ctx.problem(
                p,
                format!("a duration can not be negative, got {}", describe(value)),
            );
            None
        }
        Ok(ns) => Some(Value::from(ns)),
        Err(e) => {
            ctx.problem(p, e);
            None
        }
    }
}

fn convert_duration_list(ctx: &mut Ctx, value: &Value, p: &str) -> Option<Value> {
    let Value::Array(items) = value else {
        ctx.problem(
            p,
            format!(
                "expected a list of durations (like [1s, 5s, 30s]), got {}",
                describe(value)
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match duration_of(item) {
            Ok(ns) if ns > 0 => out.push(Value::from(ns)),
            Ok(_) => {
                ctx.problem(
                    &join(p, &i.to_string()),
                    "each step must be a positive duration",
                );
                ok = false;
            }
            Err(e) => {
                ctx.problem(&join(p, &i.to_string()), e);
                ok = false;
            }
        }
    }
    ok.then_some(Value::Array(out))
}

fn convert_enumerated(
    ctx: &mut Ctx,
    value: &Value,
    allowed: &'static [&'static str],
    p: &str,
) -> Option<Value> {
    let Value::String(s) = value else {
        ctx.problem(
            p,
            format!(
                "expected one of {}, got {}",
                allowed.join(", "),
                describe(value)
            ),
        );
        return None;
    };
    let lower = s.trim().to_ascii_lowercase();
    let canon = enum_alias(&lower);
    if allowed.contains(&canon) {
        Some(Value::String(canon.to_string()))
    } else {
        let hint = closest(&lower, allowed.iter().copied())
            .map(|c| format!(" (did you mean {c:?}?)"))
            .unwrap_or_default();
        ctx.problem(
            p,
            format!("{s:?} is not one of {}{hint}", allowed.join(", ")),
        );
        None
    }
}

fn convert_subject(ctx: &mut Ctx, value: &Value, p: &str) -> Option<Value> {
    match value {
        Value::String(s) => Some(Value::String(s.clone())),
        other => {
            ctx.problem(p, format!("expected a subject, got {}", describe(other)));
            None
        }
    }
}

fn convert_string_list(ctx: &mut Ctx, value: &Value, kind: Kind, p: &str) -> Option<Value> {
    match value {
        // A single subject is accepted where a list is expected.
        Value::String(s) if kind == Kind::Subjects => {
            Some(Value::Array(vec![Value::String(s.clone())]))
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(Value::String(s.clone())),
                    other => ctx.problem(
                        &join(p, &i.to_string()),
                        format!("expected text, got {}", describe(other)),
                    ),
                }
            }
            (out.len() == items.len()).then_some(Value::Array(out))
        }
        other => {
            ctx.problem(
                p,
                format!("expected a list of strings, got {}", describe(other)),
            );
            None
        }
    }
}

fn convert_time(ctx: &mut Ctx, value: &Value, p: &str) -> Option<Value> {
    match value {
        Value::String(s) => {
            match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
                Ok(_) => Some(Value::String(s.clone())),
                Err(e) => {
                    ctx.problem(
                        p,
                        format!("{s:?} is not an RFC 3339 time like 2024-01-31T12:00:00Z: {e}"),
                    );
                    None
                }
            }
        }
        other => {
            ctx.problem(
                p,
                format!("expected an RFC 3339 time, got {}", describe(other)),
            );
            None
        }
    }
}

fn convert_map(ctx: &mut Ctx, value: &Value, p: &str) -> Option<Value> {
    match value {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), Value::String(s.clone()));
                    }
                    Value::Number(_) | Value::Bool(_) => {
                        out.insert(k.clone(), Value::String(v.to_string()));
                    }
                    other => ctx.problem(
                        &join(p, k),
                        format!("metadata values must be text, got {}", describe(other)),
                    ),
                }
            }
            Some(Value::Object(out))
        }
        other => {
            ctx.problem(
                p,
                format!(
                    "expected a mapping of text to text, got {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

fn convert_one_object(
    ctx: &mut Ctx,
    value: &Value,
    fields: &'static [Field],
    p: &str,
) -> Option<Value> {
    match value {
        Value::Object(m) => Some(Value::Object(convert_object(ctx, m, fields, p, &[]))),
        other => {
            ctx.problem(p, format!("expected a mapping, got {}", describe(other)));
            None
        }
    }
}

fn convert_object_list(
    ctx: &mut Ctx,
    value: &Value,
    fields: &'static [Field],
    p: &str,
) -> Option<Value> {
    match value {
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let ip = join(p, &i.to_string());
                match item {
                    Value::Object(m) => {
                        out.push(Value::Object(convert_object(ctx, m, fields, &ip, &[])))
                    }
                    other => {
                        ctx.problem(&ip, format!("expected a mapping, got {}", describe(other)))
                    }
                }
            }
            Some(Value::Array(out))
        }
        other => {
            ctx.problem(
                p,
                format!("expected a list of mappings, got {}", describe(other)),
            );
            None
        }
    }
}

fn convert_sample_frequency(ctx: &mut Ctx, value: &Value, p: &str) -> Option<Value> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => {
            ctx.problem(
                p,
                format!(
                    "expected a percentage like 50 or \"50%\", got {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    match text.trim_end_matches('%').parse::<u32>() {
        Ok(n) if n <= 100 => Some(Value::String(text)),
        _ => {
            ctx.problem(
                p,
                format!("{text:?} is not a sampling percentage between 0 and 100"),
            );
            None
        }
    }
}

fn duration_of(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            range_problem(value).unwrap_or_else(|| {
                format!("{n} is not a whole number of nanoseconds; write a duration like 30s")
            })
        }),
        Value::String(s) => parse_duration(s),
        other => Err(format!(
            "expected a duration like 30s, got {}",
            describe(other)
        )),
    }
}

/// A value shown the way people write it (`7d`, `1GiB`, `unlimited`).
pub fn human(fields: &'static [Field], field: &str, v: &Value) -> String {
    let kind = fields.iter().find(|f| f.name == field).map(|f| f.kind);
    match (kind, v) {
        (_, Value::Null) => "(none)".into(),
        (Some(Kind::Duration), Value::Number(n)) => {
            n.as_i64().map_or(n.to_string(), format_duration)
        }
        (Some(Kind::MaxAge), Value::Number(n)) => match n.as_i64() {
            Some(0) => "unlimited".into(),
            Some(ns) => format_duration(ns),
            None => n.to_string(),
        },
        (Some(Kind::Size | Kind::Size32), Value::Number(n)) => {
            n.as_i64().map_or(n.to_string(), format_size)
        }
        (Some(Kind::Count), Value::Number(n)) if n.as_i64() == Some(-1) => "unlimited".into(),
        (Some(Kind::DurationList), Value::Array(a)) => format!(
            "[{}]",
            a.iter()
                .map(|x| x.as_i64().map_or(x.to_string(), format_duration))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (_, Value::String(s)) if s.is_empty() => "\"\"".into(),
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(Version::parse("2.15.1"), Version(2, 15, 1));
        assert_eq!(Version::parse("v2.12.0-RC.1"), Version(2, 12, 0));
        assert_eq!(Version::parse("2.10"), Version(2, 10, 0));
        assert!(Version::parse("garbage") > Version(2, 15, 1));
        assert!(Version(2, 9, 10) < Version(2, 10, 0));
    }

    #[test]
    fn suggestions() {
        let names: Vec<&str> = STREAM_FIELDS.iter().map(|f| f.name).collect();
        assert_eq!(closest("max_ag", names.iter().copied()), Some("max_age"));
        assert_eq!(closest("subject", names.iter().copied()), Some("subjects"));
        assert_eq!(
            closest("retension", names.iter().copied()),
            Some("retention")
        );
        assert_eq!(
            closest("duplicate-window", names.iter().copied()),
            Some("duplicate_window")
        );
        assert_eq!(closest("zzzzzzzzzz", names.iter().copied()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
