//! Capability-based placement: among agents advertising every required capability (and
//! otherwise eligible), prefer the most matching preferred labels, then the lowest load (see
//! [`Load`](super::Load)), then the lowest agent id.
//!
//! This is the default strategy and the fallback when an auction gets no bid. Pure: no tokio,
//! I/O, clock or randomness.

use std::cmp::Reverse;

use super::{is_eligible, Candidate, TaskNeeds};

/// The best-matching eligible agent, or `None` when no agent is eligible.
pub fn choose<'a>(needs: &TaskNeeds, candidates: &'a [Candidate]) -> Option<&'a Candidate> {
    candidates
        .iter()
        .filter(|candidate| is_eligible(needs, candidate))
        .min_by_key(|candidate| {
            let affinity = needs.affinity(&candidate.labels);
            (Reverse(affinity), candidate.load(), candidate.id.as_str())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{agent, id_of, needs};
    use crate::scheduler::ConstraintOp;

    #[test]
    fn choice_table() {
        let eu_gpu = || {
            needs()
                .caps(&["gpu"])
                .prefer(&[("zone", "eu"), ("model", "llama")])
        };
        // (name, candidates, needs, expected)
        let cases: Vec<(&str, Vec<Candidate>, TaskNeeds, Option<&str>)> = vec![
            (
                "only the capable agent",
                vec![agent("a"), agent("b").caps(&["gpu"]).busy(3, 4), agent("c")],
                needs().caps(&["gpu"]),
                Some("b"),
            ),
            (
                "all capabilities required",
                vec![
                    agent("a").caps(&["gpu"]),
                    agent("b").caps(&["py"]),
                    agent("c").caps(&["gpu", "py"]),
                ],
                needs().caps(&["gpu", "py"]),
                Some("c"),
            ),
            (
                "nobody capable",
                vec![agent("a").caps(&["py"]), agent("b")],
                needs().caps(&["gpu"]),
                None,
            ),
            (
                "more label matches win over load",
                vec![
                    agent("a").caps(&["gpu"]).labels(&[("zone", "eu")]),
                    agent("b")
                        .caps(&["gpu"])
                        .labels(&[("zone", "eu"), ("model", "llama")])
                        .busy(3, 4),
                ],
                eu_gpu(),
                Some("b"),
            ),
            (
                "same affinity: lower load",
                vec![
                    agent("a")
                        .caps(&["gpu"])
                        .labels(&[("zone", "eu")])
                        .busy(2, 4),
                    agent("b")
                        .caps(&["gpu"])
                        .labels(&[("model", "llama")])
                        .busy(1, 4),
                ],
                eu_gpu(),
                Some("b"),
            ),
            (
                "same affinity and load: lowest id",
                vec![
                    agent("b").caps(&["gpu"]).labels(&[("zone", "eu")]),
                    agent("a").caps(&["gpu"]).labels(&[("model", "llama")]),
                ],
                eu_gpu(),
                Some("a"),
            ),
            (
                "wrong label value is no match",
                vec![
                    agent("a").caps(&["gpu"]).labels(&[("zone", "us")]),
                    agent("b")
                        .caps(&["gpu"])
                        .labels(&[("zone", "eu")])
                        .busy(3, 4),
                ],
                eu_gpu(),
                Some("b"),
            ),
            (
                "best affinity but full",
                vec![
                    agent("a")
                        .caps(&["gpu"])
                        .labels(&[("zone", "eu"), ("model", "llama")])
                        .busy(4, 4),
                    agent("b").caps(&["gpu"]),
                ],
                eu_gpu(),
                Some("b"),
            ),
            (
                "hard constraint beats preference",
                vec![
                    agent("a").labels(&[("zone", "eu"), ("tier", "spot")]),
                    agent("b").labels(&[("zone", "us")]),
                ],
                needs()
                    .prefer(&[("zone", "eu")])
                    .constraint("tier", ConstraintOp::NotIn(vec!["spot".into()])),
                Some("b"),
            ),
            (
                "draining agent skipped",
                vec![
                    agent("a").caps(&["gpu"]).unavailable(),
                    agent("b").caps(&["gpu"]).busy(3, 4),
                ],
                needs().caps(&["gpu"]),
                Some("b"),
            ),
        ];
        for (name, candidates, task, want) in cases {
            assert_eq!(id_of(choose(&task, &candidates)), want, "{name}");
        }
    }

    #[test]
    fn never_picks_an_agent_lacking_a_capability() {
        let all = ["gpu", "py", "llm"];
        let mut candidates = Vec::new();
        for mask in 0..8_u32 {
            let caps: Vec<&str> = (0..3)
                .filter(|bit| mask & (1 << bit) != 0)
                .map(|bit| all[bit])
                .collect();
            candidates.push(
                agent(&format!("agent-{mask}"))
                    .caps(&caps)
                    .busy(mask % 3, 4),
            );
        }
        for mask in 0..8_u32 {
            let wanted: Vec<&str> = (0..3)
                .filter(|bit| mask & (1 << bit) != 0)
                .map(|bit| all[bit])
                .collect();
            let task = needs().caps(&wanted);
            let chosen = choose(&task, &candidates).expect("the agent with every capability fits");
            assert!(
                task.required_capabilities.is_subset(&chosen.capabilities),
                "{wanted:?} → {}",
                chosen.id
            );
        }
    }
}
