//! A one-node Synod cluster inside this process, on a free loopback port with its data in a
//! temporary directory removed when it stops: what `synod dev` runs, without the binary.

use anyhow::Context;
use synod_coordinator::config::{Config, RaftSettings};
use synod_coordinator::local_cluster::free_addr;
use synod_coordinator::node::{self, NodeError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running in-process node.
pub struct LocalNode {
    addr: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), NodeError>>,
    _data: tempfile::TempDir,
}

impl LocalNode {
    /// Starts the node and waits until it serves.
    pub async fn start() -> anyhow::Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("synod-federated-")
            .tempdir()?;
        let listen = free_addr()?;
        let config = Config {
            id: 1,
            listen: listen.clone(),
            data_dir: Some(data.path().to_path_buf()),
            initial_members: format!("1={listen}"),
            raft: RaftSettings {
                election_timeout_min_ms: 100,
                election_timeout_max_ms: 200,
                ..Default::default()
            },
            ..Config::default()
        }
        .validate()?;
        let (ready, bound) = tokio::sync::oneshot::channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(node::run(config, shutdown.clone(), Some(ready)));
        let addr = bound.await.context("the node stopped before serving")?;
        Ok(Self {
            addr: addr.to_string(),
            shutdown,
            task,
            _data: data,
        })
    }

    /// Where clients and agents reach it.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops it and waits until its log is flushed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?.context("the node failed")
    }
}
