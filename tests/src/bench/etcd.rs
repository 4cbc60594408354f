//! etcd as a [`System`], for the side-by-side comparison: a 3-member etcd cluster of real
//! `etcd` processes on loopback (each with its own data directory, fsync on: etcd's default),
//! driven through [`EtcdWriter`]s (tonic clients of the etcd v3 API subset).
//!
//! The bench never installs etcd: [`find_etcd`] looks for it on `PATH`. Every process started
//! here is killed when the [`EtcdSystem`] is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use synod_coordinator::local_cluster::{free_addr, wait_until};
use tonic::transport::Channel;

use super::cpu::find_pid_with_arg;
use super::etcd_client::{connection, EtcdWriter};
use super::etcd_proto::maintenance_client::MaintenanceClient;
use super::etcd_proto::{StatusRequest, StatusResponse};
use super::system::{LogProgress, ServerProcess, System};

/// Members of the benchmarked cluster.
const CLUSTER_SIZE: usize = 3;
/// How long to wait for a healthy cluster or a caught-up member.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one status call.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Timeout of one put of the workload.
const PUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one put of the fail-over probe.
const PROBE_PUT_TIMEOUT: Duration = Duration::from_millis(250);

/// The `etcd` executable on `PATH`, if any.
pub fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
}

/// Raft timing given to every member.
#[derive(Debug, Clone, Copy)]
pub struct EtcdOptions {
    /// `--heartbeat-interval`, ms.
    pub heartbeat_ms: u64,
    /// `--election-timeout`, ms.
    pub election_timeout_ms: u64,
}

struct Member {
    name: String,
    client_addr: String,
    peer_addr: String,
    data_dir: PathBuf,
    /// etcd's member id, learned from the first status answer.
    member_id: u64,
    /// Shared channel for status calls.
    channel: Channel,
    child: Option<Child>,
}

/// A running etcd cluster under test. Members are numbered 1..=3.
pub struct EtcdSystem {
    binary: PathBuf,
    _temp: tempfile::TempDir,
    initial_cluster: String,
    options: EtcdOptions,
    members: Vec<Member>,
}

