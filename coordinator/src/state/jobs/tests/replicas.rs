//! Replicas applying the same log end identical, and the state survives a snapshot round trip.

use super::*;
use crate::state::Proposal;

fn log() -> Vec<Proposal> {
    let at = |now_ms: u64, commands: Vec<Command>| Proposal { now_ms, commands };
    let mut goal = goal_spec("g", vec![task("a", &[]), task("g", &["a"])]);
    goal.priority = 3;
    vec![
        at(
            1_000,
            vec![register("a1", &["python"], 2), register("a2", &[], 1)],
        ),
        at(
            1_001,
            vec![
                submit("j", spec(vec![task("x", &[]), task("y", &["x"])])),
                submit("k", goal),
            ],
        ),
        at(
            1_002,
            vec![
                assign("k", "a", 1, "a1"),
                assign("j", "x", 1, "a2"),
                start("k", "a", 1, "a1"),
            ],
        ),
        at(
            1_010,
            vec![
                fail("j", "x", 1, "a2", true),
                succeed("k", "a", 1, "a1", "A"),
            ],
        ),
        at(
            2_010,
            vec![assign("j", "x", 2, "a1"), assign("k", "g", 1, "a2")],
        ),
        at(
            2_020,
            vec![Command::ExpireAgent {
                agent_id: "a2".into(),
                session_id: "a2-s1".into(),
            }],
        ),
        at(
            2_030,
            vec![
                succeed("k", "g", 1, "a2", "late"),
                succeed("j", "x", 2, "a1", "X"),
            ],
        ),
        at(
            2_040,
            vec![Command::CancelJob {
                job_id: "j".into(),
                reason: "done".into(),
            }],
        ),
    ]
}

fn replay(log: &[Proposal]) -> State {
    let mut state = State::default();
    for (i, proposal) in log.iter().enumerate() {
        state.apply_proposal(proposal, i as u64 + 1);
        check_invariants(&state);
    }
    state
}

#[test]
fn replicas_applying_the_same_commands_have_equal_digests() {
    let log = log();
    let (a, b) = (replay(&log), replay(&log));
    assert_eq!(a, b);
    assert_eq!(a.digest(), b.digest());
    assert_ne!(a.digest(), replay(&log[..7]).digest());
    assert_eq!(a.jobs.get("j").map(|j| j.state), Some(JobState::Cancelled));
    assert_eq!(
        a.jobs.task_state("k", "g"),
        Some(TaskState::Ready),
        "g was lost with a2"
    );
}

#[test]
fn the_state_survives_a_snapshot_round_trip() {
    let state = replay(&log());
    let bytes = postcard::to_allocvec(&state).unwrap();
    let restored: State = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(restored, state);
    assert_eq!(restored.digest(), state.digest());
}
