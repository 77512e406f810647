//! natsbus settings: what a topology may say about a consumer that the
//! server has no field for. Each is kept in the consumer's metadata under
//! `natsbus.<name>`, so that plan and verify compare it like any field and
//! export writes it back as the setting, not as metadata.
//!
//! - `dead_letter: <subject>`: where a worker sends the messages it gives
//!   up on (see the workers in the Python package, and the rule in
//!   validate.rs that the subject belongs to another declared stream).
//! - the thresholds `natsbus check` and `bus.check()` hold the consumer to:
//!   `lag_warn`/`lag_crit` (messages not yet delivered),
//!   `ack_pending_warn`/`ack_pending_crit` (delivered, not yet acked) and
//!   `inactive_warn`/`inactive_crit` (time since the consumer was last
//!   active). Counts are kept as decimal text, durations in their shortest
//!   form (`5m`), so that `300s` and `5m` plan as the same value.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::schema::Ctx;
use super::source::join;
use crate::subjects;

/// One setting: its field in the topology and its metadata key.
pub struct Setting {
    pub field: &'static str,
    pub key: &'static str,
    /// The value as kept in the metadata, or why it can not be used.
    normalize: fn(&Value) -> Result<String, String>,
}

fn publish_subject(v: &Value) -> Result<String, String> {
    let Value::String(s) = v else {
        return Err(format!("must be text, got {v}"));
    };
    if let Some(problem) = subjects::subject_problem(s) {
        return Err(problem);
    }
    if !subjects::is_literal(s) {
        return Err(format!(
            "{s:?} has a wildcard: dead letters are published to it, give one subject"
        ));
    }
    Ok(s.clone())
}

fn count(v: &Value) -> Result<String, String> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(t) => t.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.map(|n| n.to_string())
        .ok_or_else(|| format!("must be a whole number of messages (0 or more), got {v}"))
}

fn duration(v: &Value) -> Result<String, String> {
    let Value::String(t) = v else {
        return Err(format!("must be a duration such as 30s or 5m, got {v}"));
    };
    let ns = super::units::parse_duration(t)?;
    if ns <= 0 {
        return Err(format!("must be longer than 0, got {t:?}"));
    }
    Ok(super::units::format_duration(ns))
}

const fn setting(
    field: &'static str,
    key: &'static str,
    normalize: fn(&Value) -> Result<String, String>,
) -> Setting {
    Setting {
        field,
        key,
        normalize,
    }
}

/// The consumer settings.
pub const CONSUMER_SETTINGS: &[Setting] = &[
    setting("dead_letter", "natsbus.dead_letter", publish_subject),
    setting("lag_warn", "natsbus.lag_warn", count),
    setting("lag_crit", "natsbus.lag_crit", count),
    setting("ack_pending_warn", "natsbus.ack_pending_warn", count),
    setting("ack_pending_crit", "natsbus.ack_pending_crit", count),
    setting("inactive_warn", "natsbus.inactive_warn", duration),
    setting("inactive_crit", "natsbus.inactive_crit", duration),
];

/// The topology field names of the consumer settings (skipped by the
/// server-field conversion).
pub const CONSUMER_SETTING_FIELDS: &[&str] = &[
    "dead_letter",
    "lag_warn",
    "lag_crit",
    "ack_pending_warn",
    "ack_pending_crit",
    "inactive_warn",
    "inactive_crit",
];

/// Warning and critical thresholds that belong together.
const PAIRS: &[(&str, &str)] = &[
    ("lag_warn", "lag_crit"),
    ("ack_pending_warn", "ack_pending_crit"),
    ("inactive_warn", "inactive_crit"),
];

/// Move the settings of a consumer as written (`raw`) into the metadata of
/// its converted `config`, reporting values that can not be used.
pub fn apply(ctx: &mut Ctx, raw: &Map<String, Value>, path: &str, config: &mut Map<String, Value>) {
    for s in CONSUMER_SETTINGS {
        let Some(value) = raw.get(s.field) else {
            continue;
        };
        let at = join(path, s.field);
        if value.is_null() {
            continue;
        }
        let text = match (s.normalize)(value) {
            Ok(t) => t,
            Err(problem) => {
                ctx.problem(&at, format!("invalid {}: {problem}", s.field));
                continue;
            }
        };
        let meta = config
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(meta) = meta.as_object_mut() else {
            continue;
        };
        match meta.get(s.key) {
            Some(Value::String(given)) if *given != text => {
                ctx.problem(
                    &at,
                    format!(
                        "{} {text:?} differs from metadata {:?} = {given:?}: give it once, as {}",
                        s.field, s.key, s.field
                    ),
                );
            }
            _ => {
                meta.insert(s.key.to_string(), Value::String(text));
            }
        }
    }
    check_pairs(ctx, path, config);
}

/// Report a warning threshold above its critical one.
fn check_pairs(ctx: &mut Ctx, path: &str, config: &Map<String, Value>) {
    for (warn, crit) in PAIRS {
        let (Some(w), Some(c)) = (get(config, warn), get(config, crit)) else {
            continue;
        };
        let value = |t: &str| {
            t.parse::<u64>()
                .ok()
                .map(|n| n as i128)
                .or_else(|| super::units::parse_duration(t).ok().map(i128::from))
        };
        if let (Some(wv), Some(cv)) = (value(w), value(c)) {
            if wv > cv {
                ctx.problem(
                    &join(path, warn),
                    format!("{warn} {w} is above {crit} {c}: the warning must come first"),
                );
            }
        }
    }
}

/// A setting of a (converted or live) consumer config, from its metadata.
pub fn get<'a>(config: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    let key = CONSUMER_SETTINGS.iter().find(|s| s.field == field)?.key;
    config.get("metadata")?.get(key)?.as_str()
}

/// For export: turn the settings kept in a consumer's metadata back into
/// their fields (and drop an emptied metadata).
pub fn lift(config: &mut Map<String, Value>) {
    let Some(Value::Object(meta)) = config.get_mut("metadata") else {
        return;
    };
    let mut lifted = Vec::new();
    for s in CONSUMER_SETTINGS {
        if let Some(v) = meta.shift_remove(s.key) {
            lifted.push((s.field, v));
        }
    }
    if meta.is_empty() {
        config.shift_remove("metadata");
    }
    for (field, v) in lifted {
        config.insert(field.to_string(), v);
    }
}

/// In a plan's diff, show a changed setting as its own field (`dead_letter:
/// a -> b`) rather than as a change of `metadata`, which stays in the diff
/// only if other metadata changed too.
pub fn split_diff(diff: &mut BTreeMap<String, (Value, Value)>) {
    let Some((live, desired)) = diff.remove("metadata") else {
        return;
    };
    let rest = |v: &Value| -> (Map<String, Value>, Vec<Value>) {
        let mut m = v.as_object().cloned().unwrap_or_default();
        let taken = CONSUMER_SETTINGS
            .iter()
            .map(|s| m.shift_remove(s.key).unwrap_or(Value::Null))
            .collect();
        (m, taken)
    };
    let (live_rest, live_settings) = rest(&live);
    let (desired_rest, desired_settings) = rest(&desired);
    for ((s, l), d) in CONSUMER_SETTINGS
        .iter()
        .zip(live_settings)
        .zip(desired_settings)
    {
        if l != d {
            diff.insert(s.field.to_string(), (l, d));
        }
    }
    if live_rest != desired_rest {
        diff.insert(
            "metadata".into(),
            (Value::Object(live_rest), Value::Object(desired_rest)),
        );
    }
}
