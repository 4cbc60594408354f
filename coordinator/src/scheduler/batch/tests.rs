//! Tests of batch placement: tables of small passes, capacity invariants, and equivalence with
//! task-by-task [`choose`](crate::scheduler::choose) over generated workloads.

use super::*;
use crate::scheduler::testing::{agent, needs};
use crate::scheduler::{choose, ConstraintOp};

type Task = (u32, TaskNeeds, Strategy);

fn task(key: u32, needs: TaskNeeds, strategy: Strategy) -> Task {
    (key, needs, strategy)
}

fn assigned(plan: &BatchPlan<u32>) -> Vec<(u32, &str)> {
    plan.assigned
        .iter()
        .map(|(key, id)| (*key, id.as_str()))
        .collect()
}

#[test]
fn batch_table() {
    use Strategy::*;
    let cpu = |amount| needs().resources(&[("cpu", amount)]);
    struct Case {
        name: &'static str,
        candidates: Vec<Candidate>,
        tasks: Vec<Task>,
        assigned: Vec<(u32, &'static str)>,
        auctions: Vec<u32>,
        unplaced: Vec<u32>,
    }
    let cases = vec![
        Case {
            name: "least-loaded fills evenly",
            candidates: vec![agent("a").busy(0, 2), agent("b").busy(0, 2)],
            tasks: (0..5).map(|k| task(k, needs(), LeastLoaded)).collect(),
            assigned: vec![(0, "a"), (1, "b"), (2, "a"), (3, "b")],
            auctions: vec![],
            unplaced: vec![4],
        },
        Case {
            name: "round-robin wraps within the pass",
            candidates: vec![agent("b"), agent("a"), agent("c")],
            tasks: (0..4).map(|k| task(k, needs(), RoundRobin)).collect(),
            assigned: vec![(0, "a"), (1, "b"), (2, "c"), (3, "a")],
            auctions: vec![],
            unplaced: vec![],
        },
        Case {
            name: "anti-affinity spreads a group, one task per agent",
            candidates: vec![agent("a"), agent("b")],
            tasks: (0..3)
                .map(|k| task(k, needs().apart("job/replicas"), LeastLoaded))
                .chain([task(3, needs(), LeastLoaded)])
                .collect(),
            assigned: vec![(0, "a"), (1, "b"), (3, "a")],
            auctions: vec![],
            unplaced: vec![2],
        },
        Case {
            name: "auction tasks set aside",
            candidates: vec![agent("a")],
            tasks: vec![task(0, needs(), Auction), task(1, needs(), Capability)],
            assigned: vec![(1, "a")],
            auctions: vec![0],
            unplaced: vec![],
        },
        Case {
            name: "capability keeps routing to the best match until full",
            candidates: vec![
                agent("a")
                    .caps(&["gpu"])
                    .labels(&[("zone", "eu")])
                    .busy(0, 2),
                agent("b").caps(&["gpu"]).busy(0, 2),
                agent("c").labels(&[("zone", "eu")]),
            ],
            tasks: (0..5)
                .map(|k| {
                    task(
                        k,
                        needs().caps(&["gpu"]).prefer(&[("zone", "eu")]),
                        Capability,
                    )
                })
                .collect(),
            assigned: vec![(0, "a"), (1, "a"), (2, "b"), (3, "b")],
            auctions: vec![],
            unplaced: vec![4],
        },
        Case {
            name: "resources run out before slots",
            candidates: vec![
                agent("a").free(&[("cpu", 3.0)]),
                agent("b").free(&[("cpu", 2.0)]),
            ],
            tasks: (0..4).map(|k| task(k, cpu(2.0), LeastLoaded)).collect(),
            assigned: vec![(0, "a"), (1, "b")],
            auctions: vec![],
            unplaced: vec![2, 3],
        },
        Case {
            name: "small task still fits after a big one is refused",
            candidates: vec![agent("a").free(&[("cpu", 3.0)])],
            tasks: vec![
                task(0, cpu(2.0), Capability),
                task(1, cpu(2.0), Capability),
                task(2, cpu(1.0), Capability),
            ],
            assigned: vec![(0, "a"), (2, "a")],
            auctions: vec![],
            unplaced: vec![1],
        },
        Case {
            name: "constraints respected",
            candidates: vec![
                agent("a").labels(&[("zone", "eu")]),
                agent("b").labels(&[("zone", "us")]),
            ],
            tasks: vec![
                task(
                    0,
                    needs().constraint("zone", ConstraintOp::Equals("us".into())),
                    LeastLoaded,
                ),
                task(
                    1,
                    needs().constraint("zone", ConstraintOp::In(vec!["eu".into()])),
                    RoundRobin,
                ),
                task(
                    2,
                    needs().constraint("zone", ConstraintOp::NotIn(vec!["eu".into(), "us".into()])),
                    Capability,
                ),
                task(
                    3,
                    needs().constraint("gpu", ConstraintOp::Exists),
                    Capability,
                ),
            ],
            assigned: vec![(0, "b"), (1, "a")],
            auctions: vec![],
            unplaced: vec![2, 3],
        },
        Case {
            name: "draining and full agents take nothing",
            candidates: vec![
                agent("a").unavailable(),
                agent("b").busy(4, 4),
                agent("c").busy(0, 0),
            ],
            tasks: vec![task(0, needs(), LeastLoaded), task(1, needs(), RoundRobin)],
            assigned: vec![],
            auctions: vec![],
            unplaced: vec![0, 1],
        },
    ];
    for case in cases {
        let mut candidates = case.candidates;
        let plan = place_batch(
            &case.tasks,
            &mut candidates,
            &mut RoundRobinCursor::default(),
        );
        assert_eq!(assigned(&plan), case.assigned, "{}", case.name);
        assert_eq!(plan.auctions, case.auctions, "{}", case.name);
        assert_eq!(plan.unplaced, case.unplaced, "{}", case.name);
    }
}

#[test]
fn batch_updates_candidates_and_cursor() {
    let mut candidates = vec![
        agent("a")
            .busy(1, 3)
            .free(&[("cpu", 4.0), ("mem_mb", 1024.0)]),
        agent("b").busy(0, 3).free(&[("cpu", 4.0)]),
    ];
    let tasks = [
        task(
            0,
            needs().resources(&[("cpu", 1.5), ("mem_mb", 512.0)]),
            Strategy::RoundRobin,
        ),
        task(1, needs().resources(&[("cpu", 1.0)]), Strategy::RoundRobin),
    ];
    let mut cursor = RoundRobinCursor::after("b");
    let plan = place_batch(&tasks, &mut candidates, &mut cursor);
    assert_eq!(assigned(&plan), vec![(0, "a"), (1, "b")]);
    assert_eq!(cursor, RoundRobinCursor::after("b"));
    let a = agent("a")
        .busy(2, 3)
        .free(&[("cpu", 2.5), ("mem_mb", 512.0)]);
    let b = agent("b").busy(1, 3).free(&[("cpu", 3.0)]);
    assert_eq!(candidates, vec![a, b]);
}

#[test]
fn cursor_untouched_without_round_robin_choice() {
    let mut candidates = vec![agent("a")];
    let mut cursor = RoundRobinCursor::after("q");
    place_batch(
        &[task(0, needs(), Strategy::LeastLoaded)],
        &mut candidates,
        &mut cursor,
    );
    assert_eq!(cursor, RoundRobinCursor::after("q"));
}

/// A small deterministic generator (xorshift64*) for workloads; tests only.
struct Gen(u64);

impl Gen {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }

    fn pick<'a>(&mut self, values: &[&'a str]) -> &'a str {
        values[self.below(values.len() as u64) as usize]
    }
}

