//! `synod fl start FILE | status ID | watch ID`: starting a federation from a federation file,
//! reading its state and rounds, and following its training with a progress bar and one line
//! of metrics per committed round.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use synod_sdk::federation_file::parse_federation_file;
use synod_sdk::proto as pb;
use synod_sdk::Client;

use super::ClientArgs;

/// Federated-learning commands.
#[derive(Subcommand)]
pub enum FlCommand {
    /// Start a federation from a federation file (TOML).
    Start {
        #[command(flatten)]
        client: ClientArgs,
        /// The federation file.
        file: PathBuf,
        /// Idempotency key: starting twice with it returns the first federation.
        #[arg(long, default_value = "")]
        key: String,
        /// Follow the federation until it finishes.
        #[arg(long)]
        watch: bool,
    },
    /// Show a federation and its latest round.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// The federation's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a federation's rounds until it finishes.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        /// The federation's id.
        id: String,
    },
}

/// Runs an `fl` command.
pub async fn run(command: FlCommand) -> anyhow::Result<()> {
    match command {
        FlCommand::Start {
            client,
            file,
            key,
            watch: follow,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let (spec, model) =
                parse_federation_file(&text).with_context(|| format!("{}", file.display()))?;
            let client = client.client()?;
            let federation = client
                .start_federation_with_model(spec, &model, key)
                .await?;
            println!("{}", federation.federation_id);
            if follow {
                watch(&client, &federation.federation_id).await?;
            }
            Ok(())
        }
        FlCommand::Status { client, id, json } => status(&client.client()?, &id, json).await,
        FlCommand::Watch { client, id } => watch(&client.client()?, &id).await,
    }
}

async fn status(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let federation = client.get_federation(id).await?;
    let round = match federation.committed_round.max(federation.current_round) {
        0 => None,
        _ => client.get_round(id, 0).await.ok(),
    };
    if json {
        let value = serde_json::json!({
            "federation_id": federation.federation_id,
            "name": federation.name,
            "state": state_name(federation.state),
            "state_reason": federation.state_reason,
            "committed_round": federation.committed_round,
            "rounds": federation.rounds,
            "current_round": federation.current_round,
            "latest_metrics": federation.latest_metrics,
            "epsilon_spent": federation.epsilon_spent,
            "round": round.as_ref().map(round_json),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "federation {} ({})",
        federation.federation_id, federation.name
    );
    println!(
        "  state      {} {}",
        state_name(federation.state),
        federation.state_reason
    );
    println!(
        "  rounds     {}/{} committed",
        federation.committed_round, federation.rounds
    );
    println!("  metrics    {}", metrics_line(&federation.latest_metrics));
    if federation.epsilon_spent > 0.0 {
        println!("  epsilon    {:.4}", federation.epsilon_spent);
    }
    if let Some(round) = round {
        let phase = pb::RoundState::try_from(round.state).map_or("?".into(), |s| format!("{s:?}"));
        println!("  round {} attempt {}: {phase}", round.round, round.attempt);
        for p in &round.participants {
            let state =
                pb::ParticipantState::try_from(p.state).map_or("?".into(), |s| format!("{s:?}"));
            println!("    {} {state} {} {}", p.agent_id, p.num_examples, p.reason);
        }
    }
    Ok(())
}

fn round_json(round: &pb::Round) -> serde_json::Value {
    serde_json::json!({
        "round": round.round,
        "attempt": round.attempt,
        "state": pb::RoundState::try_from(round.state).map_or("?".into(), |s| format!("{s:?}")),
        "participants": round.participants.iter().map(|p| serde_json::json!({
            "agent_id": p.agent_id,
            "state": pb::ParticipantState::try_from(p.state).map_or("?".into(), |s| format!("{s:?}")),
            "num_examples": p.num_examples,
            "reason": p.reason,
        })).collect::<Vec<_>>(),
        "metrics": round.metrics,
        "evaluation_metrics": round.evaluation_metrics,
    })
}

fn state_name(state: i32) -> String {
    pb::FederationState::try_from(state).map_or("?".into(), |s| format!("{s:?}"))
}

fn metrics_line(metrics: &std::collections::HashMap<String, f64>) -> String {
    let mut names: Vec<&String> = metrics.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| format!("{name} {:.4}", metrics[name]))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Follows `id` with a progress bar until it finishes; fails unless it completed.
pub async fn watch(client: &Client, id: &str) -> anyhow::Result<()> {
    let federation = client.get_federation(id).await?;
    let bar = ProgressBar::new(u64::from(federation.rounds));
    bar.set_style(
        ProgressStyle::with_template("{spinner} round {pos}/{len} [{bar:30}] {elapsed} {msg}")?
            .progress_chars("=> "),
    );
    let mut events = client.watch_federation(id, 0).await?;
    let mut outcome = None;
    while let Some(event) = events.message().await? {
        use pb::federation_event::Kind;
        match event.kind {
            Some(Kind::RoundStarted(started)) => {
                bar.set_message(format!(
                    "training round {} ({} participants)",
                    started.round,
                    started.participant_agent_ids.len()
                ));
            }
            Some(Kind::RoundCommitted(done)) => {
                bar.set_position(u64::from(done.round));
                let mut line = format!(
                    "round {:>3}: train {}",
                    done.round,
                    metrics_line(&done.metrics)
                );
                if !done.evaluation_metrics.is_empty() {
                    line.push_str(&format!(
                        " | eval {}",
                        metrics_line(&done.evaluation_metrics)
                    ));
                }
                if done.epsilon_spent > 0.0 {
                    line.push_str(&format!(" | ε {:.3}", done.epsilon_spent));
                }
                bar.println(line);
            }
            Some(Kind::RoundFailed(failed)) => {
                bar.println(format!(
                    "round {:>3} attempt {} failed: {}",
                    failed.round, failed.attempt, failed.reason
                ));
            }
            Some(Kind::FederationCompleted(done)) => {
                outcome = Some(done);
                break;
            }
            _ => {}
        }
    }
    bar.finish_and_clear();
    let done = outcome.context("the watch ended before the federation finished")?;
    let state = state_name(done.state);
    println!(
        "federation {id}: {state} after {} rounds {}",
        done.committed_round, done.reason
    );
    if done.state != pb::FederationState::Completed as i32 {
        anyhow::bail!("federation {id} ended {state}: {}", done.reason);
    }
    Ok(())
}
