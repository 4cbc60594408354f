//! Round-robin: cycle through eligible agents in agent id order, resuming after the last agent
//! chosen ([`RoundRobinCursor`]) and wrapping past the highest id.
//!
//! ```text
//!   ids:    a   b   c   d        cursor = b, c ineligible
//!                   ✗   ▲ chosen; the caller then advances the cursor to d
//! ```
//!
//! The candidate slice may come in any order. Pure: no tokio, I/O, clock or randomness.

use serde::{Deserialize, Serialize};

use super::{is_eligible, Candidate, TaskNeeds};

/// Where round-robin resumes: the id of the last agent it chose. Part of the replicated state,
/// so every replica resumes at the same place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRobinCursor {
    last: Option<String>,
}

impl RoundRobinCursor {
    /// A cursor that resumes after `agent_id`.
    pub fn after(agent_id: &str) -> Self {
        Self {
            last: Some(agent_id.to_owned()),
        }
    }

    /// The last agent chosen, if any.
    pub fn last(&self) -> Option<&str> {
        self.last.as_deref()
    }

    /// Records that `agent_id` was chosen; the next choice starts after it.
    pub fn advance(&mut self, agent_id: &str) {
        match &mut self.last {
            Some(last) => agent_id.clone_into(last),
            None => self.last = Some(agent_id.to_owned()),
        }
    }

    /// True when `agent_id` comes after the cursor in this turn of the cycle.
    pub(super) fn is_after(&self, agent_id: &str) -> bool {
        self.last.as_deref().is_none_or(|last| agent_id > last)
    }
}

/// The first eligible agent after the cursor in id order, wrapping to the lowest id. Does not
/// move the cursor: call [`RoundRobinCursor::advance`] once the choice is committed to.
pub fn choose<'a>(
    needs: &TaskNeeds,
    candidates: &'a [Candidate],
    cursor: &RoundRobinCursor,
) -> Option<&'a Candidate> {
    candidates
        .iter()
        .filter(|candidate| is_eligible(needs, candidate))
        .min_by_key(|candidate| (!cursor.is_after(&candidate.id), candidate.id.as_str()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scheduler::testing::{agent, id_of, needs};

    /// (name, candidates, needs, cursor, expected)
    type Case = (
        &'static str,
        Vec<Candidate>,
        TaskNeeds,
        RoundRobinCursor,
        Option<&'static str>,
    );

    #[test]
    fn choice_table() {
        let abcd = || vec![agent("a"), agent("b"), agent("c"), agent("d")];
        let start = RoundRobinCursor::default();
        let after = RoundRobinCursor::after;
        // (name, candidates, needs, cursor, expected)
        let cases: Vec<Case> = vec![
            (
                "fresh cursor starts at lowest id",
                abcd(),
                needs(),
                start.clone(),
                Some("a"),
            ),
            ("next after cursor", abcd(), needs(), after("b"), Some("c")),
            (
                "wraps after highest",
                abcd(),
                needs(),
                after("d"),
                Some("a"),
            ),
            (
                "cursor past every id wraps",
                abcd(),
                needs(),
                after("z"),
                Some("a"),
            ),
            (
                "cursor on departed agent",
                abcd(),
                needs(),
                after("bb"),
                Some("c"),
            ),
            (
                "skips full agent",
                vec![agent("a"), agent("b"), agent("c").busy(4, 4), agent("d")],
                needs(),
                after("b"),
                Some("d"),
            ),
            (
                "skips incapable agent",
                vec![
                    agent("a"),
                    agent("b").caps(&["x"]),
                    agent("c"),
                    agent("d").caps(&["x"]),
                ],
                needs().caps(&["x"]),
                after("b"),
                Some("d"),
            ),
            (
                "wraps to skip ineligible tail",
                vec![agent("a"), agent("b"), agent("c").unavailable()],
                needs(),
                after("b"),
                Some("a"),
            ),
            (
                "input order does not matter",
                vec![agent("d"), agent("b"), agent("a"), agent("c")],
                needs(),
                after("a"),
                Some("b"),
            ),
            (
                "only the cursor agent is eligible",
                vec![agent("a").busy(4, 4), agent("b")],
                needs(),
                after("b"),
                Some("b"),
            ),
            (
                "nobody eligible",
                vec![agent("a").busy(1, 1)],
                needs(),
                start.clone(),
                None,
            ),
            ("no candidates", vec![], needs(), start, None),
        ];
        for (name, candidates, task, cursor, want) in cases {
            assert_eq!(id_of(choose(&task, &candidates, &cursor)), want, "{name}");
        }
    }

    #[test]
    fn spreads_evenly_and_wraps() {
        for agents in 1..=5_usize {
            let candidates: Vec<_> = (0..agents).map(|i| agent(&format!("agent-{i}"))).collect();
            let rounds = 7;
            let mut cursor = RoundRobinCursor::default();
            let mut picks = Vec::new();
            for _ in 0..agents * rounds {
                let chosen = choose(&needs(), &candidates, &cursor).map(|c| c.id.clone());
                let chosen = chosen.expect("an agent is always eligible");
                cursor.advance(&chosen);
                picks.push(chosen);
            }
            let mut counts = BTreeMap::new();
            for id in &picks {
                *counts.entry(id.as_str()).or_insert(0) += 1;
            }
            assert!(
                counts.values().all(|&n| n == rounds),
                "{agents} agents: {counts:?}"
            );
            let cycle: Vec<_> = candidates.iter().map(|c| c.id.clone()).collect();
            assert_eq!(picks[..agents], cycle[..], "first turn in id order");
            assert_eq!(
                picks[agents..2 * agents],
                cycle[..],
                "wraps to the same order"
            );
        }
    }

    #[test]
    fn cursor_advance_and_read() {
        let mut cursor = RoundRobinCursor::default();
        assert_eq!(cursor.last(), None);
        cursor.advance("b");
        assert_eq!(cursor, RoundRobinCursor::after("b"));
        cursor.advance("a");
        assert_eq!(cursor.last(), Some("a"));
    }
}
