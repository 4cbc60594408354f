//! Checkpoints: versions count up per (scope, name), old ones are pruned, a task's checkpoint
//! is fenced by its current attempt, and the latest one of a task is what a retry resumes.

use super::*;
use crate::state::testing::{assign, register, spec, submit, task, Harness};
use crate::state::Command;

fn save(scope: Scope, name: &str, data: &str, attempt: Option<u32>) -> Command {
    Command::SaveCheckpoint(Save {
        scope,
        name: name.into(),
        data: data.as_bytes().to_vec(),
        sha256: format!("sha-of-{data}"),
        metadata: BTreeMap::new(),
        created_by: "tester".into(),
        keep_versions: 2,
        attempt,
    })
}

fn task_scope() -> Scope {
    Scope::Task {
        job_id: "j".into(),
        task_id: "t".into(),
    }
}

fn harness() -> Harness {
    let mut h = Harness::new();
    h.ok(register("a1", &[], 2));
    h.ok(register("a2", &[], 2));
    h.ok(submit("j", spec(vec![task("t", &[])])));
    h.ok(assign("j", "t", 1, "a1"));
    h
}

#[test]
fn versions_count_up_and_only_the_newest_are_kept() {
    let mut h = harness();
    for (i, data) in ["one", "two", "three"].iter().enumerate() {
        let applied = h.ok(save(Scope::Job("j".into()), "model", data, None));
        assert_eq!(
            applied,
            Applied::CheckpointSaved {
                version: i as u64 + 1
            }
        );
    }
    let table = &h.state.checkpoints;
    let scope = Scope::Job("j".into());
    assert_eq!(table.get(&scope, "model", 0).unwrap().data, b"three");
    assert_eq!(table.get(&scope, "model", 2).unwrap().data, b"two");
    assert!(
        table.get(&scope, "model", 1).is_none(),
        "pruned beyond 2 versions"
    );
}

#[test]
fn a_task_checkpoint_is_fenced_by_the_current_attempt() {
    let mut h = harness();
    h.ok(save(task_scope(), "progress", "step-10", Some(1)));
    let stale = h.rejected(save(task_scope(), "progress", "step-11", Some(2)));
    assert!(matches!(stale, Rejection::StaleAttempt { .. }), "{stale}");
    h.ok(save(task_scope(), "other", "step-12", Some(1)));
    let (name, latest) = h.state.checkpoints.latest_of_task("j", "t").unwrap();
    assert_eq!((name, latest.data.as_slice()), ("other", &b"step-12"[..]));
}

#[test]
fn owners_must_exist_and_names_are_checked() {
    let mut h = harness();
    let no_job = h.rejected(save(Scope::Job("nope".into()), "x", "d", None));
    assert!(matches!(no_job, Rejection::UnknownJob { .. }), "{no_job}");
    let no_agent = h.rejected(save(Scope::Agent("ghost".into()), "x", "d", None));
    assert!(matches!(no_agent, Rejection::UnknownAgent { .. }));
    let empty = h.rejected(save(Scope::Agent("a1".into()), "", "d", None));
    assert_eq!(empty.to_string(), "name: 0 chars, must be 1 to 256");
    h.ok(save(Scope::Agent("a1".into()), "memory", "d", None));
}
