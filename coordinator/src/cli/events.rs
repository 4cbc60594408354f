//! Job events as one readable line each, with agents shown by name (looked up once, and again
//! when an agent the lines have not met yet shows up).

use std::collections::BTreeMap;

use synod_sdk::proto as pb;

use super::jobs::job_state_name;

/// Agent names by id.
#[derive(Default, Clone)]
pub struct AgentNames {
    names: BTreeMap<String, String>,
}

impl AgentNames {
    /// Looks the agents up again when `event` names one not known yet.
    pub async fn learn(&mut self, client: &synod_sdk::Client, event: &pb::JobEvent) {
        let Some(agent_id) = agent_of(event) else {
            return;
        };
        if self.names.contains_key(agent_id) {
            return;
        }
        if let Ok(agents) = client.list_agents().await {
            self.names = agents.into_iter().map(|a| (a.agent_id, a.name)).collect();
        }
    }

    /// `name (id prefix)` when the agent is known, else its id.
    pub fn label(&self, agent_id: &str) -> String {
        match self.names.get(agent_id) {
            Some(name) => format!("{name} ({})", agent_id.get(..8).unwrap_or(agent_id)),
            None => agent_id.to_owned(),
        }
    }

    /// One line describing `event`.
    pub fn describe(&self, event: &pb::JobEvent) -> String {
        use pb::job_event::Kind;
        match &event.kind {
            Some(Kind::JobSubmitted(_)) => "job submitted".into(),
            Some(Kind::TaskReady(e)) => format!("{} ready", e.task_id),
            Some(Kind::TaskAssigned(e)) => format!(
                "{} assigned to {} (attempt {})",
                e.task_id,
                self.label(&e.agent_id),
                e.attempt
            ),
            Some(Kind::TaskStarted(e)) => {
                format!("{} started on {}", e.task_id, self.label(&e.agent_id))
            }
            Some(Kind::TaskSucceeded(e)) => format!(
                "{} succeeded ({} bytes of output)",
                e.task_id, e.output_size_bytes
            ),
            Some(Kind::TaskFailed(e)) => format!(
                "{} failed on attempt {}: {}",
                e.task_id, e.attempt, e.error_message
            ),
            Some(Kind::TaskTimedOut(e)) => {
                format!("{} timed out on attempt {}", e.task_id, e.attempt)
            }
            Some(Kind::TaskAgentLost(e)) => format!(
                "{} lost its agent {} (attempt {})",
                e.task_id,
                self.label(&e.agent_id),
                e.attempt
            ),
            Some(Kind::TaskRetryScheduled(e)) => {
                format!("{} retries in {} ms", e.task_id, e.backoff_ms)
            }
            Some(Kind::FallbackActivated(e)) => {
                format!("{} falls back to kind '{}'", e.task_id, e.kind)
            }
            Some(Kind::TaskUnsatisfiable(e)) => {
                format!("{} unsatisfiable: {}", e.task_id, e.reason)
            }
            Some(Kind::TaskDeadLettered(e)) => format!(
                "{} dead-lettered after {} attempts: {}",
                e.task_id, e.attempts, e.last_error
            ),
            Some(Kind::StaleResultRejected(e)) => format!(
                "{} stale result of attempt {} from {} rejected",
                e.task_id,
                e.attempt,
                self.label(&e.agent_id)
            ),
            Some(Kind::SubtasksAdded(e)) => format!(
                "{} added subtasks {}",
                e.parent_task_id,
                e.task_ids.join(", ")
            ),
            Some(Kind::SubtasksCompleted(e)) => {
                format!("{} has its subtasks' outcomes", e.parent_task_id)
            }
            Some(Kind::FanOutExpanded(e)) => {
                format!(
                    "{} fanned out into {} instances",
                    e.task_id, e.instance_count
                )
            }
            Some(Kind::ChildJobStarted(e)) => {
                format!("{} started child job {}", e.task_id, e.child_job_id)
            }
            Some(Kind::CompensationStarted(e)) => {
                format!("compensating ({}): {}", e.reason, e.task_ids.join(" then "))
            }
            Some(Kind::TaskCancelled(e)) => format!("{} cancelled: {}", e.task_id, e.reason),
            Some(Kind::JobCancelled(e)) => format!("job cancel requested: {}", e.reason),
            Some(Kind::JobCompleted(e)) => format!("job {} {}", job_state_name(e.state), e.reason),
            Some(other) => format!("{other:?}"),
            None => "event of a newer Synod version".into(),
        }
    }
}

/// The agent an event is about, if any.
fn agent_of(event: &pb::JobEvent) -> Option<&str> {
    use pb::job_event::Kind;
    let id = match event.kind.as_ref()? {
        Kind::TaskAssigned(e) => &e.agent_id,
        Kind::TaskStarted(e) => &e.agent_id,
        Kind::TaskAgentLost(e) => &e.agent_id,
        Kind::StaleResultRejected(e) => &e.agent_id,
        _ => return None,
    };
    Some(id)
}
