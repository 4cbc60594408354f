//! Jobs from proto to domain: `synod.v1.JobSpec` into the state's `JobSpec`, resolving the
//! proto's "0 means the server default" rules and refusing malformed fields by name (the
//! state's `validate` then checks the rules between fields and tasks).

use std::collections::BTreeMap;

use synod_proto::v1 as pb;

use super::ApiError;
use crate::scheduler::{Constraint, ConstraintOp};
use crate::state::jobs::{
    Criterion, Fallback, FanOut, FanOutSource, Goal, JobSpec, OutputCondition, RetryPolicy,
    Strategy, TaskSpec, ATTEMPTS_MAX,
};

/// Converts a submitted spec; `field` prefixes field paths in errors (e.g. `spec`).
pub fn job_spec(spec: pb::JobSpec, field: &str) -> Result<JobSpec, ApiError> {
    let goal = spec.goal.unwrap_or_default();
    let criterion = match (
        pb::GoalCriterion::try_from(goal.criterion),
        goal.goal_task_id.is_empty(),
    ) {
        (Ok(pb::GoalCriterion::GoalTask), false) => Criterion::GoalTask(goal.goal_task_id),
        (Ok(pb::GoalCriterion::GoalTask), true) => {
            return Err(ApiError::invalid(
                format!("{field}.goal.goal_task_id"),
                "required with GOAL_CRITERION_GOAL_TASK",
            ))
        }
        (Ok(pb::GoalCriterion::Unspecified | pb::GoalCriterion::AllTasks), true) => {
            Criterion::AllTasks
        }
        (Ok(_), false) => {
            return Err(ApiError::invalid(
                format!("{field}.goal.goal_task_id"),
                "only allowed with GOAL_CRITERION_GOAL_TASK",
            ))
        }
        (Err(_), _) => {
            return Err(ApiError::invalid(
                format!("{field}.goal.criterion"),
                "unknown value",
            ))
        }
    };
    let tasks = spec
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, task)| task_spec(task, &format!("{field}.tasks[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(JobSpec {
        name: spec.name,
        goal: Goal {
            description: goal.description,
            criterion,
        },
        tasks,
        labels: spec.labels.into_iter().collect(),
        priority: spec.priority,
        timeout_ms: spec.timeout_ms,
    })
}

/// Converts one task spec; `field` is its path, e.g. `spec.tasks[2]`.
pub fn task_spec(task: pb::TaskSpec, field: &str) -> Result<TaskSpec, ApiError> {
    let mut conditions = BTreeMap::new();
    let mut depends_on = Vec::with_capacity(task.depends_on.len());
    for (i, dependency) in task.depends_on.into_iter().enumerate() {
        if let Some(condition) = dependency.condition {
            let field = format!("{field}.depends_on[{i}].condition");
            conditions.insert(
                dependency.task_id.clone(),
                output_condition(condition, &field)?,
            );
        }
        depends_on.push(dependency.task_id);
    }
    let fallback_strategy = match &task.auction {
        Some(auction) => optional_strategy(
            auction.fallback_strategy,
            &format!("{field}.auction.fallback_strategy"),
        )?,
        None => None,
    };
    let auction = task.auction.unwrap_or_default();
    if auction.bid_window_ms > BID_WINDOW_MS_MAX {
        return Err(ApiError::invalid(
            format!("{field}.auction.bid_window_ms"),
            format!(
                "{} exceeds the maximum of {BID_WINDOW_MS_MAX}",
                auction.bid_window_ms
            ),
        ));
    }
    let constraints = task
        .constraints
        .into_iter()
        .enumerate()
        .map(|(i, c)| constraint(c, &format!("{field}.constraints[{i}]")))
        .collect::<Result<_, _>>()?;
    let resources = task
        .resources
        .into_iter()
        .map(|(name, amount)| resource(name, amount, &format!("{field}.resources")))
        .collect::<Result<_, _>>()?;
    Ok(TaskSpec {
        id: task.task_id,
        kind: task.kind,
        description: task.description,
        payload: task.payload,
        depends_on,
        conditions,
        required_capabilities: task.required_capabilities.into_iter().collect(),
        preferred_labels: task.preferred_labels.into_iter().collect(),
        constraints,
        resources,
        anti_affinity_group: task.anti_affinity_group,
        timeout_ms: task.timeout_ms,
        retry: task.retry.map(retry_policy).unwrap_or_default(),
        strategy: optional_strategy(task.strategy, &format!("{field}.strategy"))?
            .unwrap_or_default(),
        fallback_strategy,
        bid_window_ms: auction.bid_window_ms,
        auction_rounds: auction.max_rounds,
        fallback: match task.fallback {
            Some(fallback) => Some(task_fallback(fallback, &format!("{field}.fallback"))?),
            None => None,
        },
        fan_out: match task.fan_out {
            Some(spec) => Some(fan_out(spec, &format!("{field}.fan_out"))?),
            None => None,
        },
        child_job: match task.child_job {
            Some(child) => Some(Box::new(job_spec(child, &format!("{field}.child_job"))?)),
            None => None,
        },
        compensation_task_id: task.compensation_task_id,
    })
}