fn generate_candidates(gen: &mut Gen, count: usize) -> Vec<Candidate> {
    (0..count).map(|i| generate_candidate(gen, i)).collect()
}

fn generate_candidate(gen: &mut Gen, index: usize) -> Candidate {
    let max = gen.below(5) as u32;
    let candidate = agent(&format!(
        "agent-{:04}",
        gen.below(10_000) * 1000 + index as u64
    ))
    .caps(&[gen.pick(&["py", "gpu", "llm"]), gen.pick(&["py", "rust"])])
    .labels(&[("zone", gen.pick(&["eu", "us", "ap"]))])
    .busy(gen.below(u64::from(max) + 2) as u32, max)
    .free(&[("cpu", gen.below(9) as f64), ("gpu", gen.below(2) as f64)]);
    if gen.below(20) == 0 {
        candidate.unavailable()
    } else {
        candidate
    }
}

fn generate_needs(gen: &mut Gen) -> TaskNeeds {
    let mut task = needs().caps(&[gen.pick(&["py", "gpu", "rust"])]);
    if gen.below(2) == 0 {
        task = task.prefer(&[("zone", gen.pick(&["eu", "us"]))]);
    }
    if gen.below(4) == 0 {
        task = task.constraint(
            "zone",
            ConstraintOp::NotIn(vec![gen.pick(&["eu", "ap"]).into()]),
        );
    }
    let cpu = gen.below(3) as f64 + 0.5 * gen.below(2) as f64;
    let gpu = if gen.below(4) == 0 { 1.0 } else { 0.0 };
    task.resources(&[("cpu", cpu), ("gpu", gpu)])
}

/// `count` tasks drawn from `shapes` distinct needs (more than `GROUPS_MAX` exercises eviction).
fn generate_tasks(gen: &mut Gen, count: u32, shapes: usize) -> Vec<Task> {
    use Strategy::*;
    let shapes: Vec<TaskNeeds> = (0..shapes).map(|_| generate_needs(gen)).collect();
    (0..count)
        .map(|key| {
            let shape = shapes[gen.below(shapes.len() as u64) as usize].clone();
            let strategy = [RoundRobin, LeastLoaded, Capability, Auction][gen.below(4) as usize];
            task(key, shape, strategy)
        })
        .collect()
}

