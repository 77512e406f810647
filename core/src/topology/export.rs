//! Live streams and consumers as a topology file.
//!
//! The output names only what differs from the defaults natsbus and the
//! server would fill in, written the way people write it (`7d`, `1GiB`), so
//! that it reads like a hand-written file and round-trips: loading it and
//! planning against the server it came from shows nothing to do.

use serde_json::{Map, Value};

use super::live::LiveState;
use super::normalize::{self, same, user_metadata, CONSUMER_IGNORED, STREAM_IGNORED};
use super::schema::{Field, Kind, CONSUMER_FIELDS, STREAM_FIELDS};
use super::units::{format_duration, size_value};

/// Export `streams` (all when empty) in topology-file shape.
pub fn export(live: &LiveState, streams: &[String]) -> Value {
    let mut out = Map::new();
    for s in &live.streams {
        if !streams.is_empty() && !streams.contains(&s.name) {
            continue;
        }
        let cfg = s.config_map();
        let live_norm = normalize::stream(cfg);
        let mut keep = minimal(
            cfg,
            STREAM_FIELDS,
            STREAM_IGNORED,
            &["subjects"],
            &|c| normalize::stream(c),
            &live_norm,
        );
        keep.shift_remove("name");
        if let Some(first_seq) = cfg.get("first_seq").filter(|v| !normalize::is_empty(v)) {
            keep.insert("first_seq".into(), first_seq.clone());
        }
        let mut human = humanize(&keep, STREAM_FIELDS);
        let mut consumers = Map::new();
        for c in &s.consumers {
            let ccfg = c.config_map();
            if normalize::text(ccfg, "durable_name").is_empty() {
                continue; // ephemeral
            }
            let mut with_defaults = ccfg.clone();
            // natsbus's consumer default is explicit acks; only other policies need saying.
            let want = normalize::consumer(ccfg, &live_norm);
            let build = |c: &Map<String, Value>| {
                let mut c = c.clone();
                c.entry("ack_policy")
                    .or_insert_with(|| Value::String("explicit".into()));
                normalize::consumer(&c, &live_norm)
            };
            with_defaults.shift_remove("name");
            let mut keep = minimal(
                &with_defaults,
                CONSUMER_FIELDS,
                CONSUMER_IGNORED,
                &[],
                &build,
                &want,
            );
            keep.shift_remove("durable_name");
            let mut human = humanize(&keep, CONSUMER_FIELDS);
            super::settings::lift(&mut human);
            consumers.insert(c.name.clone(), Value::Object(human));
        }
        if !consumers.is_empty() {
            human.insert("consumers".into(), Value::Object(consumers));
        }
        out.insert(s.name.clone(), Value::Object(human));
    }
    let mut top = Map::new();
    top.insert("streams".into(), Value::Object(out));
    Value::Object(top)
}

type Normalizer<'a> = &'a dyn Fn(&Map<String, Value>) -> Map<String, Value>;

