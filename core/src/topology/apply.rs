//! Talking to the server: read the live state, apply a plan, verify.
//!
//! Raw `$JS.API.*` requests with JSON in and out keep the server's `err_code`
//! and text intact and let natsbus send exactly the config it built (an update
//! replaces the whole config, and strict servers reject unknown fields).
//!
//! Apply is safe to run from many processes at once: creates of identical
//! configs succeed on the server, consumer requests use create-or-update, and a
//! create that loses a race to a different config (10058) is re-planned
//! against what won, a bounded number of times.

use serde_json::{json, Value};

use super::live::{LiveState, LiveStream};
use super::plan::{plan, plan_stream, Action, Change, Plan, PlanOptions};
use super::schema::human;
use super::schema::{CONSUMER_FIELDS, STREAM_FIELDS};
use super::Topology;
use crate::client::jsapi::JetStream;
use crate::error::{Error, ErrorKind, Result};

const RACE_RETRIES: usize = 5;

/// Options for [`apply`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Apply changes that can lose messages (lowered limits, retention switches...).
    pub allow_destructive: bool,
    /// Only create what is missing: never update, never refuse. The plan
    /// returned still lists the differences that were left alone (an older
    /// deployment starting next to a newer topology must neither fail nor
    /// rewrite what the newer one declared).
    pub create_only: bool,
}

impl ApplyOptions {
    /// Whether a change of this kind is carried out.
    fn executes(&self, action: Action) -> bool {
        match action {
            Action::Create => true,
            Action::Update | Action::Destructive => !self.create_only,
            _ => false,
        }
    }
}

async fn api(js: &JetStream, subject: &str, body: &Value) -> Result<Value> {
    js.request::<Value>(subject, body).await
}

fn err_code(e: &Error) -> Option<u16> {
    e.api_error().map(|a| a.err_code)
}

/// Page through a list API (`offset`/`total`), collecting the `key` arrays.
async fn list_all(js: &JetStream, subject: &str, key: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    loop {
        let page = api(js, subject, &json!({"offset": out.len()})).await?;
        let items = page
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let total = page.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        if items.is_empty() {
            break;
        }
        out.extend(items);
        if out.len() >= total {
            break;
        }
    }
    Ok(out)
}

async fn fetch_consumers(js: &JetStream, stream: &str) -> Result<Vec<Value>> {
    list_all(js, &format!("CONSUMER.LIST.{stream}"), "consumers").await
}

