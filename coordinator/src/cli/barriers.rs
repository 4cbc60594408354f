//! `synod barrier status NAME`: a barrier's current generation and who arrived.

use clap::Subcommand;
use serde_json::json;
use synod_sdk::proto as pb;

use super::ClientArgs;

/// Barrier commands.
#[derive(Subcommand)]
pub enum BarrierCommand {
    /// Show a barrier's current generation and its parties.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// The barrier's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a barrier command.
pub async fn run(command: BarrierCommand) -> anyhow::Result<()> {
    match command {
        BarrierCommand::Status { client, name, json } => {
            let barrier = client.client()?.get_barrier(&name).await?;
            print(&barrier, json)
        }
    }
}

fn name_of<E: TryFrom<i32>>(
    value: i32,
    prefix: &str,
    describe: impl Fn(E) -> &'static str,
) -> String {
    E::try_from(value)
        .map(|v| describe(v).trim_start_matches(prefix).to_lowercase())
        .unwrap_or_else(|_| format!("{value}"))
}

fn print(barrier: &pb::Barrier, as_json: bool) -> anyhow::Result<()> {
    let state = name_of(barrier.state, "BARRIER_STATE_", |s: pb::BarrierState| {
        s.as_str_name()
    });
    let kind = name_of(barrier.kind, "BARRIER_KIND_", |k: pb::BarrierKind| {
        k.as_str_name()
    });
    if as_json {
        let value = json!({
            "name": barrier.name, "kind": kind, "state": state,
            "generation": barrier.generation, "party_count": barrier.party_count,
            "party_ids": barrier.party_ids, "arrived": barrier.arrived_party_ids,
            "left": barrier.left_party_ids, "cyclic": barrier.cyclic,
            "timeout_ms": barrier.timeout_ms, "broken_reason": barrier.broken_reason,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "barrier {} ({kind}{}): generation {} {state}",
        barrier.name,
        if barrier.cyclic { ", cyclic" } else { "" },
        barrier.generation
    );
    println!(
        "  arrived {} of {}: {}",
        barrier.arrived_party_ids.len(),
        barrier.party_count,
        barrier.arrived_party_ids.join(", ")
    );
    if !barrier.left_party_ids.is_empty() {
        println!("  left: {}", barrier.left_party_ids.join(", "));
    }
    if !barrier.broken_reason.is_empty() {
        println!("  broken: {}", barrier.broken_reason);
    }
    Ok(())
}
