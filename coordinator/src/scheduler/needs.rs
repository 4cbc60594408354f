//! [`TaskNeeds`]: what a task asks of the agent that runs it, and the hard label
//! [`Constraint`]s it may carry.
//!
//! Pure data and predicates on labels; never reaches tokio, I/O, a clock or randomness.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What a task needs from its agent. The API layer has validated it (constraint operands
/// well-formed, resource amounts finite and ≥ 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskNeeds {
    /// Capabilities the agent must all advertise.
    pub required_capabilities: BTreeSet<String>,
    /// Soft placement: agents matching more of these labels rank higher (capability strategy).
    pub preferred_labels: BTreeMap<String, String>,
    /// Hard conditions on the agent's labels; all must hold.
    pub constraints: Vec<Constraint>,
    /// Resources the task occupies while assigned, e.g. `{"cpu": 2.0}`.
    pub resources: BTreeMap<String, f64>,
    /// Tasks with the same key never run on one agent at the same time (the key names the job
    /// and its anti-affinity group).
    pub anti_affinity: Option<String>,
}

impl TaskNeeds {
    /// How many preferred labels the agent carries with the preferred value.
    pub fn affinity(&self, labels: &BTreeMap<String, String>) -> usize {
        self.preferred_labels
            .iter()
            .filter(|(key, value)| labels.get(*key) == Some(*value))
            .count()
    }
}

/// A hard condition on one agent label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// The label key.
    pub key: String,
    /// What the label's value must satisfy.
    pub op: ConstraintOp,
}

/// Operator of a [`Constraint`], as in `synod.v1.ConstraintOp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// The label is present and equals the value.
    Equals(String),
    /// The label is present and is one of the values.
    In(Vec<String>),
    /// The label is absent or is none of the values.
    NotIn(Vec<String>),
    /// The label is present, with any value.
    Exists,
    /// The label is absent.
    NotExists,
}

impl Constraint {
    /// Whether an agent with these labels satisfies the constraint.
    pub fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            ConstraintOp::Equals(want) => value == Some(want),
            ConstraintOp::In(allowed) => value.is_some_and(|v| allowed.contains(v)),
            ConstraintOp::NotIn(banned) => value.is_none_or(|v| !banned.contains(v)),
            ConstraintOp::Exists => value.is_some(),
            ConstraintOp::NotExists => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn constraints_table() {
        use ConstraintOp::*;
        let eu = labels(&[("zone", "eu")]);
        let none = labels(&[]);
        // (name, op on key "zone", labels, holds)
        let cases = [
            ("equals match", Equals("eu".into()), &eu, true),
            ("equals other", Equals("us".into()), &eu, false),
            ("equals absent", Equals("eu".into()), &none, false),
            ("in match", In(strings(&["us", "eu"])), &eu, true),
            ("in miss", In(strings(&["us", "ap"])), &eu, false),
            ("in absent", In(strings(&["eu"])), &none, false),
            ("not_in miss", NotIn(strings(&["us"])), &eu, true),
            ("not_in match", NotIn(strings(&["us", "eu"])), &eu, false),
            ("not_in absent", NotIn(strings(&["eu"])), &none, true),
            ("exists present", Exists, &eu, true),
            ("exists absent", Exists, &none, false),
            ("not_exists present", NotExists, &eu, false),
            ("not_exists absent", NotExists, &none, true),
        ];
        for (name, op, labels, want) in cases {
            let constraint = Constraint {
                key: "zone".into(),
                op,
            };
            assert_eq!(constraint.holds(labels), want, "{name}");
        }
    }

    #[test]
    fn affinity_counts_matching_preferred_labels() {
        let needs = TaskNeeds {
            preferred_labels: labels(&[("zone", "eu"), ("model", "llama"), ("tier", "gold")]),
            ..TaskNeeds::default()
        };
        let cases = [
            (labels(&[]), 0),
            (labels(&[("zone", "us"), ("model", "llama")]), 1),
            (labels(&[("zone", "eu"), ("model", "llama"), ("x", "y")]), 2),
            (
                labels(&[("zone", "eu"), ("model", "llama"), ("tier", "gold")]),
                3,
            ),
        ];
        for (agent_labels, want) in cases {
            assert_eq!(needs.affinity(&agent_labels), want, "{agent_labels:?}");
        }
    }
}
