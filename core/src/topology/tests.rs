//! Unit tests for loading, validation and planning (no server needed).

use serde_json::{json, Value};

use super::*;
use crate::error::ErrorKind;
use crate::topology::units::NS_PER_SEC;

fn no_env(_: &str) -> Option<String> {
    None
}

fn yaml(text: &str) -> Result<Topology> {
    Topology::from_str_with_env(text, Format::Yaml, Some("t.yaml"), &no_env)
}

fn problems(text: &str) -> Vec<Problem> {
    match yaml(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Topology);
            e.problems().to_vec()
        }
    }
}

/// Assert one problem is reported at `field` whose message contains `needle`.
fn has(problems: &[Problem], field: &str, needle: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.field == field && p.message.contains(needle)),
        "no problem at {field} containing {needle:?}; got:\n{}",
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const EXAMPLE: &str = r#"
streams:
  WORKFLOWS:
    subjects: ["workflows.>"]
    retention: workqueue        # limits | interest | workqueue
    storage: file
    max_age: 7d
    max_bytes: 1GiB
    replicas: ${NATS_REPLICAS:-1}
    consumers:
      workflow-processor:
        ack_policy: explicit
        ack_wait: 30s
        max_deliver: 5
        max_ack_pending: 1000
  EVENTS:
    subjects: ["events.>"]
    max_age: 30d
"#;

#[test]
fn loads_the_documented_example() {
    let t = yaml(EXAMPLE).unwrap();
    assert_eq!(t.stream_names(), vec!["WORKFLOWS", "EVENTS"]);
    let v = t.to_value();
    let w = &v["streams"]["WORKFLOWS"];
    assert_eq!(w["max_age"], json!(7 * 86400 * NS_PER_SEC));
    assert_eq!(w["max_bytes"], json!(1i64 << 30));
    assert_eq!(w["num_replicas"], json!(1));
    assert_eq!(w["retention"], "workqueue");
    let c = &w["consumers"]["workflow-processor"];
    assert_eq!(c["ack_wait"], json!(30 * NS_PER_SEC));
    assert_eq!(c["durable_name"], "workflow-processor");
    assert_eq!(t.source(), Some("t.yaml"));
    // to_value round-trips through from_value
    let again = Topology::from_value(v.clone(), None).unwrap();
    assert_eq!(again.to_value(), v);
}

#[test]
fn env_variables_are_substituted_and_missing_ones_reported_with_lines() {
    let env = |n: &str| (n == "NATS_REPLICAS").then(|| "3".to_string());
    let t = Topology::from_str_with_env(EXAMPLE, Format::Yaml, None, &env).unwrap();
    assert_eq!(
        t.to_value()["streams"]["WORKFLOWS"]["num_replicas"],
        json!(3)
    );
    let e = yaml("streams:\n  A:\n    max_age: ${AGE}\n    max_msgs: ${COUNT}\n").unwrap_err();
    assert_eq!(e.problems().len(), 2, "{e}");
    assert_eq!(e.problems()[0].line, Some(3));
    assert!(e.problems()[0].message.contains("AGE"));
    assert_eq!(e.problems()[1].line, Some(4));
}

#[test]
fn json_and_toml_load_the_same_topology() {
    let from_yaml = yaml(EXAMPLE).unwrap().to_value();
    let json_text = r#"{"streams": {
        "WORKFLOWS": {"subjects": ["workflows.>"], "retention": "workqueue", "storage": "file",
            "max_age": "7d", "max_bytes": "1GiB", "replicas": 1,
            "consumers": {"workflow-processor": {"ack_policy": "explicit", "ack_wait": "30s",
                "max_deliver": 5, "max_ack_pending": 1000}}},
        "EVENTS": {"subjects": ["events.>"], "max_age": "30d"}}}"#;
    let t = Topology::from_str_with_env(json_text, Format::Json, None, &no_env).unwrap();
    assert_eq!(t.to_value(), from_yaml);
    let toml_text = r#"
[streams.WORKFLOWS]
subjects = ["workflows.>"]
retention = "workqueue"
storage = "file"
max_age = "7d"
max_bytes = "1GiB"
replicas = 1

[streams.WORKFLOWS.consumers.workflow-processor]
ack_policy = "explicit"
ack_wait = "30s"
max_deliver = 5
max_ack_pending = 1000

[streams.EVENTS]
subjects = ["events.>"]
max_age = "30d"
"#;
    let t = Topology::from_str_with_env(toml_text, Format::Toml, None, &no_env).unwrap();
    assert_eq!(t.to_value(), from_yaml);
}

#[test]
fn toml_and_json_problems_have_lines() {
    let e = Topology::from_str_with_env(
        "[streams.A]\nsubjects = [\"a\"]\nmax_agee = \"1d\"\n",
        Format::Toml,
        Some("t.toml"),
        &no_env,
    )
    .unwrap_err();
    has(
        e.problems(),
        "streams.A.max_agee",
        "did you mean \"max_age\"",
    );
    assert_eq!(e.problems()[0].line, Some(3));
    let e = Topology::from_str_with_env(
        "{\"streams\": {\n \"A\": {\n  \"storage\": \"disk\"}}}",
        Format::Json,
        None,
        &no_env,
    )
    .unwrap_err();
    assert_eq!(e.problems()[0].line, Some(3));
    let e = Topology::from_str_with_env("{\"streams\": ", Format::Json, Some("x.json"), &no_env)
        .unwrap_err();
    assert!(e.message.contains("not valid JSON"), "{e}");
}

