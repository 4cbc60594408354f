//! Eligibility: whether one agent may take one task, and if not, why ([`Ineligible`]).
//!
//! Checks run in a fixed order, from the most lasting obstacle to the most passing one:
//!
//! ```text
//!   draining/quarantined ─► capabilities ─► constraints ─► free slot ─► resources ─► anti-affinity
//!   (Unavailable)           (Missing…)      (Constraint…)  (Full)       (Insufficient…) (AntiAffinity)
//!   └──────────── static during a pass ────────────────┘  └────── shrink as tasks land ──────────┘
//! ```
//!
//! The boolean checks borrow and never allocate, so hot loops can call them freely; only
//! [`eligible`] builds an owned reason. Pure: no tokio, I/O, clock or randomness.

use super::{Candidate, Constraint, TaskNeeds};

/// Why an agent cannot take a task.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Ineligible {
    /// The agent is draining or quarantined.
    #[error("agent is draining or quarantined")]
    Unavailable,
    /// The agent lacks a required capability.
    #[error("missing capability '{0}'")]
    MissingCapability(String),
    /// A placement constraint on this label does not hold.
    #[error("constraint on label '{key}' not satisfied")]
    ConstraintFailed {
        /// The label key of the first failing constraint.
        key: String,
    },
    /// The agent runs as many tasks as it allows.
    #[error("agent is at its concurrency limit")]
    Full,
    /// The agent already runs a task of the same job and anti-affinity group.
    #[error("agent already runs a task of anti-affinity group '{0}'")]
    AntiAffinity(String),
    /// The agent's free capacity does not cover a resource.
    #[error("resource '{name}': needs {need}, {free} free")]
    InsufficientResource {
        /// The resource.
        name: String,
        /// What the task needs.
        need: f64,
        /// What the agent has free.
        free: f64,
    },
}

/// Whether `candidate` may take a task with `needs`; the first obstacle otherwise.
pub fn eligible(needs: &TaskNeeds, candidate: &Candidate) -> Result<(), Ineligible> {
    if candidate.draining_or_quarantined {
        return Err(Ineligible::Unavailable);
    }
    if let Some(name) = missing_capability(needs, candidate) {
        return Err(Ineligible::MissingCapability(name.to_owned()));
    }
    if let Some(constraint) = failed_constraint(needs, candidate) {
        let key = constraint.key.clone();
        return Err(Ineligible::ConstraintFailed { key });
    }
    if candidate.is_full() {
        return Err(Ineligible::Full);
    }
    if let Some((name, need, free)) = short_resource(needs, candidate) {
        return Err(Ineligible::InsufficientResource {
            name: name.to_owned(),
            need,
            free,
        });
    }
    match shared_group(needs, candidate) {
        Some(key) => Err(Ineligible::AntiAffinity(key.to_owned())),
        None => Ok(()),
    }
}

/// True when [`eligible`] would return `Ok`, without allocating.
pub fn is_eligible(needs: &TaskNeeds, candidate: &Candidate) -> bool {
    matches_statically(needs, candidate) && has_room(needs, candidate)
}

/// The checks that cannot change while tasks are placed: availability, capabilities and
/// constraints.
pub(super) fn matches_statically(needs: &TaskNeeds, candidate: &Candidate) -> bool {
    !candidate.draining_or_quarantined
        && missing_capability(needs, candidate).is_none()
        && failed_constraint(needs, candidate).is_none()
}

/// The checks that placing tasks can turn false: a free slot, enough free resources and no
/// task of the same anti-affinity group.
pub(super) fn has_room(needs: &TaskNeeds, candidate: &Candidate) -> bool {
    !candidate.is_full()
        && short_resource(needs, candidate).is_none()
        && shared_group(needs, candidate).is_none()
}

/// The task's anti-affinity key, when the agent already runs a task with it.
fn shared_group<'n>(needs: &'n TaskNeeds, candidate: &Candidate) -> Option<&'n str> {
    let key = needs.anti_affinity.as_deref()?;
    candidate.anti_affinity.contains(key).then_some(key)
}

fn missing_capability<'n>(needs: &'n TaskNeeds, candidate: &Candidate) -> Option<&'n str> {
    needs
        .required_capabilities
        .iter()
        .find(|name| !candidate.capabilities.contains(*name))
        .map(String::as_str)
}

fn failed_constraint<'n>(needs: &'n TaskNeeds, candidate: &Candidate) -> Option<&'n Constraint> {
    needs
        .constraints
        .iter()
        .find(|constraint| !constraint.holds(&candidate.labels))
}

