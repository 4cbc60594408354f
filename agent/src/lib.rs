//! Synod's agent runtime as a program: agents described in a TOML file, each with handlers that
//! run a shell command (payload on stdin, output from stdout) or one of the built-in demo
//! handlers. `synod dev` and `synod demo` start the demo agents from here too. An agent may also
//! campaign in elections and follow channels into local journals.

#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod journal;
pub mod participant;
pub mod shell;
pub mod triage;

use synod_sdk::agent::AgentBuilder;
use tokio_util::sync::CancellationToken;

/// Starts every agent of `file` (replicas included) and runs them until `shutdown`.
pub async fn run_agents(
    file: config::AgentFile,
    endpoints: Vec<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    for agent in file.agents {
        for replica in 0..agent.replicas.max(1) {
            let builder = agent.builder(replica, &endpoints)?;
            for campaign in &agent.campaigns {
                tokio::spawn(hold_leadership(builder.handle(), campaign.clone()));
            }
            for subscription in &agent.subscriptions {
                let handle = builder.handle();
                let subscription = subscription.clone();
                tasks.spawn(async move {
                    handle.agent_id().await;
                    journal::follow(handle.client()?, subscription).await?;
                    Ok(())
                });
            }
            let shutdown = shutdown.clone();
            tasks.spawn(async move { Ok(builder.run(shutdown).await?) });
        }
    }
    while let Some(finished) = tasks.join_next().await {
        finished??;
    }
    Ok(())
}

/// Campaigns as the agent once it registered, again whenever a campaign call fails; the
/// leadership then lasts until the agent resigns or is gone.
async fn hold_leadership(agent: synod_sdk::agent::AgentHandle, campaign: config::CampaignSection) {
    let agent_id = agent.agent_id().await;
    let Ok(client) = agent.client() else {
        return;
    };
    loop {
        let value = campaign.value.as_bytes();
        match client.campaign(&campaign.election, &agent_id, value).await {
            Ok(leadership) => {
                tracing::info!(election = %campaign.election, term = leadership.term, "leading");
                return;
            }
            Err(error) => {
                tracing::warn!(election = %campaign.election, %error, "campaign failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Builds one agent with the given handlers already attached (used by `synod dev`/`demo`).
pub fn agent(name: &str, endpoints: &[String]) -> AgentBuilder {
    AgentBuilder::new(name, endpoints.iter().cloned())
}
