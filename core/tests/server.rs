//! Topology plan/apply/verify/export against a real nats-server.
//!
//! These check natsbus's model of the server (defaults, overlap answers,
//! which changes are refused) against the server itself.

mod common;

use common::{api, err_code, js, publish, stream_info, Server};
use natsbus_core::subjects;
use natsbus_core::topology::{
    self, apply, export_yaml, fetch_live, plan, verify, Action, ApplyOptions, Format, PlanOptions,
    Topology,
};
use natsbus_core::ErrorKind;
use serde_json::{json, Value};

fn topo(text: &str) -> Topology {
    Topology::from_str(text, Format::Yaml, Some("test.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

async fn live_plan(client: &async_nats::Client, t: &Topology) -> topology::Plan {
    let live = fetch_live(&js(client)).await.expect("fetch live");
    plan(t, &live, &PlanOptions::default())
}

/// A broad topology: the seeds' kinds of streams and consumers.
const BROAD: &str = r#"
streams:
  WORKFLOWS:
    subjects: ["workflows.>"]
    retention: workqueue
    max_age: 7d
    max_bytes: 1GiB
    consumers:
      workflow-processor:
        ack_wait: 30s
        max_deliver: 5
        max_ack_pending: 1000
  EVENTS:
    subjects: ["events.>"]
    max_age: 30d
    description: system events
    metadata: {team: platform}
    consumers:
      event-logger:
        deliver_subject: deliver.event-logger
        ack_policy: none
      event-analytics:
        filter_subject: events.metrics.>
        backoff: [1s, 5s, 30s]
        max_deliver: 4
      event-push-acked:
        deliver_subject: deliver.acked
        deliver_group: loggers
        idle_heartbeat: 5s
        flow_control: true
  NOTIFICATIONS:
    subjects: ["notifications.>"]
    retention: interest
    max_age: 24h
    consumers:
      dispatcher:
        filter_subjects: [notifications.email.>, notifications.sms.>]
  TELEMETRY:
    subjects: ["telemetry.>"]
    max_msgs_per_subject: 100000
    max_age: 1h
    max_bytes: 1GB
    discard: old
    duplicate_window: 2m
    consumers:
      ingest-workers:
        max_deliver: 3
        max_ack_pending: 1000
  ALERTS:
    subjects: [alerts, "alerts.*"]
    storage: memory
    max_msgs: 10000
    max_bytes: 100MB
    max_age: 1m
  LIMITED:
    subjects: ["limited.>"]
    consumer_limits: {max_ack_pending: 50, inactive_threshold: 1h}
    allow_rollup_hdrs: true
    allow_direct: true
    compression: s2
    consumers:
      small: {}
  TTL:
    subjects: ["ttl.>"]
    allow_msg_ttl: true
    subject_delete_marker_ttl: 5s
  MIRROR:
    mirror: {name: EVENTS}
  SOURCED:
    sources: [{name: TELEMETRY, filter_subject: "telemetry.a.>"}, {name: ALERTS}]
    subjects: ["sourced.own"]
  DEFAULTS: {}
"#;

#[tokio::test]
async fn normalized_defaults_match_what_the_server_stores() {
    let server = Server::start();
    let client = server.client().await;
    let t = topo(BROAD);
    let before = live_plan(&client, &t).await;
    assert!(
        before.changes.iter().all(|c| c.action == Action::Create),
        "{}",
        before.render()
    );
    let applied = apply(&js(&client), &t, &ApplyOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        applied
            .changes
            .iter()
            .all(|c| c.outcome == Some(natsbus_core::topology::plan::Outcome::Applied)),
        "every change says it was applied"
    );
    let mut carried_out = applied.clone();
    for c in &mut carried_out.changes {
        c.outcome = None;
    }
    assert_eq!(carried_out, before, "apply carries out the plan it showed");
    let after = live_plan(&client, &t).await;
    assert!(
        !after.is_pending(),
        "an applied topology must plan as nothing to do:\n{}",
        after.render()
    );
    assert!(after.changes.iter().all(|c| c.action == Action::Unchanged));
    verify(&js(&client), &t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // natsbus marks what it manages
    let info = stream_info(&client, "EVENTS").await;
    assert_eq!(info["config"]["metadata"][topology::MANAGED_KEY], "true");
    assert_eq!(info["config"]["metadata"]["team"], "platform");
}

#[tokio::test]
async fn apply_is_idempotent_and_reports_unmanaged() {
    let server = Server::start();
    let client = server.client().await;
    let t =
        topo("streams:\n  ORDERS:\n    subjects: [orders.>]\n    consumers:\n      worker: {}\n");
    apply(&js(&client), &t, &ApplyOptions::default())
        .await
        .unwrap();
    // Something natsbus does not manage, created by hand.
    let r = api(
        &client,
        "STREAM.CREATE.HANDMADE",
        json!({"name": "HANDMADE", "subjects": ["hand.>"]}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let r = api(
        &client,
        "CONSUMER.CREATE.ORDERS.manual",
        json!({"stream_name": "ORDERS", "config": {"durable_name": "manual", "ack_policy": "explicit"}, "action": ""}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let created = stream_info(&client, "ORDERS").await["created"].clone();
    for _ in 0..3 {
        let p = apply(&js(&client), &t, &ApplyOptions::default())
            .await
            .unwrap();
        assert!(!p.is_pending(), "{}", p.render());
        let unmanaged: Vec<_> = p
            .changes
            .iter()
            .filter(|c| c.action == Action::Unmanaged)
            .collect();
        // Apply asks only about what the topology declares: the hand-made
        // consumer on ORDERS is reported, the other stream is not read.
        assert_eq!(unmanaged.len(), 1, "{}", p.render());
        assert_eq!(unmanaged[0].consumer.as_deref(), Some("manual"));
    }
    // A plan lists the rest of the server by name.
    let p = natsbus_core::topology::plan_live(&js(&client), &t, &Default::default())
        .await
        .unwrap();
    let unmanaged: Vec<_> = p
        .changes
        .iter()
        .filter(|c| c.action == Action::Unmanaged)
        .map(|c| (c.stream.as_str(), c.consumer.as_deref()))
        .collect();
    assert_eq!(
        unmanaged,
        vec![("ORDERS", Some("manual")), ("HANDMADE", None)],
        "{}",
        p.render()
    );
    assert_eq!(
        stream_info(&client, "ORDERS").await["created"],
        created,
        "never recreated"
    );
    let r = api(&client, "STREAM.INFO.HANDMADE", Value::Null).await;
    assert!(
        r.get("error").is_none(),
        "unmanaged streams are never deleted"
    );
}

#[tokio::test]
async fn overlap_answers_agree_with_the_server() {
    let server = Server::start();
    let client = server.client().await;
    let cases = [
        ("a.*", "*.b"),
        ("foo.*.baz", "foo.>"),
        ("foo.*", "foo.*.*"),
        ("foo", "foo.>"),
        ("foo.bar", "foo.*"),
        ("foo.bar", "foo.baz"),
        ("foo.>", "bar.>"),
        ("*", "foo"),
        ("*", "foo.bar"),
        ("*.*", "foo.>"),
        ("foo.*.bar", "foo.baz.*"),
        ("foo.*.bar", "foo.*.baz"),
        ("a.b.c", "a.*.>"),
        ("a.b", "a.*.>"),
        ("foo.a*", "foo.>"),
        ("foo.a*", "foo.b*"),
        ("x.y", "x.y"),
        ("x.*x", "x.y.>"),
        ("*.*x", "*.b"),
    ];
    // nats-server removes an account's streams directory when its last
    // stream is deleted; a create racing that removal fails with 10049
    // ("could not create storage directory"). One stream that lives through
    // the whole test keeps the directory, so each answer is about overlap.
    let r = api(
        &client,
        "STREAM.CREATE.KEEP",
        json!({"name": "KEEP", "subjects": ["zz.keep.only.this"]}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    for (i, (a, b)) in cases.iter().enumerate() {
        // Across streams: 10065. (no_ack so wildcard-led subjects may touch the API space.)
        let sa = format!("A{i}");
        let sb = format!("B{i}");
        let r = api(
            &client,
            &format!("STREAM.CREATE.{sa}"),
            json!({"name": sa, "subjects": [a], "no_ack": true}),
        )
        .await;
        assert!(r.get("error").is_none(), "{a}: {r}");
        let r = api(
            &client,
            &format!("STREAM.CREATE.{sb}"),
            json!({"name": sb, "subjects": [b], "no_ack": true}),
        )
        .await;
        let server_says = err_code(&r) == Some(10065);
        assert!(server_says || r.get("error").is_none(), "{b}: {r}");
        assert_eq!(
            subjects::collide(a, b),
            server_says,
            "across streams: {a} vs {b}"
        );
        for s in [&sa, &sb] {
            api(&client, &format!("STREAM.DELETE.{s}"), Value::Null).await;
        }
        // Within one stream: 10052.
        if a != b {
            let sc = format!("C{i}");
            let r = api(
                &client,
                &format!("STREAM.CREATE.{sc}"),
                // A literal prefix of its own keeps the answer the same for
                // (a, b) while ruling out a collision with the streams of the
                // cross-stream check, whose deletion may still be settling.
                json!({"name": sc, "subjects": [format!("w{i}.{a}"), format!("w{i}.{b}")], "no_ack": true}),
            )
            .await;
            let server_says = err_code(&r) == Some(10052);
            assert!(server_says || r.get("error").is_none(), "{a},{b}: {r}");
            assert_eq!(
                subjects::collide(a, b),
                server_says,
                "within a stream: {a} vs {b}"
            );
            api(&client, &format!("STREAM.DELETE.{sc}"), Value::Null).await;
        }
    }
}

#[tokio::test]
async fn storage_change_is_blocked_and_data_untouched() {
    let server = Server::start();
    let client = server.client().await;
    apply(
        &js(&client),
        &topo("streams:\n  LOGS:\n    subjects: [logs.>]\n    max_age: 14d\n"),
        &ApplyOptions::default(),
    )
    .await
    .unwrap();
    publish(&client, "logs.app", 5).await;
    let changed = topo("streams:\n  LOGS:\n    subjects: [logs.>]\n    max_age: 14d\n    storage: memory\n  NEW:\n    subjects: [new.>]\n");
    for allow in [false, true] {
        let e = apply(
            &js(&client),
            &changed,
            &ApplyOptions {
                allow_destructive: allow,
                ..ApplyOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Apply);
        assert!(
            e.message.contains("LOGS") && e.message.contains("storage"),
            "{e}"
        );
        let plan = e.plan().cloned().expect("the error carries the plan");
        let logs = plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["stream"] == "LOGS")
            .unwrap();
        assert_eq!(logs["action"], "blocked");
        assert_eq!(logs["diff"]["storage"], json!(["file", "memory"]));
    }
    let info = stream_info(&client, "LOGS").await;
    assert_eq!(info["config"]["storage"], "file");
    assert_eq!(info["state"]["messages"], 5);
    let r = api(&client, "STREAM.INFO.NEW", Value::Null).await;
    assert_eq!(
        err_code(&r),
        Some(10059),
        "nothing is sent when a change is refused"
    );
    // The server agrees the change is impossible.
    let mut body = info["config"].clone();
    body["storage"] = json!("memory");
    assert_eq!(
        err_code(&api(&client, "STREAM.UPDATE.LOGS", body).await),
        Some(10052)
    );
}

#[tokio::test]
async fn max_age_change_is_applied_in_place() {
    let server = Server::start();
    let client = server.client().await;
    let t1 = topo("streams:\n  EVENTS:\n    subjects: [events.>]\n    max_age: 7d\n    description: keep me\n    consumers:\n      reader: {}\n");
    apply(&js(&client), &t1, &ApplyOptions::default())
        .await
        .unwrap();
    publish(&client, "events.x", 4).await;
    let created = stream_info(&client, "EVENTS").await["created"].clone();
    let t2 = topo("streams:\n  EVENTS:\n    subjects: [events.>]\n    max_age: 14d\n    description: keep me\n    consumers:\n      reader: {}\n");
    let p = apply(&js(&client), &t2, &ApplyOptions::default())
        .await
        .unwrap();
    let c = p
        .changes
        .iter()
        .find(|c| c.stream == "EVENTS" && c.consumer.is_none())
        .unwrap();
    assert_eq!(c.action, Action::Update);
    assert_eq!(c.diff.keys().collect::<Vec<_>>(), vec!["max_age"]);
    assert!(p.render().contains("max_age: 7d -> 14d"), "{}", p.render());
    let info = stream_info(&client, "EVENTS").await;
    assert_eq!(
        info["config"]["max_age"],
        json!(14u64 * 86400 * 1_000_000_000)
    );
    assert_eq!(
        info["config"]["description"], "keep me",
        "the rest of the config survives the update"
    );
    assert_eq!(info["state"]["messages"], 4);
    assert_eq!(info["created"], created);
    assert!(!live_plan(&client, &t2).await.is_pending());
    // verify sees drift against the old file
    let e = verify(&js(&client), &t1).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Drift);
    assert!(e.message.contains("max_age"), "{e}");
    assert_eq!(e.plan().unwrap()["pending"], true);
}

#[tokio::test]
async fn lowered_limit_needs_allow_destructive() {
    let server = Server::start();
    let client = server.client().await;
    apply(
        &js(&client),
        &topo("streams:\n  T:\n    subjects: [t.>]\n    max_msgs: 100\n"),
        &ApplyOptions::default(),
    )
    .await
    .unwrap();
    publish(&client, "t.x", 10).await;
    let lowered = topo("streams:\n  T:\n    subjects: [t.>]\n    max_msgs: 5\n");
    let e = apply(&js(&client), &lowered, &ApplyOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Apply);
    assert!(
        e.message.contains("max_msgs") && e.message.contains("allow_destructive"),
        "{e}"
    );
    assert_eq!(
        stream_info(&client, "T").await["state"]["messages"],
        10,
        "refused: nothing deleted"
    );
    let p = apply(
        &js(&client),
        &lowered,
        &ApplyOptions {
            allow_destructive: true,
            ..ApplyOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(p.changes[0].action, Action::Destructive);
    let info = stream_info(&client, "T").await;
    assert_eq!(info["config"]["max_msgs"], 5);
    assert_eq!(info["state"]["messages"], 5);
    assert!(!live_plan(&client, &lowered).await.is_pending());
}

#[tokio::test]
async fn blocked_consumer_changes_are_ones_the_server_refuses() {
    let server = Server::start();
    let client = server.client().await;
    let base = "streams:\n  S:\n    subjects: [s.>]\n    consumers:\n      c:\n        filter_subject: s.a\n";
    apply(&js(&client), &topo(base), &ApplyOptions::default())
        .await
        .unwrap();
    for change in [
        "deliver_policy: new",
        "ack_policy: all",
        "replay_policy: original",
        "max_waiting: 10",
        "deliver_subject: push.c",
    ] {
        let t = topo(&format!("{base}        {change}\n"));
        let p = live_plan(&client, &t).await;
        let c = p
            .changes
            .iter()
            .find(|c| c.consumer.as_deref() == Some("c"))
            .unwrap();
        assert_eq!(c.action, Action::Blocked, "{change}: {}", p.render());
        // Sent anyway, the server refuses it too.
        let r = api(&client, "CONSUMER.CREATE.S.c", c.body.clone().unwrap()).await;
        assert_eq!(err_code(&r), Some(10012), "{change}: {r}");
    }
    for (extra, filter) in [
        ("ack_wait: 10s", "s.a"),
        ("max_deliver: 3", "s.a"),
        ("", "s.b"),
        ("description: hi", "s.b"),
    ] {
        let t = topo(&format!(
            "streams:\n  S:\n    subjects: [s.>]\n    consumers:\n      c:\n        filter_subject: {filter}\n        {extra}\n"
        ));
        let p = apply(&js(&client), &t, &ApplyOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert!(
            p.changes.iter().any(|c| c.action == Action::Update),
            "{extra} {filter}: {}",
            p.render()
        );
        assert!(
            !live_plan(&client, &t).await.is_pending(),
            "{extra} {filter}"
        );
    }
}

#[tokio::test]
async fn ten_concurrent_applies_on_a_fresh_server_converge() {
    let server = Server::start();
    let t = topo(BROAD);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = server.client().await;
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            apply(&js(&client), &t, &ApplyOptions::default()).await
        }));
    }
    for task in tasks {
        task.await
            .expect("task")
            .unwrap_or_else(|e| panic!("a concurrent apply failed: {e}"));
    }
    let client = server.client().await;
    let p = live_plan(&client, &t).await;
    assert!(!p.is_pending(), "{}", p.render());
    let live = fetch_live(&js(&client)).await.unwrap();
    assert_eq!(live.streams.len(), t.stream_names().len());
}

#[tokio::test]
async fn export_round_trips_to_an_empty_server() {
    let a = Server::start();
    let client_a = a.client().await;
    let original = topo(BROAD);
    apply(&js(&client_a), &original, &ApplyOptions::default())
        .await
        .unwrap();
    let yaml = export_yaml(&fetch_live(&js(&client_a)).await.unwrap(), &[]);
    let exported = Topology::from_str(&yaml, Format::Yaml, Some("exported.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(exported.stream_names().len(), original.stream_names().len());
    let b = Server::start();
    let client_b = b.client().await;
    apply(&js(&client_b), &exported, &ApplyOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let p = live_plan(&client_b, &original).await;
    assert!(!p.is_pending(), "{}\n--- exported:\n{yaml}", p.render());
    // Only the requested streams when names are given.
    let one = export_yaml(
        &fetch_live(&js(&client_a)).await.unwrap(),
        &["EVENTS".to_string()],
    );
    let t = Topology::from_str(&one, Format::Yaml, None).unwrap();
    assert_eq!(t.stream_names(), vec!["EVENTS"]);
}

#[tokio::test]
async fn fetch_live_pages_through_many_streams() {
    let server = Server::start();
    let client = server.client().await;
    // The server pages stream lists at 256 and consumer lists at 256.
    for i in 0..260 {
        let r = api(
            &client,
            &format!("STREAM.CREATE.P{i}"),
            json!({"name": format!("P{i}"), "subjects": [format!("p.{i}")], "storage": "memory"}),
        )
        .await;
        assert!(r.get("error").is_none(), "{r}");
    }
    for i in 0..260 {
        let r = api(
            &client,
            &format!("CONSUMER.CREATE.P0.c{i}"),
            json!({"stream_name": "P0", "config": {"durable_name": format!("c{i}"), "ack_policy": "explicit"}, "action": ""}),
        )
        .await;
        assert!(r.get("error").is_none(), "{r}");
    }
    let live = fetch_live(&js(&client)).await.unwrap();
    assert_eq!(live.streams.len(), 260);
    assert_eq!(live.stream("P0").unwrap().consumers.len(), 260);
    assert_eq!(live.server_version, client.server_info().version);
}

/// Offline validation refuses what the server refuses, and accepts the
/// borderline cases the server accepts.
#[tokio::test]
async fn offline_rules_agree_with_the_server() {
    let server = Server::start();
    let client = server.client().await;
    let ns = 1_000_000_000i64;
    // (stream config, consumers [(name, config)], does the server accept it?)
    type Case = (Value, Vec<(&'static str, Value)>, bool);
    let cases: Vec<Case> = vec![
        (json!({"subjects": ["a.*", "*.b"]}), vec![], false),
        (json!({"subjects": ["dup", "dup"]}), vec![], false),
        (
            json!({"subjects": ["ok.>"], "num_replicas": 6}),
            vec![],
            false,
        ),
        (
            json!({"subjects": ["ok.>"], "max_age": 50_000_000}),
            vec![],
            false,
        ),
        (
            json!({"subjects": ["ok.>"], "max_age": ns, "duplicate_window": 2 * ns}),
            vec![],
            false,
        ),
        (
            json!({"subjects": ["ok.>"], "max_age": ns, "duplicate_window": ns}),
            vec![],
            true,
        ),
        (
            json!({"subjects": ["ok.>"], "duplicate_window": 50_000_000}),
            vec![],
            false,
        ),
        (json!({"subjects": [">"]}), vec![], false),
        (json!({"subjects": ["$JS.API.x"]}), vec![], false),
        (
            json!({"subjects": ["ok.>"], "discard_new_per_subject": true}),
            vec![],
            false,
        ),
        (
            json!({"subjects": ["ok.>"], "deny_purge": true, "allow_rollup_hdrs": true}),
            vec![],
            false,
        ),
        (
            json!({"subjects": ["ok.>"], "republish": {"dest": "ok.again"}}),
            vec![],
            false,
        ),
        (
            json!({"subjects": ["ok.>"], "republish": {"dest": "elsewhere.>"}}),
            vec![],
            true,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![(
                "bo",
                json!({"ack_policy": "explicit", "backoff": [ns, 2 * ns], "max_deliver": 1}),
            )],
            false,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![(
                "bo",
                json!({"ack_policy": "explicit", "backoff": [ns, 2 * ns], "max_deliver": 2}),
            )],
            true,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![(
                "f",
                json!({"ack_policy": "explicit", "filter_subject": "ok.a", "filter_subjects": ["ok.b"]}),
            )],
            false,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![(
                "f",
                json!({"ack_policy": "explicit", "filter_subjects": ["ok.>", "ok.a"]}),
            )],
            false,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![(
                "p",
                json!({"ack_policy": "explicit", "idle_heartbeat": 5 * ns}),
            )],
            false,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![("p", json!({"deliver_subject": "ok.loop"}))],
            false,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![(
                "p",
                json!({"deliver_subject": "out.x", "flow_control": true}),
            )],
            false,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![(
                "s",
                json!({"ack_policy": "explicit", "deliver_policy": "by_start_sequence"}),
            )],
            false,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![(
                "s",
                json!({"ack_policy": "explicit", "deliver_policy": "last_per_subject"}),
            )],
            false,
        ),
        (
            json!({"subjects": ["ok.>"], "consumer_limits": {"max_ack_pending": 10}}),
            vec![(
                "m",
                json!({"ack_policy": "explicit", "max_ack_pending": 20}),
            )],
            false,
        ),
        (
            json!({"subjects": ["ok.>"]}),
            vec![("r", json!({"ack_policy": "explicit", "num_replicas": 3}))],
            false,
        ),
        (
            json!({"subjects": ["wq.>"], "retention": "workqueue"}),
            vec![("a", json!({"ack_policy": "none"}))],
            false,
        ),
        (
            json!({"subjects": ["wq.>"], "retention": "workqueue"}),
            vec![(
                "a",
                json!({"ack_policy": "explicit", "deliver_policy": "new"}),
            )],
            false,
        ),
        (
            json!({"subjects": ["wq.>"], "retention": "workqueue"}),
            vec![
                ("a", json!({"ack_policy": "explicit"})),
                (
                    "b",
                    json!({"ack_policy": "explicit", "filter_subject": "wq.b"}),
                ),
            ],
            false,
        ),
        (
            json!({"subjects": ["wq.>"], "retention": "workqueue"}),
            vec![
                (
                    "a",
                    json!({"ack_policy": "explicit", "filter_subject": "wq.a.>"}),
                ),
                (
                    "b",
                    json!({"ack_policy": "explicit", "filter_subject": "wq.*.x"}),
                ),
            ],
            false,
        ),
        (
            json!({"subjects": ["wq.>"], "retention": "workqueue"}),
            vec![
                (
                    "a",
                    json!({"ack_policy": "explicit", "filter_subject": "wq.a.>"}),
                ),
                (
                    "b",
                    json!({"ack_policy": "explicit", "filter_subject": "wq.b.>"}),
                ),
            ],
            true,
        ),
    ];
    for (i, (stream, consumers, server_accepts)) in cases.into_iter().enumerate() {
        let name = format!("V{i}");
        let mut file_stream = stream.clone();
        let mut file_consumers = serde_json::Map::new();
        for (c, cfg) in &consumers {
            file_consumers.insert(c.to_string(), cfg.clone());
        }
        file_stream["consumers"] = Value::Object(file_consumers);
        let offline = Topology::from_value(json!({"streams": {name.clone(): file_stream}}), None);
        // What the server says.
        let mut cfg = stream.clone();
        cfg["name"] = json!(name);
        let r = api(&client, &format!("STREAM.CREATE.{name}"), cfg).await;
        let mut accepted = r.get("error").is_none();
        let mut answer = r;
        if accepted {
            for (c, ccfg) in &consumers {
                let mut ccfg = ccfg.clone();
                ccfg["durable_name"] = json!(c);
                let r = api(
                    &client,
                    &format!("CONSUMER.CREATE.{name}.{c}"),
                    json!({"stream_name": name, "config": ccfg, "action": ""}),
                )
                .await;
                if r.get("error").is_some() {
                    accepted = false;
                    answer = r;
                    break;
                }
            }
        }
        api(&client, &format!("STREAM.DELETE.{name}"), Value::Null).await;
        assert_eq!(
            accepted, server_accepts,
            "case {i}: the server's answer changed: {answer}"
        );
        // natsbus is stricter than the server on purpose in one place: with
        // max_deliver equal to the number of backoff steps the last step
        // can never apply, so the file is reported.
        let unreachable_backoff = consumers.iter().any(|(_, c)| {
            let steps = c["backoff"].as_array().map_or(0, Vec::len) as i64;
            steps > 0 && c["max_deliver"].as_i64() == Some(steps)
        });
        assert_eq!(
            offline.is_ok(),
            server_accepts && !unreachable_backoff,
            "case {i}: offline validation disagrees with the server ({answer}): {:?}",
            offline.err().map(|e| e.message)
        );
    }
}
