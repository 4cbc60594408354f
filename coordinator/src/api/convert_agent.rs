//! Agents between proto and domain: a `Register` into the state's `Registration`, and an
//! `AgentRecord` into the proto `Agent`.

use synod_proto::v1 as pb;

use super::ApiError;
use crate::state::agents::{BreakerPolicy, Circuit};
use crate::state::{AgentRecord, AgentStatus, Registration, State};

/// Longest agent name accepted.
const NAME_CHARS_MAX: usize = 256;

/// Validates a Register and fills in the leader-chosen ids: a new agent id (when not resuming),
/// the session id and the session's token.
pub fn registration(
    register: pb::Register,
    new_id: String,
    session_id: String,
    session_token: String,
    breaker: BreakerPolicy,
) -> Result<Registration, ApiError> {
    if register.max_concurrent_tasks == 0 {
        return Err(ApiError::invalid(
            "register.max_concurrent_tasks",
            "must be at least 1",
        ));
    }
    if register.name.chars().count() > NAME_CHARS_MAX {
        return Err(ApiError::invalid(
            "register.name",
            format!("longer than {NAME_CHARS_MAX} characters"),
        ));
    }
    if let Some((name, value)) = register
        .resources
        .iter()
        .find(|(_, v)| !v.is_finite() || **v < 0.0)
    {
        return Err(ApiError::invalid(
            format!("register.resources[{name}]"),
            format!("{value} is not a finite amount ≥ 0"),
        ));
    }
    let resuming = !register.agent_id.is_empty();
    if resuming && register.session_token.is_empty() {
        return Err(ApiError::invalid(
            "register.session_token",
            "required to resume agent_id",
        ));
    }
    Ok(Registration {
        agent_id: if resuming { register.agent_id } else { new_id },
        session_id,
        session_token,
        resume_token: resuming.then_some(register.session_token),
        name: register.name,
        capabilities: register.capabilities.into_iter().collect(),
        labels: register.labels.into_iter().collect(),
        resources: register.resources.into_iter().collect(),
        max_concurrent: register.max_concurrent_tasks,
        breaker,
    })
}

/// The proto form of an agent at `now_ms`; `connected` says whether it has a live session on
/// this node.
pub fn agent(record: &AgentRecord, state: &State, connected: bool, now_ms: u64) -> pb::Agent {
    let running_tasks = record
        .running
        .iter()
        .filter_map(|key| {
            let (_, task) = state.jobs.task(&key.job_id, &key.task_id)?;
            Some(pb::TaskRef {
                job_id: key.job_id.clone(),
                task_id: key.task_id.clone(),
                attempt: task.attempt,
            })
        })
        .collect();
    pb::Agent {
        agent_id: record.id.clone(),
        name: record.name.clone(),
        capabilities: record.capabilities.iter().cloned().collect(),
        labels: record.labels.clone().into_iter().collect(),
        resources: record.resources.clone().into_iter().collect(),
        state: agent_state(record, now_ms) as i32,
        state_reason: quarantine_reason(record, now_ms).unwrap_or_default(),
        running_tasks,
        max_concurrent_tasks: record.max_concurrent,
        session_id: record.session_id.clone(),
        registered_at_ms: record.registered_at_ms,
        connected_at_ms: record.connected_at_ms,
        connected,
        ..Default::default()
    }
}

fn agent_state(record: &AgentRecord, now_ms: u64) -> pb::AgentState {
    match record.status {
        AgentStatus::Connected if record.breaker.blocks(now_ms) => pb::AgentState::Quarantined,
        AgentStatus::Connected if record.draining => pb::AgentState::Draining,
        AgentStatus::Connected => pb::AgentState::Connected,
        AgentStatus::Disconnected { .. } => pb::AgentState::Disconnected,
        AgentStatus::Expired => pb::AgentState::Expired,
        AgentStatus::Deregistered => pb::AgentState::Left,
    }
}

/// Why the agent gets no work now, when its circuit is open.
fn quarantine_reason(record: &AgentRecord, now_ms: u64) -> Option<String> {
    if let Some(reason) = &record.breaker.manual {
        return Some(format!("quarantined by an operator: {reason}"));
    }
    match record.breaker.circuit {
        Circuit::Open { until_ms } if now_ms < until_ms => Some(format!(
            "quarantined after {} failed attempts in a row; takes a probe task in {} ms",
            record.breaker.failures_in_a_row,
            until_ms - now_ms
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register() -> pb::Register {
        pb::Register {
            name: "a".into(),
            max_concurrent_tasks: 2,
            ..Default::default()
        }
    }

    #[test]
    fn a_new_agent_gets_the_leader_chosen_id_and_a_resume_keeps_its_own() {
        let new = registration(
            register(),
            "new-id".into(),
            "s".into(),
            "t".into(),
            BreakerPolicy::default(),
        )
        .unwrap();
        assert_eq!((new.agent_id.as_str(), new.resume_token), ("new-id", None));
        let resume = pb::Register {
            agent_id: "old".into(),
            session_token: "tok".into(),
            ..register()
        };
        let resumed = registration(
            resume,
            "new-id".into(),
            "s".into(),
            "t".into(),
            BreakerPolicy::default(),
        )
        .unwrap();
        assert_eq!(
            (resumed.agent_id.as_str(), resumed.resume_token.as_deref()),
            ("old", Some("tok"))
        );
    }

    #[test]
    fn bad_registrations_name_the_field() {
        let cases = [
            (
                pb::Register {
                    max_concurrent_tasks: 0,
                    ..register()
                },
                "register.max_concurrent_tasks: must be at least 1",
            ),
            (
                pb::Register {
                    agent_id: "x".into(),
                    ..register()
                },
                "register.session_token: required to resume agent_id",
            ),
            (
                pb::Register {
                    resources: [("gpu".to_owned(), -1.0)].into(),
                    ..register()
                },
                "register.resources[gpu]: -1 is not a finite amount ≥ 0",
            ),
        ];
        for (register, expected) in cases {
            let error = registration(
                register,
                "n".into(),
                "s".into(),
                "t".into(),
                BreakerPolicy::default(),
            )
            .unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
    }
}
