//! From file text to a JSON tree plus the line of every field.
//!
//! Validation works on one shape (a `serde_json::Value`) whatever the format,
//! so that YAML, JSON, TOML and Python dicts get identical checks. Line numbers
//! are kept on the side, keyed by the dotted path of each field, so that every
//! problem can point at its place in the file.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Dotted field path -> 1-based line.
pub type Lines = HashMap<String, usize>;

/// Replace `${VAR}` and `${VAR:-default}` from the environment (`$${` is a
/// literal `${`). Unset variables without a default are returned as
/// `(line, name)` so all of them are reported at once.
pub fn substitute_env(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<(usize, String)>) {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut line = 1;
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        let (before, after) = rest.split_at(pos);
        line += before.matches('\n').count();
        out.push_str(before);
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            rest = &after[1..];
            continue;
        }
        let Some(end) = after.find('}') else {
            out.push_str(after);
            rest = "";
            break;
        };
        let inner = &after[2..end];
        let (name, default) = match inner.find(":-") {
            Some(i) => (&inner[..i], Some(&inner[i + 2..])),
            None => (inner, None),
        };
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            // Not ours (e.g. a literal "${" in a description): keep it as written.
            out.push_str(&after[..=end]);
        } else {
            match (
                lookup(name).filter(|v| default.is_none() || !v.is_empty()),
                default,
            ) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => missing.push((line, name.to_string())),
            }
        }
        line += after[..=end].matches('\n').count();
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out, missing)
}

/// A YAML node with the line it started on.
struct Node {
    line: usize,
    kind: Kind,
}

enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

