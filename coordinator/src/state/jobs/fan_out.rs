//! Fan-out on a [`Transition`]: a task mapped over items becomes instances `<id>[<i>]`, made
//! ready in item order no more than `parallelism` at a time; the fan-out succeeds when every
//! instance has, and fails (cancelling the rest) as soon as one cannot.
//!
//! ```text
//!   fan-out task: Pending ─deps─► Running (expanded) ─all instances succeeded─► Succeeded
//!   instance i:   Pending ─released (i < succeeded + parallelism)─► Ready ─► … agent …
//! ```
//! Pure: no I/O, clock or randomness.

use super::lifecycle::Transition;
use super::spec::TASK_RECORDS_MAX;
use super::task::{instance_id, TaskRole};
use super::{FanOutSource, JobEventKind, TaskState};

impl Transition<'_> {
    /// Expands a fan-out task whose dependencies succeeded into its instances.
    pub(super) fn expand(&mut self, task_id: &str) {
        let Some(fan_out) = self
            .job
            .task_spec(task_id)
            .and_then(|spec| spec.fan_out.clone())
        else {
            return;
        };
        if let FanOutSource::FromDependency {
            task_id: source, ..
        } = &fan_out.source
        {
            if self.job.task_state(source) == Some(TaskState::Bypassed) {
                let reason = format!("its items come from '{source}', whose branch was not taken");
                return self.bypass(task_id, reason);
            }
        }
        self.run_in_place(task_id);
        let job = &*self.job;
        let output_of = |dep: &str| job.tasks.get(dep).and_then(|task| task.output.clone());
        let items = match fan_out.source.items(output_of) {
            Ok(items) if job.tasks.len() + items.len() > TASK_RECORDS_MAX => Err(format!(
                "{} instances would bring the job to more than {TASK_RECORDS_MAX} tasks",
                items.len()
            )),
            other => other,
        };
        let items = match items {
            Ok(items) => items,
            Err(error) => return self.end_in_place(task_id, Err(error)),
        };
        let count = items.len() as u32;
        self.job.add_instances(task_id, items, self.meta.now_ms);
        self.update(task_id, |task| {
            if let TaskRole::FanOut(progress) = &mut task.role {
                progress.instances = count;
            }
        });
        self.event(JobEventKind::FanOutExpanded {
            task_id: task_id.to_owned(),
            instance_count: count,
        });
        match count {
            0 => self.end_in_place(task_id, Ok(None)),
            _ => self.release_instances(task_id),
        }
    }

    /// Makes the next instances ready, as far as the parallelism limit allows.
    fn release_instances(&mut self, task_id: &str) {
        loop {
            let next = match self.job.tasks.get(task_id).map(|task| &task.role) {
                Some(TaskRole::FanOut(progress)) => progress.next_release(),
                _ => None,
            };
            let Some(index) = next else {
                return;
            };
            self.update(task_id, |task| {
                if let TaskRole::FanOut(progress) = &mut task.role {
                    progress.released += 1;
                }
            });
            self.make_ready(&instance_id(task_id, index));
        }
    }

    /// An instance ended: count it, release the next, or fail the fan-out.
    pub(super) fn instance_ended(&mut self, task_id: &str) {
        let Some(task) = self.job.tasks.get(task_id) else {
            return;
        };
        let (TaskRole::Instance { .. }, Some(fan_out)) = (&task.role, task.parent.clone()) else {
            return;
        };
        if self.job.task_state(&fan_out) != Some(TaskState::Running) {
            return;
        }
        let state = task.state;
        if state != TaskState::Succeeded {
            let error = task.error.clone().unwrap_or_default();
            let reason = format!("instance '{task_id}' ended {state:?}: {error}");
            self.cancel_instances(&fan_out, "another instance of the fan-out failed");
            return self.end_in_place(&fan_out, Err(reason));
        }
        let mut done = false;
        self.update(&fan_out, |task| {
            if let TaskRole::FanOut(progress) = &mut task.role {
                progress.succeeded += 1;
                done = progress.succeeded == progress.instances;
            }
        });
        match done {
            true => self.end_in_place(&fan_out, Ok(None)),
            false => self.release_instances(&fan_out),
        }
    }

    /// Cancels the unfinished instances of a fan-out.
    fn cancel_instances(&mut self, fan_out: &str, reason: &str) {
        let count = match self.job.tasks.get(fan_out).map(|task| &task.role) {
            Some(TaskRole::FanOut(progress)) => progress.instances,
            _ => 0,
        };
        for i in 0..count {
            let id = instance_id(fan_out, i);
            if self.job.task_state(&id).is_some_and(|s| !s.is_terminal()) {
                self.cancel_task(&id, reason);
            }
        }
    }
}
