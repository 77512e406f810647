//! The raw async-nats side of natsbus's benchmarks (see `bench/README.md`).
//!
//! One workload per invocation, one JSON line on stdout:
//!
//! ```text
//! natsbus-bench-raw <workload> --url URL --n N [--stream BENCH] [--consumer NAME]
//!                   [--subject SUBJECT] [--window 1024] [--batch 500]
//!                   [--runtime multi|current]
//! ```
//!
//! Workloads: `pub_sync`, `pub_many`, `pub_gather`, `consume`, `batches`, and `load` (an untimed
//! helper that fills the stream as fast as it can for the consume workloads). The stream and the
//! consumer are created by `bench/run.py`; this program only publishes or consumes, and checks
//! its own results: every publish acked by the expected stream with a distinct sequence, every
//! consumed message decoded, acked, and its stream sequence seen exactly once. Anything else is
//! an error and a non-zero exit, never a number.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::PullConsumer, context::PublishAckFuture, Context};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The ~200-byte typed event every client publishes and decodes.
#[derive(Debug, Serialize, Deserialize)]
struct Event {
    event_id: String,
    agent_id: String,
    ts: f64,
    #[serde(rename = "type")]
    kind: String,
    payload: EventPayload,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventPayload {
    host: String,
    value: f64,
    tags: Vec<String>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Build event `i` and serialize it (done per message, inside the timed loop).
fn encode_event(i: u64) -> Result<Bytes, BoxError> {
    let event = Event {
        event_id: format!("0f8e7a6c-1d2b-4c3a-9e8f-{i:012}"),
        agent_id: "agent-07".to_string(),
        ts: now(),
        kind: "metric.cpu".to_string(),
        payload: EventPayload {
            host: "web-01.internal".to_string(),
            value: (i % 1000) as f64 / 8.0,
            tags: vec![
                "prod".to_string(),
                "eu-west-1".to_string(),
                "cpu".to_string(),
            ],
        },
    };
    Ok(Bytes::from(serde_json::to_vec(&event)?))
}

#[derive(Debug)]
struct Args {
    workload: String,
    url: String,
    n: u64,
    stream: String,
    consumer: String,
    subject: String,
    window: usize,
    batch: usize,
    /// `multi` (what `#[tokio::main]` gives: one worker per core) or `current` (one thread).
    runtime: String,
}

const USAGE: &str = "usage: natsbus-bench-raw <pub_sync|pub_many|pub_gather|consume|batches|load> \
--url URL --n N [--stream BENCH] [--consumer bench-consumer] [--subject bench.metric.cpu] \
[--window 1024] [--batch 500] [--runtime multi|current]";

fn parse_args() -> Result<Args, String> {
    let mut argv = std::env::args().skip(1);
    let workload = argv.next().ok_or_else(|| USAGE.to_string())?;
    if workload == "-h" || workload == "--help" {
        return Err(USAGE.to_string());
    }
    let mut args = Args {
        workload,
        url: "nats://127.0.0.1:4222".to_string(),
        n: 0,
        stream: "BENCH".to_string(),
        consumer: "bench-consumer".to_string(),
        subject: "bench.metric.cpu".to_string(),
        window: 1024,
        batch: 500,
        runtime: "multi".to_string(),
    };
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value:?}: {e}");
        match flag.as_str() {
            "--url" => args.url = value,
            "--n" => args.n = value.parse().map_err(bad)?,
            "--stream" => args.stream = value,
            "--consumer" => args.consumer = value,
            "--subject" => args.subject = value,
            "--window" => args.window = value.parse().map_err(bad)?,
            "--batch" => args.batch = value.parse().map_err(bad)?,
            "--runtime" => {
                if value != "multi" && value != "current" {
                    return Err(format!("--runtime {value:?}: use multi or current"));
                }
                args.runtime = value;
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if args.n == 0 {
        return Err(format!("--n must be given and positive\n{USAGE}"));
    }
    if args.window == 0 || args.batch == 0 {
        return Err("--window and --batch must be positive".to_string());
    }
    Ok(args)
}

/// Stream sequences of acks or deliveries; each must be seen once and come from our stream.
struct Seen {
    stream: String,
    seqs: HashSet<u64>,
}

impl Seen {
    fn new(stream: &str, n: u64) -> Self {
        Seen {
            stream: stream.to_string(),
            seqs: HashSet::with_capacity(n as usize),
        }
    }

    fn ack(&mut self, ack: &jetstream::publish::PublishAck) -> Result<(), BoxError> {
        if ack.stream != self.stream {
            return Err(format!(
                "ack from stream {:?}, expected {:?}",
                ack.stream, self.stream
            )
            .into());
        }
        if ack.duplicate {
            return Err(format!("ack for sequence {} flagged duplicate", ack.sequence).into());
        }
        self.seq(ack.sequence)
    }

    fn seq(&mut self, seq: u64) -> Result<(), BoxError> {
        if !self.seqs.insert(seq) {
            return Err(format!("stream sequence {seq} seen twice").into());
        }
        Ok(())
    }

    fn expect(&self, n: u64, what: &str) -> Result<(), BoxError> {
        if self.seqs.len() as u64 != n {
            return Err(format!(
                "{what}: {} distinct sequences, expected {n}",
                self.seqs.len()
            )
            .into());
        }
        Ok(())
    }
}

/// The header natsbus sets on JSON payloads; every client sends it, so all
/// three put the same message on the wire.
fn json_headers() -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    headers
}

async fn pub_sync(js: &Context, args: &Args) -> Result<(), BoxError> {
    let mut seen = Seen::new(&args.stream, args.n);
    for i in 0..args.n {
        let ack = js
            .publish_with_headers(args.subject.clone(), json_headers(), encode_event(i)?)
            .await?
            .await?;
        seen.ack(&ack)?;
    }
    seen.expect(args.n, "pub_sync acks")
}

/// Pipelined publishes: at most `window` acks outstanding, awaited as they complete.
async fn pub_many(js: &Context, args: &Args, reuse_payload: bool) -> Result<(), BoxError> {
    let mut seen = Seen::new(&args.stream, args.n);
    let mut inflight = FuturesUnordered::new();
    let fixed = if reuse_payload {
        Some(encode_event(0)?)
    } else {
        None
    };
    for i in 0..args.n {
        if inflight.len() >= args.window {
            if let Some(ack) = inflight.next().await {
                seen.ack(&ack?)?;
            }
        }
        let payload = match &fixed {
            Some(bytes) => bytes.clone(),
            None => encode_event(i)?,
        };
        let future: PublishAckFuture = js
            .publish_with_headers(args.subject.clone(), json_headers(), payload)
            .await?;
        inflight.push(future.into_future());
    }
    while let Some(ack) = inflight.next().await {
        seen.ack(&ack?)?;
    }
    seen.expect(args.n, "pipelined acks")
}

/// One spawned task per publish, a semaphore keeping `window` of them in flight.
async fn pub_gather(js: &Context, args: &Args) -> Result<(), BoxError> {
    let permits = Arc::new(tokio::sync::Semaphore::new(args.window));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.n {
        let permit = permits.clone().acquire_owned().await?;
        let js = js.clone();
        let subject = args.subject.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let ack = js
                .publish_with_headers(subject, json_headers(), encode_event(i)?)
                .await?
                .await?;
            Ok::<_, BoxError>(ack)
        });
    }
    let mut seen = Seen::new(&args.stream, args.n);
    while let Some(result) = tasks.join_next().await {
        seen.ack(&result??)?;
    }
    seen.expect(args.n, "gathered acks")
}

