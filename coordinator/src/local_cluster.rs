//! A cluster of real `synod server` processes on loopback, each with its own data directory:
//! used by `synod demo`, the multi-process tests and the benchmarks.
//!
//! Nodes are real child processes: `kill` sends SIGKILL, `terminate` SIGTERM, and `restart`
//! starts the same node again from its data directory. Every node's output goes to
//! `<root>/node-<id>.log`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use synod_sdk::Client;

/// Log lines of each node that a failed wait reports.
pub const LOG_TAIL_LINES: usize = 8;

/// Settings passed to every node of a [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Snapshot every this many log entries.
    pub snapshot_logs: u64,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound (upper bound is twice this).
    pub election_timeout_min_ms: u64,
    /// Log filter of the nodes.
    pub log: String,
    /// How long a ready task no live agent could take waits before it ends unsatisfiable.
    pub unsatisfiable_ms: u64,
    /// Failed attempts in a row that quarantine an agent.
    pub breaker_failures: u32,
    /// How long a quarantine lasts.
    pub breaker_cooldown_ms: u64,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            snapshot_logs: 20_000,
            heartbeat_ms: 50,
            election_timeout_min_ms: 200,
            log: "info".into(),
            unsatisfiable_ms: 30_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
        }
    }
}

struct LocalNode {
    addr: String,
    data_dir: PathBuf,
    initial_members: String,
    child: Option<Child>,
}

/// Real coordinator processes on 127.0.0.1.
pub struct LocalCluster {
    binary: PathBuf,
    root: PathBuf,
    _temp: Option<tempfile::TempDir>,
    options: NodeOptions,
    nodes: BTreeMap<u64, LocalNode>,
}