/// The first resource (in name order) the agent cannot cover: `(name, need, free)`. A
/// resource the agent does not list has 0 free; a NaN need never fits.
fn short_resource<'n>(needs: &'n TaskNeeds, candidate: &Candidate) -> Option<(&'n str, f64, f64)> {
    needs.resources.iter().find_map(|(name, &need)| {
        let free = candidate.free_resources.get(name).copied().unwrap_or(0.0);
        let fits = need <= free;
        (!fits).then_some((name.as_str(), need, free))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{agent, needs};
    use crate::scheduler::ConstraintOp;

    #[test]
    fn eligibility_table() {
        let base = || agent("a").caps(&["gpu", "py"]).labels(&[("zone", "eu")]);
        let wants_gpu = || needs().caps(&["gpu"]);
        let insufficient = |name: &str, need, free| Ineligible::InsufficientResource {
            name: name.into(),
            need,
            free,
        };
        let cases: Vec<(&str, Candidate, TaskNeeds, Result<(), Ineligible>)> = vec![
            ("fits", base(), wants_gpu(), Ok(())),
            ("no needs", agent("a"), needs(), Ok(())),
            (
                "missing capability",
                base(),
                needs().caps(&["gpu", "tpu"]),
                Err(Ineligible::MissingCapability("tpu".into())),
            ),
            (
                "draining",
                base().unavailable(),
                wants_gpu(),
                Err(Ineligible::Unavailable),
            ),
            (
                "full",
                base().busy(4, 4),
                wants_gpu(),
                Err(Ineligible::Full),
            ),
            (
                "over full",
                base().busy(5, 4),
                wants_gpu(),
                Err(Ineligible::Full),
            ),
            (
                "zero slots",
                base().busy(0, 0),
                wants_gpu(),
                Err(Ineligible::Full),
            ),
            ("one slot left", base().busy(3, 4), wants_gpu(), Ok(())),
            (
                "constraint fails",
                base(),
                needs().constraint("zone", ConstraintOp::Equals("us".into())),
                Err(Ineligible::ConstraintFailed { key: "zone".into() }),
            ),
            (
                "constraint holds",
                base(),
                needs().constraint("zone", ConstraintOp::Exists),
                Ok(()),
            ),
            (
                "resource fits exactly",
                base().free(&[("cpu", 2.0)]),
                needs().resources(&[("cpu", 2.0)]),
                Ok(()),
            ),
            (
                "resource short",
                base().free(&[("cpu", 1.5)]),
                needs().resources(&[("cpu", 2.0)]),
                Err(insufficient("cpu", 2.0, 1.5)),
            ),
            (
                "resource unlisted",
                base(),
                needs().resources(&[("gpu", 1.0)]),
                Err(insufficient("gpu", 1.0, 0.0)),
            ),
            (
                "zero of unlisted resource",
                base(),
                needs().resources(&[("gpu", 0.0)]),
                Ok(()),
            ),
            (
                "capability reported before full",
                base().busy(4, 4),
                needs().caps(&["tpu"]),
                Err(Ineligible::MissingCapability("tpu".into())),
            ),
            (
                "anti-affinity group taken",
                base().running_group("job/shard"),
                wants_gpu().apart("job/shard"),
                Err(Ineligible::AntiAffinity("job/shard".into())),
            ),
            (
                "another group",
                base().running_group("job/other"),
                wants_gpu().apart("job/shard"),
                Ok(()),
            ),
            (
                "unavailable reported first",
                base().unavailable().busy(4, 4),
                needs().caps(&["tpu"]),
                Err(Ineligible::Unavailable),
            ),
        ];
        for (name, candidate, task, want) in cases {
            assert_eq!(eligible(&task, &candidate), want, "{name}");
            assert_eq!(is_eligible(&task, &candidate), want.is_ok(), "{name}");
        }
    }

    #[test]
    fn nan_need_never_fits() {
        let candidate = agent("a").free(&[("cpu", 8.0)]);
        let task = needs().resources(&[("cpu", f64::NAN)]);
        assert!(matches!(
            eligible(&task, &candidate),
            Err(Ineligible::InsufficientResource { .. })
        ));
    }

    #[test]
    fn reasons_read_well() {
        let reason = Ineligible::InsufficientResource {
            name: "cpu".into(),
            need: 2.0,
            free: 1.5,
        };
        assert_eq!(reason.to_string(), "resource 'cpu': needs 2, 1.5 free");
        let reason = Ineligible::MissingCapability("gpu".into());
        assert_eq!(reason.to_string(), "missing capability 'gpu'");
    }
}
