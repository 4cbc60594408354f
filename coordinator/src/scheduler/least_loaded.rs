//! Least-loaded: the eligible agent with the lowest `running / max_concurrent`, ties broken by
//! fewer running tasks, then by agent id.
//!
//! Pure: no tokio, I/O, clock or randomness.

use super::{is_eligible, Candidate, TaskNeeds};

/// The least-loaded eligible agent, or `None` when no agent is eligible.
pub fn choose<'a>(needs: &TaskNeeds, candidates: &'a [Candidate]) -> Option<&'a Candidate> {
    candidates
        .iter()
        .filter(|candidate| is_eligible(needs, candidate))
        .min_by_key(|candidate| (candidate.load(), candidate.id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{agent, id_of, needs};

    #[test]
    fn choice_table() {
        // (name, candidates, needs, expected)
        let cases: Vec<(&str, Vec<Candidate>, TaskNeeds, Option<&str>)> = vec![
            (
                "lowest ratio wins",
                vec![
                    agent("a").busy(2, 4),
                    agent("b").busy(1, 4),
                    agent("c").busy(3, 4),
                ],
                needs(),
                Some("b"),
            ),
            (
                "ratio beats absolute count",
                vec![agent("a").busy(1, 2), agent("b").busy(3, 10)],
                needs(),
                Some("b"),
            ),
            (
                "equal ratio: fewer running",
                vec![agent("a").busy(2, 4), agent("b").busy(1, 2)],
                needs(),
                Some("b"),
            ),
            (
                "full tie: lowest id",
                vec![
                    agent("c").busy(1, 4),
                    agent("a").busy(1, 4),
                    agent("b").busy(1, 4),
                ],
                needs(),
                Some("a"),
            ),
            (
                "idle agents tie on zero: lowest id",
                vec![agent("b").busy(0, 8), agent("a").busy(0, 2)],
                needs(),
                Some("a"),
            ),
            (
                "full agent never chosen",
                vec![agent("a").busy(1, 1), agent("b").busy(7, 8)],
                needs(),
                Some("b"),
            ),
            (
                "ineligible idle agent skipped",
                vec![agent("a"), agent("b").caps(&["gpu"]).busy(3, 4)],
                needs().caps(&["gpu"]),
                Some("b"),
            ),
            (
                "resource fit required",
                vec![
                    agent("a").free(&[("cpu", 1.0)]),
                    agent("b").busy(2, 4).free(&[("cpu", 4.0)]),
                ],
                needs().resources(&[("cpu", 2.0)]),
                Some("b"),
            ),
            (
                "all full",
                vec![agent("a").busy(4, 4), agent("b").busy(0, 0)],
                needs(),
                None,
            ),
        ];
        for (name, candidates, task, want) in cases {
            assert_eq!(id_of(choose(&task, &candidates)), want, "{name}");
        }
    }
}
