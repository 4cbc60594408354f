//! `synod job history ID`: a job's timeline — every event with its offset from submission —
//! then one line per task: its state, attempts, agent, how long it waited for an agent, how
//! long its attempts ran and how long it took in all.

use serde_json::json;
use synod_sdk::proto as pb;

use super::events::AgentNames;
use super::jobs::{job_state_name, task_state_name};

/// Prints the history of `job_id`, as text or JSON.
pub async fn print(client: &synod_sdk::Client, job_id: &str, as_json: bool) -> anyhow::Result<()> {
    let job = client.get_job(job_id).await?;
    let events = client.job_history(job_id).await?;
    let tasks = client.job_tasks(job_id).await?;
    let mut names = AgentNames::default();
    for event in &events {
        names.learn(client, event).await;
    }
    let start_ms = job.created_at_ms;
    if as_json {
        let events: Vec<_> = events
            .iter()
            .map(|e| {
                json!({
                    "sequence": e.sequence, "at_ms": e.occurred_at_ms,
                    "offset_ms": e.occurred_at_ms.saturating_sub(start_ms),
                    "event": names.describe(e),
                })
            })
            .collect();
        let tasks: Vec<_> = tasks.iter().map(|t| task_json(t, &names)).collect();
        let value = json!({ "job_id": job.job_id, "name": job.name,
            "state": job_state_name(job.state), "events": events, "tasks": tasks });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let total = job.finished_at_ms.saturating_sub(start_ms);
    println!(
        "job {} ({}): {} {}{}",
        job.job_id,
        job.name,
        job_state_name(job.state),
        job.state_reason,
        if job.finished_at_ms > 0 {
            format!(" after {}", duration(total))
        } else {
            String::new()
        }
    );
    for event in &events {
        let offset = event.occurred_at_ms.saturating_sub(start_ms);
        println!(
            "  +{:>9}  {:>4}  {}",
            duration(offset),
            event.sequence,
            names.describe(event)
        );
    }
    println!(
        "\n{:<28} {:<14} {:>8} {:>10} {:>10} {:>10}  AGENT",
        "TASK", "STATE", "ATTEMPTS", "WAITED", "RAN", "TOTAL"
    );
    for task in &tasks {
        let times = Times::of(task);
        println!(
            "{:<28} {:<14} {:>8} {:>10} {:>10} {:>10}  {}",
            task.task_id,
            task_state_name(task.state),
            task.attempts.len(),
            optional(times.waited_ms),
            duration(times.ran_ms),
            optional(times.total_ms),
            names.label(&task.agent_id)
        );
    }
    Ok(())
}

/// How long a task waited, ran and took, in ms.
struct Times {
    /// From creation to its first assignment.
    waited_ms: Option<u64>,
    /// Its attempts' run times (start to finish), added up.
    ran_ms: u64,
    /// From creation to its end.
    total_ms: Option<u64>,
}

impl Times {
    fn of(task: &pb::Task) -> Self {
        let waited_ms = task
            .attempts
            .first()
            .map(|a| a.assigned_at_ms.saturating_sub(task.created_at_ms));
        let ran_ms = task
            .attempts
            .iter()
            .filter(|a| a.started_at_ms > 0 && a.finished_at_ms > 0)
            .map(|a| a.finished_at_ms.saturating_sub(a.started_at_ms))
            .sum();
        let total_ms = (task.finished_at_ms > 0)
            .then(|| task.finished_at_ms.saturating_sub(task.created_at_ms));
        Self {
            waited_ms,
            ran_ms,
            total_ms,
        }
    }
}

fn task_json(task: &pb::Task, names: &AgentNames) -> serde_json::Value {
    let times = Times::of(task);
    json!({
        "task_id": task.task_id, "state": task_state_name(task.state),
        "attempts": task.attempts.len(), "agent": names.label(&task.agent_id),
        "waited_ms": times.waited_ms, "ran_ms": times.ran_ms, "total_ms": times.total_ms,
    })
}

fn optional(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), duration)
}

/// `850 ms`, `12.3 s` or `4 min 05 s`.
fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0), "0 ms");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4 min 05 s");
    }

    #[test]
    fn a_task_s_times_come_from_its_attempts() {
        let attempt = |assigned, started, finished| pb::TaskAttempt {
            assigned_at_ms: assigned,
            started_at_ms: started,
            finished_at_ms: finished,
            ..Default::default()
        };
        let task = pb::Task {
            created_at_ms: 1_000,
            finished_at_ms: 1_900,
            attempts: vec![attempt(1_100, 1_120, 1_300), attempt(1_500, 1_510, 1_900)],
            ..Default::default()
        };
        let times = Times::of(&task);
        assert_eq!(times.waited_ms, Some(100));
        assert_eq!(times.ran_ms, 180 + 390);
        assert_eq!(times.total_ms, Some(900));
        let pending = Times::of(&pb::Task::default());
        assert_eq!(
            (pending.waited_ms, pending.ran_ms, pending.total_ms),
            (None, 0, None)
        );
    }
}