/// The smallest set of fields of `cfg` whose normalization still equals `want`.
fn minimal(
    cfg: &Map<String, Value>,
    fields: &'static [Field],
    ignored: &[&str],
    always: &[&str],
    normalize: Normalizer,
    want: &Map<String, Value>,
) -> Map<String, Value> {
    let matches = |candidate: &Map<String, Value>| {
        let got = normalize(candidate);
        fields
            .iter()
            .filter(|f| !ignored.contains(&f.name))
            .all(|f| same(f.name, &got[f.name], &want[f.name]))
    };
    // Start from the known fields as the server has them, user metadata only.
    let mut keep: Map<String, Value> = cfg
        .iter()
        .filter(|(k, _)| fields.iter().any(|f| f.name == k.as_str()))
        .filter(|(k, _)| {
            !ignored.contains(&k.as_str())
                || always.contains(&k.as_str())
                || *k == "name"
                || *k == "durable_name"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if keep.contains_key("metadata") {
        let meta = user_metadata(cfg);
        if meta.as_object().is_some_and(Map::is_empty) {
            keep.shift_remove("metadata");
        } else {
            keep.insert("metadata".into(), meta);
        }
    }
    // Drop every field the result does not need, one at a time.
    let names: Vec<String> = keep.keys().cloned().collect();
    for name in names {
        if always.contains(&name.as_str()) || name == "name" || name == "durable_name" {
            continue;
        }
        let mut without = keep.clone();
        without.shift_remove(&name);
        if matches(&without) {
            keep = without;
        }
    }
    keep
}

fn humanize(cfg: &Map<String, Value>, fields: &'static [Field]) -> Map<String, Value> {
    cfg.iter()
        .map(|(k, v)| {
            let kind = fields.iter().find(|f| f.name == k).map(|f| f.kind);
            let human = match (kind, v.as_i64()) {
                (Some(Kind::Duration | Kind::MaxAge), Some(ns)) if ns > 0 => {
                    Value::String(format_duration(ns))
                }
                (Some(Kind::Size | Kind::Size32), Some(b)) => size_value(b),
                (Some(Kind::Count), Some(-1)) => Value::String("unlimited".into()),
                (Some(Kind::DurationList), _) => match v {
                    Value::Array(a) => Value::Array(
                        a.iter()
                            .map(|x| {
                                x.as_i64()
                                    .map_or(x.clone(), |ns| Value::String(format_duration(ns)))
                            })
                            .collect(),
                    ),
                    other => other.clone(),
                },
                (Some(Kind::Object(sub)), _) => match v {
                    Value::Object(m) => Value::Object(humanize(m, sub)),
                    other => other.clone(),
                },
                _ => v.clone(),
            };
            (k.clone(), human)
        })
        .collect()
}

/// [`export`] as YAML text.
pub fn export_yaml(live: &LiveState, streams: &[String]) -> String {
    let mut out = String::from("# exported by natsbus from a live server (nats-server ");
    out.push_str(&live.server_version);
    out.push_str(")\n");
    write_yaml(&mut out, &export(live, streams), 0);
    out
}

/// A small YAML writer: block mappings, flow lists of scalars, quoted strings
/// wherever a plain scalar could be misread (subjects with `>` or `*`,
/// numbers-as-text, booleans-as-text).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(&mut out, value, 0);
    out
}

fn write_yaml(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(m) if m.is_empty() => {
            out.push_str(&pad);
            out.push_str("{}\n");
        }
        Value::Object(m) => {
            for (k, v) in m {
                out.push_str(&pad);
                out.push_str(&scalar_text(k));
                out.push(':');
                match v {
                    Value::Object(inner) if !inner.is_empty() => {
                        out.push('\n');
                        write_yaml(out, v, indent + 2);
                    }
                    Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                        out.push('\n');
                        for item in items {
                            out.push_str(&pad);
                            out.push_str("  -");
                            match item {
                                Value::Object(_) => {
                                    let mut nested = String::new();
                                    write_yaml(&mut nested, item, indent + 4);
                                    out.push_str(&nested[indent + 3..]);
                                }
                                other => {
                                    out.push(' ');
                                    out.push_str(&inline(other));
                                    out.push('\n');
                                }
                            }
                        }
                    }
                    other => {
                        out.push(' ');
                        out.push_str(&inline(other));
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::String(s) => scalar_text(s),
        Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", scalar_text(k), inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A string as a YAML scalar: plain when unambiguous, else double-quoted (JSON escapes are valid YAML).
fn scalar_text(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

/// Could `s` be written unquoted and still read back as this same string?
fn is_plain_safe(s: &str) -> bool {
    let simple_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if s.is_empty() || !simple_chars || s.starts_with(['-', '.']) {
        return false;
    }
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
    );
    let numeric_looking = s.parse::<f64>().is_ok()
        || s.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        || (s.starts_with(|c: char| c.is_ascii_digit()) && s.contains('_'))
        || (s.len() > 1
            && s.starts_with('0')
            && s[1..].starts_with(['x', 'o', 'b', 'X', 'O', 'B']));
    !reserved && !numeric_looking
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_quoting() {
        assert_eq!(scalar_text("orders"), "orders");
        assert_eq!(scalar_text("orders.>"), "\"orders.>\"");
        assert_eq!(scalar_text("7d"), "7d");
        assert_eq!(scalar_text("1GiB"), "1GiB");
        assert_eq!(scalar_text("1e3"), "\"1e3\"");
        assert_eq!(scalar_text("0x10"), "\"0x10\"");
        assert_eq!(scalar_text("metric_agent"), "metric_agent");
        assert_eq!(scalar_text("yes"), "\"yes\"");
        assert_eq!(scalar_text("a b"), "\"a b\"");
        assert_eq!(scalar_text(""), "\"\"");
    }
}
