//! Votes: each decision rule decides as soon as the outcome is certain, fails when no option
//! can win or the deadline passes, and never changes once closed; bad ballots are refused.

use super::*;
use crate::state::testing::{register, Harness, START_MS};
use crate::state::Command;

const VOTERS: [&str; 5] = ["v1", "v2", "v3", "v4", "v5"];

fn spec(voters: &[&str], rule: VoteRule) -> VoteSpec {
    VoteSpec {
        question: "Ship it?".into(),
        options: vec!["yes".into(), "no".into()],
        voters: voters.iter().map(|v| v.to_string()).collect(),
        timeout_ms: 1_000,
        rule,
        opened_by: "tester".into(),
    }
}

fn harness() -> Harness {
    let mut h = Harness::new();
    for voter in VOTERS {
        h.ok(register(voter, &[], 1));
    }
    h
}

fn open(h: &mut Harness, rule: VoteRule) {
    h.ok(Command::OpenVote {
        vote_id: "vote".into(),
        spec: spec(&VOTERS, rule),
    });
}

fn cast(voter: &str, option: &str) -> Command {
    Command::CastBallot {
        vote_id: "vote".into(),
        agent_id: voter.into(),
        option: option.into(),
    }
}

fn vote(h: &Harness) -> &VoteRecord {
    h.state.votes.get("vote").unwrap()
}

/// Casts `ballots` in order; returns after how many the vote closed, and its result.
fn run(rule: VoteRule, ballots: &[(&str, &str)]) -> (usize, VoteState, Option<String>) {
    let mut h = harness();
    open(&mut h, rule);
    for (i, (voter, option)) in ballots.iter().enumerate() {
        h.ok(cast(voter, option));
        if vote(&h).state != VoteState::Open {
            let v = vote(&h);
            return (i + 1, v.state, v.decided.clone().or(v.reason.clone()));
        }
    }
    (ballots.len(), vote(&h).state, None)
}

#[test]
fn majority_decides_at_the_third_of_five_ballots() {
    let ballots = [("v1", "yes"), ("v2", "no"), ("v3", "yes"), ("v4", "yes")];
    assert_eq!(
        run(VoteRule::Majority, &ballots),
        (4, VoteState::Decided, Some("yes".into()))
    );
    let split = [("v1", "yes"), ("v2", "no"), ("v3", "no"), ("v4", "yes")];
    let (at, state, _) = run(VoteRule::Majority, &split);
    assert_eq!(
        (at, state),
        (4, VoteState::Open),
        "one ballot left can still decide"
    );
}

#[test]
fn supermajority_needs_its_threshold() {
    let rule = VoteRule::Supermajority { threshold: 0.8 };
    let ballots = [("v1", "yes"), ("v2", "yes"), ("v3", "yes"), ("v4", "yes")];
    assert_eq!(
        run(rule.clone(), &ballots),
        (4, VoteState::Decided, Some("yes".into()))
    );
    // Two "no" ballots leave "yes" and "no" at most 3 of 5 each: neither can reach 4.
    let blocked = [("v1", "yes"), ("v2", "no"), ("v3", "yes"), ("v4", "no")];
    let (at, state, reason) = run(rule, &blocked);
    assert_eq!((at, state), (4, VoteState::Failed));
    assert!(reason.unwrap().contains("(4 of 5)"));
}

#[test]
fn unanimity_fails_at_the_first_differing_ballot() {
    let (at, state, reason) = run(VoteRule::Unanimous, &[("v1", "yes"), ("v2", "no")]);
    assert_eq!((at, state), (2, VoteState::Failed));
    assert_eq!(
        reason.as_deref(),
        Some("unanimity broken by agent 'v2' choosing 'no'")
    );
    let all: Vec<(&str, &str)> = VOTERS.iter().map(|v| (*v, "yes")).collect();
    assert_eq!(
        run(VoteRule::Unanimous, &all),
        (5, VoteState::Decided, Some("yes".into()))
    );
}

#[test]
fn weighted_votes_count_weight_not_heads() {
    let weights = [
        ("v1", 5.0),
        ("v2", 1.0),
        ("v3", 1.0),
        ("v4", 1.0),
        ("v5", 1.0),
    ];
    let rule = VoteRule::Weighted {
        weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
        threshold: 0.5,
    };
    // v1 alone holds 5 of 9 > 4.5.
    assert_eq!(
        run(rule, &[("v2", "no"), ("v1", "yes")]),
        (2, VoteState::Decided, Some("yes".into()))
    );
}

#[test]
fn byzantine_quorum_needs_n_plus_f_plus_one_halves() {
    // n = 5, f = 1: ceil(7 / 2) = 4 matching ballots.
    let rule = VoteRule::Byzantine { f: 1 };
    let ballots = [("v1", "yes"), ("v2", "yes"), ("v3", "yes"), ("v4", "yes")];
    assert_eq!(
        run(rule.clone(), &ballots),
        (4, VoteState::Decided, Some("yes".into()))
    );
    let split = [("v1", "yes"), ("v2", "no"), ("v3", "yes"), ("v4", "no")];
    assert_eq!(run(rule, &split).1, VoteState::Failed);
}