struct Key {
    line: usize,
    text: String,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<Kind>::deserialize(d)?;
        Ok(Node {
            line: spanned.referenced.line() as usize,
            kind: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<Kind>::deserialize(d)?;
        let text = match spanned.value {
            Kind::Str(s) => s,
            Kind::Int(i) => i.to_string(),
            Kind::UInt(u) => u.to_string(),
            Kind::Bool(b) => b.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Null => "null".into(),
            Kind::Seq(_) | Kind::Map(_) => {
                return Err(de::Error::custom("mapping keys must be plain scalars"))
            }
        };
        Ok(Key {
            line: spanned.referenced.line() as usize,
            text,
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Kind::Int(i),
            Err(_) => Kind::UInt(v),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some((k, v)) = map.next_entry::<Key, Node>()? {
            items.push((k, v));
        }
        Ok(Kind::Map(items))
    }
}

fn node_to_value(
    node: Node,
    path: &str,
    lines: &mut Lines,
    dups: &mut Vec<(usize, String)>,
) -> Value {
    match node.kind {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::Bool(b),
        Kind::Int(i) => Value::from(i),
        Kind::UInt(u) => Value::from(u),
        Kind::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Kind::Str(s) => Value::String(s),
        Kind::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let p = join(path, &i.to_string());
                    lines.insert(p.clone(), n.line);
                    node_to_value(n, &p, lines, dups)
                })
                .collect(),
        ),
        Kind::Map(items) => {
            let mut m = Map::new();
            for (k, v) in items {
                let p = join(path, &k.text);
                if m.contains_key(&k.text) {
                    dups.push((k.line, p.clone()));
                }
                lines.insert(p.clone(), k.line);
                let value = node_to_value(v, &p, lines, dups);
                m.insert(k.text, value);
            }
            Value::Object(m)
        }
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A parse failure: message and line if known.
pub struct ParseError {
    pub line: Option<usize>,
    pub message: String,
}

/// Parsed document: the tree, line numbers, and keys given twice.
pub struct Parsed {
    pub value: Value,
    pub lines: Lines,
    pub duplicate_keys: Vec<(usize, String)>,
}

pub fn parse_yaml(text: &str) -> Result<Parsed, ParseError> {
    if text.trim().is_empty() {
        return Ok(Parsed {
            value: Value::Object(Map::new()),
            lines: Lines::new(),
            duplicate_keys: Vec::new(),
        });
    }
    let opts =
        serde_saphyr::options! { duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins };
    let node: Node = serde_saphyr::from_str_with_options(text, opts).map_err(|e| ParseError {
        line: e.location().map(|l| l.line() as usize),
        message: first_line(&e.to_string()),
    })?;
    let mut lines = Lines::new();
    let mut dups = Vec::new();
    let value = node_to_value(node, "", &mut lines, &mut dups);
    Ok(Parsed {
        value,
        lines,
        duplicate_keys: dups,
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

pub fn parse_json(text: &str) -> Result<Parsed, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ParseError {
        line: Some(e.line()),
        message: e.to_string(),
    })?;
    // JSON is YAML too: reuse the YAML reader only to learn line numbers.
    let (lines, dups) = match parse_yaml(text) {
        Ok(p) => (p.lines, p.duplicate_keys),
        Err(_) => (Lines::new(), Vec::new()),
    };
    Ok(Parsed {
        value,
        lines,
        duplicate_keys: dups,
    })
}

pub fn parse_toml(text: &str) -> Result<Parsed, ParseError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ParseError {
        line: e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: first_line(e.message()),
    })?;
    let value = toml_to_json(toml::Value::Table(table));
    let mut lines = Lines::new();
    toml_lines(text, &mut lines);
    Ok(Parsed {
        value,
        lines,
        duplicate_keys: Vec::new(),
    })
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// Best-effort line numbers for TOML: `[a.b.c]` headers and `key = value`
/// lines (bare or quoted keys, dotted keys). Enough to point at the field.
fn toml_lines(text: &str, lines: &mut Lines) {
    let mut table = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with("[[") {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if let Some(end) = header.find(']') {
                table = toml_key_path(&header[..end]);
                lines.entry(table.clone()).or_insert(i + 1);
            }
            continue;
        }
        if let Some(eq) = line.find('=') {
            let key = toml_key_path(&line[..eq]);
            if !key.is_empty() {
                lines.entry(join(&table, &key)).or_insert(i + 1);
            }
        }
    }
}

fn toml_key_path(raw: &str) -> String {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in raw.trim().chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '.' => parts.push(std::mem::take(&mut cur).trim().to_string()),
            None => cur.push(c),
        }
    }
    parts.push(cur.trim().to_string());
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("3".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn env_substitution() {
        let (out, missing) = substitute_env(
            "a: ${SET}\nb: ${UNSET:-7}\nc: ${EMPTY:-x}\nd: ${EMPTY}\n",
            &env,
        );
        assert_eq!(out, "a: 3\nb: 7\nc: x\nd: \n");
        assert!(missing.is_empty());
        let (out, missing) = substitute_env("x: 1\ny: ${NOPE}\nz: $${SET} $5\n", &env);
        assert_eq!(out, "x: 1\ny: \nz: ${SET} $5\n");
        assert_eq!(missing, vec![(2, "NOPE".to_string())]);
    }

    #[test]
    fn yaml_lines() {
        let p = parse_yaml("streams:\n  A:\n    subjects:\n      - a.>\n    max_age: 7d\n")
            .ok()
            .unwrap();
        assert_eq!(p.lines["streams.A"], 2);
        assert_eq!(p.lines["streams.A.max_age"], 5);
        assert_eq!(p.lines["streams.A.subjects.0"], 4);
        assert_eq!(p.value["streams"]["A"]["max_age"], "7d");
    }

    #[test]
    fn json_lines() {
        let p = parse_json("{\n \"streams\": {\n  \"A\": {\"max_age\": 5}\n }\n}")
            .ok()
            .unwrap();
        assert_eq!(p.lines["streams.A.max_age"], 3);
    }

    #[test]
    fn toml_line_numbers() {
        let p = parse_toml(
            "[streams.A]\nsubjects = [\"a\"]\n\n[streams.A.consumers.w]\nack_wait = \"30s\"\n",
        )
        .ok()
        .unwrap();
        assert_eq!(p.lines["streams.A.subjects"], 2);
        assert_eq!(p.lines["streams.A.consumers.w.ack_wait"], 5);
        assert_eq!(p.value["streams"]["A"]["consumers"]["w"]["ack_wait"], "30s");
    }
}
