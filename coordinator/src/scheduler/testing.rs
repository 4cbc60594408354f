//! Test fixtures: terse builders for candidates and task needs. Compiled only in tests.

use super::{Candidate, Constraint, ConstraintOp, TaskNeeds};

/// An available agent with 4 free slots and nothing else.
pub(crate) fn agent(id: &str) -> Candidate {
    Candidate {
        id: id.to_owned(),
        max_concurrent: 4,
        ..Candidate::default()
    }
}

/// A task needing nothing.
pub(crate) fn needs() -> TaskNeeds {
    TaskNeeds::default()
}

fn strings<'a>(values: &'a [&str]) -> impl Iterator<Item = String> + 'a {
    values.iter().map(|value| (*value).to_owned())
}

fn pairs<'a>(values: &'a [(&str, &str)]) -> impl Iterator<Item = (String, String)> + 'a {
    values
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
}

fn amounts<'a>(values: &'a [(&str, f64)]) -> impl Iterator<Item = (String, f64)> + 'a {
    values
        .iter()
        .map(|(name, amount)| ((*name).to_owned(), *amount))
}

impl Candidate {
    pub(crate) fn caps(mut self, names: &[&str]) -> Self {
        self.capabilities.extend(strings(names));
        self
    }

    pub(crate) fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels.extend(pairs(labels));
        self
    }

    pub(crate) fn busy(mut self, running: u32, max_concurrent: u32) -> Self {
        self.running = running;
        self.max_concurrent = max_concurrent;
        self
    }

    pub(crate) fn free(mut self, resources: &[(&str, f64)]) -> Self {
        self.free_resources.extend(amounts(resources));
        self
    }

    pub(crate) fn unavailable(mut self) -> Self {
        self.draining_or_quarantined = true;
        self
    }

    pub(crate) fn running_group(mut self, key: &str) -> Self {
        self.anti_affinity.insert(key.to_owned());
        self
    }
}

impl TaskNeeds {
    pub(crate) fn caps(mut self, names: &[&str]) -> Self {
        self.required_capabilities.extend(strings(names));
        self
    }

    pub(crate) fn prefer(mut self, labels: &[(&str, &str)]) -> Self {
        self.preferred_labels.extend(pairs(labels));
        self
    }

    pub(crate) fn constraint(mut self, key: &str, op: ConstraintOp) -> Self {
        let key = key.to_owned();
        self.constraints.push(Constraint { key, op });
        self
    }

    pub(crate) fn resources(mut self, resources: &[(&str, f64)]) -> Self {
        self.resources.extend(amounts(resources));
        self
    }

    pub(crate) fn apart(mut self, key: &str) -> Self {
        self.anti_affinity = Some(key.to_owned());
        self
    }
}

/// The id of a choice, for comparing against a table's expectation.
pub(crate) fn id_of(choice: Option<&Candidate>) -> Option<&str> {
    choice.map(|candidate| candidate.id.as_str())
}