#[test]
fn the_deadline_fails_an_undecided_vote_and_a_result_never_changes() {
    let mut h = harness();
    open(&mut h, VoteRule::Majority);
    h.ok(cast("v1", "yes"));
    let early = h.rejected(Command::ExpireVote {
        vote_id: "vote".into(),
    });
    assert!(matches!(early, Rejection::VoteDeadlineNotReached { .. }));
    h.now_ms = START_MS + 1_000;
    h.ok(Command::ExpireVote {
        vote_id: "vote".into(),
    });
    let closed = vote(&h);
    assert_eq!(closed.state, VoteState::Failed);
    assert_eq!(
        closed.reason.as_deref(),
        Some("the deadline passed with 1 of 5 ballots cast and no option reaching a majority (3 of 5)")
    );
    assert!(h.state.votes.expired(u64::MAX).next().is_none());
    let late = h.rejected(cast("v2", "yes"));
    assert!(matches!(late, Rejection::VoteClosed { .. }));
}

#[test]
fn one_ballot_per_voter_and_only_voters_vote() {
    let mut h = harness();
    h.ok(register("outsider", &[], 1));
    open(&mut h, VoteRule::Majority);
    h.ok(cast("v1", "yes"));
    h.ok(cast("v1", "yes"));
    assert_eq!(
        vote(&h).ballots.len(),
        1,
        "a repeated ballot is counted once"
    );
    let changed = h.rejected(cast("v1", "no"));
    assert_eq!(
        changed.to_string(),
        "agent 'v1' already voted 'yes' in vote 'vote'"
    );
    let outsider = h.rejected(cast("outsider", "yes"));
    assert!(matches!(outsider, Rejection::NotEligible { .. }));
    let option = h.rejected(cast("v2", "maybe"));
    assert_eq!(
        option.to_string(),
        "option: 'maybe' is not an option of vote 'vote'"
    );
    let unknown = h.rejected(Command::CastBallot {
        vote_id: "nope".into(),
        agent_id: "v1".into(),
        option: "yes".into(),
    });
    assert_eq!(unknown.to_string(), "vote_id: no vote 'nope'");
    let awaiting: Vec<&str> = h
        .state
        .votes
        .awaiting("v2")
        .map(|v| v.id.as_str())
        .collect();
    assert_eq!(awaiting, ["vote"]);
    assert!(h.state.votes.awaiting("v1").next().is_none());
}

#[test]
fn bad_votes_are_refused_naming_the_field() {
    let cases: Vec<(VoteSpec, &str)> = vec![
        (
            VoteSpec {
                options: vec!["yes".into()],
                ..spec(&VOTERS, VoteRule::Majority)
            },
            "options: 1 options, a vote needs 2 to 64",
        ),
        (
            VoteSpec {
                options: vec!["yes".into(), "yes".into()],
                ..spec(&VOTERS, VoteRule::Majority)
            },
            "options[1]: duplicate option 'yes'",
        ),
        (
            spec(&["v1", "ghost"], VoteRule::Majority),
            "voters[1]: no live agent 'ghost'",
        ),
        (spec(&[], VoteRule::Majority), "voters: no eligible voter"),
        (
            VoteSpec {
                timeout_ms: 0,
                ..spec(&VOTERS, VoteRule::Majority)
            },
            "timeout_ms: 0, must be 1 to 86400000",
        ),
        (
            spec(&VOTERS[..3], VoteRule::Byzantine { f: 1 }),
            "rule.byzantine.f: tolerating 1 faulty voters needs at least 4 voters, not 3",
        ),
        (
            spec(&VOTERS, VoteRule::Supermajority { threshold: 0.5 }),
            "rule.supermajority.threshold: 0.5, must be in (0.5, 1]",
        ),
        (
            spec(
                &VOTERS[..2],
                VoteRule::Weighted {
                    weights: [("v1".to_owned(), 1.0)].into(),
                    threshold: 0.5,
                },
            ),
            "rule.weighted.weights: no weight for voter 'v2'",
        ),
    ];
    let mut h = harness();
    for (spec, expected) in cases {
        let rejection = h.rejected(Command::OpenVote {
            vote_id: "bad".into(),
            spec,
        });
        assert_eq!(rejection.to_string(), expected);
    }
}

#[test]
fn thresholds_and_weights_are_compared_exactly() {
    // 0.55 of 100 voters is 55 ballots, not 56.
    let rule = VoteRule::Supermajority { threshold: 0.55 };
    assert_eq!(rule.describe(100), "a supermajority of 0.55 (55 of 100)");
    // Ten voters of weight 0.1: five hold exactly half, which does not exceed 0.5.
    let voters: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let weighted = VoteRule::Weighted {
        weights: voters.iter().map(|v| (v.clone(), 0.1)).collect(),
        threshold: 0.5,
    };
    let mut tally = Tally::default();
    for voter in &voters[..5] {
        tally.count(&weighted, voter, "yes", Some("yes"));
    }
    let options = vec!["yes".to_owned(), "no".to_owned()];
    assert_eq!(verdict(&weighted, &options, 10, &tally), Verdict::Open);
    tally.count(&weighted, &voters[5], "yes", Some("yes"));
    assert_eq!(
        verdict(&weighted, &options, 10, &tally),
        Verdict::Decided("yes".into())
    );
}

#[test]
fn a_ballot_after_the_deadline_is_refused_before_the_expiry_lands() {
    let mut h = harness();
    open(&mut h, VoteRule::Majority);
    h.now_ms = START_MS + 1_000;
    let late = h.rejected(cast("v1", "yes"));
    assert!(matches!(late, Rejection::PastDeadline { .. }), "{late}");
}
