//! Declarative JetStream topology: the file model, offline validation,
//! normalization with the server's defaults, planning against a live server,
//! idempotent apply, verify and export.
//!
//! The flow is load -> validate (all problems at once, nothing sent) -> fetch
//! live state -> plan (classify every stream and consumer) -> apply (refuse
//! blocked and, unless allowed, destructive changes before sending anything).
//!
//! # What natsbus owns on the server
//!
//! Every stream and consumer natsbus creates or updates carries the metadata
//! key [`MANAGED_KEY`] = `"true"` (servers 2.10 and newer; older servers have
//! no metadata). The marker is informational: it is ignored when comparing
//! live and desired configs, so streams created by other tools with the same
//! settings plan as unchanged, and natsbus never deletes anything, marked or
//! not.
//!
//! # Desired state
//!
//! A topology is authoritative for the fields natsbus knows: a field left out
//! of the file means "the server's default" (so removing `max_msgs: 1000` from
//! a file plans an update back to unlimited). Fields natsbus does not know are
//! carried over from the live config on update. Consumers default to
//! `ack_policy: explicit` (the server's own zero value is `none`, which loses
//! messages on a crash; natscli makes the same choice).

pub mod apply;
pub mod export;
pub mod live;
pub mod normalize;
pub mod plan;
pub mod render;
pub mod schema;
pub mod settings;
pub mod source;
pub mod units;
pub mod validate;

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Problem, Result};
use schema::{convert_object, Ctx, CONSUMER_FIELDS, STREAM_FIELDS};
use source::{join, Lines, Parsed};

pub use apply::{apply, fetch_live, plan_live, verify, ApplyOptions};
pub use export::{export, export_yaml};
pub use live::{LiveConsumer, LiveState, LiveStream};
pub use plan::{plan, Action, Change, Plan, PlanOptions};
pub use schema::Version;

/// Metadata key natsbus sets on what it creates or updates.
pub const MANAGED_KEY: &str = "natsbus.managed";

/// A topology file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Toml,
}

impl Format {
    /// The format for a file name's extension (`.yaml`, `.yml`, `.json`, `.toml`).
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

/// One stream as declared: its config in server wire form (only the fields
/// given, plus `name`) and its consumers in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    pub name: String,
    pub config: Map<String, Value>,
    pub consumers: Vec<ConsumerSpec>,
}

/// One durable consumer as declared, in wire form (with `durable_name`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSpec {
    pub name: String,
    pub config: Map<String, Value>,
}

/// A validated topology. Construction always validates, so holding one means
/// the file had no problems the server could be predicted to reject.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    source: Option<String>,
    streams: Vec<StreamSpec>,
}

impl Topology {
    /// Load a `.yaml`/`.yml`/`.json`/`.toml` file, substituting `${VAR}` and
    /// `${VAR:-default}` from the environment first.
    pub fn load(path: &Path) -> Result<Topology> {
        let source = path.display().to_string();
        let format = Format::from_path(path).ok_or_else(|| {
            Error::topology(vec![Problem {
                file: Some(source.clone()),
                line: None,
                field: String::new(),
                message: "unknown file type: use .yaml, .yml, .json or .toml".into(),
            }])
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::topology(vec![Problem {
                file: Some(source.clone()),
                line: None,
                field: String::new(),
                message: format!("can not read the file: {e}"),
            }])
        })?;
        Topology::from_str(&text, format, Some(&source))
    }

