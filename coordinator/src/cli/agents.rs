//! `synod agents list | quarantine | release`: the registry of agents, and taking an agent out
//! of (or back into) service.

use clap::Subcommand;
use serde_json::json;
use synod_sdk::proto as pb;

use super::ClientArgs;

/// Agent commands.
#[derive(Subcommand)]
pub enum AgentsCommand {
    /// List registered agents.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Give an agent no work until it is released.
    Quarantine {
        #[command(flatten)]
        client: ClientArgs,
        /// The agent's id.
        id: String,
        /// Why (shown in `agents list`).
        #[arg(long, default_value = "operator request")]
        reason: String,
    },
    /// End an agent's quarantine (also closes its circuit breaker).
    Release {
        #[command(flatten)]
        client: ClientArgs,
        /// The agent's id.
        id: String,
    },
}

/// Runs an agents command.
pub async fn run(command: AgentsCommand) -> anyhow::Result<()> {
    match command {
        AgentsCommand::List { client, json } => list(&client, json).await,
        AgentsCommand::Quarantine { client, id, reason } => {
            set_quarantine(&client, &id, true, &reason).await
        }
        AgentsCommand::Release { client, id } => set_quarantine(&client, &id, false, "").await,
    }
}

async fn set_quarantine(
    client: &ClientArgs,
    id: &str,
    quarantined: bool,
    reason: &str,
) -> anyhow::Result<()> {
    let response = client
        .client()?
        .quarantine_agent(id, quarantined, reason)
        .await?;
    let state = response
        .agent
        .map_or_else(String::new, |a| state_name(a.state));
    println!("agent {id}: {state}");
    Ok(())
}

async fn list(client: &ClientArgs, as_json: bool) -> anyhow::Result<()> {
    let agents = client.client()?.list_agents().await?;
    if as_json {
        let list: Vec<_> = agents.iter().map(agent_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<38} {:<16} {:<12} {:<8} CAPABILITIES",
        "ID", "NAME", "STATE", "RUNNING"
    );
    for agent in &agents {
        let running = format!(
            "{}/{}",
            agent.running_tasks.len(),
            agent.max_concurrent_tasks
        );
        println!(
            "{:<38} {:<16} {:<12} {:<8} {}",
            agent.agent_id,
            agent.name,
            state_name(agent.state),
            running,
            agent.capabilities.join(",")
        );
    }
    Ok(())
}

fn state_name(state: i32) -> String {
    pb::AgentState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("AGENT_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state {state}"))
}

fn agent_json(agent: &pb::Agent) -> serde_json::Value {
    json!({
        "agent_id": agent.agent_id, "name": agent.name, "state": state_name(agent.state),
        "state_reason": agent.state_reason,
        "capabilities": agent.capabilities, "labels": agent.labels,
        "running_tasks": agent.running_tasks.len(), "max_concurrent_tasks": agent.max_concurrent_tasks,
    })
}