/// Task-by-task reference: the single-task dispatcher on the current candidates.
fn reference(
    tasks: &[Task],
    candidates: &mut [Candidate],
    cursor: &mut RoundRobinCursor,
) -> BatchPlan<u32> {
    let mut plan = BatchPlan::default();
    for (key, task_needs, strategy) in tasks {
        if *strategy == Strategy::Auction {
            plan.auctions.push(*key);
            continue;
        }
        let Some(chosen) = choose(*strategy, task_needs, candidates, cursor).map(|c| c.id.clone())
        else {
            plan.unplaced.push(*key);
            continue;
        };
        if *strategy == Strategy::RoundRobin {
            cursor.advance(&chosen);
        }
        if let Some(candidate) = candidates.iter_mut().find(|c| c.id == chosen) {
            candidate.reserve(task_needs);
        }
        plan.assigned.push((*key, chosen));
    }
    plan
}

#[test]
fn batch_matches_task_by_task_choices() {
    let (mut placed, mut refused) = (0, 0);
    for seed in 1..=60_u64 {
        let mut gen = Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let candidates = generate_candidates(&mut gen, 1 + seed as usize % 40);
        let shapes = [3, 12, 2 * GROUPS_MAX][seed as usize % 3];
        let tasks = generate_tasks(&mut gen, 400, shapes);
        let cursor = RoundRobinCursor::after(&format!("agent-{:04}", gen.below(10_000_000)));
        let (mut batch_agents, mut batch_cursor) = (candidates.clone(), cursor.clone());
        let (mut ref_agents, mut ref_cursor) = (candidates, cursor);
        let batch = place_batch(&tasks, &mut batch_agents, &mut batch_cursor);
        let want = reference(&tasks, &mut ref_agents, &mut ref_cursor);
        assert_eq!(batch, want, "seed {seed}");
        assert_eq!(batch_agents, ref_agents, "seed {seed}");
        assert_eq!(batch_cursor, ref_cursor, "seed {seed}");
        placed += batch.assigned.len();
        refused += batch.unplaced.len();
    }
    assert!(
        placed > 500 && refused > 500,
        "workloads too easy or too hard: {placed}/{refused}"
    );
}

/// Checks a finished pass against the candidates before it: only slots and resources that
/// were free got taken, and every placement was eligible when made.
fn assert_capacity_respected(
    before: &[Candidate],
    after: &[Candidate],
    plan: &BatchPlan<u32>,
    tasks: &[Task],
) {
    for (old, new) in before.iter().zip(after) {
        let placed: Vec<&Task> = plan
            .assigned
            .iter()
            .filter(|(_, id)| *id == old.id)
            .map(|(key, _)| &tasks[*key as usize])
            .collect();
        assert_eq!(new.running, old.running + placed.len() as u32, "{}", old.id);
        if !placed.is_empty() {
            assert!(
                new.running <= new.max_concurrent,
                "{} over its limit",
                old.id
            );
            assert!(!old.draining_or_quarantined, "{} is draining", old.id);
        }
        for (name, free) in &new.free_resources {
            let used: f64 = placed
                .iter()
                .filter_map(|(_, n, _)| n.resources.get(name))
                .sum();
            assert!(
                used == 0.0 || *free >= 0.0,
                "{}: {name} overdrawn to {free}",
                old.id
            );
        }
        for (_, task_needs, _) in &placed {
            assert!(
                matches_statically(task_needs, old),
                "{} did not match",
                old.id
            );
        }
    }
}

#[test]
fn batch_never_exceeds_slots_or_resources() {
    for seed in 1..=40_u64 {
        let mut gen = Gen(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let before = generate_candidates(&mut gen, 1 + seed as usize % 30);
        let tasks = generate_tasks(&mut gen, 500, 12);
        let mut after = before.clone();
        let plan = place_batch(&tasks, &mut after, &mut RoundRobinCursor::default());
        assert_capacity_respected(&before, &after, &plan, &tasks);
        let accounted = plan.assigned.len() + plan.auctions.len() + plan.unplaced.len();
        assert_eq!(
            accounted,
            tasks.len(),
            "seed {seed}: every task reported once"
        );
    }
}

#[test]
fn batch_at_benchmark_scale() {
    let mut gen = Gen(7);
    let mut candidates: Vec<Candidate> = (0..1_000)
        .map(|i| {
            agent(&format!("agent-{i:04}"))
                .caps(&["py"])
                .busy(0, 8)
                .free(&[("cpu", 16.0)])
        })
        .collect();
    let tasks: Vec<Task> = (0..100_000)
        .map(|key| {
            let strategy = [
                Strategy::RoundRobin,
                Strategy::LeastLoaded,
                Strategy::Capability,
            ][gen.below(3) as usize];
            task(
                key,
                needs().caps(&["py"]).resources(&[("cpu", 1.0)]),
                strategy,
            )
        })
        .collect();
    let before = candidates.clone();
    let plan = place_batch(&tasks, &mut candidates, &mut RoundRobinCursor::default());
    assert_eq!(plan.assigned.len(), 8_000, "every slot filled");
    assert_eq!(plan.unplaced.len(), 92_000);
    assert_capacity_respected(&before, &candidates, &plan, &tasks);
}