    /// Load several files and directories as one topology: a directory
    /// stands for its `.yaml`/`.yml`/`.json`/`.toml` files (by name), `-`
    /// reads YAML (or JSON) from stdin. Each file is read as
    /// [`Topology::load`] reads one; their streams are merged, a stream
    /// declared in two files is a problem naming both, and the rules that
    /// span streams (subject overlaps, dead letters) see all of them.
    pub fn load_many(paths: &[std::path::PathBuf]) -> Result<Topology> {
        let mut files: Vec<(String, Format, String)> = Vec::new();
        let mut problems = Vec::new();
        let unreadable = |file: &str, message: String| Problem {
            file: Some(file.to_string()),
            line: None,
            field: String::new(),
            message,
        };
        for path in paths {
            let label = path.display().to_string();
            if label == "-" {
                let mut text = String::new();
                match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                    Ok(_) => files.push(("<stdin>".into(), Format::Yaml, text)),
                    Err(e) => {
                        problems.push(unreadable("<stdin>", format!("can not read stdin: {e}")))
                    }
                }
                continue;
            }
            let mut members: Vec<std::path::PathBuf> = if path.is_dir() {
                match std::fs::read_dir(path) {
                    Ok(entries) => entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_file() && Format::from_path(p).is_some())
                        .collect(),
                    Err(e) => {
                        problems.push(unreadable(
                            &label,
                            format!("can not read the directory: {e}"),
                        ));
                        continue;
                    }
                }
            } else {
                vec![path.clone()]
            };
            if path.is_dir() && members.is_empty() {
                problems.push(unreadable(
                    &label,
                    "the directory holds no .yaml, .yml, .json or .toml file".into(),
                ));
            }
            members.sort();
            for file in members {
                let name = file.display().to_string();
                let Some(format) = Format::from_path(&file) else {
                    problems.push(unreadable(
                        &name,
                        "unknown file type: use .yaml, .yml, .json or .toml".into(),
                    ));
                    continue;
                };
                match std::fs::read_to_string(&file) {
                    Ok(text) => files.push((name, format, text)),
                    Err(e) => {
                        problems.push(unreadable(&name, format!("can not read the file: {e}")))
                    }
                }
            }
        }
        if files.len() == 1 && problems.is_empty() {
            let (name, format, text) = files.remove(0);
            return Topology::from_str(&text, format, Some(&name));
        }
        let env = |name: &str| std::env::var(name).ok();
        let mut merged = Map::new();
        let mut lines = Lines::new();
        // stream -> (file, line) where it was declared
        let mut owner: std::collections::HashMap<String, (String, Option<usize>)> =
            std::collections::HashMap::new();
        let mut extra_top = Map::new();
        for (name, format, text) in &files {
            let parsed = match parse_text(text, *format, Some(name), &env) {
                Ok((parsed, found)) => {
                    problems.extend(found);
                    parsed
                }
                Err(found) => {
                    problems.extend(found);
                    continue;
                }
            };
            let (value, file_lines) = match reshape(parsed) {
                Ok(x) => x,
                Err(message) => {
                    problems.push(Problem {
                        file: Some(name.clone()),
                        line: Some(1),
                        field: String::new(),
                        message,
                    });
                    continue;
                }
            };
            let Value::Object(top) = value else { continue };
            for (key, v) in top {
                if key != "streams" {
                    extra_top.insert(key, v);
                    continue;
                }
                let Value::Object(streams) = v else {
                    problems.push(Problem {
                        file: Some(name.clone()),
                        line: file_lines.get("streams").copied(),
                        field: "streams".into(),
                        message: "streams must be a mapping of stream name to its config".into(),
                    });
                    continue;
                };
                for (stream, config) in streams {
                    let at = format!("streams.{stream}");
                    let line = file_lines.get(&at).copied();
                    if let Some((other, other_line)) = owner.get(&stream) {
                        let there = match other_line {
                            Some(l) => format!("{other}:{l}"),
                            None => other.clone(),
                        };
                        problems.push(Problem {
                            file: Some(name.clone()),
                            line,
                            field: at,
                            message: format!(
                                "stream {stream} is also declared in {there}: declare each stream in one file"
                            ),
                        });
                        continue;
                    }
                    for (k, l) in &file_lines {
                        if k == &at || k.starts_with(&format!("{at}.")) {
                            lines.insert(k.clone(), *l);
                        }
                    }
                    owner.insert(stream.clone(), (name.clone(), line));
                    merged.insert(stream, config);
                }
            }
        }
        let mut top = extra_top;
        top.insert("streams".into(), Value::Object(merged));
        let labels: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let source = labels.join(", ");
        let built = build(
            Parsed {
                value: Value::Object(top),
                lines,
                duplicate_keys: Vec::new(),
            },
            Some(&source),
            problems,
        );
        // A problem of a stream belongs to the file that declares it.
        built.map_err(|e| {
            let mut problems: Vec<Problem> = e.problems().to_vec();
            for p in &mut problems {
                let stream = p
                    .field
                    .strip_prefix("streams.")
                    .map(|r| r.split('.').next().unwrap_or(r));
                if let Some((file, _)) = stream.and_then(|s| owner.get(s)) {
                    if p.file.as_deref() == Some(source.as_str()) {
                        p.file = Some(file.clone());
                    }
                }
            }
            problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            Error::topology(problems)
        })
    }

    /// Parse topology text. `source` names the file in problems.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, format: Format, source: Option<&str>) -> Result<Topology> {
        Topology::from_str_with_env(text, format, source, &|name| std::env::var(name).ok())
    }

    /// Like [`Topology::from_str`] with an explicit variable lookup (tests, embedding).
    pub fn from_str_with_env(
        text: &str,
        format: Format,
        source: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Topology> {
        match parse_text(text, format, source, env) {
            Ok((parsed, problems)) => build(parsed, source, problems),
            Err(problems) => Err(Error::topology(problems)),
        }
    }

    /// Build from an already-parsed tree (a Python dict): same shape, same checks.
    pub fn from_value(value: Value, source: Option<&str>) -> Result<Topology> {
        build(
            Parsed {
                value,
                lines: Lines::new(),
                duplicate_keys: Vec::new(),
            },
            source,
            Vec::new(),
        )
    }

    /// Names of the declared streams, in file order.
    pub fn stream_names(&self) -> Vec<String> {
        self.streams.iter().map(|s| s.name.clone()).collect()
    }

    pub fn streams(&self) -> &[StreamSpec] {
        &self.streams
    }

    pub fn stream(&self, name: &str) -> Option<&StreamSpec> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Where the topology came from (a path), if known.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The desired configs in wire form (nanoseconds, bytes):
    /// `{"streams": {NAME: {config..., "consumers": {DURABLE: {config...}}}}}`.
    /// [`Topology::from_value`] accepts this back.
    pub fn to_value(&self) -> Value {
        let mut streams = Map::new();
        for s in &self.streams {
            let mut cfg = s.config.clone();
            if !s.consumers.is_empty() {
                let consumers: Map<String, Value> = s
                    .consumers
                    .iter()
                    .map(|c| (c.name.clone(), Value::Object(c.config.clone())))
                    .collect();
                cfg.insert("consumers".into(), Value::Object(consumers));
            }
            streams.insert(s.name.clone(), Value::Object(cfg));
        }
        let mut top = Map::new();
        top.insert("streams".into(), Value::Object(streams));
        Value::Object(top)
    }
}