impl EtcdSystem {
    /// Starts a 3-member cluster of `binary` and waits until every member sees one leader.
    pub async fn start(binary: &Path, options: EtcdOptions) -> anyhow::Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("synod-bench-etcd-")
            .tempdir()?;
        let members = (1..=CLUSTER_SIZE)
            .map(|i| new_member(i, temp.path()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut system = Self {
            binary: binary.to_path_buf(),
            _temp: temp,
            initial_cluster,
            options,
            members,
        };
        for id in 1..=CLUSTER_SIZE as u64 {
            system.spawn(id)?;
        }
        system.learn_member_ids().await?;
        Ok(system)
    }

    fn member(&self, id: u64) -> anyhow::Result<&Member> {
        let index = (id as usize)
            .checked_sub(1)
            .context("member ids start at 1")?;
        self.members.get(index).context("unknown etcd member")
    }

    fn member_mut(&mut self, id: u64) -> anyhow::Result<&mut Member> {
        let index = (id as usize)
            .checked_sub(1)
            .context("member ids start at 1")?;
        self.members.get_mut(index).context("unknown etcd member")
    }

    fn running_ids(&self) -> Vec<u64> {
        (1..=self.members.len() as u64)
            .filter(|id| self.members[*id as usize - 1].child.is_some())
            .collect()
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let (binary, cluster, options) = (
            self.binary.clone(),
            self.initial_cluster.clone(),
            self.options,
        );
        let member = self.member_mut(id)?;
        if member.child.is_some() {
            bail!("etcd member {id} is running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(member.data_dir.with_extension("log"))?;
        let child = etcd_command(&binary, member, &cluster, options)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        member.child = Some(child);
        Ok(())
    }

    /// Waits until every member answers and agrees on a leader; records member ids.
    async fn learn_member_ids(&mut self) -> anyhow::Result<()> {
        let statuses = wait_until(
            CONVERGE_TIMEOUT,
            "etcd members to agree on a leader",
            || self.agreed_statuses(),
        )
        .await?;
        for (member, status) in self.members.iter_mut().zip(statuses) {
            member.member_id = status.header.map_or(0, |h| h.member_id);
        }
        Ok(())
    }

    /// Status of every running member when all of them name the same leader.
    async fn agreed_statuses(&self) -> Option<Vec<StatusResponse>> {
        let mut statuses = Vec::new();
        for id in self.running_ids() {
            let status = status(&self.member(id).ok()?.channel).await.ok()?;
            let leader = statuses
                .first()
                .map_or(status.leader, |s: &StatusResponse| s.leader);
            if status.leader == 0 || status.leader != leader {
                return None;
            }
            statuses.push(status);
        }
        Some(statuses)
    }

    fn id_of_member(&self, member_id: u64) -> Option<u64> {
        let index = self.members.iter().position(|m| m.member_id == member_id)?;
        Some(index as u64 + 1)
    }
}

fn new_member(index: usize, root: &Path) -> anyhow::Result<Member> {
    let client_addr = free_addr()?;
    let channel = connection(&client_addr, STATUS_TIMEOUT)?;
    Ok(Member {
        name: format!("m{index}"),
        peer_addr: free_addr()?,
        data_dir: root.join(format!("m{index}")),
        member_id: 0,
        client_addr,
        channel,
        child: None,
    })
}

fn etcd_command(binary: &Path, member: &Member, cluster: &str, options: EtcdOptions) -> Command {
    let client_url = format!("http://{}", member.client_addr);
    let peer_url = format!("http://{}", member.peer_addr);
    let mut command = Command::new(binary);
    command
        .args(["--name", &member.name])
        .arg("--data-dir")
        .arg(&member.data_dir)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", cluster])
        .args(["--initial-cluster-token", "synod-bench-etcd"])
        .args(["--initial-cluster-state", "new"])
        .args(["--heartbeat-interval", &options.heartbeat_ms.to_string()])
        .args([
            "--election-timeout",
            &options.election_timeout_ms.to_string(),
        ])
        .args(["--logger", "zap", "--log-level", "warn"]);
    command
}

async fn status(channel: &Channel) -> anyhow::Result<StatusResponse> {
    let mut client = MaintenanceClient::new(channel.clone());
    let response = tokio::time::timeout(STATUS_TIMEOUT, client.status(StatusRequest {})).await??;
    Ok(response.into_inner())
}

impl Drop for EtcdSystem {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl System for EtcdSystem {
    type Writer = EtcdWriter;

    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn leader(&self) -> anyhow::Result<u64> {
        let statuses = wait_until(CONVERGE_TIMEOUT, "an etcd leader", || {
            self.agreed_statuses()
        })
        .await?;
        let leader = statuses.first().map_or(0, |s| s.leader);
        self.id_of_member(leader)
            .with_context(|| format!("etcd leader {leader:x} is not a known member"))
    }

    async fn connect(&self, leader: u64, connections: usize) -> anyhow::Result<Vec<EtcdWriter>> {
        let leader_addr = self.member(leader)?.client_addr.clone();
        (0..connections)
            .map(|_| EtcdWriter::new(vec![connection(&leader_addr, PUT_TIMEOUT)?]))
            .collect()
    }

    async fn processes(&self, leader: u64) -> anyhow::Result<Vec<ServerProcess>> {
        self.running_ids()
            .into_iter()
            .map(|id| {
                let dir = self.member(id)?.data_dir.to_string_lossy().into_owned();
                let pid = find_pid_with_arg(&dir)
                    .with_context(|| format!("no process found for etcd member {id}"))?;
                Ok(ServerProcess {
                    pid,
                    leader: id == leader,
                })
            })
            .collect()
    }

    async fn progress(&self, _leader: u64) -> Option<LogProgress> {
        None
    }

    async fn probe_without(&self, excluded: u64) -> anyhow::Result<EtcdWriter> {
        let mut channels = Vec::new();
        for id in self.running_ids().into_iter().filter(|id| *id != excluded) {
            let channel = connection(&self.member(id)?.client_addr, PROBE_PUT_TIMEOUT)?;
            status(&channel).await?;
            channels.push(channel);
        }
        EtcdWriter::new(channels)
    }

    fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let member = self.member_mut(id)?;
        if let Some(mut child) = member.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)?;
        let leader = self.leader().await?;
        let target = status(&self.member(leader)?.channel).await?.raft_index;
        let channel = self.member(id)?.channel.clone();
        wait_until(
            CONVERGE_TIMEOUT,
            "the restarted etcd member to catch up",
            || async {
                let index = status(&channel).await.ok()?.raft_index;
                (index >= target).then_some(())
            },
        )
        .await
    }
}
