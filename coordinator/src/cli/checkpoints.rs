//! `synod checkpoint list | get`: the checkpoints saved under a job, task or agent.
//!
//! A scope is one of `--job JOB`, `--task JOB/TASK` (the last `/` splits) or `--agent AGENT`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;
use synod_sdk::proto as pb;

use super::ClientArgs;

/// Which owner's checkpoints.
#[derive(clap::Args, Clone)]
pub struct ScopeArgs {
    /// A job's checkpoints.
    #[arg(long)]
    job: Option<String>,
    /// A task's checkpoints, as JOB/TASK.
    #[arg(long)]
    task: Option<String>,
    /// An agent's checkpoints.
    #[arg(long)]
    agent: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> anyhow::Result<Option<pb::CheckpointScope>> {
        use pb::checkpoint_scope::Owner;
        let owner = match (&self.job, &self.task, &self.agent) {
            (None, None, None) => return Ok(None),
            (Some(job), None, None) => Owner::JobId(job.clone()),
            (None, Some(task), None) => match task.rsplit_once('/') {
                Some((job_id, task_id)) => Owner::Task(pb::TaskRef {
                    job_id: job_id.to_owned(),
                    task_id: task_id.to_owned(),
                    attempt: 0,
                }),
                None => bail!("--task: '{task}' is not JOB/TASK"),
            },
            (None, None, Some(agent)) => Owner::AgentId(agent.clone()),
            _ => bail!("give one of --job, --task and --agent"),
        };
        Ok(Some(pb::CheckpointScope { owner: Some(owner) }))
    }
}

/// Checkpoint commands.
#[derive(Subcommand)]
pub enum CheckpointCommand {
    /// List checkpoints (the latest version of each, or every version).
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Every version, not only the latest.
        #[arg(long)]
        all_versions: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a checkpoint's payload to a file (or standard output).
    Get {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        scope: ScopeArgs,
        /// The checkpoint's name.
        name: String,
        /// The version; 0 means the latest.
        #[arg(long, default_value_t = 0)]
        version: u64,
        /// Where to write the payload; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a checkpoint command.
pub async fn run(command: CheckpointCommand) -> anyhow::Result<()> {
    match command {
        CheckpointCommand::List {
            client,
            scope,
            all_versions,
            json,
        } => {
            let listed = client
                .client()?
                .list_checkpoints(scope.scope()?, all_versions, 10_000)
                .await?;
            print_list(&listed, json)
        }
        CheckpointCommand::Get {
            client,
            scope,
            name,
            version,
            out,
        } => {
            let Some(scope) = scope.scope()? else {
                bail!("give one of --job, --task and --agent");
            };
            let checkpoint = client
                .client()?
                .get_checkpoint(scope, &name, version)
                .await?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &checkpoint.data)?;
                    eprintln!(
                        "checkpoint {name} v{}: {} bytes written to {}",
                        checkpoint.info.version,
                        checkpoint.data.len(),
                        path.display()
                    );
                }
                None => std::io::stdout().write_all(&checkpoint.data)?,
            }
            Ok(())
        }
    }
}

fn owner(scope: &Option<pb::CheckpointScope>) -> String {
    use pb::checkpoint_scope::Owner;
    match scope.as_ref().and_then(|s| s.owner.as_ref()) {
        Some(Owner::JobId(id)) => format!("job {id}"),
        Some(Owner::Task(t)) => format!("task {}/{}", t.job_id, t.task_id),
        Some(Owner::AgentId(id)) => format!("agent {id}"),
        Some(Owner::FederationId(id)) => format!("federation {id}"),
        None => String::new(),
    }
}

fn print_list(listed: &[pb::CheckpointInfo], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let list: Vec<_> = listed
            .iter()
            .map(|c| {
                let blob = c.blob.clone().unwrap_or_default();
                json!({
                    "owner": owner(&c.scope), "name": c.name, "version": c.version,
                    "size_bytes": blob.size_bytes, "sha256": blob.sha256,
                    "metadata": c.metadata, "created_at_ms": c.created_at_ms,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<40}  {:<20}  {:>7}  {:>10}",
        "OWNER", "NAME", "VERSION", "BYTES"
    );
    for c in listed {
        let size = c.blob.as_ref().map_or(0, |b| b.size_bytes);
        println!(
            "{:<40}  {:<20}  {:>7}  {:>10}",
            owner(&c.scope),
            c.name,
            c.version,
            size
        );
    }
    Ok(())
}
