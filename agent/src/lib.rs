//! Synod's agent runtime as a program: agents described in a TOML file, each with handlers that
//! run a shell command (payload on stdin, output from stdout) or one of the built-in demo
//! handlers. `synod dev` and `synod demo` start the demo agents from here too.

#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
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
    let mut tasks = tokio::task::JoinSet::new();
    for agent in file.agents {
        for replica in 0..agent.replicas.max(1) {
            let builder = agent.builder(replica, &endpoints)?;
            let shutdown = shutdown.clone();
            tasks.spawn(async move { builder.run(shutdown).await });
        }
    }
    while let Some(finished) = tasks.join_next().await {
        finished??;
    }
    Ok(())
}

/// Builds one agent with the given handlers already attached (used by `synod dev`/`demo`).
pub fn agent(name: &str, endpoints: &[String]) -> AgentBuilder {
    AgentBuilder::new(name, endpoints.iter().cloned())
}
