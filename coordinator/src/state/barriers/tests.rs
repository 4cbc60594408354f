//! Barriers: release when the last party arrives (exactly once per generation), cyclic
//! generations, double barriers, timeouts, lost parties, deletion and bad input.

use super::*;
use crate::state::testing::{register, Harness, START_MS};
use crate::state::Command;

fn spec(parties: Parties, kind: BarrierKind, cyclic: bool, timeout_ms: u64) -> BarrierSpec {
    BarrierSpec {
        kind,
        parties,
        timeout_ms,
        cyclic,
    }
}

fn create(h: &mut Harness, spec: BarrierSpec) {
    h.ok(Command::CreateBarrier {
        name: "b".into(),
        spec,
    });
}

fn step(party: &str, generation: u64, step: Step) -> Command {
    Command::BarrierStep {
        name: "b".into(),
        party: party.into(),
        generation,
        step,
    }
}

fn barrier(h: &Harness) -> &BarrierRecord {
    h.state.barriers.get("b").unwrap()
}

#[test]
fn the_last_arrival_releases_every_party_once_and_a_cyclic_barrier_starts_over() {
    let mut h = Harness::new();
    create(
        &mut h,
        spec(Parties::Count(3), BarrierKind::Single, true, 0),
    );
    h.ok(step("p1", 0, Step::Arrive));
    h.ok(step("p1", 1, Step::Arrive));
    h.ok(step("p2", 1, Step::Arrive));
    assert_eq!(
        barrier(&h).current.arrived,
        ["p1", "p2"],
        "a repeated arrival counts once"
    );
    assert!(barrier(&h).current.end.is_none());
    h.ok(step("p3", 0, Step::Arrive));
    let b = barrier(&h);
    assert_eq!(b.current.number, 2);
    let first = b.generation(1).unwrap();
    assert_eq!(first.arrival_index("p3"), Some(2));
    assert!(first.end.as_ref().unwrap().released);
    // A retried arrival at generation 1 is answered with its outcome, not counted in 2.
    h.ok(step("p3", 1, Step::Arrive));
    assert!(barrier(&h).current.arrived.is_empty());
    let refused = h.rejected(step("p4", 1, Step::Arrive));
    assert_eq!(
        refused.to_string(),
        "barrier 'b': generation 1 ended without party 'p4'"
    );
    h.ok(step("p4", 0, Step::Arrive));
    assert_eq!(barrier(&h).current.arrived, ["p4"]);
}

#[test]
fn a_barrier_that_is_not_cyclic_ends_for_good() {
    let mut h = Harness::new();
    create(
        &mut h,
        spec(Parties::Count(1), BarrierKind::Single, false, 0),
    );
    h.ok(step("p1", 0, Step::Arrive));
    assert!(barrier(&h).current.end.as_ref().unwrap().released);
    let late = h.rejected(step("p2", 0, Step::Arrive));
    assert_eq!(
        late.to_string(),
        "barrier 'b': generation 1 is released; it is not cyclic"
    );
}

#[test]
fn a_double_barrier_lets_parties_work_between_entering_and_leaving() {
    let mut h = Harness::new();
    create(
        &mut h,
        spec(Parties::Count(2), BarrierKind::Double, false, 0),
    );
    h.ok(step("p1", 0, Step::Enter));
    let early = h.rejected(step("p1", 1, Step::Leave));
    assert!(early
        .to_string()
        .contains("still waiting for parties to enter"));
    h.ok(step("p2", 1, Step::Enter));
    assert!(barrier(&h).current.entered);
    let wrong = h.rejected(step("p3", 1, Step::Arrive));
    assert!(wrong.to_string().contains("a double barrier"));
    h.ok(step("p1", 1, Step::Leave));
    assert!(barrier(&h).current.end.is_none());
    h.ok(step("p2", 1, Step::Leave));
    assert!(barrier(&h).current.end.as_ref().unwrap().released);
}