/// Recognize the accepted document shapes and return `{"streams": ...}` plus
/// the line map rewritten to match.
fn reshape(parsed: Parsed) -> std::result::Result<(Value, Lines), String> {
    let Parsed { value, lines, .. } = parsed;
    let Value::Object(top) = value else {
        return Err("the top level must be a mapping with a `streams:` key".into());
    };
    if top.contains_key("streams") {
        return Ok((Value::Object(top), lines));
    }
    // `nats stream info --json`: {"config": {...}, "state": {...}, ...}
    let (config, prefix) = match top.get("config") {
        Some(Value::Object(c)) if c.get("name").is_some_and(Value::is_string) => (c.clone(), "config."),
        _ if top.get("name").is_some_and(Value::is_string) => (top.clone(), ""),
        _ => {
            return Err(
                "expected `streams:` (a topology), a stream config with `name`, or `nats stream info --json` output"
                    .into(),
            )
        }
    };
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut config = config;
    if let Some(Value::Object(meta)) = config.get_mut("metadata") {
        meta.retain(|k, _| !k.starts_with("_nats."));
    }
    let base = join("streams", &name);
    let lines = lines
        .into_iter()
        .filter_map(|(k, v)| {
            if prefix.is_empty() {
                Some((join(&base, &k), v))
            } else {
                k.strip_prefix(prefix).map(|rest| (join(&base, rest), v))
            }
        })
        .collect();
    let mut streams = Map::new();
    streams.insert(name, Value::Object(config));
    let mut out = Map::new();
    out.insert("streams".into(), Value::Object(streams));
    Ok((Value::Object(out), lines))
}

