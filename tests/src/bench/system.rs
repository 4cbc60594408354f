//! What the bench needs from a system under test: writers aimed at its leader, its server
//! processes (to sample CPU), and kill/restart of members for fail-over rounds. Implemented by
//! [`crate::bench::synod::SynodSystem`] and [`crate::bench::etcd::EtcdSystem`].

use std::future::Future;

/// A handle that puts one key and waits until the put is committed. Cheap to clone; clones
/// share one connection.
pub trait Writer: Clone + Send + Sync + 'static {
    /// Puts `key` = `value`; Ok once the system acknowledged the write as committed.
    fn put(&self, key: String, value: Vec<u8>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A server process of the system, for CPU sampling.
#[derive(Debug, Clone)]
pub struct ServerProcess {
    /// Operating-system process id.
    pub pid: u32,
    /// True for the member that led when the list was taken.
    pub leader: bool,
}

/// Log progress of the leader: how many entries and commands it has applied.
#[derive(Debug, Clone, Copy)]
pub struct LogProgress {
    /// Log entries applied.
    pub entries: u64,
    /// Commands applied (a batched entry holds many).
    pub commands: u64,
}

/// A replicated system the bench can load and break.
pub trait System {
    /// The writer type of this system.
    type Writer: Writer;

    /// Short name for reports ("synod", "etcd").
    fn name(&self) -> &'static str;

    /// Id of the current leader, waiting (bounded) until all running members agree on one.
    fn leader(&self) -> impl Future<Output = anyhow::Result<u64>>;

    /// `connections` independent writers (one connection each) aimed at member `leader`.
    fn connect(
        &self,
        leader: u64,
        connections: usize,
    ) -> impl Future<Output = anyhow::Result<Vec<Self::Writer>>>;

    /// The running server processes; `leader` is the current leader's id.
    fn processes(&self, leader: u64) -> impl Future<Output = anyhow::Result<Vec<ServerProcess>>>;

    /// Applied entries and commands of member `leader`, when the system reports them. May be
    /// expensive on the server (Synod's status computes a state digest): call it outside
    /// measured windows.
    fn progress(&self, leader: u64) -> impl Future<Output = Option<LogProgress>>;

    /// A writer that uses only members other than `excluded`, already connected, with short
    /// attempt timeouts (for fail-over probes).
    fn probe_without(&self, excluded: u64) -> impl Future<Output = anyhow::Result<Self::Writer>>;

    /// Kills member `id` with SIGKILL.
    fn kill(&mut self, id: u64) -> anyhow::Result<()>;

    /// Restarts member `id` from its data directory and waits until it has caught up.
    fn restart(&mut self, id: u64) -> impl Future<Output = anyhow::Result<()>>;
}