#[test]
fn a_timeout_breaks_the_generation_from_its_first_arrival() {
    let mut h = Harness::new();
    create(
        &mut h,
        spec(Parties::Count(2), BarrierKind::Single, true, 500),
    );
    assert!(
        h.state.barriers.timed_out(u64::MAX).next().is_none(),
        "no clock before arrivals"
    );
    h.ok(step("p1", 0, Step::Arrive));
    let early = h.rejected(Command::BreakBarrier {
        name: "b".into(),
        generation: 1,
    });
    assert!(early.to_string().contains("not past its deadline"));
    h.now_ms = START_MS + 500;
    let due: Vec<(&str, u64)> = h.state.barriers.timed_out(h.now_ms).collect();
    assert_eq!(due, [("b", 1)]);
    h.ok(Command::BreakBarrier {
        name: "b".into(),
        generation: 1,
    });
    let b = barrier(&h);
    let end = b.generation(1).unwrap().end.as_ref().unwrap();
    assert_eq!((end.released, end.reason.as_str()), (false, "timeout"));
    assert_eq!(b.current.number, 2);
    assert!(h.state.barriers.timed_out(u64::MAX).next().is_none());
}

#[test]
fn losing_a_party_agent_breaks_the_barrier_for_everyone() {
    let mut h = Harness::new();
    h.ok(register("a1", &[], 1));
    h.ok(register("a2", &[], 1));
    create(
        &mut h,
        spec(
            Parties::Agents(vec!["a1".into(), "a2".into()]),
            BarrierKind::Single,
            false,
            0,
        ),
    );
    let outsider = h.rejected(step("a3", 0, Step::Arrive));
    assert!(matches!(outsider, Rejection::NotAParty { .. }));
    h.ok(step("a1", 0, Step::Arrive));
    h.ok(Command::DeregisterAgent {
        agent_id: "a2".into(),
    });
    let end = barrier(&h).current.end.clone().unwrap();
    assert_eq!(
        (end.released, end.reason.as_str()),
        (false, "party a2 lost")
    );
}

#[test]
fn deleting_breaks_and_removes_and_bad_barriers_are_refused() {
    let mut h = Harness::new();
    create(
        &mut h,
        spec(Parties::Count(2), BarrierKind::Single, false, 0),
    );
    h.ok(step("p1", 0, Step::Arrive));
    assert_eq!(
        h.ok(Command::DeleteBarrier { name: "b".into() }),
        Applied::Deleted(true)
    );
    assert!(h.state.barriers.get("b").is_none());
    let unknown = h.rejected(step("p1", 0, Step::Arrive));
    assert_eq!(unknown.to_string(), "name: no barrier 'b'");
    let cases = [
        (
            spec(Parties::Count(0), BarrierKind::Single, false, 0),
            "party_count: 0: a barrier needs at least one party",
        ),
        (
            spec(
                Parties::Agents(vec!["ghost".into()]),
                BarrierKind::Single,
                false,
                0,
            ),
            "agent_ids[0]: no live agent 'ghost'",
        ),
        (
            spec(
                Parties::Count(2),
                BarrierKind::Single,
                false,
                TIMEOUT_MS_MAX + 1,
            ),
            "timeout_ms: 86400001, the limit is 86400000",
        ),
    ];
    for (spec, expected) in cases {
        let rejection = h.rejected(Command::CreateBarrier {
            name: "bad".into(),
            spec,
        });
        assert_eq!(rejection.to_string(), expected);
    }
}

#[test]
fn a_lost_listed_party_retires_a_cyclic_barrier_and_creating_again_is_a_retry() {
    let mut h = Harness::new();
    h.ok(register("a1", &[], 1));
    h.ok(register("a2", &[], 1));
    let listed = spec(
        Parties::Agents(vec!["a1".into(), "a2".into()]),
        BarrierKind::Single,
        true,
        0,
    );
    create(&mut h, listed.clone());
    create(&mut h, listed);
    let other = h.rejected(Command::CreateBarrier {
        name: "b".into(),
        spec: spec(Parties::Count(2), BarrierKind::Single, true, 0),
    });
    assert!(matches!(other, Rejection::BarrierExists { .. }));
    h.ok(Command::DeregisterAgent {
        agent_id: "a2".into(),
    });
    let b = barrier(&h);
    assert!(b.retired);
    assert_eq!(
        b.current.number, 1,
        "no generation starts that could never complete"
    );
    let refused = h.rejected(step("a1", 0, Step::Arrive));
    assert!(
        refused.to_string().contains("a listed party was lost"),
        "{refused}"
    );
}

#[test]
fn an_arrival_after_the_deadline_is_refused_before_the_break_lands() {
    let mut h = Harness::new();
    create(
        &mut h,
        spec(Parties::Count(3), BarrierKind::Single, false, 500),
    );
    h.ok(step("p1", 0, Step::Arrive));
    h.now_ms = START_MS + 500;
    let late = h.rejected(step("p2", 0, Step::Arrive));
    assert!(matches!(late, Rejection::PastDeadline { .. }), "{late}");
}
