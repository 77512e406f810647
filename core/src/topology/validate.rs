//! Offline checks: everything the server would refuse that can be known
//! without asking it, found in one pass so a file is fixed in one edit.
//!
//! The rules follow nats-server's own checks (stream config, consumer config,
//! workqueue and subject rules); where this module is stricter than the
//! server it says so at the rule.

use serde_json::{Map, Value};

use super::normalize::{self, filters, flag, int, text, text_list, MIN_WINDOW};
use super::schema::Ctx;
use super::source::join;
use super::units::{format_duration, NS_PER_SEC};
use super::{ConsumerSpec, StreamSpec};
use crate::subjects::{self, collide};

const MAX_DESCRIPTION_LEN: usize = 4 * 1024;
const MAX_METADATA_LEN: usize = 128 * 1024;
const MAX_REPLICAS: i64 = 5;

/// Why `name` can not name a stream or consumer, if it can not.
pub use crate::names::name_problem;

pub fn validate(ctx: &mut Ctx, streams: &[StreamSpec]) {
    for s in streams {
        stream(ctx, s);
    }
    cross_stream_overlap(ctx, streams);
    dead_letters(ctx, streams);
}

/// A consumer's `dead_letter` subject must be stored by a declared stream
/// other than its own (its own would feed the failures back to it), and
/// the consumer must give up at some point (a finite `max_deliver`).
fn dead_letters(ctx: &mut Ctx, streams: &[StreamSpec]) {
    let subjects_of: Vec<(&str, Vec<String>)> = streams
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                text_list(&normalize::stream(&s.config), "subjects"),
            )
        })
        .collect();
    for s in streams {
        for c in &s.consumers {
            let Some(subject) = super::settings::get(&c.config, "dead_letter") else {
                continue;
            };
            let at = join(
                &join(&join(&join("streams", &s.name), "consumers"), &c.name),
                "dead_letter",
            );
            let captured_by = subjects_of.iter().find(|(_, subs)| {
                subs.iter()
                    .any(|p| subjects::is_valid(p) && subjects::is_subset(subject, p))
            });
            match captured_by {
                None => ctx.problem(
                    &at,
                    format!("no declared stream stores {subject:?}: declare a dead-letter stream whose subjects capture it (for example `subjects: [\"{subject}\"]`)"),
                ),
                Some((owner, _)) if *owner == s.name => ctx.problem(
                    &at,
                    format!("{subject:?} is stored by {owner}, the consumer's own stream: dead letters would come back to the consumer that gave up on them; send them to another stream"),
                ),
                Some(_) => {}
            }
            let max_deliver = c
                .config
                .get("max_deliver")
                .and_then(Value::as_i64)
                .unwrap_or(-1);
            if max_deliver <= 0 {
                ctx.problem(
                    &join(&join(&join(&join("streams", &s.name), "consumers"), &c.name), "max_deliver"),
                    "a consumer with a dead_letter needs a finite max_deliver (for example 5): without one a failing message is retried forever and never dead-lettered",
                );
            }
        }
    }
}

/// What every stream rule reads: the spec, its config as written, the
/// config normalized with the server's defaults, and its path for messages.
#[derive(Clone, Copy)]
struct StreamCx<'a> {
    s: &'a StreamSpec,
    c: &'a Map<String, Value>,
    n: &'a Map<String, Value>,
    path: &'a str,
}

/// The stream rules, each one check with its own message (subjects and
/// consumers have rules of their own).
const STREAM_RULES: &[fn(&mut Ctx, &StreamCx)] = &[
    replicas,
    windows,
    mirror_and_sources,
    rollups,
    discard_new_per_subject,
    delete_marker_ttl,
    counters,
    schedules,
    persist_mode,
    placement,
    republish,
    consumer_limits,
    max_consumers,
];

fn stream(ctx: &mut Ctx, s: &StreamSpec) {
    let path = join("streams", &s.name);
    let c = &s.config;
    if let Some(p) = name_problem(&s.name) {
        ctx.problem(&path, format!("invalid stream name: {p}"));
    }
    let n = normalize::stream(c);
    metadata_and_description(ctx, c, &path);

    let x = StreamCx {
        s,
        c,
        n: &n,
        path: &path,
    };
    for rule in STREAM_RULES {
        rule(ctx, &x);
    }
    stream_subjects(ctx, s, &n);
    let derived = c.contains_key("mirror")
        || c.get("sources")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());

    for cons in &s.consumers {
        consumer(ctx, s, &n, cons, derived);
    }
    workqueue_consumers(ctx, s, &n);
}

