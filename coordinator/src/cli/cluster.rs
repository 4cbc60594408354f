//! `synod cluster ...`: status and membership changes.

use clap::Subcommand;
use serde_json::json;
use synod_sdk::proto as pb;

use super::ClientArgs;

/// Cluster commands.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Members, roles, leader, term, commit/applied index and per-member health.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Show the answering member's own view instead of the leader's.
        #[arg(long)]
        local: bool,
    },
    /// Add a node as a non-voting learner and wait until it caught up.
    AddLearner {
        #[command(flatten)]
        client: ClientArgs,
        /// Id of the new node.
        #[arg(long)]
        id: u64,
        /// Address the new node listens at (host:port).
        #[arg(long)]
        node_addr: String,
        /// Return once the change is committed, without waiting for the learner to catch up.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make a learner a voter.
    Promote {
        #[command(flatten)]
        client: ClientArgs,
        /// Id of the learner.
        #[arg(long)]
        id: u64,
    },
    /// Remove a voter or learner.
    Remove {
        #[command(flatten)]
        client: ClientArgs,
        /// Id of the member.
        #[arg(long)]
        id: u64,
    },
}

/// Runs a cluster command.
pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status {
            client,
            json,
            local,
        } => {
            let status = client.client()?.status(!local).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
            } else {
                print_status(&status);
            }
        }
        ClusterCommand::AddLearner {
            client,
            id,
            node_addr,
            no_wait,
        } => {
            let response = client
                .client()?
                .add_learner(id, node_addr, !no_wait)
                .await?;
            print_membership("added learner", id, &response);
        }
        ClusterCommand::Promote { client, id } => {
            let response = client.client()?.promote(id).await?;
            print_membership("promoted", id, &response);
        }
        ClusterCommand::Remove { client, id } => {
            let response = client.client()?.remove(id).await?;
            print_membership("removed", id, &response);
        }
    }
    Ok(())
}

/// Lower-case name of a role.
pub fn role_name(role: i32) -> &'static str {
    match pb::MemberRole::try_from(role).unwrap_or(pb::MemberRole::Unspecified) {
        pb::MemberRole::Leader => "leader",
        pb::MemberRole::Follower => "follower",
        pb::MemberRole::Candidate => "candidate",
        pb::MemberRole::Learner => "learner",
        pb::MemberRole::Unspecified => "unknown",
    }
}

fn status_json(status: &pb::ClusterStatus) -> serde_json::Value {
    let members: Vec<_> = status
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "addr": m.addr, "role": role_name(m.role), "voter": m.voter,
                "matched_index": m.matched_index, "healthy": m.healthy, "health_detail": m.health_detail,
            })
        })
        .collect();
    json!({
        "leader": status.leader_id, "leader_addr": status.leader_addr, "term": status.term,
        "node_id": status.node_id, "role": role_name(status.role),
        "commit_index": status.commit_index, "applied_index": status.applied_index,
        "last_log_index": status.last_log_index, "snapshot_index": status.snapshot_index,
        "purged_index": status.purged_index, "commands_applied": status.commands_applied,
        "state_digest": status.state_digest, "version": status.version, "members": members,
    })
}

fn print_status(status: &pb::ClusterStatus) {
    println!(
        "leader {} ({})  term {}  commit {}  applied {}  (answered by node {})",
        status.leader_id,
        status.leader_addr,
        status.term,
        status.commit_index,
        status.applied_index,
        status.node_id
    );
    println!(
        "{:<4} {:<22} {:<10} {:<6} {:<10} HEALTH",
        "ID", "ADDRESS", "ROLE", "VOTER", "MATCHED"
    );
    for m in &status.members {
        let health = if m.healthy {
            "ok".to_owned()
        } else {
            format!("unhealthy: {}", m.health_detail)
        };
        let voter = if m.voter { "yes" } else { "no" };
        println!(
            "{:<4} {:<22} {:<10} {:<6} {:<10} {health}",
            m.id,
            m.addr,
            role_name(m.role),
            voter,
            m.matched_index
        );
    }
}

fn print_membership(action: &str, id: u64, response: &pb::MembershipResponse) {
    let index = response.write.as_ref().map_or(0, |w| w.log_index);
    println!(
        "{action} node {id} (log index {index}); voters {:?}, learners {:?}",
        response.voters, response.learners
    );
}