/// A fan-out: its source is required, and a JSON Pointer must be one.
fn fan_out(fan_out: pb::FanOut, field: &str) -> Result<FanOut, ApiError> {
    use pb::fan_out::Source;
    let source = match fan_out.source {
        Some(Source::Items(items)) => FanOutSource::Items(
            items
                .items
                .into_iter()
                .map(serde_bytes::ByteBuf::from)
                .collect(),
        ),
        Some(Source::FromDependency(from)) => {
            json_pointer(
                &from.json_pointer,
                &format!("{field}.from_dependency.json_pointer"),
            )?;
            if from.task_id.is_empty() {
                return Err(ApiError::invalid(
                    format!("{field}.from_dependency.task_id"),
                    "required",
                ));
            }
            FanOutSource::FromDependency {
                task_id: from.task_id,
                json_pointer: from.json_pointer,
            }
        }
        None => {
            return Err(ApiError::invalid(
                field,
                "set items or from_dependency as the source of the items",
            ))
        }
    };
    Ok(FanOut {
        source,
        parallelism: fan_out.parallelism,
    })
}

/// An RFC 6901 JSON Pointer: empty, or starting with '/'.
fn json_pointer(pointer: &str, field: &str) -> Result<(), ApiError> {
    match pointer.is_empty() || pointer.starts_with('/') {
        true => Ok(()),
        false => Err(ApiError::invalid(
            field,
            format!("'{pointer}' is not a JSON Pointer (empty, or starting with '/')"),
        )),
    }
}

/// What a task falls back to; it must change something.
fn task_fallback(fallback: pb::Fallback, field: &str) -> Result<Fallback, ApiError> {
    let strategy = optional_strategy(fallback.strategy, &format!("{field}.strategy"))?;
    if fallback.kind.is_empty() && strategy.is_none() && fallback.required_capabilities.is_empty() {
        return Err(ApiError::invalid(
            field,
            "set at least one of kind, strategy, required_capabilities",
        ));
    }
    if fallback.max_attempts > ATTEMPTS_MAX {
        return Err(ApiError::invalid(
            format!("{field}.max_attempts"),
            format!(
                "{} exceeds the maximum of {ATTEMPTS_MAX}",
                fallback.max_attempts
            ),
        ));
    }
    Ok(Fallback {
        kind: fallback.kind,
        strategy,
        required_capabilities: fallback.required_capabilities.into_iter().collect(),
        max_attempts: fallback.max_attempts.max(1),
    })
}

/// A condition on a dependency's output: a JSON Pointer and a JSON value.
fn output_condition(
    condition: pb::OutputCondition,
    field: &str,
) -> Result<OutputCondition, ApiError> {
    json_pointer(&condition.json_pointer, &format!("{field}.json_pointer"))?;
    if let Err(error) = serde_json::from_str::<serde_json::Value>(&condition.equals_json) {
        return Err(ApiError::invalid(
            format!("{field}.equals_json"),
            format!("not JSON ({error}); a string needs quotes, e.g. \"bug\""),
        ));
    }
    Ok(OutputCondition {
        json_pointer: condition.json_pointer,
        equals_json: condition.equals_json,
    })
}

/// A placement constraint, its operands checked against its operator.
fn constraint(constraint: pb::PlacementConstraint, field: &str) -> Result<Constraint, ApiError> {
    if constraint.key.is_empty() {
        return Err(ApiError::invalid(format!("{field}.key"), "required"));
    }
    let values = constraint.values;
    let op = match pb::ConstraintOp::try_from(constraint.op) {
        Ok(pb::ConstraintOp::Equals) if values.len() == 1 => {
            ConstraintOp::Equals(values.into_iter().next().unwrap_or_default())
        }
        Ok(pb::ConstraintOp::In) if !values.is_empty() => ConstraintOp::In(values),
        Ok(pb::ConstraintOp::NotIn) if !values.is_empty() => ConstraintOp::NotIn(values),
        Ok(pb::ConstraintOp::Exists) if values.is_empty() => ConstraintOp::Exists,
        Ok(pb::ConstraintOp::NotExists) if values.is_empty() => ConstraintOp::NotExists,
        Ok(pb::ConstraintOp::Unspecified) | Err(_) => {
            return Err(ApiError::invalid(
                format!("{field}.op"),
                "one of EQUALS, IN, NOT_IN, EXISTS, NOT_EXISTS is required",
            ))
        }
        Ok(op) => {
            return Err(ApiError::invalid(
                format!("{field}.values"),
                format!(
                    "{} takes {}",
                    op.as_str_name(),
                    match op {
                        pb::ConstraintOp::Equals => "exactly one value",
                        pb::ConstraintOp::In | pb::ConstraintOp::NotIn => "at least one value",
                        _ => "no values",
                    }
                ),
            ))
        }
    };
    Ok(Constraint {
        key: constraint.key,
        op,
    })
}

