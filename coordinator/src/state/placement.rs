//! What the scheduler sees of the replicated state: a registered agent as a [`Candidate`] (its
//! free slots and resources, the anti-affinity groups it runs) and a task as [`TaskNeeds`].
//!
//! One source for the leader's scheduling passes and for the check `AssignTask` makes when it
//! applies, so a placement the leader chose is judged by the same rules on every replica. Pure.

use super::agents::AgentRecord;
use super::jobs::{JobTable, TaskSpec};
use crate::scheduler::{Candidate, TaskNeeds};

/// What task `spec` of job `job_id` needs from its agent.
pub fn needs_of(job_id: &str, spec: &TaskSpec) -> TaskNeeds {
    TaskNeeds {
        required_capabilities: spec.required_capabilities.clone(),
        preferred_labels: spec.preferred_labels.clone(),
        constraints: spec.constraints.clone(),
        resources: spec.resources.clone(),
        anti_affinity: group_key(job_id, spec),
    }
}

/// `agent` as a scheduling candidate at `now_ms`: its resources less what its running tasks
/// hold, and the anti-affinity groups of those tasks. An open circuit keeps all work away; a
/// half-open one lets through a single probe.
pub fn candidate_of(jobs: &JobTable, agent: &AgentRecord, now_ms: u64) -> Candidate {
    let max_concurrent = match agent.breaker.probing(now_ms) {
        true => agent.max_concurrent.min(1),
        false => agent.max_concurrent,
    };
    let mut candidate = Candidate {
        id: agent.id.clone(),
        capabilities: agent.capabilities.clone(),
        labels: agent.labels.clone(),
        running: agent.running.len() as u32,
        max_concurrent,
        free_resources: agent.resources.clone(),
        draining_or_quarantined: agent.draining || agent.breaker.blocks(now_ms),
        ..Candidate::default()
    };
    for task in &agent.running {
        let Some(spec) = jobs
            .get(&task.job_id)
            .and_then(|j| j.task_spec(&task.task_id))
        else {
            continue;
        };
        for (name, held) in &spec.resources {
            if let Some(free) = candidate.free_resources.get_mut(name) {
                *free -= held;
            }
        }
        if let Some(key) = group_key(&task.job_id, spec) {
            candidate.anti_affinity.insert(key);
        }
    }
    candidate
}

/// The anti-affinity key of a task: its job and group, when it has a group.
fn group_key(job_id: &str, spec: &TaskSpec) -> Option<String> {
    (!spec.anti_affinity_group.is_empty()).then(|| format!("{job_id}/{}", spec.anti_affinity_group))
}