/// Substitute the environment and parse: the tree with the problems found
/// so far, or only problems when the text does not parse.
fn parse_text(
    text: &str,
    format: Format,
    source: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(Parsed, Vec<Problem>), Vec<Problem>> {
    let problem = |line: Option<usize>, field: &str, message: String| Problem {
        file: source.map(str::to_string),
        line,
        field: field.to_string(),
        message,
    };
    let (text, missing) = source::substitute_env(text, env);
    let mut problems: Vec<Problem> = missing
        .into_iter()
        .map(|(line, name)| {
            problem(
                Some(line),
                "",
                format!("environment variable {name} is not set: set it, or give a default with ${{{name}:-value}}"),
            )
        })
        .collect();
    let parsed = match format {
        Format::Yaml => source::parse_yaml(&text),
        Format::Json => source::parse_json(&text),
        Format::Toml => source::parse_toml(&text),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            let what = match format {
                Format::Yaml => "YAML",
                Format::Json => "JSON",
                Format::Toml => "TOML",
            };
            problems.push(problem(
                e.line,
                "",
                format!("not valid {what}: {}", e.message),
            ));
            return Err(problems);
        }
    };
    for (line, path) in &parsed.duplicate_keys {
        problems.push(problem(Some(*line), path, "given twice: keep one".into()));
    }
    Ok((parsed, problems))
}

fn build(parsed: Parsed, source: Option<&str>, mut problems: Vec<Problem>) -> Result<Topology> {
    let (value, lines) = match reshape(parsed) {
        Ok(x) => x,
        Err(message) => {
            problems.push(Problem {
                file: source.map(str::to_string),
                line: Some(1).filter(|_| source.is_some()),
                field: String::new(),
                message,
            });
            return Err(Error::topology(problems));
        }
    };
    let mut ctx = Ctx {
        file: source,
        lines: &lines,
        problems,
    };
    let streams = read_streams(&mut ctx, &value);
    validate::validate(&mut ctx, &streams);
    if ctx.problems.is_empty() {
        Ok(Topology {
            source: source.map(str::to_string),
            streams,
        })
    } else {
        let mut problems = ctx.problems;
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(Error::topology(problems))
    }
}

fn read_streams(ctx: &mut Ctx, value: &Value) -> Vec<StreamSpec> {
    let top = value.as_object().cloned().unwrap_or_default();
    for key in top.keys() {
        if key != "streams" {
            ctx.problem(key, schema::unknown_field_message(key, &["streams"]));
        }
    }
    let streams = match top.get("streams") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => Map::new(),
        Some(other) => {
            ctx.problem(
                "streams",
                format!("`streams` must be a mapping of stream name to config, got {other}"),
            );
            Map::new()
        }
    };
    let mut out = Vec::new();
    for (name, cfg) in &streams {
        let path = join("streams", name);
        let raw = match cfg {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => {
                ctx.problem(
                    &path,
                    format!("a stream must be a mapping of settings, got {other}"),
                );
                continue;
            }
        };
        let mut config = convert_object(ctx, &raw, STREAM_FIELDS, &path, &["consumers"]);
        if let Some(given) = config.get("name").and_then(Value::as_str) {
            if given != name {
                ctx.problem(&join(&path, "name"), format!("name {given:?} differs from the stream's key {name:?}: drop `name` or make them equal"));
            }
        }
        config.insert("name".into(), Value::String(name.clone()));
        let consumers = read_consumers(ctx, &path, raw.get("consumers"));
        out.push(StreamSpec {
            name: name.clone(),
            config,
            consumers,
        });
    }
    out
}

fn read_consumers(ctx: &mut Ctx, stream_path: &str, value: Option<&Value>) -> Vec<ConsumerSpec> {
    let path = join(stream_path, "consumers");
    let consumers = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            ctx.problem(
                &path,
                format!("`consumers` must be a mapping of durable name to config, got {other}"),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (name, cfg) in &consumers {
        let cpath = join(&path, name);
        let raw = match cfg {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => {
                ctx.problem(
                    &cpath,
                    format!("a consumer must be a mapping of settings, got {other}"),
                );
                continue;
            }
        };
        let mut config = convert_object(
            ctx,
            &raw,
            CONSUMER_FIELDS,
            &cpath,
            settings::CONSUMER_SETTING_FIELDS,
        );
        settings::apply(ctx, &raw, &cpath, &mut config);
        for key in ["durable_name", "name"] {
            if let Some(given) = config.get(key).and_then(Value::as_str) {
                if given != name {
                    ctx.problem(
                        &join(&cpath, key),
                        format!("{key} {given:?} differs from the consumer's key {name:?}: drop it or make them equal"),
                    );
                }
            }
        }
        config.shift_remove("name");
        config.insert("durable_name".into(), Value::String(name.clone()));
        config
            .entry("ack_policy")
            .or_insert_with(|| Value::String("explicit".into()));
        out.push(ConsumerSpec {
            name: name.clone(),
            config,
        });
    }
    out
}

#[cfg(test)]
mod tests;
