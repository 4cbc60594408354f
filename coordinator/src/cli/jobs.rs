//! `synod job ...`: submit job files, follow jobs, cancel them.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use synod_sdk::job_file::parse_job_file;
use synod_sdk::proto as pb;

use super::events::AgentNames;
use super::ClientArgs;

/// Job commands.
#[derive(Subcommand)]
pub enum JobCommand {
    /// Submit a job file (TOML; see examples/jobs/).
    Submit {
        #[command(flatten)]
        client: ClientArgs,
        /// The job file.
        file: PathBuf,
        /// Follow the job and exit when it ends (non-zero unless it succeeded).
        #[arg(long)]
        wait: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A job's state and its tasks.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// Job id.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stream a job's events until it ends.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        /// Job id.
        id: String,
        /// Replay the whole history first.
        #[arg(long)]
        from_start: bool,
    },
    /// Jobs, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only jobs in this state (pending, running, compensating, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A job's timeline: every event with its time, then each task's waits and run times.
    History {
        #[command(flatten)]
        client: ClientArgs,
        /// Job id.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        /// Job id.
        id: String,
    },
}

/// Runs a job command.
pub async fn run(command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Submit {
            client,
            file,
            wait,
            json,
        } => submit(client, file, wait, json).await,
        JobCommand::Status { client, id, json } => status(&client.client()?, &id, json).await,
        JobCommand::Watch {
            client,
            id,
            from_start,
        } => {
            let state = watch(&client.client()?, &id, from_start, false).await?;
            exit_for(state)
        }
        JobCommand::List {
            client,
            state,
            limit,
            json,
        } => list(&client.client()?, state.as_deref(), limit, json).await,
        JobCommand::History { client, id, json } => {
            super::history::print(&client.client()?, &id, json).await
        }
        JobCommand::Cancel { client, id } => {
            let response = client
                .client()?
                .cancel_job(&id, "cancelled from the command line")
                .await?;
            let index = response.write.map_or(0, |w| w.log_index);
            println!("cancelled job {id} (log index {index})");
            Ok(())
        }
    }
}

async fn submit(
    client: ClientArgs,
    file: PathBuf,
    wait: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let spec = parse_job_file(&text).with_context(|| file.display().to_string())?;
    let client = client.client()?;
    let submitted = client.submit_job(spec, String::new()).await?;
    let job_id = submitted.job_id;
    if !wait {
        match as_json {
            true => println!("{}", json!({ "job_id": job_id })),
            false => println!("submitted job {job_id}"),
        }
        return Ok(());
    }
    if !as_json {
        println!("submitted job {job_id}; following it");
    }
    let state = watch(&client, &job_id, true, as_json).await?;
    if as_json {
        status(&client, &job_id, true).await?;
    }
    exit_for(state)
}

fn exit_for(state: i32) -> anyhow::Result<()> {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Succeeded) => Ok(()),
        _ => anyhow::bail!("job ended {}", job_state_name(state)),
    }
}

/// Prints events until the job's final one; returns the final job state.
async fn watch(
    client: &synod_sdk::Client,
    job_id: &str,
    from_start: bool,
    quiet: bool,
) -> anyhow::Result<i32> {
    let mut events = client.watch_job(job_id, from_start);
    let mut names = AgentNames::default();
    while let Some(event) = events.next().await {
        let event = event?;
        if !quiet {
            names.learn(client, &event).await;
            println!("{:>4}  {}", event.sequence, names.describe(&event));
        }
        if let Some(pb::job_event::Kind::JobCompleted(done)) = &event.kind {
            return Ok(done.state);
        }
    }
    anyhow::bail!("the watch ended before the job did")
}

/// Lower-case name of a job state.
pub fn job_state_name(state: i32) -> String {
    pb::JobState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state {state}"))
}

pub fn task_state_name(state: i32) -> String {
    pb::TaskState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state {state}"))
}

async fn list(
    client: &synod_sdk::Client,
    state: Option<&str>,
    limit: usize,
    as_json: bool,
) -> anyhow::Result<()> {
    let states = match state {
        None => Vec::new(),
        Some(name) => vec![parse_job_state(name)?],
    };
    let jobs = client.list_jobs(&states, limit).await?;
    if as_json {
        let list: Vec<_> = jobs
            .iter()
            .map(|j| {
                json!({
                    "job_id": j.job_id, "name": j.name, "state": job_state_name(j.state),
                    "reason": j.state_reason, "tasks": task_counts(j),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{:<38} {:<24} {:<10} TASKS", "ID", "NAME", "STATE");
    for job in &jobs {
        let counts = task_counts(job)
            .iter()
            .map(|(state, count)| format!("{count} {state}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<38} {:<24} {:<10} {counts}",
            job.job_id,
            job.name,
            job_state_name(job.state),
        );
    }
    Ok(())
}

/// A job's task counts by state name.
fn task_counts(job: &pb::Job) -> std::collections::BTreeMap<String, u32> {
    job.task_counts
        .iter()
        .map(|c| (task_state_name(c.state), c.count))
        .collect()
}

/// A job state from its lower-case name, as `job_state_name` prints it.
fn parse_job_state(name: &str) -> anyhow::Result<pb::JobState> {
    let upper = format!("JOB_STATE_{}", name.to_uppercase());
    match pb::JobState::from_str_name(&upper) {
        Some(state) if state != pb::JobState::Unspecified => Ok(state),
        _ => anyhow::bail!(
            "--state: '{name}' is not a job state (pending, running, compensating, succeeded, failed, cancelled)"
        ),
    }
}

async fn status(client: &synod_sdk::Client, job_id: &str, as_json: bool) -> anyhow::Result<()> {
    let job = client.get_job(job_id).await?;
    let tasks = client.job_tasks(job_id).await?;
    if as_json {
        let tasks: Vec<_> = tasks
            .iter()
            .map(|t| {
                json!({
                    "task_id": t.task_id, "state": task_state_name(t.state), "attempt": t.attempt,
                    "agent_id": t.agent_id, "error": t.error_message,
                    "output": String::from_utf8_lossy(&t.output),
                    "child_job_id": t.child_job_id, "compensation": t.compensation,
                })
            })
            .collect();
        let output = String::from_utf8_lossy(&job.output);
        let value = json!({
            "job_id": job.job_id, "name": job.name, "state": job_state_name(job.state),
            "reason": job.state_reason, "output": output, "tasks": tasks,
            "parent_job_id": job.parent_job_id, "parent_task_id": job.parent_task_id,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "job {} ({}): {} {}",
        job.job_id,
        job.name,
        job_state_name(job.state),
        job.state_reason
    );
    if !job.parent_job_id.is_empty() {
        println!(
            "child job of task {} in job {}",
            job.parent_task_id, job.parent_job_id
        );
    }
    println!("{:<28} {:<14} {:<8} AGENT", "TASK", "STATE", "ATTEMPT");
    for task in &tasks {
        let runs_on = match (task.child_job_id.is_empty(), task.compensation) {
            (false, _) => format!("child job {}", task.child_job_id),
            (true, true) => format!("{} (compensation)", task.agent_id),
            (true, false) => task.agent_id.clone(),
        };
        println!(
            "{:<28} {:<14} {:<8} {}",
            task.task_id,
            task_state_name(task.state),
            task.attempt,
            runs_on
        );
    }
    Ok(())
}
