//! Plans as people read them: one line per change, one per changed field,
//! values written the way a topology file writes them (`7d`, `1GiB`,
//! `unlimited`). The machine form is `Plan::to_value` in `plan.rs`.

use std::fmt::Write as _;

use super::plan::{Action, Change, Outcome, Plan, PlanOptions};

/// How much of a plan to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Render {
    /// Every declared stream and consumer; what is unmanaged as one count
    /// (a shared server's other streams would drown the plan).
    #[default]
    Summary,
    /// Also every unmanaged stream and consumer by name.
    Everything,
    /// Only what is to change or refused (and what an apply did).
    ChangesOnly,
}
use super::schema::{human, Field, CONSUMER_FIELDS, STREAM_FIELDS};

impl Plan {
    /// A terminal rendering, one line per change and one per changed field.
    pub fn render(&self) -> String {
        self.render_with(&PlanOptions::default())
    }

    pub fn render_with(&self, opts: &PlanOptions) -> String {
        self.render_as(opts, Render::Summary)
    }

    pub fn render_as(&self, opts: &PlanOptions, how: Render) -> String {
        let mut out = String::new();
        let count = |a: Action| self.changes.iter().filter(|c| c.action == a).count();
        let mut summary = Vec::new();
        for (a, label) in [
            (Action::Create, "to create"),
            (Action::Update, "to update"),
            (Action::Destructive, "destructive"),
            (Action::Blocked, "blocked"),
            (Action::Unchanged, "unchanged"),
            (Action::Unmanaged, "unmanaged"),
        ] {
            let n = count(a);
            if n > 0 {
                summary.push(format!("{n} {label}"));
            }
        }
        if summary.is_empty() {
            out.push_str("Plan: nothing declared, nothing on the server.\n");
            return out;
        }
        let _ = writeln!(
            out,
            "Plan: {}{}",
            summary.join(", "),
            if self.is_pending() {
                ""
            } else {
                " (nothing to do)"
            }
        );
        let applied = self.changes.iter().any(|c| c.outcome.is_some());
        let unmanaged: Vec<&Change> = self
            .changes
            .iter()
            .filter(|c| c.action == Action::Unmanaged)
            .collect();
        for c in &self.changes {
            let hidden = match how {
                Render::Everything => false,
                Render::Summary => c.action == Action::Unmanaged,
                Render::ChangesOnly => !c.action.is_pending(),
            };
            if hidden {
                continue;
            }
            // An apply's plan reads like the plan where all went well;
            // what failed or was never sent says so.
            let done =
                applied && c.action.is_pending() && !matches!(c.outcome, Some(Outcome::Applied));
            let head = match (&c.outcome, c.action) {
                (Some(Outcome::Failed(e)), a) if done => {
                    format!("x FAILED to {} {}: {e}", a.as_str(), c.what())
                }
                (Some(Outcome::LeftAlone), a) if done => {
                    format!("= left alone ({} under create-only) {}", a.as_str(), c.what())
                }
                (_, a) if done => format!("? not attempted: {} {}", a.as_str(), c.what()),
                _ => match c.action {
                Action::Create => format!("+ create {}", c.what()),
                Action::Update => format!("~ update {}", c.what()),
                Action::Destructive if opts.allow_destructive => {
                    format!("! destructive update {} (allowed)", c.what())
                }
                Action::Destructive => format!(
                    "! destructive update {} (refused without allow_destructive / --allow-destructive)",
                    c.what()
                ),
                Action::Blocked => format!("x blocked {}", c.what()),
                Action::Unchanged => format!("= unchanged {}", c.what()),
                Action::Unmanaged => {
                    format!("- unmanaged {}: on the server but not in the topology (left alone)", c.what())
                }
                },
            };
            out.push_str(&head);
            out.push('\n');
            let fields: &'static [Field] = if c.consumer.is_some() {
                CONSUMER_FIELDS
            } else {
                STREAM_FIELDS
            };
            for (field, (live, desired)) in &c.diff {
                if c.action == Action::Create {
                    let _ = writeln!(out, "    {field}: {}", human(fields, field, desired));
                } else {
                    let _ = writeln!(
                        out,
                        "    {field}: {} -> {}",
                        human(fields, field, live),
                        human(fields, field, desired)
                    );
                }
            }
            if let Some(r) = &c.reason {
                let _ = writeln!(out, "    why: {r}");
            }
        }
        if how == Render::Summary && !unmanaged.is_empty() {
            let streams = unmanaged.iter().filter(|c| c.consumer.is_none()).count();
            let consumers = unmanaged.len() - streams;
            let mut parts = Vec::new();
            if streams > 0 {
                parts.push(format!(
                    "{streams} stream{}",
                    if streams == 1 { "" } else { "s" }
                ));
            }
            if consumers > 0 {
                parts.push(format!(
                    "{consumers} consumer{}",
                    if consumers == 1 { "" } else { "s" }
                ));
            }
            let _ = writeln!(
                out,
                "- unmanaged: {} on the server but not in the topology (left alone; \
                 --unmanaged / plan.render(unmanaged=True) lists them)",
                parts.join(" and ")
            );
        }
        out
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}