/// At most five replicas, and not negative.
fn replicas(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, path, .. } = *x;
    let replicas = int(c, "num_replicas");
    if replicas > MAX_REPLICAS {
        ctx.problem(
            &replicas_field(ctx, path),
            format!("{replicas} replicas: the server allows at most {MAX_REPLICAS}"),
        );
    } else if replicas < 0 {
        ctx.problem(&replicas_field(ctx, path), "replicas can not be negative");
    }
}

/// `max_age` and `duplicate_window` at least 100ms, and no duplicate window longer than `max_age`.
fn windows(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, .. } = *x;
    let at = |f: &str| join(x.path, f);
    let max_age = int(c, "max_age");
    if max_age > 0 && max_age < MIN_WINDOW {
        ctx.problem(
            &at("max_age"),
            format!(
                "{} is below the server's minimum of 100ms (a bare number is nanoseconds: did you mean {max_age}s?); use 0 or unlimited for no limit",
                format_duration(max_age)
            ),
        );
    }
    let dup = int(c, "duplicate_window");
    if c.contains_key("duplicate_window") {
        if dup > 0 && dup < MIN_WINDOW {
            ctx.problem(
                &at("duplicate_window"),
                format!(
                    "{} is below the server's minimum of 100ms",
                    format_duration(dup)
                ),
            );
        }
        if max_age > 0 && dup > max_age {
            ctx.problem(
                &at("duplicate_window"),
                format!(
                    "duplicate_window ({}) is longer than max_age ({}): messages would expire before their duplicates do; lower duplicate_window to at most {}",
                    format_duration(dup),
                    format_duration(max_age),
                    format_duration(max_age)
                ),
            );
        }
    }
}

/// A mirror has no subjects, sources or delete markers and names its origin; every source names its stream.
fn mirror_and_sources(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if c.contains_key("mirror") {
        if c.get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            ctx.problem(&at("subjects"), "a mirror takes its messages from the origin stream and can not have subjects: remove subjects");
        }
        if c.get("sources")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            ctx.problem(
                &at("sources"),
                "a stream can be a mirror or have sources, not both",
            );
        }
        if int(c, "subject_delete_marker_ttl") > 0 {
            ctx.problem(
                &at("subject_delete_marker_ttl"),
                "subject delete markers are not allowed on mirrors",
            );
        }
        if text(
            c.get("mirror")
                .and_then(Value::as_object)
                .unwrap_or(&Map::new()),
            "name",
        )
        .is_empty()
        {
            ctx.problem(
                &at("mirror.name"),
                "a mirror needs the name of the stream it mirrors",
            );
        }
    }
    if let Some(Value::Array(sources)) = c.get("sources") {
        for (i, src) in sources.iter().enumerate() {
            if src
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                ctx.problem(
                    &at(&format!("sources.{i}.name")),
                    "a source needs the name of the stream it reads",
                );
            }
        }
    }
}

/// Roll-ups purge, so they need `deny_purge: false`.
fn rollups(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { n, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if flag(n, "deny_purge") && flag(n, "allow_rollup_hdrs") {
        ctx.problem(
            &at("allow_rollup_hdrs"),
            "roll-ups purge messages, so they need deny_purge: false",
        );
    }
}

/// `discard_new_per_subject` needs `discard: new` and a per-subject limit.
fn discard_new_per_subject(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, n, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if flag(c, "discard_new_per_subject") {
        if text(n, "discard") != "new" {
            ctx.problem(
                &at("discard_new_per_subject"),
                "discard_new_per_subject needs discard: new",
            );
        }
        if int(n, "max_msgs_per_subject") <= 0 {
            ctx.problem(
                &at("discard_new_per_subject"),
                "discard_new_per_subject needs max_msgs_per_subject > 0",
            );
        }
    }
}

/// Subject delete markers live at least 1s.
fn delete_marker_ttl(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, .. } = *x;
    let at = |f: &str| join(x.path, f);
    let sdm = int(c, "subject_delete_marker_ttl");
    if sdm > 0 && sdm < NS_PER_SEC {
        ctx.problem(
            &at("subject_delete_marker_ttl"),
            format!("{} is below the minimum of 1s", format_duration(sdm)),
        );
    }
}