impl LocalCluster {
    /// Starts nodes `1..=size` of a new cluster from `binary`, with data under a fresh
    /// temporary directory.
    pub fn start(binary: &Path, size: u64, options: NodeOptions) -> anyhow::Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("synod-cluster-")
            .tempdir()?;
        let mut cluster = Self {
            binary: binary.to_path_buf(),
            root: temp.path().to_path_buf(),
            _temp: Some(temp),
            options,
            nodes: BTreeMap::new(),
        };
        let addrs: BTreeMap<u64, String> = (1..=size)
            .map(|id| Ok((id, free_addr()?)))
            .collect::<anyhow::Result<_>>()?;
        let members = addrs
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",");
        for (id, addr) in addrs {
            cluster.add_node(id, addr, members.clone())?;
        }
        Ok(cluster)
    }

    /// Keeps the data directories after drop (for inspection).
    pub fn keep_data(&mut self) -> PathBuf {
        if let Some(temp) = self._temp.take() {
            let _ = temp.keep();
        }
        self.root.clone()
    }

    /// Starts a new node that is not an initial member; it joins with add-learner.
    pub fn start_joiner(&mut self, id: u64) -> anyhow::Result<String> {
        if self.nodes.contains_key(&id) {
            bail!("node {id} exists already");
        }
        let addr = free_addr()?;
        self.add_node(id, addr.clone(), String::new())?;
        Ok(addr)
    }

    fn add_node(&mut self, id: u64, addr: String, initial_members: String) -> anyhow::Result<()> {
        let node = LocalNode {
            addr,
            data_dir: self.root.join(format!("node-{id}")),
            initial_members,
            child: None,
        };
        self.nodes.insert(id, node);
        self.restart(id)
    }

    /// Ids of all nodes ever started.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Ids of nodes whose process is running.
    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Address of node `id`.
    pub fn addr(&self, id: u64) -> &str {
        &self.nodes[&id].addr
    }

    /// Addresses of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    /// Process id of node `id` while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(Child::id)
    }

    /// Root directory holding data directories and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A client that may use any node.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(self.addrs())?)
    }

    /// Starts node `id` (again) from its data directory.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let options = self.options.clone();
        let binary = self.binary.clone();
        let node = self.nodes.get_mut(&id).context("unknown node")?;
        if node.child.is_some() {
            bail!("node {id} is running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.data_dir.with_extension("log"))?;
        let mut command = Command::new(&binary);
        command
            .arg("server")
            .args(["--id", &id.to_string(), "--listen", &node.addr])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--snapshot-logs", &options.snapshot_logs.to_string()])
            .args(["--heartbeat-ms", &options.heartbeat_ms.to_string()])
            .args([
                "--election-timeout-min-ms",
                &options.election_timeout_min_ms.to_string(),
            ])
            .args([
                "--election-timeout-max-ms",
                &(options.election_timeout_min_ms * 2).to_string(),
            ])
            .args(["--unsatisfiable-ms", &options.unsatisfiable_ms.to_string()])
            .args(["--breaker-failures", &options.breaker_failures.to_string()])
            .args([
                "--breaker-cooldown-ms",
                &options.breaker_cooldown_ms.to_string(),
            ])
            .args(["--log", &options.log])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !node.initial_members.is_empty() {
            command.args(["--initial-members", &node.initial_members]);
        }
        node.child = Some(
            command
                .spawn()
                .with_context(|| format!("spawn {}", binary.display()))?,
        );
        Ok(())
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).context("unknown node")?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends SIGTERM to node `id` and waits for it to exit; returns its exit status.
    pub fn terminate(&mut self, id: u64) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(id, "-TERM")?;
        let node = self.nodes.get_mut(&id).context("unknown node")?;
        let mut child = node.child.take().context("node is not running")?;
        Ok(child.wait()?)
    }

    /// Freezes node `id` (SIGSTOP): it keeps its connections but answers nothing, like a node
    /// whose disk or CPU stalls, until [`Self::resume`].
    pub fn pause(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "-STOP")
    }

    /// Lets a node frozen by [`Self::pause`] run again (SIGCONT).
    pub fn resume(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "-CONT")
    }

    fn signal(&self, id: u64, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid(id).context("node is not running")?;
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {signal} {pid} failed");
        }
        Ok(())
    }

    /// The last `lines` lines of each node's log, for the message of a failed wait.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for id in self.nodes.keys() {
            let log = self.root.join(format!("node-{id}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            let state = match self.pid(*id) {
                Some(pid) => format!("pid {pid}"),
                None => "stopped".into(),
            };
            out.push_str(&format!(
                "\n--- node {id} ({state}), last {} log lines:",
                tail.len()
            ));
            for line in tail {
                out.push_str("\n  ");
                out.push_str(line);
            }
        }
        out
    }

    /// Waits until every running node reports the same leader, itself running; returns it.
    /// On timeout the error carries what each node last answered and the tails of their logs.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let client = self.client()?;
        let running = self.running_ids();
        let answers = std::sync::Mutex::new(BTreeMap::new());
        let agreed = wait_until(timeout, "a leader all running nodes agree on", || async {
            let mut leader = None;
            for id in &running {
                let answer = client.status_of(self.addr(*id), false).await;
                let summary = match &answer {
                    Ok(s) => format!("leader {} at term {}", s.leader_id, s.term),
                    Err(e) => format!("error: {e}"),
                };
                answers.lock().expect("answers lock").insert(*id, summary);
                let status = answer.ok()?;
                let stale = !running.contains(&status.leader_id);
                if stale || leader.is_some_and(|l| l != status.leader_id) {
                    return None;
                }
                leader = Some(status.leader_id);
            }
            leader
        })
        .await;
        agreed.map_err(|error| {
            let answers = answers.into_inner().expect("answers lock");
            anyhow::anyhow!(
                "{error}; last answers: {answers:?}{}",
                self.log_tails(LOG_TAIL_LINES)
            )
        })
    }

    /// Waits until the nodes `ids` have applied the same index with identical state digests,
    /// at or beyond `min_index`; returns (applied index, digest).
    pub async fn wait_converged(
        &self,
        ids: &[u64],
        min_index: u64,
        timeout: Duration,
    ) -> anyhow::Result<(u64, String)> {
        let client = self.client()?;
        wait_until(timeout, "replicas to converge", || async {
            let mut seen: Option<(u64, String)> = None;
            for id in ids {
                let status = client.status_of(self.addr(*id), true).await.ok()?;
                let this = (status.applied_index, status.state_digest);
                if this.0 < min_index || seen.as_ref().is_some_and(|s| *s != this) {
                    return None;
                }
                seen = Some(this);
            }
            seen
        })
        .await
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls `check` every 20 ms until it yields a value or `timeout` passes.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP address on 127.0.0.1 for a node to listen on.
///
/// A port the kernel hands out for binding to port 0 comes from its ephemeral range, from which
/// it also picks the local ports of outgoing connections: between this probe and the node's own
/// bind, a connection could take it, and the node would fail to start. So ports are taken
/// below the ephemeral range, in turn from a random start, each checked free by binding it;
/// only where that range leaves no room does this fall back to port 0.
pub fn free_addr() -> anyhow::Result<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    if let Some(ports) = ports_below_ephemeral() {
        let span = u32::from(ports.end - ports.start);
        let _ = NEXT.compare_exchange(
            0,
            rand::random_range(1..=span),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for _ in 0..256 {
            let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
            let port = ports.start + offset as u16;
            if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return Ok(listener.local_addr()?.to_string());
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// Ports below the kernel's ephemeral range (Linux), when at least 4096 fit above 10000.
fn ports_below_ephemeral() -> Option<std::ops::Range<u16>> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = range.split_whitespace().next()?.parse().ok()?;
    (low >= 14_096).then_some(10_000..low)
}