/// `nats stream info --json` output, nanoseconds and server metadata included.
const STREAM_INFO: &str = r#"{
  "config": {
    "name": "ORDERS", "subjects": ["orders.>"], "retention": "limits", "max_consumers": -1,
    "max_msgs": -1, "max_bytes": 1073741824, "max_age": 604800000000000, "max_msgs_per_subject": -1,
    "max_msg_size": -1, "discard": "old", "storage": "file", "num_replicas": 1,
    "duplicate_window": 120000000000, "compression": "none", "allow_direct": true,
    "mirror_direct": false, "sealed": false, "deny_delete": false, "deny_purge": false,
    "allow_rollup_hdrs": false, "consumer_limits": {}, "allow_msg_ttl": false,
    "metadata": {"_nats.level": "1", "_nats.req.level": "0", "_nats.ver": "2.11.0", "team": "core"}
  },
  "created": "2025-01-01T00:00:00Z",
  "state": {"messages": 3, "bytes": 100, "first_seq": 1, "last_seq": 3, "consumer_count": 0},
  "ts": "2025-01-01T00:00:01Z"
}"#;

#[test]
fn server_shaped_json_loads() {
    let t = Topology::from_str_with_env(STREAM_INFO, Format::Json, None, &no_env).unwrap();
    assert_eq!(t.stream_names(), vec!["ORDERS"]);
    let v = &t.to_value()["streams"]["ORDERS"];
    assert_eq!(v["max_age"], json!(604_800_000_000_000i64));
    assert_eq!(v["metadata"], json!({"team": "core"}));
    // a bare config too
    let bare = serde_json::from_str::<Value>(STREAM_INFO).unwrap()["config"].to_string();
    let t = Topology::from_str_with_env(&bare, Format::Json, None, &no_env).unwrap();
    assert_eq!(t.stream_names(), vec!["ORDERS"]);
    // and it plans as unchanged against the server it came from
    let live =
        LiveState::new("2.11.0").with_stream(serde_json::from_str(STREAM_INFO).unwrap(), vec![]);
    let p = plan(&t, &live, &PlanOptions::default());
    assert!(!p.is_pending(), "{}", p.render());
}