/// Counter streams: no `discard: new`, TTLs, schedules, or retention other than limits.
fn counters(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, n, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if flag(c, "allow_msg_counter") {
        for (bad, why) in [
            (text(n, "discard") == "new", "discard: new"),
            (flag(n, "allow_msg_ttl"), "message TTLs"),
            (flag(n, "allow_msg_schedules"), "message schedules"),
            (
                text(n, "retention") != "limits",
                "a retention other than limits",
            ),
        ] {
            if bad {
                ctx.problem(
                    &at("allow_msg_counter"),
                    format!("a counter stream can not use {why}"),
                );
            }
        }
    }
}

/// Message schedules do not work with `discard: new`.
fn schedules(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, n, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if flag(c, "allow_msg_schedules") && text(n, "discard") == "new" {
        ctx.problem(
            &at("allow_msg_schedules"),
            "message schedules can not be used with discard: new",
        );
    }
}

/// Async persistence: file storage, one replica, no atomic batches.
fn persist_mode(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, n, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if text(c, "persist_mode") == "async" {
        if text(n, "storage") != "file" {
            ctx.problem(
                &at("persist_mode"),
                "async persist mode needs storage: file",
            );
        }
        if int(n, "num_replicas") > 1 {
            ctx.problem(
                &at("persist_mode"),
                "async persist mode is not supported on replicated streams",
            );
        }
        if flag(c, "allow_atomic") {
            ctx.problem(
                &at("persist_mode"),
                "async persist mode can not be combined with allow_atomic",
            );
        }
    }
}

/// The server does not accept a preferred server in `placement`.
fn placement(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if let Some(Value::Object(p)) = c.get("placement") {
        if !text(p, "preferred").is_empty() {
            ctx.problem(
                &at("placement.preferred"),
                "the server does not accept a preferred server in placement",
            );
        }
    }
}

/// Republish needs a valid destination outside the stream's own subjects (no cycle).
fn republish(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, n, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if let Some(Value::Object(r)) = c.get("republish") {
        let dest = text(r, "dest");
        let src = if text(r, "src").is_empty() {
            ">"
        } else {
            text(r, "src")
        };
        if dest.is_empty() {
            ctx.problem(
                &at("republish.dest"),
                "republish needs a destination subject",
            );
        } else if let Some(p) = subjects::subject_problem(dest) {
            ctx.problem(&at("republish.dest"), p);
        } else if let Some(subj) = text_list(n, "subjects").iter().find(|s| collide(dest, s)) {
            ctx.problem(&at("republish.dest"), format!("republishing to {dest:?} would feed the stream's own subject {subj:?} (a cycle): pick a destination outside the stream's subjects"));
        }
        if let Some(p) = subjects::subject_problem(src) {
            ctx.problem(&at("republish.src"), p);
        }
    }
}

