//! Unit tests of the state machine: each applies commands and asserts the exact new state.

use super::*;

fn put(key: &str, value: &str, condition: KvCondition) -> Command {
    Command::KvPut {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        condition,
    }
}

fn at(index: u64) -> Meta {
    Meta {
        index,
        now_ms: 1_000 + index,
    }
}

#[test]
fn put_creates_a_key_with_revision_one() {
    let mut state = State::default();
    let outcome = state.apply(&put("a", "1", KvCondition::Always), at(7));
    let expected = KeyValue {
        key: "a".into(),
        value: b"1".to_vec(),
        create_index: 7,
        mod_index: 7,
        version: 1,
    };
    assert_eq!(outcome, Ok(Applied::Kv(expected.clone())));
    assert_eq!(state.kv.get("a"), Some(&expected));
    assert_eq!(state.commands_applied, 1);
}

#[test]
fn overwrite_keeps_create_index_and_bumps_version() {
    let mut state = State::default();
    state
        .apply(&put("a", "1", KvCondition::Always), at(3))
        .unwrap();
    state
        .apply(&put("a", "2", KvCondition::Always), at(9))
        .unwrap();
    let kv = state.kv.get("a").unwrap();
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_index,
            kv.mod_index,
            kv.version
        ),
        (&b"2"[..], 3, 9, 2)
    );
}

#[test]
fn failed_condition_is_rejected_and_changes_nothing() {
    let cases = [
        (KvCondition::Absent, "expected no key, found mod_index 3"),
        (
            KvCondition::ModIndex(2),
            "expected mod_index 2, found mod_index 3",
        ),
    ];
    for (condition, message) in cases {
        let mut state = State::default();
        state
            .apply(&put("a", "1", KvCondition::Always), at(3))
            .unwrap();
        let before = state.kv.clone();
        let outcome = state.apply(&put("a", "2", condition), at(4));
        let rejection = outcome.unwrap_err();
        assert_eq!(rejection.to_string(), format!("key 'a': {message}"));
        assert_eq!(state.kv, before);
    }
}

#[test]
fn conditions_that_hold_apply() {
    let mut state = State::default();
    assert!(state
        .apply(&put("a", "1", KvCondition::Absent), at(1))
        .is_ok());
    assert!(state
        .apply(&put("a", "2", KvCondition::ModIndex(1)), at(2))
        .is_ok());
    assert_eq!(state.kv.get("a").unwrap().value, b"2");
}

#[test]
fn delete_reports_whether_the_key_existed() {
    let mut state = State::default();
    state
        .apply(&put("a", "1", KvCondition::Always), at(1))
        .unwrap();
    let delete = Command::KvDelete { key: "a".into() };
    assert_eq!(state.apply(&delete, at(2)), Ok(Applied::Deleted(true)));
    assert_eq!(state.apply(&delete, at(3)), Ok(Applied::Deleted(false)));
    assert!(state.kv.is_empty());
}

#[test]
fn list_pages_through_a_prefix_in_order() {
    let mut state = State::default();
    for (i, key) in ["b/2", "a/1", "b/1", "b/3", "c"].iter().enumerate() {
        state
            .apply(&put(key, "v", KvCondition::Always), at(i as u64 + 1))
            .unwrap();
    }
    let keys = |kvs: Vec<&KeyValue>| kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(state.kv.list("b/", None, 2)), ["b/1", "b/2"]);
    assert_eq!(keys(state.kv.list("b/", Some("b/2"), 2)), ["b/3"]);
    assert_eq!(keys(state.kv.list("", None, 10)).len(), 5);
}

#[test]
fn a_proposal_applies_in_order_with_the_leader_clock() {
    let mut state = State::default();
    let proposal = Proposal {
        now_ms: 42,
        commands: vec![
            put("a", "1", KvCondition::Absent),
            put("a", "2", KvCondition::Absent),
            Command::Noop,
        ],
    };
    let outcomes = state.apply_proposal(&proposal, 5);
    assert!(outcomes[0].is_ok());
    assert!(outcomes[1].is_err());
    assert_eq!(outcomes[2], Ok(Applied::Done));
    assert_eq!(state.last_proposal_ms, 42);
    assert_eq!(state.commands_applied, 3);
}

#[test]
fn replicas_applying_the_same_log_have_the_same_digest() {
    let log: Vec<Proposal> = (0..50)
        .map(|i| Proposal {
            now_ms: i,
            commands: vec![put(
                &format!("k{}", i % 7),
                &i.to_string(),
                KvCondition::Always,
            )],
        })
        .collect();
    let replay = |log: &[Proposal]| {
        let mut state = State::default();
        for (i, proposal) in log.iter().enumerate() {
            state.apply_proposal(proposal, i as u64 + 1);
        }
        state
    };
    let (a, b) = (replay(&log), replay(&log));
    assert_eq!(a.digest(), b.digest());
    assert_ne!(a.digest(), replay(&log[..49]).digest());
}
