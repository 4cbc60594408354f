//! Cycle detection over task dependency lists.
//!
//! Pure graph code: Kahn's algorithm finds whether a cycle exists, then a walk along remaining
//! dependencies names one, deterministically (task order, then dependency order).

use std::collections::BTreeMap;

use super::TaskSpec;

/// A dependency cycle among `tasks`, as ids where each depends on the next and the last equals
/// the first (`["a", "b", "a"]`), or `None` when the tasks form a DAG. Dependencies on ids
/// outside `tasks` are ignored: they cannot close a cycle through tasks added later.
pub fn find_cycle(tasks: &[TaskSpec]) -> Option<Vec<String>> {
    let position: BTreeMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| (task.id.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = tasks
        .iter()
        .map(|task| {
            let inside = task.depends_on.iter();
            inside
                .filter_map(|dep| position.get(dep.as_str()).copied())
                .collect()
        })
        .collect();
    let remaining = unsorted_after_kahn(&deps);
    let start = remaining.iter().position(|&left| left)?;
    Some(walk_to_cycle(start, &deps, &remaining, tasks))
}

/// Runs Kahn's algorithm; true for every task left with an unresolved dependency.
fn unsorted_after_kahn(deps: &[Vec<usize>]) -> Vec<bool> {
    let mut unresolved: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); deps.len()];
    for (task, task_deps) in deps.iter().enumerate() {
        for &dep in task_deps {
            dependents[dep].push(task);
        }
    }
    let mut queue: Vec<usize> = (0..deps.len()).filter(|&i| unresolved[i] == 0).collect();
    while let Some(done) = queue.pop() {
        for &next in &dependents[done] {
            unresolved[next] -= 1;
            if unresolved[next] == 0 {
                queue.push(next);
            }
        }
    }
    unresolved.iter().map(|&count| count > 0).collect()
}

/// Follows the first remaining dependency from `start` until a task repeats. Every remaining
/// task has one, so the walk always closes a cycle.
fn walk_to_cycle(
    start: usize,
    deps: &[Vec<usize>],
    remaining: &[bool],
    tasks: &[TaskSpec],
) -> Vec<String> {
    let mut path = vec![start];
    let mut current = start;
    while let Some(&next) = deps[current].iter().find(|&&dep| remaining[dep]) {
        if let Some(first) = path.iter().position(|&seen| seen == next) {
            path.drain(..first);
            path.push(next);
            break;
        }
        path.push(next);
        current = next;
    }
    path.iter().map(|&i| tasks[i].id.clone()).collect()
}
