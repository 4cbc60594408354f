//! `synod agents list`: the registry of agents.

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
}

/// Runs an agents command.
pub async fn run(command: AgentsCommand) -> anyhow::Result<()> {
    let AgentsCommand::List {
        client,
        json: as_json,
    } = command;
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
        "capabilities": agent.capabilities, "labels": agent.labels,
        "running_tasks": agent.running_tasks.len(), "max_concurrent_tasks": agent.max_concurrent_tasks,
    })
}