/// How long a consume loop waits for the next message before failing (`BENCH_STALL_SECONDS`,
/// default 30): a lost message must fail the run, not hang it.
fn stall_limit() -> Duration {
    let seconds = std::env::var("BENCH_STALL_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(30.0);
    Duration::from_secs_f64(seconds)
}

async fn next_or_stall<S: futures_util::Stream + Unpin>(
    stream: &mut S,
    stall: Duration,
    received: u64,
) -> Result<S::Item, BoxError> {
    match tokio::time::timeout(stall, stream.next()).await {
        Ok(Some(item)) => Ok(item),
        Ok(None) => Err(format!("message stream ended after {received} messages").into()),
        Err(_) => Err(format!(
            "no message for {:.0}s after {received} (messages lost or not delivered)",
            stall.as_secs_f64()
        )
        .into()),
    }
}

fn handle(msg: &jetstream::Message, seen: &mut Seen) -> Result<(), BoxError> {
    let event: Event = serde_json::from_slice(&msg.payload)?;
    if event.kind.is_empty() {
        return Err("decoded an event without a type".into());
    }
    let info = msg.info()?;
    if info.stream != seen.stream {
        return Err(format!("message from stream {:?}", info.stream).into());
    }
    seen.seq(info.stream_sequence)
}

async fn consume(
    client: &async_nats::Client,
    js: &Context,
    args: &Args,
    chunked: bool,
) -> Result<(), BoxError> {
    let consumer: PullConsumer = js
        .get_consumer_from_stream(&args.consumer, &args.stream)
        .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(args.batch)
        .messages()
        .await?;
    let mut seen = Seen::new(&args.stream, args.n);
    let mut received = 0u64;
    let stall = stall_limit();
    if chunked {
        // What an async-nats user writes to process batches: whatever is ready, up to `batch`.
        let mut chunks = messages.ready_chunks(args.batch);
        while received < args.n {
            let chunk = next_or_stall(&mut chunks, stall, received).await?;
            for msg in chunk {
                let msg = msg?;
                handle(&msg, &mut seen)?;
                msg.ack().await?;
                received += 1;
            }
        }
    } else {
        let mut messages = messages;
        while received < args.n {
            let msg = next_or_stall(&mut messages, stall, received).await??;
            handle(&msg, &mut seen)?;
            msg.ack().await?;
            received += 1;
        }
    }
    client.flush().await?;
    if received != args.n {
        return Err(format!("received {received} messages, expected {}", args.n).into());
    }
    seen.expect(args.n, "consumed messages")
}

async fn run(args: &Args) -> Result<f64, BoxError> {
    let client = async_nats::ConnectOptions::new()
        .name("natsbus-bench-raw")
        .connect(&args.url)
        .await?;
    let js = jetstream::new(client.clone());
    let start = Instant::now();
    match args.workload.as_str() {
        "pub_sync" => pub_sync(&js, args).await?,
        "pub_many" => pub_many(&js, args, false).await?,
        "pub_gather" => pub_gather(&js, args).await?,
        "consume" => consume(&client, &js, args, false).await?,
        "batches" => consume(&client, &js, args, true).await?,
        "load" => pub_many(&js, args, true).await?,
        other => return Err(format!("unknown workload {other:?}\n{USAGE}").into()),
    }
    let seconds = start.elapsed().as_secs_f64();
    client.flush().await?;
    Ok(seconds)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match args.runtime.as_str() {
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("natsbus-bench-raw: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(seconds) => {
            let line = serde_json::json!({
                "client": "raw",
                "workload": args.workload,
                "n": args.n,
                "seconds": seconds,
                "msgs_per_sec": args.n as f64 / seconds,
                "runtime": args.runtime,
            });
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("natsbus-bench-raw {}: {err}", args.workload);
            ExitCode::FAILURE
        }
    }
}
