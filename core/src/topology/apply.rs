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
use super::plan::{plan, plan_stream, Action, Change, Outcome, Plan, PlanOptions};
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

/// How long a create or update may take: placing a replicated stream on a
/// busy cluster (several at once, in apply's window) can take well over the
/// 5 s a read gets, and a create that timed out may still happen.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A create or update: [`api`] with [`SEND_TIMEOUT`].
async fn send(js: &JetStream, subject: &str, body: &Value) -> Result<Value> {
    js.request_timeout::<Value>(subject, body, SEND_TIMEOUT.max(js.timeout))
        .await
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

/// How many JetStream API requests one apply or plan has in flight.
const WINDOW: usize = 16;

/// What the server has of `topology`, asking only about what it declares:
/// its streams (with their consumers), the undeclared streams whose
/// subjects overlap one that would be created or take new subjects (the
/// server would refuse that, and the plan says so first), and, with
/// `list_others`, the names of every other stream for the plan's list of
/// unmanaged streams. A server with 500 other streams costs an agent with 3
/// streams no more than its 3.
pub async fn fetch_declared(
    js: &JetStream,
    topology: &Topology,
    list_others: bool,
) -> Result<LiveState> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};

    let info = js.client.server_info();
    let mut live = LiveState::new(info.version.clone());
    // Through a domain the JetStream answering is another server's.
    if js.prefix() == "$JS.API" {
        live.clustered = Some(info.cluster.as_deref().is_some_and(|c| !c.is_empty()));
        live.cluster_size = (!info.connect_urls.is_empty()).then_some(info.connect_urls.len());
    }
    let declared = topology.stream_names();
    let others = async {
        if list_others {
            list_names(js).await
        } else {
            Ok(Vec::new())
        }
    };
    let found = stream::iter(declared.clone())
        .map(|name| {
            let js = js.clone();
            async move { fetch_stream(&js, &name).await }
        })
        .buffered(WINDOW)
        .try_collect::<Vec<_>>();
    let (found, others) = futures_util::future::try_join(found, others).await?;
    live.streams = found.into_iter().flatten().collect();

    // Subjects a create or an update would claim: whose are they now?
    let mut claimed: Vec<String> = Vec::new();
    for spec in topology.streams() {
        let live_subjects = live
            .stream(&spec.name)
            .map(|s| text_list_of(s.config_map()))
            .unwrap_or_default();
        let desired = spec.config.get("subjects").map_or_else(Vec::new, |v| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
        claimed.extend(desired.into_iter().filter(|s| !live_subjects.contains(s)));
    }
    claimed.sort();
    claimed.dedup();
    let owners = stream::iter(claimed)
        .map(|subject| {
            let js = js.clone();
            async move {
                let page = api(&js, "STREAM.NAMES", &json!({ "subject": subject })).await?;
                Ok::<_, Error>(names_of(&page))
            }
        })
        .buffered(WINDOW)
        .try_collect::<Vec<_>>()
        .await?;
    let mut in_the_way: Vec<String> = owners
        .into_iter()
        .flatten()
        .filter(|n| !declared.contains(n))
        .collect();
    in_the_way.sort();
    in_the_way.dedup();
    let foreign = stream::iter(in_the_way)
        .map(|name| {
            let js = js.clone();
            async move {
                match api(&js, &format!("STREAM.INFO.{name}"), &Value::Null).await {
                    Ok(info) => Ok(Some(LiveStream::new(info, Vec::new()))),
                    Err(e) if err_code(&e) == Some(10059) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .buffered(WINDOW)
        .try_collect::<Vec<_>>()
        .await?;
    live.streams.extend(foreign.into_iter().flatten());
    live.streams.sort_by(|a, b| a.name.cmp(&b.name));
    live.others = others
        .into_iter()
        .filter(|n| live.stream(n).is_none() && !declared.contains(n))
        .collect();
    Ok(live)
}

fn text_list_of(config: &serde_json::Map<String, Value>) -> Vec<String> {
    config
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn names_of(page: &Value) -> Vec<String> {
    page.get("streams")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Every stream's name (`STREAM.NAMES`, paged), without their configs.
async fn list_names(js: &JetStream) -> Result<Vec<String>> {
    let all = list_all(js, "STREAM.NAMES", "streams").await?;
    Ok(all
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

/// The plan for `topology` against the server, changing nothing. Lists the
/// server's other streams (by name) as unmanaged.
pub async fn plan_live(js: &JetStream, topology: &Topology, opts: &PlanOptions) -> Result<Plan> {
    let live = fetch_declared(js, topology, true).await?;
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
    let live = fetch_declared(js, topology, false).await?;
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
    for c in &mut plan.changes {
        c.outcome = if opts.executes(c.action) {
            Some(Outcome::NotAttempted)
        } else if c.action.is_pending() {
            Some(Outcome::LeftAlone)
        } else {
            None
        };
    }

    // Streams first: updates before creates (so subjects moved from one
    // stream to another are free before the new owner claims them), creates
    // in dependency order (the origin of a mirror or source before it), each
    // step concurrently; then consumers, whose streams now exist.
    let streams: Vec<usize> = (0..plan.changes.len())
        .filter(|&i| plan.changes[i].consumer.is_none() && opts.executes(plan.changes[i].action))
        .collect();
    let (updates, creates): (Vec<usize>, Vec<usize>) = streams
        .into_iter()
        .partition(|&i| plan.changes[i].action != Action::Create);
    let mut steps = vec![updates];
    steps.extend(creation_order(&plan, creates));
    let opts = *opts;
    for step in steps {
        let tasks: Vec<_> = step
            .iter()
            .map(|&i| {
                let change = plan.changes[i].clone();
                let spec = topology.stream(&change.stream).cloned();
                let js = js.clone();
                async move {
                    match spec {
                        Some(spec) => send_stream_raced(&js, &spec, change, version, &opts).await,
                        None => Ok(Raced::Sent),
                    }
                }
            })
            .collect();
        let outcomes = run_window(tasks).await;
        let mut failed = None;
        for (&i, outcome) in step.iter().zip(outcomes) {
            match outcome {
                Ok(Raced::Sent) => plan.changes[i].outcome = Some(Outcome::Applied),
                Ok(Raced::Replanned(again)) => {
                    let (mut replanned, consumers) = *again;
                    // Keep the reported plan truthful about what was done.
                    replanned.outcome = opts.executes(replanned.action).then_some(Outcome::Applied);
                    plan.changes[i] = replanned;
                    for mut c in consumers {
                        if let Some(slot) = plan
                            .changes
                            .iter_mut()
                            .find(|x| x.stream == c.stream && x.consumer == c.consumer)
                        {
                            c.outcome = opts.executes(c.action).then_some(Outcome::NotAttempted);
                            *slot = c;
                        }
                    }
                }
                Err((e, what)) => {
                    plan.changes[i].outcome = Some(Outcome::Failed(e.message.clone()));
                    failed.get_or_insert((e, what));
                }
            }
        }
        if let Some(e) = refuse(&plan) {
            return Err(e);
        }
        if let Some((e, what)) = failed {
            return Err(apply_error(e, &what, &plan));
        }
    }

    let consumers: Vec<usize> = (0..plan.changes.len())
        .filter(|&i| {
            let c = &plan.changes[i];
            c.consumer.is_some() && c.body.is_some() && opts.executes(c.action)
        })
        .collect();
    let tasks: Vec<_> = consumers
        .iter()
        .map(|&i| {
            let change = plan.changes[i].clone();
            let js = js.clone();
            async move { send_consumer(&js, &change, opts.create_only).await }
        })
        .collect();
    let outcomes = run_window(tasks).await;
    let mut failed = None;
    for (&i, outcome) in consumers.iter().zip(outcomes) {
        match outcome {
            Ok(()) => plan.changes[i].outcome = Some(Outcome::Applied),
            Err((e, what)) => {
                plan.changes[i].outcome = Some(Outcome::Failed(e.message.clone()));
                failed.get_or_insert((e, what));
            }
        }
    }
    if let Some((e, what)) = failed {
        return Err(apply_error(e, &what, &plan));
    }
    Ok(plan)
}

/// Run `tasks` at most [`WINDOW`] at a time; their results in input order.
async fn run_window<F: std::future::Future>(tasks: Vec<F>) -> Vec<F::Output> {
    use futures_util::stream::{self, StreamExt};
    stream::iter(tasks).buffered(WINDOW).collect().await
}

/// The creates of `plan` in steps: a stream whose mirror or source is
/// created in the same plan comes in a step after its origin.
fn creation_order(plan: &Plan, creates: Vec<usize>) -> Vec<Vec<usize>> {
    let origins = |i: usize| -> Vec<String> {
        let body = plan.changes[i].body.as_ref();
        let mut out = Vec::new();
        if let Some(b) = body {
            if let Some(name) = b.pointer("/mirror/name").and_then(Value::as_str) {
                out.push(name.to_string());
            }
            for src in b
                .get("sources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = src.get("name").and_then(Value::as_str) {
                    out.push(name.to_string());
                }
            }
        }
        out
    };
    let mut done: Vec<String> = Vec::new();
    let mut left = creates;
    let mut steps = Vec::new();
    while !left.is_empty() {
        let pending: Vec<String> = left
            .iter()
            .map(|&i| plan.changes[i].stream.clone())
            .collect();
        let (ready, wait): (Vec<usize>, Vec<usize>) = left.iter().partition(|&&i| {
            origins(i)
                .iter()
                .all(|o| !pending.contains(o) || done.contains(o))
        });
        // A cycle (refused offline, but never loop on one): send the rest.
        let ready = if ready.is_empty() {
            wait.clone()
        } else {
            ready
        };
        let wait: Vec<usize> = wait.into_iter().filter(|i| !ready.contains(i)).collect();
        done.extend(ready.iter().map(|&i| plan.changes[i].stream.clone()));
        steps.push(ready);
        left = wait;
    }
    steps
}

/// What sending one stream change came to.
enum Raced {
    Sent,
    /// Someone else changed the stream meanwhile: the plan for it now (and
    /// its consumers'), whatever of it was sent.
    Replanned(Box<(Change, Vec<Change>)>),
}

/// Send a stream change; when it loses a race (someone created it, 10058,
/// or deleted it, 10059, meanwhile) plan that stream again against what won
/// and send that, a bounded number of times. The error comes with what was
/// being done.
async fn send_stream_raced(
    js: &JetStream,
    spec: &super::StreamSpec,
    change: Change,
    version: super::schema::Version,
    opts: &ApplyOptions,
) -> std::result::Result<Raced, (Error, String)> {
    let mut current = change;
    let mut replanned: Option<(Change, Vec<Change>)> = None;
    let mut attempt = 0;
    loop {
        let what = format!("{} stream {}", current.action.as_str(), current.stream);
        match send_stream(js, &current).await {
            Ok(()) => break,
            Err(e)
                if attempt < RACE_RETRIES && matches!(err_code(&e), Some(10058) | Some(10059)) =>
            {
                attempt += 1;
                let live_stream = fetch_stream(js, &spec.name)
                    .await
                    .map_err(|e| (e, what.clone()))?;
                let (again, consumers) = plan_stream(spec, live_stream.as_ref(), version, &[]);
                replanned = Some((again.clone(), consumers));
                if !opts.executes(again.action) {
                    break;
                }
                current = again;
            }
            Err(e) => return Err((e, what)),
        }
    }
    Ok(match replanned {
        Some(again) => Raced::Replanned(Box::new(again)),
        None => Raced::Sent,
    })
}

/// Create or update one consumer (create-only: create, and leave one that
/// exists meanwhile as it is).
async fn send_consumer(
    js: &JetStream,
    change: &Change,
    create_only: bool,
) -> std::result::Result<(), (Error, String)> {
    let (Some(consumer), Some(body)) = (change.consumer.as_deref(), change.body.as_ref()) else {
        return Ok(());
    };
    let subject = format!("CONSUMER.CREATE.{}.{consumer}", change.stream);
    let mut body = body.clone();
    if create_only {
        // Create, never update: a consumer someone else created since the
        // plan was read stays as they made it.
        if let Some(b) = body.as_object_mut() {
            b.insert("action".into(), json!("create"));
        }
    }
    match send(js, &subject, &body).await {
        Ok(_) => Ok(()),
        // 10148: it exists now with another config (create-only).
        Err(e) if create_only && err_code(&e) == Some(10148) => Ok(()),
        Err(e) => Err((
            e,
            format!(
                "{} consumer {} > {consumer}",
                change.action.as_str(),
                change.stream
            ),
        )),
    }
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
    send(js, &format!("STREAM.{verb}.{}", change.stream), body).await?;
    Ok(())
}

/// Ok(plan) when the server matches `topology`; otherwise a Drift error carrying the plan.
pub async fn verify(js: &JetStream, topology: &Topology) -> Result<Plan> {
    let live = fetch_declared(js, topology, false).await?;
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