#[test]
fn push_and_pull_consumers() {
    let t = yaml(
        "streams:\n  EVENTS:\n    subjects: [events.>]\n    consumers:\n      event-logger:\n        deliver_subject: deliver.events\n        ack_policy: none\n      event-analytics:\n        filter_subject: events.metrics.>\n",
    )
    .unwrap();
    let v = t.to_value();
    assert_eq!(
        v["streams"]["EVENTS"]["consumers"]["event-logger"]["deliver_subject"],
        "deliver.events"
    );
    assert_eq!(
        v["streams"]["EVENTS"]["consumers"]["event-analytics"]["ack_policy"],
        "explicit"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_lines() {
    let text = "\
streams:
  ORDERS:
    subjects: [orders.>]
    max_ag: 7d
    storage: disk
    max_bytes: lots
    retention: work
    consumers:
      worker:
        ack_wait: soon
";
    let ps = problems(text);
    assert_eq!(ps.len(), 4, "{ps:?}");
    has(&ps, "streams.ORDERS.max_ag", "did you mean \"max_age\"");
    has(&ps, "streams.ORDERS.storage", "file, memory");
    has(&ps, "streams.ORDERS.max_bytes", "not a size");
    assert_eq!(
        ps.iter()
            .find(|p| p.field.ends_with("max_ag"))
            .unwrap()
            .line,
        Some(4)
    );
    assert_eq!(
        ps.iter()
            .find(|p| p.field.ends_with("storage"))
            .unwrap()
            .line,
        Some(5)
    );
    has(
        &ps,
        "streams.ORDERS.consumers.worker.ack_wait",
        "not a duration",
    );
    assert_eq!(ps[3].line, Some(10), "sorted by line");
    assert_eq!(ps[0].file.as_deref(), Some("t.yaml"));
}

#[test]
fn invalid_names() {
    let ps = problems("streams:\n  bad.name:\n    subjects: [a]\n  \"has space\":\n    subjects: [b]\n  OK:\n    subjects: [c]\n    consumers:\n      \"x/y\": {}\n");
    has(&ps, "streams.bad.name", "'.'");
    has(&ps, "streams.has space", "whitespace");
    has(&ps, "streams.OK.consumers.x/y", "'/'");
    let long = "A".repeat(256);
    let ps = problems(&format!("streams:\n  {long}:\n    subjects: [a]\n"));
    has(&ps, &format!("streams.{long}"), "at most 255");
}

#[test]
fn enums_durations_sizes() {
    let ps = problems("streams:\n  A:\n    subjects: [a]\n    retention: forever\n    discard: oldest\n    compression: zip\n    max_age: 60\n    duplicate_window: 1x\n    max_msg_size: 3GB\n    max_msgs: -5\n");
    has(&ps, "streams.A.retention", "limits, interest, workqueue");
    has(&ps, "streams.A.discard", "did you mean \"old\"");
    has(&ps, "streams.A.compression", "none, s2");
    has(&ps, "streams.A.max_age", "100ms");
    has(&ps, "streams.A.duplicate_window", "not a duration");
    has(&ps, "streams.A.max_msg_size", "2GiB");
    has(&ps, "streams.A.max_msgs", "-1/unlimited");
    let t = yaml("streams:\n  A:\n    subjects: [a]\n    max_msgs: unlimited\n    max_age: unlimited\n    max_bytes: -1\n").unwrap();
    let v = t.to_value();
    assert_eq!(v["streams"]["A"]["max_msgs"], json!(-1));
    assert_eq!(v["streams"]["A"]["max_age"], json!(0));
    assert_eq!(v["streams"]["A"]["max_bytes"], json!(-1));
}

#[test]
fn subject_rules() {
    let ps = problems("streams:\n  A:\n    subjects: [\"a..b\", \"x.>.y\", \"ok.*\", \"ok.one\", \">\", \"$JS.API.>\", \"dup\", \"dup\"]\n");
    has(&ps, "streams.A.subjects.0", "empty token");
    has(&ps, "streams.A.subjects.1", "last token");
    has(
        &ps,
        "streams.A.subjects.3",
        "overlaps \"ok.*\" in the same stream",
    );
    has(&ps, "streams.A.subjects.4", "no_ack");
    has(&ps, "streams.A.subjects.5", "API");
    has(&ps, "streams.A.subjects.7", "listed twice");
}

#[test]
fn overlap_between_streams() {
    // The observability seed: root_cause_result is in two streams.
    let ps = problems(
        "streams:\n  RESPONSES:\n    subjects: [orchestrator_response, root_cause_result]\n  ROOT_CAUSE:\n    subjects: [root_cause_analysis, root_cause_result, rootcause, rootcause.*]\n",
    );
    has(
        &ps,
        "streams.ROOT_CAUSE.subjects.1",
        "overlaps \"root_cause_result\" of stream RESPONSES",
    );
    assert_eq!(ps[0].line, Some(5));
    let ps = problems("streams:\n  A:\n    subjects: [\"a.*\"]\n  B:\n    subjects: [\"*.b\"]\n");
    has(&ps, "streams.B.subjects.0", "10065");
    // default subject = the stream name
    let ps = problems("streams:\n  A:\n    subjects: [\"*\"]\n  B: {}\n");
    has(&ps, "streams.B", "overlaps");
    // disjoint ones are fine
    yaml("streams:\n  A:\n    subjects: [\"foo\"]\n  B:\n    subjects: [\"foo.>\"]\n  C:\n    subjects: [\"foo.*.*\"]\n  D:\n    subjects: [\"bar.*\"]\n").unwrap_err();
    yaml("streams:\n  A:\n    subjects: [\"foo\"]\n  B:\n    subjects: [\"foo.>\"]\n").unwrap();
}

#[test]
fn workqueue_rules() {
    let ps = problems(
        "streams:\n  WQ:\n    subjects: [wq.>]\n    retention: workqueue\n    consumers:\n      a:\n        filter_subject: wq.a.>\n      b:\n        filter_subject: wq.*.x\n      c: {}\n      d:\n        filter_subject: wq.d\n        ack_policy: none\n      e:\n        filter_subject: wq.e\n        deliver_policy: new\n",
    );
    has(
        &ps,
        "streams.WQ.consumers.b",
        "overlaps filter \"wq.a.>\" of consumer a",
    );
    has(&ps, "streams.WQ.consumers.c", "each needs a filter_subject");
    has(&ps, "streams.WQ.consumers.d.ack_policy", "explicit");
    has(
        &ps,
        "streams.WQ.consumers.e.deliver_policy",
        "deliver_policy: all",
    );
    // a single unfiltered consumer is fine
    yaml("streams:\n  WQ:\n    subjects: [wq.>]\n    retention: workqueue\n    consumers:\n      only: {}\n").unwrap();
}

#[test]
fn consumer_rules() {
    let ps = problems(
        "streams:\n  S:\n    subjects: [s.>]\n    max_age: 1m\n    duplicate_window: 2m\n    consumers:\n      bo:\n        backoff: [1s, 5s, 30s]\n        max_deliver: 2\n      both:\n        filter_subject: s.a\n        filter_subjects: [s.b]\n      outside:\n        filter_subject: other.>\n      ovl:\n        filter_subjects: [s.>, s.a]\n      push:\n        deliver_subject: s.loop\n        max_waiting: 5\n      pullhb:\n        idle_heartbeat: 5s\n      seq:\n        deliver_policy: by_start_sequence\n      lps:\n        deliver_policy: last_per_subject\n      reps:\n        replicas: 3\n",
    );
    has(&ps, "streams.S.duplicate_window", "longer than max_age");
    has(
        &ps,
        "streams.S.consumers.bo.max_deliver",
        "backoff has 3 steps",
    );
    has(&ps, "streams.S.consumers.both.filter_subjects", "not both");
    has(
        &ps,
        "streams.S.consumers.outside.filter_subject",
        "matches none of the stream's subjects",
    );
    has(&ps, "streams.S.consumers.ovl.filter_subjects.0", "overlap");
    has(&ps, "streams.S.consumers.push.deliver_subject", "loop");
    has(
        &ps,
        "streams.S.consumers.push.max_waiting",
        "pull consumers",
    );
    has(
        &ps,
        "streams.S.consumers.pullhb.idle_heartbeat",
        "push consumers",
    );
    has(
        &ps,
        "streams.S.consumers.seq.deliver_policy",
        "opt_start_seq",
    );
    has(
        &ps,
        "streams.S.consumers.lps.deliver_policy",
        "filter_subject",
    );
    has(
        &ps,
        "streams.S.consumers.reps.replicas",
        "more than the stream's 1",
    );
    // the server accepts max_deliver == number of backoff steps, but the
    // last step could never be used: natsbus reports it
    let e = yaml("streams:\n  S:\n    subjects: [s.>]\n    consumers:\n      bo:\n        backoff: [1s, 5s]\n        max_deliver: 2\n").unwrap_err();
    assert!(
        e.problems()
            .iter()
            .any(|p| p.field == "streams.S.consumers.bo.max_deliver"
                && p.message.contains("never used")),
        "{}",
        e.message
    );
    yaml("streams:\n  S:\n    subjects: [s.>]\n    consumers:\n      bo:\n        backoff: [1s, 5s]\n        max_deliver: 3\n").unwrap();
}

#[test]
fn stream_rules() {
    let ps = problems(
        "streams:\n  R:\n    subjects: [r]\n    replicas: 7\n  M:\n    mirror: {name: R}\n    subjects: [m]\n  D:\n    subjects: [d]\n    discard_new_per_subject: true\n  P:\n    subjects: [p]\n    deny_purge: true\n    allow_rollup_hdrs: true\n  X:\n    subjects: [x]\n    bogus_field: 1\n    consumers:\n      c:\n        ack_wiat: 1s\n",
    );
    has(&ps, "streams.R.replicas", "at most 5");
    has(&ps, "streams.M.subjects", "mirror");
    has(&ps, "streams.D.discard_new_per_subject", "discard: new");
    has(&ps, "streams.P.allow_rollup_hdrs", "deny_purge");
    has(&ps, "streams.X.bogus_field", "unknown field");
    has(
        &ps,
        "streams.X.consumers.c.ack_wiat",
        "did you mean \"ack_wait\"",
    );
    let ps = problems("streams:\n  A:\n    name: B\n    subjects: [a]\n  C:\n    replicas: 1\n    num_replicas: 1\nother: 1\n");
    has(&ps, "streams.A.name", "differs");
    has(&ps, "streams.C.replicas", "keep one");
    has(&ps, "other", "unknown field");
}

#[test]
fn seeds_are_expressible() {
    // Agentic system seed: six streams, push and pull consumers.
    yaml(
        "streams:
  WORKFLOWS: {subjects: [workflows.>], retention: workqueue, max_age: 7d, consumers: {workflow-processor: {ack_policy: explicit}}}
  EVENTS:
    subjects: [events.>]
    max_age: 30d
    consumers:
      event-logger: {deliver_subject: deliver.event-logger, ack_policy: explicit}
      event-analytics: {filter_subject: events.metrics.>}
  LOGS: {subjects: [logs.>], max_age: 14d, consumers: {log-aggregator: {}}}
  COMMANDS: {subjects: [commands.>], retention: workqueue, max_age: 1h, consumers: {command-executor: {max_deliver: 1}}}
  TELEMETRY: {subjects: [telemetry.>], max_age: 7d, consumers: {metrics-collector: {max_batch: 500}}}
  NOTIFICATIONS: {subjects: [notifications.>], retention: interest, max_age: 24h, consumers: {notification-dispatcher: {deliver_subject: deliver.notify}}}
",
    )
    .unwrap();
    // IoT seed: per-subject limits, 1GB, workqueue routes.
    yaml(
        "streams:
  TELEMETRY: {subjects: [telemetry.>], max_msgs_per_subject: 100000, max_age: 1h, max_bytes: 1GB, storage: file, replicas: 1, discard: old, duplicate_window: 2m, consumers: {ingest-workers: {ack_policy: explicit, deliver_policy: all, max_deliver: 3, max_ack_pending: 1000}}}
  SHADOW: {subjects: [shadow.>], max_msgs_per_subject: 10000, max_age: 1h, max_bytes: 256MB}
  COMMANDS: {subjects: [commands.>], max_msgs_per_subject: 10000, max_age: 1h, max_bytes: 256MB}
  ROUTES: {subjects: [routes.>], retention: work, max_age: 24h, max_bytes: 512MB, consumers: {route-delivery: {max_deliver: 3, ack_wait: 30s, max_ack_pending: 100}}}
",
    )
    .unwrap();
    // Memory streams with plain and wildcard subjects (observability seed, overlap fixed).
    yaml(
        "streams:
  ALERTS: {subjects: [alerts, alerts.*], storage: memory, max_msgs: 10000, max_bytes: 100MB, max_age: 7d}
  AGENT_TASKS: {subjects: [metric_agent, log_agent, deployment_agent], storage: memory, consumers: {metric_agent: {filter_subject: metric_agent}}}
  RUNBOOKS: {subjects: [runbooks, runbooks.*, runbook, runbook.*], storage: memory}
",
    )
    .unwrap();
    // ...and the seed's real RUNBOOK_EXECUTIONS stream overlaps RUNBOOKS.
    let ps = problems(
        "streams:
  RUNBOOKS: {subjects: [runbooks, runbooks.*, runbook, runbook.*], storage: memory}
  RUNBOOK_EXECUTIONS: {subjects: [runbook.execute, runbook.status.*], storage: memory}
",
    );
    has(
        &ps,
        "streams.RUNBOOK_EXECUTIONS.subjects.0",
        "overlaps \"runbook.*\" of stream RUNBOOKS",
    );
}

// ---------------------------------------------------------------- planning

fn server_stream(name: &str, subjects: &[&str], extra: Value) -> Value {
    let mut cfg = json!({
        "name": name, "subjects": subjects, "retention": "limits", "max_consumers": -1,
        "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msgs_per_subject": -1,
        "max_msg_size": -1, "discard": "old", "storage": "file", "num_replicas": 1,
        "duplicate_window": 120_000_000_000i64, "compression": "none", "allow_direct": false,
        "mirror_direct": false, "sealed": false, "deny_delete": false, "deny_purge": false,
        "allow_rollup_hdrs": false, "consumer_limits": {}, "allow_msg_ttl": false,
        "metadata": {"_nats.level": "5", "_nats.req.level": "0", "_nats.ver": "2.15.1"}
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        cfg[k] = v;
    }
    cfg
}

fn server_consumer(name: &str, extra: Value) -> Value {
    let mut cfg = json!({
        "durable_name": name, "name": name, "deliver_policy": "all", "ack_policy": "explicit",
        "ack_wait": 30_000_000_000i64, "max_deliver": -1, "replay_policy": "instant",
        "max_waiting": 512, "max_ack_pending": 1000, "num_replicas": 0,
        "metadata": {"_nats.level": "5", "_nats.req.level": "0", "_nats.ver": "2.15.1"}
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        cfg[k] = v;
    }
    cfg
}

fn only(plan: &Plan, stream: &str, consumer: Option<&str>) -> Change {
    plan.changes
        .iter()
        .find(|c| c.stream == stream && c.consumer.as_deref() == consumer)
        .cloned()
        .unwrap_or_else(|| panic!("no change for {stream}/{consumer:?} in\n{}", plan.render()))
}

#[test]
fn plan_create_unchanged_unmanaged() {
    let t = yaml("streams:\n  ORDERS:\n    subjects: [orders.>]\n    max_age: 7d\n    consumers:\n      worker: {}\n  NEW:\n    subjects: [new.>]\n").unwrap();
    let live = LiveState::new("2.15.1")
        .with_stream(
            server_stream(
                "ORDERS",
                &["orders.>"],
                json!({"max_age": 7 * 86400 * NS_PER_SEC}),
            ),
            vec![
                server_consumer("worker", json!({})),
                server_consumer("legacy", json!({})),
            ],
        )
        .with_stream(server_stream("OTHER", &["other"], json!({})), vec![]);
    let p = plan(&t, &live, &PlanOptions::default());
    assert_eq!(only(&p, "ORDERS", None).action, Action::Unchanged);
    assert_eq!(only(&p, "ORDERS", Some("worker")).action, Action::Unchanged);
    assert_eq!(only(&p, "ORDERS", Some("legacy")).action, Action::Unmanaged);
    assert_eq!(only(&p, "OTHER", None).action, Action::Unmanaged);
    let new = only(&p, "NEW", None);
    assert_eq!(new.action, Action::Create);
    let body = new.body.unwrap();
    assert_eq!(body["subjects"], json!(["new.>"]));
    assert_eq!(body["metadata"][MANAGED_KEY], "true");
    assert!(p.is_pending());
    let text = p.render();
    assert!(text.contains("+ create stream NEW"), "{text}");
    assert!(
        text.contains("- unmanaged: 1 stream and 1 consumer on the server"),
        "{text}"
    );
    let all = p.render_as(&PlanOptions::default(), render::Render::Everything);
    assert!(all.contains("- unmanaged stream OTHER"), "{all}");
    assert!(
        text.contains("= unchanged consumer ORDERS > worker"),
        "{text}"
    );
    let v = p.to_value();
    assert_eq!(v["pending"], json!(true));
    assert!(v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["action"] == "create" && c["stream"] == "NEW"));
}

#[test]
fn plan_update_in_place_overlays_live_config() {
    let t = yaml("streams:\n  EVENTS:\n    subjects: [events.>]\n    max_age: 14d\n    description: all events\n").unwrap();
    let live = LiveState::new("2.15.1").with_stream(
        server_stream(
            "EVENTS",
            &["events.>"],
            json!({"max_age": 7 * 86400 * NS_PER_SEC, "future_field": 42}),
        ),
        vec![],
    );
    let p = plan(&t, &live, &PlanOptions::default());
    let c = only(&p, "EVENTS", None);
    assert_eq!(c.action, Action::Update, "{}", p.render());
    assert_eq!(
        c.diff["max_age"],
        (
            json!(7 * 86400 * NS_PER_SEC),
            json!(14 * 86400 * NS_PER_SEC)
        )
    );
    let body = c.body.unwrap();
    assert_eq!(body["max_age"], json!(14 * 86400 * NS_PER_SEC));
    assert_eq!(body["description"], "all events");
    assert_eq!(body["future_field"], 42, "unknown live fields survive");
    assert_eq!(
        body["metadata"],
        json!({MANAGED_KEY: "true"}),
        "no _nats.* metadata is sent"
    );
    assert!(p.render().contains("max_age: 7d -> 14d"), "{}", p.render());
}

#[test]
fn plan_destructive_changes() {
    let live = LiveState::new("2.15.1").with_stream(
        server_stream(
            "S",
            &["s.a", "s.b"],
            json!({"max_msgs": 1000, "max_age": 86400 * NS_PER_SEC}),
        ),
        vec![],
    );
    for (text, field) in [
        ("max_msgs: 500", "max_msgs"),
        ("max_msgs: 1000\n    max_age: 1h", "max_age"),
        (
            "max_msgs: 1000\n    max_age: 1d\n    max_bytes: 1GB",
            "max_bytes",
        ),
        (
            "max_msgs: 1000\n    max_age: 1d\n    retention: interest",
            "retention",
        ),
    ] {
        let t = yaml(&format!(
            "streams:\n  S:\n    subjects: [s.a, s.b]\n    {text}\n"
        ))
        .unwrap();
        let p = plan(&t, &live, &PlanOptions::default());
        let c = only(&p, "S", None);
        assert_eq!(c.action, Action::Destructive, "{field}: {}", p.render());
        assert!(c.diff.contains_key(field));
        assert!(c.reason.is_some());
        assert_eq!(p.refused(false).len(), 1);
        assert!(p.refused(true).is_empty());
    }
    // removing a subject
    let t =
        yaml("streams:\n  S:\n    subjects: [s.a]\n    max_msgs: 1000\n    max_age: 1d\n").unwrap();
    let c = only(&plan(&t, &live, &PlanOptions::default()), "S", None);
    assert_eq!(c.action, Action::Destructive);
    assert!(c.reason.unwrap().contains("s.b"));
    // raising limits and adding subjects is a plain update
    let t = yaml(
        "streams:\n  S:\n    subjects: [s.b, s.a, s.c]\n    max_msgs: 2000\n    max_age: 2d\n",
    )
    .unwrap();
    let c = only(&plan(&t, &live, &PlanOptions::default()), "S", None);
    assert_eq!(c.action, Action::Update);
    // interest -> limits keeps every message: a plain update
    let interest = LiveState::new("2.15.1").with_stream(
        server_stream(
            "S",
            &["s.a", "s.b"],
            json!({"max_msgs": 1000, "max_age": 86400 * NS_PER_SEC, "retention": "interest"}),
        ),
        vec![],
    );
    let t = yaml(
        "streams:\n  S:\n    subjects: [s.a, s.b]\n    max_msgs: 1000\n    max_age: 1d\n    retention: limits\n",
    )
    .unwrap();
    let c = only(&plan(&t, &interest, &PlanOptions::default()), "S", None);
    assert_eq!(c.action, Action::Update, "{c:?}");
    assert!(c.diff.contains_key("retention"));
    // reordering subjects is nothing at all
    let t = yaml("streams:\n  S:\n    subjects: [s.b, s.a]\n    max_msgs: 1000\n    max_age: 1d\n")
        .unwrap();
    assert_eq!(
        only(&plan(&t, &live, &PlanOptions::default()), "S", None).action,
        Action::Unchanged
    );
}

#[test]
fn plan_blocked_changes() {
    let live = LiveState::new("2.15.1").with_stream(
        server_stream("S", &["s.>"], json!({"deny_delete": true})),
        vec![server_consumer("c", json!({}))],
    );
    let t =
        yaml("streams:\n  S:\n    subjects: [s.>]\n    storage: memory\n    deny_delete: true\n")
            .unwrap();
    let p = plan(&t, &live, &PlanOptions::default());
    let c = only(&p, "S", None);
    assert_eq!(c.action, Action::Blocked);
    assert_eq!(c.diff["storage"], (json!("file"), json!("memory")));
    let reason = c.reason.unwrap();
    assert!(
        reason.contains("file -> memory") && reason.contains("sources"),
        "{reason}"
    );
    assert!(p.render().contains("x blocked stream S"));
    let t = yaml(
        "streams:\n  S:\n    subjects: [s.>]\n    retention: workqueue\n    deny_delete: true\n",
    )
    .unwrap();
    assert_eq!(
        only(&plan(&t, &live, &PlanOptions::default()), "S", None).action,
        Action::Blocked
    );
    let t = yaml("streams:\n  S:\n    subjects: [s.>]\n").unwrap();
    let c = only(&plan(&t, &live, &PlanOptions::default()), "S", None);
    assert_eq!(
        c.action,
        Action::Blocked,
        "deny_delete can not be switched off"
    );
    // consumer immutables
    let t = yaml("streams:\n  S:\n    subjects: [s.>]\n    deny_delete: true\n    consumers:\n      c:\n        deliver_policy: new\n").unwrap();
    let p = plan(&t, &live, &PlanOptions::default());
    let c = only(&p, "S", Some("c"));
    assert_eq!(c.action, Action::Blocked);
    assert!(c.reason.unwrap().contains("deliver_policy"));
    let t = yaml("streams:\n  S:\n    subjects: [s.>]\n    deny_delete: true\n    consumers:\n      c:\n        deliver_subject: push.c\n").unwrap();
    assert_eq!(
        only(&plan(&t, &live, &PlanOptions::default()), "S", Some("c")).action,
        Action::Blocked
    );
    // mutable consumer fields update
    let t = yaml("streams:\n  S:\n    subjects: [s.>]\n    deny_delete: true\n    consumers:\n      c:\n        ack_wait: 1m\n        max_deliver: 5\n").unwrap();
    let c = only(&plan(&t, &live, &PlanOptions::default()), "S", Some("c"));
    assert_eq!(c.action, Action::Update);
    let body = c.body.unwrap();
    assert_eq!(body["config"]["ack_wait"], json!(60 * NS_PER_SEC));
    assert_eq!(body["action"], "");
    assert_eq!(body["stream_name"], "S");
}

#[test]
fn plan_respects_server_version() {
    let t = yaml("streams:\n  S:\n    subjects: [s]\n    allow_msg_ttl: true\n").unwrap();
    let p = plan(&t, &LiveState::new("2.10.26"), &PlanOptions::default());
    let c = only(&p, "S", None);
    assert_eq!(c.action, Action::Blocked);
    assert!(c.reason.unwrap().contains("2.11.0"));
    // no metadata marker for servers without metadata
    let t = yaml("streams:\n  S:\n    subjects: [s]\n").unwrap();
    let p = plan(&t, &LiveState::new("2.9.10"), &PlanOptions::default());
    assert!(only(&p, "S", None).body.unwrap().get("metadata").is_none());
    // max_consumers is immutable before 2.12.5
    let live = LiveState::new("2.12.4").with_stream(server_stream("S", &["s"], json!({})), vec![]);
    let t = yaml("streams:\n  S:\n    subjects: [s]\n    max_consumers: 5\n").unwrap();
    assert_eq!(
        only(&plan(&t, &live, &PlanOptions::default()), "S", None).action,
        Action::Blocked
    );
}

#[test]
fn plan_narrowing_interest_filter_is_destructive() {
    let live = LiveState::new("2.15.1").with_stream(
        server_stream("I", &["i.>"], json!({"retention": "interest"})),
        vec![server_consumer("c", json!({"filter_subject": "i.>"}))],
    );
    let t = yaml("streams:\n  I:\n    subjects: [i.>]\n    retention: interest\n    consumers:\n      c:\n        filter_subject: i.a\n").unwrap();
    let c = only(&plan(&t, &live, &PlanOptions::default()), "I", Some("c"));
    assert_eq!(c.action, Action::Destructive, "{:?}", c);
    // same filter written as filter_subjects: unchanged
    let t = yaml("streams:\n  I:\n    subjects: [i.>]\n    retention: interest\n    consumers:\n      c:\n        filter_subjects: [i.>]\n").unwrap();
    assert_eq!(
        only(&plan(&t, &live, &PlanOptions::default()), "I", Some("c")).action,
        Action::Unchanged
    );
}

#[test]
fn plan_blocks_overlap_with_unmanaged_stream() {
    let live = LiveState::new("2.15.1")
        .with_stream(server_stream("LEGACY", &["orders.>"], json!({})), vec![]);
    let t = yaml("streams:\n  ORDERS:\n    subjects: [orders.eu]\n").unwrap();
    let c = only(&plan(&t, &live, &PlanOptions::default()), "ORDERS", None);
    assert_eq!(c.action, Action::Blocked);
    assert!(c.reason.unwrap().contains("LEGACY"));
}

#[test]
fn export_round_trips() {
    let live = LiveState::new("2.15.1").with_stream(
        server_stream(
            "ORDERS",
            &["orders.>"],
            json!({"max_age": 7 * 86400 * NS_PER_SEC, "max_bytes": 1i64 << 30, "duplicate_window": 60 * NS_PER_SEC,
                   "metadata": {"_nats.ver": "2.15.1", "natsbus.managed": "true", "team": "core"}}),
        ),
        vec![
            server_consumer("worker", json!({"ack_wait": 10 * NS_PER_SEC, "backoff": [NS_PER_SEC, 5 * NS_PER_SEC], "max_deliver": 4, "filter_subject": "orders.eu"})),
            json!({"durable_name": "push", "name": "push", "deliver_policy": "all", "ack_policy": "none", "max_deliver": -1, "replay_policy": "instant", "deliver_subject": "deliver.push", "num_replicas": 0}),
        ],
    );
    let v = export(&live, &[]);
    let o = &v["streams"]["ORDERS"];
    assert_eq!(o["max_age"], "7d");
    assert_eq!(o["max_bytes"], "1GiB");
    assert_eq!(o["duplicate_window"], "1m");
    assert_eq!(o["metadata"], json!({"team": "core"}));
    assert!(o.get("storage").is_none(), "defaults are left out: {o}");
    assert_eq!(o["consumers"]["worker"]["backoff"], json!(["1s", "5s"]));
    assert!(
        o["consumers"]["worker"].get("ack_wait").is_none(),
        "ack_wait follows backoff"
    );
    assert!(o["consumers"]["worker"].get("ack_policy").is_none());
    assert_eq!(o["consumers"]["push"]["ack_policy"], "none");
    let text = export_yaml(&live, &[]);
    let t = Topology::from_str_with_env(&text, Format::Yaml, None, &no_env)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let p = plan(&t, &live, &PlanOptions::default());
    assert!(!p.is_pending(), "{}\n{text}", p.render());
}

const DEAD_LETTERED: &str = "streams:
  TASKS:
    subjects: [tasks.>]
    retention: workqueue
    consumers:
      worker:
        max_deliver: 5
        dead_letter: dlq.tasks
  DLQ:
    subjects: [dlq.>]
";

#[test]
fn dead_letter_is_kept_in_metadata_and_round_trips() {
    assert_eq!(
        settings::CONSUMER_SETTING_FIELDS,
        settings::CONSUMER_SETTINGS
            .iter()
            .map(|s| s.field)
            .collect::<Vec<_>>()
            .as_slice()
    );
    let t = yaml(DEAD_LETTERED).unwrap();
    let worker = &t.streams()[0].consumers[0];
    assert_eq!(
        worker.config["metadata"]["natsbus.dead_letter"],
        json!("dlq.tasks")
    );
    assert!(!worker.config.contains_key("dead_letter"));
    // Planned against an empty server: the create carries it in metadata.
    let p = plan(&t, &LiveState::new("2.15.1"), &PlanOptions::default());
    let create = only(&p, "TASKS", Some("worker"));
    assert_eq!(
        create.body.unwrap()["config"]["metadata"]["natsbus.dead_letter"],
        json!("dlq.tasks")
    );
    // The server has it: unchanged; a different subject is an update.
    let meta = json!({"metadata": {"_nats.ver": "2.15.1", "natsbus.dead_letter": "dlq.tasks"},
                      "max_deliver": 5});
    let live = LiveState::new("2.15.1")
        .with_stream(
            server_stream("TASKS", &["tasks.>"], json!({"retention": "workqueue"})),
            vec![server_consumer("worker", meta)],
        )
        .with_stream(server_stream("DLQ", &["dlq.>"], json!({})), vec![]);
    let p = plan(&t, &live, &PlanOptions::default());
    assert_eq!(only(&p, "TASKS", Some("worker")).action, Action::Unchanged);
    let moved = yaml(&DEAD_LETTERED.replace("dlq.tasks", "dlq.other")).unwrap();
    let p = plan(&moved, &live, &PlanOptions::default());
    let update = only(&p, "TASKS", Some("worker"));
    assert_eq!(update.action, Action::Update);
    assert_eq!(
        update.diff.keys().collect::<Vec<_>>(),
        vec!["dead_letter"],
        "{}",
        p.render()
    );
    assert!(p.render().contains("dead_letter"), "{}", p.render());
    let config = &update.body.unwrap()["config"];
    assert_eq!(
        config["metadata"]["natsbus.dead_letter"],
        json!("dlq.other")
    );
    assert!(config.get("dead_letter").is_none(), "never sent as a field");
    // Export writes the setting, not the metadata key.
    let v = export(&live, &[]);
    let exported = &v["streams"]["TASKS"]["consumers"]["worker"];
    assert_eq!(exported["dead_letter"], json!("dlq.tasks"), "{v}");
    assert!(exported.get("metadata").is_none(), "{v}");
}

#[test]
fn dead_letter_rules() {
    let p = problems(&DEAD_LETTERED.replace("dlq.tasks", "nowhere.tasks"));
    has(
        &p,
        "streams.TASKS.consumers.worker.dead_letter",
        "no declared stream stores \"nowhere.tasks\"",
    );
    let p = problems(&DEAD_LETTERED.replace("dlq.tasks", "tasks.failed"));
    has(
        &p,
        "streams.TASKS.consumers.worker.dead_letter",
        "the consumer's own stream",
    );
    let p = problems(&DEAD_LETTERED.replace("        max_deliver: 5\n", ""));
    has(
        &p,
        "streams.TASKS.consumers.worker.max_deliver",
        "finite max_deliver",
    );
    let p = problems(&DEAD_LETTERED.replace("dlq.tasks", "dlq.*"));
    has(
        &p,
        "streams.TASKS.consumers.worker.dead_letter",
        "has a wildcard",
    );
    let p = problems(&DEAD_LETTERED.replace("dead_letter: dlq.tasks", "dead_letter: [a]"));
    has(
        &p,
        "streams.TASKS.consumers.worker.dead_letter",
        "must be text",
    );
    let p = problems(&DEAD_LETTERED.replace(
        "dead_letter: dlq.tasks",
        "dead_letter: dlq.tasks\n        metadata: {natsbus.dead_letter: dlq.x}",
    ));
    has(
        &p,
        "streams.TASKS.consumers.worker.dead_letter",
        "give it once",
    );
}

#[test]
fn ack_wait_next_to_backoff_must_be_its_first_step() {
    let base = "streams:\n  S:\n    subjects: [s.>]\n    consumers:\n      c:\n        max_deliver: 5\n        backoff: [1s, 10s]\n";
    yaml(base).unwrap();
    yaml(&format!("{base}        ack_wait: 1s\n")).unwrap();
    let p = problems(&format!("{base}        ack_wait: 30s\n"));
    has(
        &p,
        "streams.S.consumers.c.ack_wait",
        "the server replaces ack_wait with the first backoff step (1s)",
    );
}

#[test]
fn check_thresholds_are_settings_kept_in_a_normal_form() {
    let base = "streams:\n  S:\n    subjects: [s.>]\n    consumers:\n      c:\n";
    let t = yaml(&format!(
        "{base}        lag_warn: 100\n        lag_crit: \"1000\"\n        inactive_warn: 300s\n        inactive_crit: 1h30m\n"
    ))
    .unwrap();
    let meta = &t.streams()[0].consumers[0].config["metadata"];
    assert_eq!(meta["natsbus.lag_warn"], json!("100"));
    assert_eq!(meta["natsbus.lag_crit"], json!("1000"));
    // 300s and 5m are one value: plan compares the shortest form.
    assert_eq!(meta["natsbus.inactive_warn"], json!("5m"));
    assert_eq!(meta["natsbus.inactive_crit"], json!("1h30m"));
    let p = problems(&format!("{base}        lag_warn: -5\n"));
    has(&p, "streams.S.consumers.c.lag_warn", "whole number");
    let p = problems(&format!("{base}        inactive_crit: soon\n"));
    has(&p, "streams.S.consumers.c.inactive_crit", "not a duration");
    let p = problems(&format!(
        "{base}        ack_pending_warn: 500\n        ack_pending_crit: 50\n"
    ));
    has(
        &p,
        "streams.S.consumers.c.ack_pending_warn",
        "ack_pending_warn 500 is above ack_pending_crit 50",
    );
    let p = problems(&format!(
        "{base}        inactive_warn: 2h\n        inactive_crit: 1h\n"
    ));
    has(
        &p,
        "streams.S.consumers.c.inactive_warn",
        "the warning must come first",
    );
}

/// A small deterministic generator (xorshift64*), for the property tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

fn random_streams(rng: &mut Rng) -> Vec<StreamSpec> {
    // Literal tokens, both wildcards, and the server's quirk: a token that
    // only starts with `*` or `>` counts as a wildcard where it compares
    // tokens, and as a literal elsewhere.
    const TOKENS: &[&str] = &["a", "b", "c", "*", ">", "*x", ">y", "ab"];
    (0..2 + rng.below(5))
        .map(|i| {
            let subjects: Vec<Value> = (0..1 + rng.below(5))
                .map(|_| {
                    let n = 1 + rng.below(4);
                    let tokens: Vec<&str> =
                        (0..n).map(|_| TOKENS[rng.below(TOKENS.len())]).collect();
                    Value::String(tokens.join("."))
                })
                .collect();
            let mut config = serde_json::Map::new();
            config.insert("name".into(), json!(format!("S{i}")));
            config.insert("subjects".into(), Value::Array(subjects));
            StreamSpec {
                name: format!("S{i}"),
                config,
                consumers: Vec::new(),
            }
        })
        .collect()
}

#[test]
fn indexed_overlap_agrees_with_the_pairwise_rule_on_random_subjects() {
    let lines = source::Lines::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut found = 0;
    for _ in 0..20_000 {
        let streams = random_streams(&mut rng);
        let mut pairwise = schema::Ctx {
            file: None,
            lines: &lines,
            problems: Vec::new(),
        };
        validate::cross_stream_overlap_pairwise(&mut pairwise, &streams);
        let mut indexed = schema::Ctx {
            file: None,
            lines: &lines,
            problems: Vec::new(),
        };
        validate::cross_stream_overlap_indexed(&mut indexed, &streams);
        assert_eq!(indexed.problems, pairwise.problems, "{streams:?}");
        found += pairwise.problems.len();
    }
    assert!(
        found > 1000,
        "the sets must overlap often to test anything: {found}"
    );
}

#[test]
fn overlap_of_many_disjoint_subjects_is_found_without_comparing_every_pair() {
    // 100,000 subjects in 25,000 streams, one overlap planted at the end.
    let mut streams: Vec<StreamSpec> = (0..25_000)
        .map(|i| {
            let subjects: Vec<Value> = (0..4)
                .map(|j| json!(format!("tenant{i}.svc{j}.>")))
                .collect();
            let mut config = serde_json::Map::new();
            config.insert("name".into(), json!(format!("S{i}")));
            config.insert("subjects".into(), Value::Array(subjects));
            StreamSpec {
                name: format!("S{i}"),
                config,
                consumers: Vec::new(),
            }
        })
        .collect();
    streams[24_999].config["subjects"][3] = json!("tenant7.*.x");
    let lines = source::Lines::new();
    let mut ctx = schema::Ctx {
        file: None,
        lines: &lines,
        problems: Vec::new(),
    };
    validate::cross_stream_overlap_indexed(&mut ctx, &streams);
    let fields: Vec<&str> = ctx.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        vec!["streams.S24999.subjects.3"; 4],
        "{:?}",
        ctx.problems
    );
}
