//! Synod as a [`System`]: a 3-node [`LocalCluster`] of real `synod server` processes, written
//! through SDK [`Client`]s aimed at the leader. Also locates the `synod` binary.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use synod_coordinator::local_cluster::{LocalCluster, NodeOptions};
use synod_sdk::{Client, RetryPolicy};

use super::system::{LogProgress, ServerProcess, System, Writer};

/// Members of the benchmarked cluster.
const CLUSTER_SIZE: u64 = 3;
/// How long to wait for a leader or for a restarted member to catch up.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Synod cluster under test.
pub struct SynodSystem {
    cluster: LocalCluster,
}

impl SynodSystem {
    /// Starts a 3-node cluster of `binary` and waits for its leader.
    pub async fn start(binary: &Path, options: NodeOptions) -> anyhow::Result<Self> {
        let cluster = LocalCluster::start(binary, CLUSTER_SIZE, options)?;
        cluster.wait_for_leader(CONVERGE_TIMEOUT).await?;
        Ok(Self { cluster })
    }

    /// Addresses of the running members, `first` in front.
    fn addrs_from(&self, first: u64) -> Vec<String> {
        let mut ids = self.cluster.running_ids();
        ids.sort_by_key(|id| *id != first);
        ids.iter()
            .map(|id| self.cluster.addr(*id).to_owned())
            .collect()
    }
}

/// Puts through one SDK client (one HTTP/2 connection to the leader).
#[derive(Clone)]
pub struct SynodWriter {
    client: Client,
}

impl Writer for SynodWriter {
    fn put(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        let client = self.client.clone();
        async move {
            client.put(key, value).await?;
            Ok(())
        }
    }
}

/// Retry timing of the fail-over probe: short attempts, tight backoff.
fn probe_policy() -> RetryPolicy {
    RetryPolicy {
        deadline: Duration::from_secs(1),
        attempt_timeout: Duration::from_millis(250),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
    }
}

impl System for SynodSystem {
    type Writer = SynodWriter;

    fn name(&self) -> &'static str {
        "synod"
    }

    async fn leader(&self) -> anyhow::Result<u64> {
        self.cluster.wait_for_leader(CONVERGE_TIMEOUT).await
    }

    async fn connect(&self, leader: u64, connections: usize) -> anyhow::Result<Vec<SynodWriter>> {
        let addrs = self.addrs_from(leader);
        (0..connections)
            .map(|_| {
                let client = Client::new(addrs.clone())?;
                Ok(SynodWriter { client })
            })
            .collect()
    }

    async fn processes(&self, leader: u64) -> anyhow::Result<Vec<ServerProcess>> {
        self.cluster
            .running_ids()
            .into_iter()
            .map(|id| {
                let pid = self
                    .cluster
                    .pid(id)
                    .with_context(|| format!("node {id} is not running"))?;
                Ok(ServerProcess {
                    pid,
                    leader: id == leader,
                })
            })
            .collect()
    }

    async fn progress(&self, leader: u64) -> Option<LogProgress> {
        let client = self.cluster.client().ok()?;
        let status = client
            .status_of(self.cluster.addr(leader), false)
            .await
            .ok()?;
        Some(LogProgress {
            entries: status.applied_index,
            commands: status.commands_applied,
        })
    }

    async fn probe_without(&self, excluded: u64) -> anyhow::Result<SynodWriter> {
        let survivors: Vec<String> = self.addrs_from(excluded).into_iter().skip(1).collect();
        let client = Client::with_policy(survivors.clone(), probe_policy())?;
        for addr in &survivors {
            client.status_of(addr, false).await?;
        }
        Ok(SynodWriter { client })
    }

    fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.cluster.kill(id)
    }

    async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.cluster.restart(id)?;
        self.cluster.wait_for_leader(CONVERGE_TIMEOUT).await?;
        let committed = self.cluster.client()?.status(true).await?.commit_index;
        let ids = self.cluster.running_ids();
        self.cluster
            .wait_converged(&ids, committed, CONVERGE_TIMEOUT)
            .await?;
        Ok(())
    }
}