/// A resource request: a named, finite, non-negative amount.
fn resource(name: String, amount: f64, field: &str) -> Result<(String, f64), ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid(field, "a resource name is empty"));
    }
    if !amount.is_finite() || amount < 0.0 {
        return Err(ApiError::invalid(
            format!("{field}.{name}"),
            format!("{amount} is not a finite amount of at least 0"),
        ));
    }
    Ok((name, amount))
}

/// Longest bid window a task may ask for.
const BID_WINDOW_MS_MAX: u64 = 60_000;

fn retry_policy(retry: pb::RetryPolicy) -> RetryPolicy {
    let defaults = RetryPolicy::default();
    RetryPolicy {
        max_attempts: if retry.max_attempts == 0 {
            defaults.max_attempts
        } else {
            retry.max_attempts
        },
        initial_backoff_ms: retry.initial_backoff_ms,
        max_backoff_ms: if retry.max_backoff_ms == 0 {
            defaults.max_backoff_ms
        } else {
            retry.max_backoff_ms
        },
        multiplier: if retry.multiplier < 1.0 {
            defaults.multiplier
        } else {
            retry.multiplier
        },
    }
}

fn optional_strategy(value: i32, field: &str) -> Result<Option<Strategy>, ApiError> {
    match pb::AssignmentStrategy::try_from(value) {
        Ok(pb::AssignmentStrategy::Unspecified) => Ok(None),
        Ok(pb::AssignmentStrategy::RoundRobin) => Ok(Some(Strategy::RoundRobin)),
        Ok(pb::AssignmentStrategy::LeastLoaded) => Ok(Some(Strategy::LeastLoaded)),
        Ok(pb::AssignmentStrategy::Capability) => Ok(Some(Strategy::Capability)),
        Ok(pb::AssignmentStrategy::Auction) => Ok(Some(Strategy::Auction)),
        Err(_) => Err(ApiError::invalid(
            field,
            format!("unknown strategy {value}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> pb::TaskSpec {
        pb::TaskSpec {
            task_id: id.into(),
            kind: "k".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_spec_converts_with_defaults() {
        let spec = pb::JobSpec {
            name: "j".into(),
            tasks: vec![pb::TaskSpec {
                strategy: pb::AssignmentStrategy::Auction as i32,
                auction: Some(pb::AuctionSettings {
                    fallback_strategy: pb::AssignmentStrategy::LeastLoaded as i32,
                    ..Default::default()
                }),
                retry: Some(pb::RetryPolicy {
                    max_attempts: 5,
                    ..Default::default()
                }),
                ..task("a")
            }],
            ..Default::default()
        };
        let converted = job_spec(spec, "spec").unwrap();
        assert_eq!(converted.goal.criterion, Criterion::AllTasks);
        let a = &converted.tasks[0];
        assert_eq!(
            (a.strategy, a.fallback_strategy),
            (Strategy::Auction, Some(Strategy::LeastLoaded))
        );
        assert_eq!(
            (a.retry.max_attempts, a.retry.max_backoff_ms),
            (5, RetryPolicy::default().max_backoff_ms)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let goal_without_task = pb::JobSpec {
            goal: Some(pb::Goal {
                criterion: pb::GoalCriterion::GoalTask as i32,
                ..Default::default()
            }),
            tasks: vec![task("a")],
            ..Default::default()
        };
        let error = job_spec(goal_without_task, "spec").unwrap_err().to_string();
        assert_eq!(
            error,
            "spec.goal.goal_task_id: required with GOAL_CRITERION_GOAL_TASK"
        );
        let fan_out = pb::JobSpec {
            tasks: vec![
                task("a"),
                pb::TaskSpec {
                    fan_out: Some(Default::default()),
                    ..task("b")
                },
            ],
            ..Default::default()
        };
        let error = job_spec(fan_out, "spec").unwrap_err().to_string();
        assert_eq!(
            error,
            "spec.tasks[1].fan_out: set items or from_dependency as the source of the items"
        );
        let child = pb::JobSpec {
            tasks: vec![pb::TaskSpec {
                child_job: Some(pb::JobSpec {
                    tasks: vec![pb::TaskSpec {
                        fan_out: Some(pb::FanOut {
                            source: Some(pb::fan_out::Source::FromDependency(
                                pb::FanOutFromDependency {
                                    task_id: "x".into(),
                                    json_pointer: "items".into(),
                                },
                            )),
                            parallelism: 0,
                        }),
                        ..task("c")
                    }],
                    ..Default::default()
                }),
                ..task("p")
            }],
            ..Default::default()
        };
        let error = job_spec(child, "spec").unwrap_err().to_string();
        assert_eq!(
            error,
            "spec.tasks[0].child_job.tasks[0].fan_out.from_dependency.json_pointer: 'items' is not \
             a JSON Pointer (empty, or starting with '/')"
        );
    }
}