/// `consumer_limits.max_ack_pending` is not negative.
fn consumer_limits(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { c, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if let Some(Value::Object(limits)) = c.get("consumer_limits") {
        if int(limits, "max_ack_pending") < 0 {
            ctx.problem(
                &at("consumer_limits.max_ack_pending"),
                "can not be negative",
            );
        }
    }
}

/// No more consumers declared than `max_consumers` allows.
fn max_consumers(ctx: &mut Ctx, x: &StreamCx) {
    let StreamCx { s, n, .. } = *x;
    let at = |f: &str| join(x.path, f);
    let max_consumers = int(n, "max_consumers");
    if max_consumers > 0 && s.consumers.len() as i64 > max_consumers {
        ctx.problem(
            &at("max_consumers"),
            format!(
                "{} consumers are declared but max_consumers is {max_consumers}",
                s.consumers.len()
            ),
        );
    }
}

/// `replicas` when the file spelled it that way (so the problem points at it).
fn replicas_field(ctx: &Ctx, path: &str) -> String {
    let alias = join(path, "replicas");
    if ctx.lines.contains_key(&alias) {
        alias
    } else {
        join(path, "num_replicas")
    }
}

fn metadata_and_description(ctx: &mut Ctx, c: &Map<String, Value>, path: &str) {
    let desc = text(c, "description");
    if desc.len() > MAX_DESCRIPTION_LEN {
        ctx.problem(
            &join(path, "description"),
            format!(
                "{} characters; the server allows at most {MAX_DESCRIPTION_LEN}",
                desc.len()
            ),
        );
    }
    if let Some(Value::Object(m)) = c.get("metadata") {
        let len: usize = m
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if len > MAX_METADATA_LEN {
            ctx.problem(
                &join(path, "metadata"),
                format!("metadata is {len} bytes; the server allows at most {MAX_METADATA_LEN}"),
            );
        }
    }
}

fn stream_subjects(ctx: &mut Ctx, s: &StreamSpec, n: &Map<String, Value>) {
    let path = join(&join("streams", &s.name), "subjects");
    let subjects = text_list(n, "subjects");
    // Without subjects the server captures the stream's name, which the name
    // check already covers.
    if !s.config.contains_key("subjects") {
        return;
    }
    let no_ack = flag(n, "no_ack");
    for (i, subj) in subjects.iter().enumerate() {
        let p = join(&path, &i.to_string());
        if let Some(problem) = subjects::subject_problem(subj) {
            ctx.problem(&p, format!("invalid subject: {problem}"));
            continue;
        }
        if !no_ack {
            match subjects::needs_no_ack(subj) {
                Some(">") => ctx.problem(&p, "capturing every subject ('>') needs no_ack: true (and would also capture the JetStream API)"),
                Some(ns) => ctx.problem(&p, format!("{subj:?} overlaps the server's {ns} API subjects: pick another subject, or set no_ack: true")),
                None => {}
            }
        }
        if subj == ">" && int(n, "num_replicas") != 1 {
            ctx.problem(&p, "capturing every subject ('>') needs replicas: 1");
        }
        for (j, other) in subjects.iter().enumerate().skip(i + 1) {
            if !subjects::is_valid(other) {
                continue;
            }
            if subj == other {
                ctx.problem(
                    &join(&path, &j.to_string()),
                    format!("{subj:?} is listed twice: remove one"),
                );
            } else if collide(subj, other) {
                ctx.problem(
                    &join(&path, &j.to_string()),
                    format!("{other:?} overlaps {subj:?} in the same stream (a message could match both): keep the wider one"),
                );
            }
        }
    }
}

/// Subjects of different streams that overlap. Each subject is compared
/// only with those a [`subjects::SubjectIndex`] finds may collide with it,
/// so the cost follows the number of subjects, not its square; the problems
/// come out as the pairwise comparison orders them.
fn cross_stream_overlap(ctx: &mut Ctx, streams: &[StreamSpec]) {
    let all = declared_subjects(streams);
    // (stream, subject index) of every valid subject, indexed.
    let mut ids: Vec<(usize, usize)> = Vec::new();
    let mut index = subjects::SubjectIndex::new();
    for (si, (_, subs, _)) in all.iter().enumerate() {
        for (j, sub) in subs.iter().enumerate() {
            if subjects::is_valid(sub) {
                index.insert(sub, ids.len());
                ids.push((si, j));
            }
        }
    }
    let mut pairs: Vec<(usize, usize, usize, usize)> = Vec::new();
    for &(si, j) in &ids {
        let sa = &all[si].1[j];
        for id in index.candidates(sa) {
            let (ti, k) = ids[id];
            // Each pair once, from the earlier stream's side.
            if ti > si && collide(sa, &all[ti].1[k]) {
                pairs.push((si, ti, j, k));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    for (si, ti, j, k) in pairs {
        overlap_problem(ctx, &all[si], &all[ti], j, k);
    }
}

type Declared = (String, Vec<String>, bool);

fn declared_subjects(streams: &[StreamSpec]) -> Vec<Declared> {
    streams
        .iter()
        .map(|s| {
            let n = normalize::stream(&s.config);
            (
                s.name.clone(),
                text_list(&n, "subjects"),
                s.config.contains_key("subjects"),
            )
        })
        .collect()
}

fn overlap_problem(ctx: &mut Ctx, a: &Declared, b: &Declared, j: usize, k: usize) {
    let (a, subs_a, _) = a;
    let (b, subs_b, explicit_b) = b;
    let (sa, sb) = (&subs_a[j], &subs_b[k]);
    let field = if *explicit_b {
        join(&join(&join("streams", b), "subjects"), &k.to_string())
    } else {
        join("streams", b)
    };
    ctx.problem(
        &field,
        format!(
            "subject {sb:?} of stream {b} overlaps {sa:?} of stream {a}: a message may be stored by one stream only, so the server refuses this (10065); make the subjects disjoint"
        ),
    );
}

/// The rule [`cross_stream_overlap`] must agree with: every pair compared.
#[cfg(test)]
pub(crate) fn cross_stream_overlap_pairwise(ctx: &mut Ctx, streams: &[StreamSpec]) {
    let all = declared_subjects(streams);
    for (i, a) in all.iter().enumerate() {
        for b in all.iter().skip(i + 1) {
            for (j, sa) in
                a.1.iter()
                    .enumerate()
                    .filter(|(_, s)| subjects::is_valid(s))
            {
                for (k, sb) in
                    b.1.iter()
                        .enumerate()
                        .filter(|(_, s)| subjects::is_valid(s))
                {
                    if collide(sa, sb) {
                        overlap_problem(ctx, a, b, j, k);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn cross_stream_overlap_indexed(ctx: &mut Ctx, streams: &[StreamSpec]) {
    cross_stream_overlap(ctx, streams);
}

/// What every consumer rule reads: the consumer's config, its stream's
/// normalized config, and what is derived from them once.
#[derive(Clone, Copy)]
struct ConsumerCx<'a> {
    c: &'a Map<String, Value>,
    n: &'a Map<String, Value>,
    path: &'a str,
    ack: &'a str,
    push: bool,
    retention: &'a str,
    deliver: &'a str,
    /// Every filter with the path of the field it came from.
    all_filters: &'a [(String, String)],
    stream_subjects: &'a [String],
    /// A mirror or a stream with sources: its subjects are not its own.
    derived: bool,
    both_filter_forms: bool,
}

/// The consumer rules, each one check with its own message.
const CONSUMER_RULES: &[fn(&mut Ctx, &ConsumerCx)] = &[
    filter_subjects,
    backoff,
    start_position,
    push_or_pull,
    flow_control,
    priority_groups,
    replicas_of_consumer,
    stream_consumer_limits,
    workqueue,
];

fn consumer(
    ctx: &mut Ctx,
    s: &StreamSpec,
    n: &Map<String, Value>,
    cons: &ConsumerSpec,
    derived: bool,
) {
    let path = join(&join(&join("streams", &s.name), "consumers"), &cons.name);
    let at = |f: &str| join(&path, f);
    let c = &cons.config;
    if let Some(p) = name_problem(&cons.name) {
        ctx.problem(&path, format!("invalid consumer name: {p}"));
    }
    metadata_and_description(ctx, c, &path);
    let ack = text(c, "ack_policy");
    let push = !text(c, "deliver_subject").is_empty();
    let retention = text(n, "retention");

    let single = text(c, "filter_subject");
    let list = text_list(c, "filter_subjects");
    let mut all_filters: Vec<(String, String)> = Vec::new();
    if c.contains_key("filter_subject") {
        all_filters.push((at("filter_subject"), single.to_string()));
    }
    for (i, f) in list.iter().enumerate() {
        all_filters.push((join(&at("filter_subjects"), &i.to_string()), f.clone()));
    }
    let stream_subjects = text_list(n, "subjects");
    let x = ConsumerCx {
        c,
        n,
        path: &path,
        ack,
        push,
        retention,
        deliver: text(c, "deliver_policy"),
        all_filters: &all_filters,
        stream_subjects: &stream_subjects,
        derived,
        both_filter_forms: !single.is_empty() && !list.is_empty(),
    };
    for rule in CONSUMER_RULES {
        rule(ctx, &x);
    }
}

/// Filters: one form, valid, not overlapping each other (10138), and matching something the stream captures (stricter than the server).
fn filter_subjects(ctx: &mut Ctx, x: &ConsumerCx) {
    let ConsumerCx {
        all_filters,
        stream_subjects,
        derived,
        ..
    } = *x;
    let at = |f: &str| join(x.path, f);
    if x.both_filter_forms {
        ctx.problem(&at("filter_subjects"), "give either filter_subject or filter_subjects, not both (put all filters in filter_subjects)");
    }
    for (i, (p, f)) in all_filters.iter().enumerate() {
        if let Some(problem) = subjects::subject_problem(f) {
            ctx.problem(p, format!("invalid filter: {problem}"));
            continue;
        }
        for (_, g) in all_filters.iter().skip(i + 1) {
            if subjects::is_valid(g) && collide(f, g) {
                ctx.problem(p, format!("filters {f:?} and {g:?} overlap: the server refuses overlapping filters in one consumer (10138)"));
            }
        }
        // Stricter than the server (it accepts such filters since 2.10): a
        // filter no stream subject can match delivers nothing, ever.
        if !derived && !stream_subjects.iter().any(|s| collide(f, s)) {
            ctx.problem(
                p,
                format!("filter {f:?} matches none of the stream's subjects ({}): this consumer would never receive a message", stream_subjects.join(", ")),
            );
        }
    }
}

/// `max_deliver` above the number of `backoff` steps (the server needs at least as many), and backoff only with acks.
fn backoff(ctx: &mut Ctx, x: &ConsumerCx) {
    let ConsumerCx { c, ack, .. } = *x;
    let at = |f: &str| join(x.path, f);
    let max_deliver = int(c, "max_deliver");
    let backoff = c
        .get("backoff")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as i64;
    if backoff > 0 && max_deliver > 0 && max_deliver < backoff {
        ctx.problem(
            &at("max_deliver"),
            format!("max_deliver is {max_deliver} but backoff has {backoff} steps: the server needs max_deliver >= the number of backoff steps; set it above {backoff} (or -1)"),
        );
    } else if backoff > 0 && max_deliver == backoff {
        // The server accepts this, but the last step can never apply: it
        // would only time a delivery beyond max_deliver.
        ctx.problem(
            &at("max_deliver"),
            format!("max_deliver is {max_deliver} and backoff has {backoff} steps, so the last backoff step is never used: set max_deliver above {backoff} (or -1), or drop the last step"),
        );
    }
    if backoff > 0 && ack == "none" {
        ctx.problem(
            &at("backoff"),
            "backoff applies to redeliveries, which need an ack policy other than none",
        );
    }
    // With backoff, the server sets ack_wait to the first step: a different
    // ack_wait would be shown by plan and stored as something else.
    let first = c
        .get("backoff")
        .and_then(Value::as_array)
        .and_then(|b| b.first())
        .and_then(Value::as_i64);
    if let (Some(first), Some(ack_wait)) = (first, c.get("ack_wait").and_then(Value::as_i64)) {
        if ack_wait != first {
            ctx.problem(
                &at("ack_wait"),
                format!(
                    "ack_wait is {} but backoff is given: the server replaces ack_wait with the first backoff step ({}); drop ack_wait (the first step is the first delivery's deadline) or make it equal to that step",
                    format_duration(ack_wait),
                    format_duration(first)
                ),
            );
        }
    }
}

/// A start sequence or time exactly when the deliver policy uses it; `last_per_subject` needs a filter.
fn start_position(ctx: &mut Ctx, x: &ConsumerCx) {
    let ConsumerCx {
        c,
        deliver,
        all_filters,
        ..
    } = *x;
    let at = |f: &str| join(x.path, f);
    let has_seq = int(c, "opt_start_seq") > 0;
    let has_time = c.contains_key("opt_start_time");
    match deliver {
        "by_start_sequence" if !has_seq => ctx.problem(
            &at("deliver_policy"),
            "by_start_sequence needs opt_start_seq",
        ),
        "by_start_time" if !has_time => {
            ctx.problem(&at("deliver_policy"), "by_start_time needs opt_start_time")
        }
        _ => {}
    }
    if has_seq && deliver != "by_start_sequence" {
        ctx.problem(
            &at("opt_start_seq"),
            "opt_start_seq only works with deliver_policy: by_start_sequence",
        );
    }
    if has_time && deliver != "by_start_time" {
        ctx.problem(
            &at("opt_start_time"),
            "opt_start_time only works with deliver_policy: by_start_time",
        );
    }
    if deliver == "last_per_subject" && all_filters.is_empty() {
        ctx.problem(
            &at("deliver_policy"),
            "last_per_subject needs filter_subject or filter_subjects",
        );
    }
}

/// Settings that belong to push consumers only, or to pull consumers only.
fn push_or_pull(ctx: &mut Ctx, x: &ConsumerCx) {
    let ConsumerCx {
        c,
        ack,
        push,
        stream_subjects,
        ..
    } = *x;
    let at = |f: &str| join(x.path, f);
    if push {
        let ds = text(c, "deliver_subject");
        if let Some(p) = subjects::subject_problem(ds) {
            ctx.problem(&at("deliver_subject"), p);
        } else if !subjects::is_literal(ds) {
            ctx.problem(
                &at("deliver_subject"),
                "deliver_subject can not contain wildcards",
            );
        } else if let Some(s) = stream_subjects.iter().find(|s| collide(ds, s)) {
            ctx.problem(&at("deliver_subject"), format!("deliver_subject {ds:?} is captured by the stream's own subject {s:?}, which would loop: use a subject outside the stream"));
        }
        if c.contains_key("max_waiting") {
            ctx.problem(
                &at("max_waiting"),
                "max_waiting is for pull consumers; remove it (or remove deliver_subject)",
            );
        }
        if int(c, "max_ack_pending") > 0 && ack == "none" {
            ctx.problem(
                &at("max_ack_pending"),
                "max_ack_pending needs an ack policy other than none",
            );
        }
        let hb = int(c, "idle_heartbeat");
        if hb > 0 && hb < 100 * super::units::NS_PER_MS {
            ctx.problem(
                &at("idle_heartbeat"),
                "idle_heartbeat must be at least 100ms",
            );
        }
        if !text(c, "priority_policy").is_empty() && text(c, "priority_policy") != "none" {
            ctx.problem(
                &at("priority_policy"),
                "priority groups are for pull consumers only",
            );
        }
    } else {
        for (field, what) in [
            ("idle_heartbeat", "idle_heartbeat"),
            ("flow_control", "flow_control"),
            ("rate_limit_bps", "rate_limit_bps"),
            ("deliver_group", "deliver_group"),
        ] {
            if c.get(field).is_some_and(|v| !normalize::is_empty(v)) {
                ctx.problem(
                    &at(field),
                    format!("{what} is for push consumers: set deliver_subject, or remove {what}"),
                );
            }
        }
        let exp = int(c, "max_expires");
        if exp > 0 && exp < 1_000_000 {
            ctx.problem(&at("max_expires"), "max_expires must be at least 1ms");
        }
    }
}

/// Flow control needs heartbeats, and the flow_control ack policy a push consumer.
fn flow_control(ctx: &mut Ctx, x: &ConsumerCx) {
    let ConsumerCx { c, ack, push, .. } = *x;
    let at = |f: &str| join(x.path, f);
    if flag(c, "flow_control") && int(c, "idle_heartbeat") == 0 && push {
        ctx.problem(&at("flow_control"), "flow_control needs idle_heartbeat");
    }
    if ack == "flow_control" && !push {
        ctx.problem(
            &at("ack_policy"),
            "ack_policy flow_control needs a push consumer (deliver_subject)",
        );
    }
}

/// A priority policy needs named priority groups.
fn priority_groups(ctx: &mut Ctx, x: &ConsumerCx) {
    let ConsumerCx { c, .. } = *x;
    let at = |f: &str| join(x.path, f);
    let policy = text(c, "priority_policy");
    if !policy.is_empty() && policy != "none" {
        let groups = c
            .get("priority_groups")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if groups.is_empty() {
            ctx.problem(
                &at("priority_policy"),
                "a priority policy needs priority_groups",
            );
        }
        if groups.iter().any(|g| g.as_str().is_none_or(str::is_empty)) {
            ctx.problem(
                &at("priority_groups"),
                "priority group names can not be empty",
            );
        }
    }
}

/// Replicas: not negative, at most the stream's, and equal to it on interest and workqueue streams.
fn replicas_of_consumer(ctx: &mut Ctx, x: &ConsumerCx) {
    let ConsumerCx {
        c,
        n,
        path,
        retention,
        ..
    } = *x;
    // Replicas relative to the stream.
    let replicas = int(c, "num_replicas");
    let stream_replicas = int(n, "num_replicas");
    let rf = replicas_field(ctx, path);
    if replicas < 0 {
        ctx.problem(&rf, "replicas can not be negative");
    } else if replicas > stream_replicas {
        ctx.problem(
            &rf,
            format!("{replicas} replicas is more than the stream's {stream_replicas}"),
        );
    } else if replicas != 0 && replicas != stream_replicas && retention != "limits" {
        ctx.problem(
            &rf,
            format!("on a {retention} stream a consumer's replicas must equal the stream's ({stream_replicas}) or be left out"),
        );
    }
}

/// The stream's `consumer_limits` cap `max_ack_pending` and `inactive_threshold`.
fn stream_consumer_limits(ctx: &mut Ctx, x: &ConsumerCx) {
    let ConsumerCx { c, n, .. } = *x;
    let at = |f: &str| join(x.path, f);
    // Stream consumer limits cap consumers.
    let limits = n
        .get("consumer_limits")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let cap = int(&limits, "max_ack_pending");
    if cap > 0 && int(c, "max_ack_pending") > cap {
        ctx.problem(
            &at("max_ack_pending"),
            format!(
                "{} is above the stream's consumer_limits.max_ack_pending ({cap})",
                int(c, "max_ack_pending")
            ),
        );
    }
    let cap = int(&limits, "inactive_threshold");
    if cap > 0 && int(c, "inactive_threshold") > cap {
        ctx.problem(
            &at("inactive_threshold"),
            format!(
                "above the stream's consumer_limits.inactive_threshold ({})",
                format_duration(cap)
            ),
        );
    }
}

/// On a workqueue stream: explicit acks, deliver all.
fn workqueue(ctx: &mut Ctx, x: &ConsumerCx) {
    let ConsumerCx {
        ack,
        retention,
        deliver,
        ..
    } = *x;
    let at = |f: &str| join(x.path, f);
    if retention == "workqueue" {
        if ack != "explicit" && ack != "flow_control" {
            ctx.problem(&at("ack_policy"), format!("a workqueue stream needs ack_policy: explicit (got {ack}): messages are removed when acked"));
        }
        if !deliver.is_empty() && deliver != "all" {
            ctx.problem(
                &at("deliver_policy"),
                format!("a workqueue stream needs deliver_policy: all (got {deliver})"),
            );
        }
    }
}

fn workqueue_consumers(ctx: &mut Ctx, s: &StreamSpec, n: &Map<String, Value>) {
    if text(n, "retention") != "workqueue" || s.consumers.len() < 2 {
        return;
    }
    let base = join(&join("streams", &s.name), "consumers");
    for (i, a) in s.consumers.iter().enumerate() {
        let fa = filters(&a.config);
        if fa.is_empty() {
            ctx.problem(
                &join(&base, &a.name),
                format!(
                    "on a workqueue stream each message goes to one consumer, so when there are several ({}) each needs a filter_subject and the filters must not overlap",
                    s.consumers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            );
            continue;
        }
        for b in s.consumers.iter().skip(i + 1) {
            let fb = filters(&b.config);
            if let Some((x, y)) = fa
                .iter()
                .flat_map(|x| fb.iter().map(move |y| (x, y)))
                .find(|(x, y)| collide(x, y))
            {
                ctx.problem(
                    &join(&base, &b.name),
                    format!(
                        "filter {y:?} of consumer {} overlaps filter {x:?} of consumer {} on a workqueue stream (10100): a message may go to one consumer only; make the filters disjoint",
                        b.name, a.name
                    ),
                );
            }
        }
    }
}