/// Read every stream and consumer from the server.
pub async fn fetch_live(js: &JetStream) -> Result<LiveState> {
    let infos = list_all(js, "STREAM.LIST", "streams").await?;
    let mut live = LiveState::new(js.client.server_info().version);
    for info in infos {
        let name = info["config"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let consumers = match fetch_consumers(js, &name).await {
            Ok(c) => c,
            // deleted between the two calls
            Err(e) if err_code(&e) == Some(10059) => continue,
            Err(e) => return Err(e),
        };
        live.streams.push(LiveStream::new(info, consumers));
    }
    live.streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(live)
}

/// Fetch one stream (None when it does not exist).
async fn fetch_stream(js: &JetStream, name: &str) -> Result<Option<LiveStream>> {
    match api(js, &format!("STREAM.INFO.{name}"), &Value::Null).await {
        Ok(info) => {
            let consumers = fetch_consumers(js, name).await?;
            Ok(Some(LiveStream::new(info, consumers)))
        }
        Err(e) if err_code(&e) == Some(10059) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The plan for `topology` against the server, changing nothing.
pub async fn plan_live(js: &JetStream, topology: &Topology, opts: &PlanOptions) -> Result<Plan> {
    let live = fetch_live(js).await?;
    Ok(plan(topology, &live, opts))
}

fn refusal(plan: &Plan, allow_destructive: bool) -> Option<Error> {
    let refused = plan.refused(allow_destructive);
    if refused.is_empty() {
        return None;
    }
    let mut message = format!(
        "apply refused {} change{}; nothing was changed on the server:",
        refused.len(),
        if refused.len() == 1 { "" } else { "s" }
    );
    for c in &refused {
        let what = match &c.consumer {
            Some(con) => format!("consumer {} > {con}", c.stream),
            None => format!("stream {}", c.stream),
        };
        let fields: Vec<String> = c
            .diff
            .iter()
            .map(|(k, (l, d))| {
                let fields = if c.consumer.is_some() {
                    CONSUMER_FIELDS
                } else {
                    STREAM_FIELDS
                };
                format!("{k} {} -> {}", human(fields, k, l), human(fields, k, d))
            })
            .collect();
        let label = if c.action == Action::Blocked {
            "blocked"
        } else {
            "destructive (pass allow_destructive / --allow-destructive to apply it)"
        };
        message.push_str(&format!("\n  {what}: {label}"));
        if !fields.is_empty() {
            message.push_str(&format!(": {}", fields.join(", ")));
        }
        if let Some(r) = &c.reason {
            message.push_str(&format!("\n    why: {r}"));
        }
    }
    Some(Error::new(ErrorKind::Apply, message).with_plan(plan.to_value()))
}

fn apply_error(mut e: Error, what: &str, plan: &Plan) -> Error {
    if e.api_error().is_some() {
        e.kind = ErrorKind::Apply;
        e.message = format!("{what}: {}", e.message);
    }
    e.with_plan(plan.to_value())
}

/// Make the server match `topology`: create what is missing, update what
/// differs, never delete. Refuses (before sending anything) when a change is
/// blocked, or destructive without `allow_destructive`. Returns the plan that
/// was carried out.
pub async fn apply(js: &JetStream, topology: &Topology, opts: &ApplyOptions) -> Result<Plan> {
    let plan_opts = PlanOptions {
        allow_destructive: opts.allow_destructive,
    };
    let live = fetch_live(js).await?;
    let mut plan = plan(topology, &live, &plan_opts);
    let refuse = |plan: &Plan| {
        if opts.create_only {
            None
        } else {
            refusal(plan, opts.allow_destructive)
        }
    };
    if let Some(e) = refuse(&plan) {
        return Err(e);
    }
    let version = live.version();
    let foreign: Vec<(String, String)> = Vec::new();

    // Streams first (updates before creates, so subjects moved from one
    // stream to another are free before the new owner claims them), then
    // consumers, whose streams now exist.
    let mut order: Vec<usize> = (0..plan.changes.len())
        .filter(|&i| plan.changes[i].consumer.is_none())
        .collect();
    order.sort_by_key(|&i| match plan.changes[i].action {
        Action::Update | Action::Destructive => 0,
        _ => 1,
    });
    for i in order {
        let change = plan.changes[i].clone();
        if !opts.executes(change.action) {
            continue;
        }
        let Some(spec) = topology.stream(&change.stream) else {
            continue;
        };
        let mut current = change;
        let mut attempt = 0;
        loop {
            let result = send_stream(js, &current).await;
            match result {
                Ok(()) => break,
                // Lost a race: someone created it (10058) or deleted it (10059) meanwhile.
                Err(e)
                    if attempt < RACE_RETRIES
                        && matches!(err_code(&e), Some(10058) | Some(10059)) =>
                {
                    attempt += 1;
                    let live_stream = fetch_stream(js, &spec.name).await?;
                    let (replanned, consumers) =
                        plan_stream(spec, live_stream.as_ref(), version, &foreign);
                    // Keep the reported plan truthful about what was done.
                    plan.changes[i] = replanned.clone();
                    for c in consumers {
                        if let Some(slot) = plan
                            .changes
                            .iter_mut()
                            .find(|x| x.stream == c.stream && x.consumer == c.consumer)
                        {
                            *slot = c;
                        }
                    }
                    if let Some(e) = refuse(&plan) {
                        return Err(e);
                    }
                    if !opts.executes(replanned.action) {
                        break;
                    }
                    current = replanned;
                }
                Err(e) => {
                    let what = format!("{} stream {}", current.action.as_str(), current.stream);
                    return Err(apply_error(e, &what, &plan));
                }
            }
        }
    }
    for i in 0..plan.changes.len() {
        let change = plan.changes[i].clone();
        let Some(consumer) = change.consumer.as_deref() else {
            continue;
        };
        if !opts.executes(change.action) {
            continue;
        }
        let Some(body) = &change.body else { continue };
        let subject = format!("CONSUMER.CREATE.{}.{consumer}", change.stream);
        let mut body = body.clone();
        if opts.create_only {
            // Create, never update: a consumer someone else created since
            // the plan was read stays as they made it.
            if let Some(b) = body.as_object_mut() {
                b.insert("action".into(), json!("create"));
            }
        }
        if let Err(e) = api(js, &subject, &body).await {
            // 10148: it exists now with another config (create-only).
            if opts.create_only && err_code(&e) == Some(10148) {
                continue;
            }
            let what = format!(
                "{} consumer {} > {consumer}",
                change.action.as_str(),
                change.stream
            );
            return Err(apply_error(e, &what, &plan));
        }
    }
    Ok(plan)
}

async fn send_stream(js: &JetStream, change: &Change) -> Result<()> {
    let Some(body) = &change.body else {
        return Ok(());
    };
    let verb = if change.action == Action::Create {
        "CREATE"
    } else {
        "UPDATE"
    };
    api(js, &format!("STREAM.{verb}.{}", change.stream), body).await?;
    Ok(())
}

/// Ok(plan) when the server matches `topology`; otherwise a Drift error carrying the plan.
pub async fn verify(js: &JetStream, topology: &Topology) -> Result<Plan> {
    let live = fetch_live(js).await?;
    let plan = plan(topology, &live, &PlanOptions::default());
    if !plan.is_pending() {
        return Ok(plan);
    }
    let pending: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| !matches!(c.action, Action::Unchanged | Action::Unmanaged))
        .map(|c| {
            let what = match &c.consumer {
                Some(con) => format!("consumer {} > {con}", c.stream),
                None => format!("stream {}", c.stream),
            };
            let state = if c.action == Action::Create {
                "missing".to_string()
            } else {
                format!(
                    "differs ({})",
                    c.diff.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            format!("\n  {what}: {state}")
        })
        .collect();
    let message = format!(
        "the server does not match the topology:{}",
        pending.concat()
    );
    Err(Error::new(ErrorKind::Drift, message).with_plan(plan.to_value()))
}
