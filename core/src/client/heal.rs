//! Healing: re-creating the declared streams and consumers a server lost.
//!
//! A server that restarts without its state (memory storage, a wiped data
//! directory, a new node) comes back with none of the topology a bus was
//! started with. A bus that holds a topology and has healing on notices it
//! where it hurts (a publish answered "no stream", a reader whose stream or
//! durable is gone, a reconnect) and applies the topology create-only: what
//! is missing is created, nothing is updated or deleted, so a heal can never
//! undo what a newer deployment changed.
//!
//! Heals run one at a time per connection. Everyone who saw the damage asks
//! with the generation they saw; a heal that finished after that answers
//! them all, so a hundred readers that fail together cause one apply.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::connect::Reconnects;
use crate::client::events::ConnEvents;
use crate::client::jsapi::JetStream;
use crate::error::Result;
use crate::subjects;
use crate::topology::plan::Action;
use crate::topology::{ApplyOptions, Topology};

/// How long after a reconnect a failing heal is tried again (JetStream can
/// take a few seconds to be ready on a server that just started).
const RECONNECT_HEAL_FOR: Duration = Duration::from_secs(30);

/// The topology a connection keeps alive, and the one heal at a time.
pub struct Heal {
    js: JetStream,
    events: Arc<ConnEvents>,
    topology: Mutex<Option<Arc<Topology>>>,
    enabled: AtomicBool,
    /// Bumped by every heal that ran to the end.
    generation: AtomicU64,
    running: tokio::sync::Mutex<()>,
}

impl Heal {
    pub fn new(js: JetStream, events: Arc<ConnEvents>) -> Arc<Heal> {
        Arc::new(Heal {
            js,
            events,
            topology: Mutex::new(None),
            enabled: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// After each reconnect, heal (a server that restarted without its
    /// state is back), trying again for a while when JetStream is not
    /// ready yet. Ends with the connection.
    pub fn after_reconnects(heal: &Arc<Heal>, mut reconnects: Reconnects) {
        let weak = Arc::downgrade(heal);
        reconnects.borrow_and_update();
        tokio::spawn(async move {
            while reconnects.changed().await.is_ok() {
                // The first connection's own event can come after this
                // task started: only a second connection is a reconnect.
                if *reconnects.borrow_and_update() < 2 {
                    continue;
                }
                let mut pause = Duration::from_millis(100);
                let started = Instant::now();
                loop {
                    let Some(heal) = weak.upgrade() else { return };
                    if !heal.enabled() {
                        break;
                    }
                    let seen = heal.generation();
                    match heal.heal("after a reconnect", seen).await {
                        Ok(_) => break,
                        Err(_) if started.elapsed() < RECONNECT_HEAL_FOR => {}
                        Err(_) => break,
                    }
                    drop(heal);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        // Another reconnect: start over for that one.
                        r = reconnects.changed() => if r.is_err() { return },
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        });
    }

    /// Keep `topology` alive (`enabled`), or stop healing.
    pub fn set(&self, topology: Option<Arc<Topology>>, enabled: bool) {
        *self.topology.lock().unwrap_or_else(|p| p.into_inner()) = topology;
        self.enabled.store(enabled, Ordering::Release);
    }

    /// The topology to heal towards, when healing is on.
    fn topology(&self) -> Option<Arc<Topology>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.topology
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether healing is on.
    pub fn enabled(&self) -> bool {
        self.topology().is_some()
    }

    /// What to pass to [`Heal::heal`] when damage is seen now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a declared stream captures `subject` (a publish to it that
    /// found no stream can be healed).
    pub fn declares_subject(&self, subject: &str) -> bool {
        self.topology().is_some_and(|t| {
            t.streams().iter().any(|s| {
                s.config
                    .get("subjects")
                    .and_then(|v| v.as_array())
                    .is_some_and(|subs| {
                        subs.iter()
                            .filter_map(|p| p.as_str())
                            .any(|p| subjects::is_subset(subject, p))
                    })
            })
        })
    }

    /// Whether the topology declares `stream` (and `consumer` on it, when given).
    pub fn declares(&self, stream: &str, consumer: Option<&str>) -> bool {
        self.topology().is_some_and(|t| {
            t.stream(stream).is_some_and(|s| match consumer {
                None => true,
                Some(c) => s.consumers.iter().any(|x| x.name == c),
            })
        })
    }

    /// Re-create what the server lacks of the topology, create-only, unless
    /// a heal finished since `seen` (the generation when the damage was
    /// seen). Returns what was created, as "stream X" / "consumer X > Y"
    /// (empty when nothing was missing or healing is off).
    pub async fn heal(&self, why: &str, seen: u64) -> Result<Vec<String>> {
        let Some(topology) = self.topology() else {
            return Ok(Vec::new());
        };
        let _one = self.running.lock().await;
        if self.generation() != seen {
            return Ok(Vec::new());
        }
        let opts = ApplyOptions {
            allow_destructive: false,
            create_only: true,
        };
        let plan = match crate::topology::apply(&self.js, &topology, &opts).await {
            Ok(plan) => plan,
            Err(e) => {
                self.events.emit(
                    "heal_failed",
                    format!("could not re-create the declared streams ({why}): {e}"),
                );
                return Err(e);
            }
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        let created: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Create)
            .map(|c| match &c.consumer {
                Some(con) => format!("consumer {} > {con}", c.stream),
                None => format!("stream {}", c.stream),
            })
            .collect();
        if !created.is_empty() {
            self.events.emit(
                "healed",
                format!(
                    "re-created {} the server did not have ({why})",
                    created.join(", ")
                ),
            );
        }
        Ok(created)
    }
}
