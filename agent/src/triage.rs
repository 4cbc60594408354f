//! The DevOps triage demo: fetch a batch of issues, classify each (one fan-out instance per
//! issue), and route the batch by the categories found. Deterministic, so the example job's
//! branches are the same on every run.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use synod_sdk::agent::{Task, TaskOutcome};

/// A batch of incoming issues.
const ISSUES: [&str; 12] = [
    "Login fails after password reset",
    "Add dark mode to the dashboard",
    "Token leaks into debug logs",
    "Crash when uploading an empty file",
    "Support exporting reports as CSV",
    "Error 500 on the billing page",
    "SQL injection in the search box",
    "Add SSO with the company directory",
    "Timeout error when syncing large repos",
    "Support webhooks for job events",
    "Session cookie missing the Secure flag",
    "Memory leak crash in the worker pool",
];

/// Categories, each with the words that put an issue in it (checked in this order).
const CATEGORIES: [(&str, &[&str]); 4] = [
    (
        "security",
        &["token", "injection", "secure", "cve", "xss", "leak"],
    ),
    ("bug", &["fail", "crash", "error", "timeout"]),
    ("docs", &["docs", "readme", "typo"]),
    ("feature", &["add", "support"]),
];

/// `{"count": N}` (default 12) issues as `{"issues": [{"id", "title"}, ...]}`.
pub async fn fetch(task: Task) -> TaskOutcome {
    let payload: Value = serde_json::from_slice(&task.payload).unwrap_or(Value::Null);
    let count = payload["count"].as_u64().unwrap_or(ISSUES.len() as u64) as usize;
    let issues: Vec<Value> = (0..count)
        .map(|i| json!({ "id": 4800 + i, "title": ISSUES[i % ISSUES.len()] }))
        .collect();
    TaskOutcome::Succeeded(json!({ "issues": issues }).to_string().into_bytes())
}

/// One issue (the fan-out item) as `{"id", "category"}`.
pub async fn classify(task: Task) -> TaskOutcome {
    let Ok(issue) = serde_json::from_slice::<Value>(&task.item) else {
        return TaskOutcome::fatal("the item is not an issue in JSON");
    };
    let title = issue["title"].as_str().unwrap_or_default().to_lowercase();
    let category = CATEGORIES
        .iter()
        .find(|(_, words)| words.iter().any(|word| title.contains(word)))
        .map_or("feature", |(name, _)| name);
    let output = json!({ "id": issue["id"], "category": category });
    TaskOutcome::Succeeded(output.to_string().into_bytes())
}

/// The reduce step over `analyze`'s instances, in item order: the categories found
/// (`/has/<category>` is true or false for each) and the issues of each.
pub async fn route(task: Task) -> TaskOutcome {
    let mut by_category: BTreeMap<&str, Vec<Value>> = CATEGORIES
        .iter()
        .map(|(name, _)| (*name, Vec::new()))
        .collect();
    let classified = task.fan_out_outputs("analyze");
    for output in &classified {
        let Ok(issue) = serde_json::from_slice::<Value>(output) else {
            return TaskOutcome::fatal("a classification is not JSON");
        };
        let category = issue["category"].as_str().unwrap_or_default().to_owned();
        if let Some(issues) = by_category
            .iter_mut()
            .find_map(|(name, issues)| (*name == category).then_some(issues))
        {
            issues.push(issue["id"].clone());
        }
    }
    let has: BTreeMap<&str, bool> = by_category
        .iter()
        .map(|(name, issues)| (*name, !issues.is_empty()))
        .collect();
    let output = json!({ "classified": classified.len(), "has": has, "issues": by_category });
    TaskOutcome::Succeeded(output.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use synod_sdk::proto as pb;

    use super::*;

    fn task(item: &str) -> Task {
        let task_ref = pb::TaskRef {
            job_id: "j".into(),
            task_id: "t".into(),
            attempt: 1,
        };
        let mut task = Task::standalone(task_ref, "k", Vec::new());
        task.item = item.as_bytes().to_vec();
        task
    }

    async fn category(title: &str) -> String {
        let item = json!({ "id": 1, "title": title }).to_string();
        let TaskOutcome::Succeeded(output) = classify(task(&item)).await else {
            panic!("classify failed");
        };
        let output: Value = serde_json::from_slice(&output).unwrap();
        output["category"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn issues_are_classified_and_routed_in_item_order() {
        assert_eq!(category("Token leaks into debug logs").await, "security");
        assert_eq!(category("Crash when uploading").await, "bug");
        assert_eq!(category("Fix typo in README").await, "docs");
        assert_eq!(category("Add dark mode").await, "feature");
        let mut reduce = task("");
        for (i, category) in ["bug", "security", "bug"].iter().enumerate() {
            let output = json!({ "id": i, "category": category }).to_string();
            reduce
                .dependency_outputs
                .insert(format!("analyze[{i}]"), output.into_bytes());
        }
        let TaskOutcome::Succeeded(output) = route(reduce).await else {
            panic!("route failed");
        };
        let output: Value = serde_json::from_slice(&output).unwrap();
        assert_eq!(output["has"]["bug"], true);
        assert_eq!(output["has"]["docs"], false);
        assert_eq!(output["issues"]["bug"], json!([0, 2]));
    }
}
