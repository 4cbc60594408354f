//! [`CheckpointTable`]: versioned blobs saved under a scope (job, task, agent) and a name,
//! changed by `SaveCheckpoint` (and pruned to the versions to keep).
//!
//! ```text
//!   SaveCheckpoint ─► owner exists (a task: its current attempt, by its agent: fenced)
//!                  ─► version = latest + 1 ─► keep the newest `keep_versions`
//! ```
//! The payload travels in the command, so every replica holds every committed version and a
//! read is served from any node. Sizes are capped (the API's configured limit, and
//! [`CHECKPOINT_BYTES_MAX`] here). Pure: no I/O, clock or randomness.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::jobs::{JobTable, SpecError};
use super::{AgentRegistry, Applied, Meta, Outcome, Rejection};

/// Largest checkpoint the state accepts, whatever the API's configured limit.
pub const CHECKPOINT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest checkpoint name, in characters.
pub const NAME_CHARS_MAX: usize = 256;
/// Most metadata entries.
pub const METADATA_MAX: usize = 64;
/// Versions kept per (scope, name) when the saver does not say.
pub const KEEP_VERSIONS_DEFAULT: u32 = 3;

/// What a checkpoint belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// A job.
    Job(String),
    /// A task of a job.
    Task {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
    },
    /// An agent.
    Agent(String),
}

/// A save: who saves what, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Save {
    /// Owner.
    pub scope: Scope,
    /// Name within the scope.
    pub name: String,
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Lower-case hex SHA-256 of `data` (computed by the API from the bytes received).
    pub sha256: String,
    /// Caller metadata.
    pub metadata: BTreeMap<String, String>,
    /// Identity of the saver.
    pub created_by: String,
    /// Newest versions to keep; 0 means [`KEEP_VERSIONS_DEFAULT`].
    pub keep_versions: u32,
    /// For a task scope: the attempt saving it, which must be the task's current, in-progress
    /// attempt (fencing).
    pub attempt: Option<u32>,
}

/// One committed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// 1, 2, ... per (scope, name).
    pub version: u64,
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Lower-case hex SHA-256 of the payload.
    pub sha256: String,
    /// Caller metadata.
    pub metadata: BTreeMap<String, String>,
    /// Identity of the saver.
    pub created_by: String,
    /// When it was committed.
    pub created_at_ms: u64,
    /// Save order among every checkpoint.
    pub seq: u64,
}

/// Every checkpoint: versions (oldest first) by scope and name.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointTable {
    entries: BTreeMap<(Scope, String), Vec<Version>>,
    next_seq: u64,
}

impl CheckpointTable {
    /// Saves a new version; returns it in `Applied::CheckpointSaved`.
    pub fn save(
        &mut self,
        save: &Save,
        jobs: &JobTable,
        agents: &AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        validate(save).map_err(Rejection::InvalidSpec)?;
        check_owner(save, jobs, agents)?;
        let key = (save.scope.clone(), save.name.clone());
        let versions = self.entries.entry(key).or_default();
        let version = versions.last().map_or(1, |v| v.version + 1);
        versions.push(Version {
            version,
            data: save.data.clone(),
            sha256: save.sha256.clone(),
            metadata: save.metadata.clone(),
            created_by: save.created_by.clone(),
            created_at_ms: meta.now_ms,
            seq: self.next_seq,
        });
        self.next_seq += 1;
        let keep = match save.keep_versions {
            0 => KEEP_VERSIONS_DEFAULT,
            keep => keep,
        } as usize;
        if versions.len() > keep {
            versions.drain(..versions.len() - keep);
        }
        Ok(Applied::CheckpointSaved { version })
    }

    /// Version `version` of (scope, name), or the latest when `version` is 0.
    pub fn get(&self, scope: &Scope, name: &str, version: u64) -> Option<&Version> {
        let versions = self.entries.get(&(scope.clone(), name.to_owned()))?;
        match version {
            0 => versions.last(),
            v => versions.iter().find(|candidate| candidate.version == v),
        }
    }

    /// Every (scope, name) with its versions (oldest first), in scope then name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Scope, &str, &[Version])> {
        self.entries
            .iter()
            .map(|((scope, name), versions)| (scope, name.as_str(), versions.as_slice()))
    }

    /// The newest version saved in a task's scope, under any name: what a retried or
    /// reassigned attempt resumes from.
    pub fn latest_of_task(&self, job_id: &str, task_id: &str) -> Option<(&str, &Version)> {
        let scope = Scope::Task {
            job_id: job_id.to_owned(),
            task_id: task_id.to_owned(),
        };
        let start = (scope.clone(), String::new());
        self.entries
            .range(start..)
            .take_while(|((s, _), _)| *s == scope)
            .filter_map(|((_, name), versions)| Some((name.as_str(), versions.last()?)))
            .max_by_key(|(_, v)| v.seq)
    }
}

/// The rules a save must satisfy.
pub fn validate(save: &Save) -> Result<(), SpecError> {
    let chars = save.name.chars().count();
    if chars == 0 || chars > NAME_CHARS_MAX {
        let problem = format!("{chars} chars, must be 1 to {NAME_CHARS_MAX}");
        return Err(SpecError::new("name", problem));
    }
    if save.data.len() > CHECKPOINT_BYTES_MAX {
        let problem = format!(
            "{} bytes, the limit is {CHECKPOINT_BYTES_MAX}",
            save.data.len()
        );
        return Err(SpecError::new("blob.size_bytes", problem));
    }
    if save.metadata.len() > METADATA_MAX {
        let problem = format!(
            "{} entries, the limit is {METADATA_MAX}",
            save.metadata.len()
        );
        return Err(SpecError::new("metadata", problem));
    }
    Ok(())
}

/// The owner exists; a task checkpoint saved by an agent comes from the current attempt.
fn check_owner(save: &Save, jobs: &JobTable, agents: &AgentRegistry) -> Result<(), Rejection> {
    match &save.scope {
        Scope::Job(job_id) => match jobs.get(job_id) {
            Some(_) => Ok(()),
            None => Err(Rejection::UnknownJob {
                job_id: job_id.clone(),
            }),
        },
        Scope::Task { job_id, task_id } => {
            let Some((_, task)) = jobs.task(job_id, task_id) else {
                return Err(Rejection::UnknownTask {
                    job_id: job_id.clone(),
                    task_id: task_id.clone(),
                });
            };
            match save.attempt {
                Some(attempt) if !(task.state.is_active() && task.attempt == attempt) => {
                    Err(Rejection::StaleAttempt {
                        job_id: job_id.clone(),
                        task_id: task_id.clone(),
                        attempt,
                        agent_id: save.created_by.clone(),
                        current: format!(
                            "current attempt {} by agent '{}', {:?}",
                            task.attempt,
                            task.agent.as_deref().unwrap_or(""),
                            task.state
                        ),
                    })
                }
                _ => Ok(()),
            }
        }
        Scope::Agent(agent_id) => match agents.get(agent_id) {
            Some(_) => Ok(()),
            None => Err(Rejection::UnknownAgent {
                agent_id: agent_id.clone(),
            }),
        },
    }
}
