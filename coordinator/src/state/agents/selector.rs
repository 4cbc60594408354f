//! [`AgentSelector`]: which agents a vote, a broadcast or a federated round addresses, by the
//! capabilities and labels they registered with. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Which agents a selector picks: those offering every capability and carrying every label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSelector {
    /// Capabilities the agent must all offer.
    pub capabilities: BTreeSet<String>,
    /// Labels the agent must carry with exactly these values.
    pub labels: BTreeMap<String, String>,
}

impl AgentSelector {
    /// Whether an agent with these capabilities and labels matches.
    pub fn matches(
        &self,
        capabilities: &BTreeSet<String>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        self.capabilities.is_subset(capabilities)
            && self
                .labels
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
    }
}
