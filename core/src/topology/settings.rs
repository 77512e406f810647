//! natsbus settings: what a topology may say about a consumer that the
//! server has no field for. Each is kept in the consumer's metadata under
//! `natsbus.<name>`, so that plan and verify compare it like any field and
//! export writes it back as the setting, not as metadata.
//!
//! - `dead_letter: <subject>`: where a worker sends the messages it gives
//!   up on (see the workers in the Python package, and the rule in
//!   validate.rs that the subject belongs to another declared stream).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::schema::Ctx;
use super::source::join;
use crate::subjects;

/// One setting: its field in the topology and its metadata key.
pub struct Setting {
    pub field: &'static str,
    pub key: &'static str,
    /// What the value must be, or why it can not be used.
    check: fn(&str) -> Option<String>,
}

fn publish_subject(s: &str) -> Option<String> {
    if let Some(problem) = subjects::subject_problem(s) {
        return Some(problem);
    }
    (!subjects::is_literal(s)).then(|| {
        format!("{s:?} has a wildcard: dead letters are published to it, give one subject")
    })
}

/// The consumer settings.
pub const CONSUMER_SETTINGS: &[Setting] = &[Setting {
    field: "dead_letter",
    key: "natsbus.dead_letter",
    check: publish_subject,
}];

/// The topology field names of the consumer settings (skipped by the
/// server-field conversion).
pub const CONSUMER_SETTING_FIELDS: &[&str] = &["dead_letter"];

/// Move the settings of a consumer as written (`raw`) into the metadata of
/// its converted `config`, reporting values that can not be used.
pub fn apply(ctx: &mut Ctx, raw: &Map<String, Value>, path: &str, config: &mut Map<String, Value>) {
    for s in CONSUMER_SETTINGS {
        let Some(value) = raw.get(s.field) else {
            continue;
        };
        let at = join(path, s.field);
        let text = match value {
            Value::Null => continue,
            Value::String(t) => t.clone(),
            other => {
                ctx.problem(&at, format!("{} must be text, got {other}", s.field));
                continue;
            }
        };
        if let Some(problem) = (s.check)(&text) {
            ctx.problem(&at, format!("invalid {}: {problem}", s.field));
            continue;
        }
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
