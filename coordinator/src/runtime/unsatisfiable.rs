//! The leader's watch for ready tasks that no live agent could ever take (capabilities,
//! constraints, resources): one seen so for the unsatisfiable timeout is proposed as
//! `MarkUnsatisfiable`, which the state machine applies only if it still holds.
//!
//! ```text
//!   every SCAN_EVERY: the first SCAN_TASKS_MAX ready tasks ─► why_unsatisfiable (cached per
//!   distinct needs) ─► first seen at t ─► still so at t + after ─► MarkUnsatisfiable
//! ```
//!
//! Leader-local and bounded: a new leader starts watching afresh, and a scan reads at most
//! `SCAN_TASKS_MAX` tasks and checks each distinct set of needs once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::scheduler::TaskNeeds;
use crate::state::jobs::{why_unsatisfiable, TaskKey};
use crate::state::{placement, Command, State};

/// How often ready tasks are scanned.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// Most ready tasks read by one scan (in scheduling order).
const SCAN_TASKS_MAX: usize = 4096;

/// Ready tasks no live agent can take, and since when.
#[derive(Default)]
pub struct UnsatisfiableWatch {
    inner: Mutex<Watch>,
}

#[derive(Default)]
struct Watch {
    since: HashMap<TaskKey, Instant>,
    last_scan: Option<Instant>,
}

impl UnsatisfiableWatch {
    /// The tasks unsatisfiable for at least `after` as of `now` (ready as of `now_ms`).
    pub fn scan(&self, state: &State, now_ms: u64, now: Instant, after: Duration) -> Vec<Command> {
        let mut watch = self.inner.lock().expect("unsatisfiable watch lock");
        if watch.last_scan.is_some_and(|last| now < last + SCAN_EVERY) {
            return Vec::new();
        }
        watch.last_scan = Some(now);
        let mut verdicts: Vec<(TaskNeeds, bool)> = Vec::new();
        let mut since = HashMap::new();
        let mut due = Vec::new();
        for ready in state.jobs.ready_tasks(now_ms).take(SCAN_TASKS_MAX) {
            let spec = ready.spec;
            let needs = placement::needs_of("", spec);
            let unsatisfiable = match verdicts.iter().find(|(n, _)| *n == needs) {
                Some((_, verdict)) => *verdict,
                None => {
                    let verdict = why_unsatisfiable(spec, &state.agents).is_some();
                    verdicts.push((needs, verdict));
                    verdict
                }
            };
            if !unsatisfiable {
                continue;
            }
            let key = TaskKey {
                job_id: ready.job.id.clone(),
                task_id: ready.task_id.to_owned(),
            };
            let first = watch.since.get(&key).copied().unwrap_or(now);
            if now.duration_since(first) >= after {
                due.push(Command::MarkUnsatisfiable {
                    job_id: key.job_id.clone(),
                    task_id: key.task_id.clone(),
                });
            }
            since.insert(key, first);
        }
        watch.since = since;
        due
    }
}
