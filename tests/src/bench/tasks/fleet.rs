//! The benchmark's agent fleet: SDK agents in the bench process, each with its own gRPC
//! session to the leader, running no-op tasks. A task whose payload carries its submit time
//! (see [`stamp`]) has its submit-to-assignment latency recorded when its handler starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use synod_sdk::agent::{AgentBuilder, Task, TaskOutcome};
use synod_sdk::Client;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Task kind the fleet runs.
pub const KIND: &str = "noop";
/// Capability every fleet agent advertises and every bench task requires.
pub const CAPABILITY: &str = "bench";

/// Submit-to-assignment latencies, in microseconds, against one shared clock.
pub struct AssignmentClock {
    epoch: Instant,
    /// Stamps earlier than this (µs since `epoch`) are not recorded.
    measure_from: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
}

impl AssignmentClock {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            measure_from: AtomicU64::new(0),
            latencies: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")),
        }
    }

    /// A payload carrying the current time, for a task about to be submitted.
    pub fn stamp(&self) -> Vec<u8> {
        self.now_us().to_le_bytes().to_vec()
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Forgets what was recorded and records only tasks stamped from now on.
    pub fn measure_from_now(&self) {
        self.measure_from.store(self.now_us(), Ordering::SeqCst);
        self.latencies.lock().expect("histogram").reset();
    }

    /// Assignments recorded since [`Self::measure_from_now`].
    pub fn recorded(&self) -> u64 {
        self.latencies.lock().expect("histogram").len()
    }

    /// Records the latency of a stamped payload (others are ignored).
    fn record(&self, payload: &[u8]) {
        let Ok(bytes) = <[u8; 8]>::try_from(payload) else {
            return;
        };
        let submitted = u64::from_le_bytes(bytes);
        if submitted < self.measure_from.load(Ordering::SeqCst) {
            return;
        }
        let now = self.now_us();
        let latency = now.saturating_sub(submitted).max(1);
        let _ = self.latencies.lock().expect("histogram").record(latency);
    }

    /// The latencies recorded since [`Self::measure_from_now`].
    pub fn latencies(&self) -> Histogram<u64> {
        self.latencies.lock().expect("histogram").clone()
    }
}

/// Running agents; stopped on drop.
pub struct Fleet {
    /// Where assignment latencies are recorded.
    pub clock: Arc<AssignmentClock>,
    shutdown: CancellationToken,
    agents: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts `count` agents taking up to `max_concurrent` tasks each, and waits until the
    /// cluster lists them all as connected.
    pub async fn start(
        endpoints: &[String],
        count: usize,
        max_concurrent: u32,
    ) -> anyhow::Result<Self> {
        let clock = Arc::new(AssignmentClock::new());
        let shutdown = CancellationToken::new();
        let agents = (0..count)
            .map(|i| {
                let handler_clock = clock.clone();
                let agent = AgentBuilder::new(format!("bench-{i:03}"), endpoints.to_vec())
                    .capability(CAPABILITY)
                    .max_concurrent(max_concurrent)
                    .handler(KIND, move |task: Task| {
                        handler_clock.record(&task.payload);
                        async { TaskOutcome::Succeeded(Vec::new()) }
                    });
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(error) = agent.run(shutdown).await {
                        eprintln!("bench agent {i} stopped: {error}");
                    }
                })
            })
            .collect();
        let fleet = Self {
            clock,
            shutdown,
            agents,
        };
        fleet.wait_connected(endpoints, count).await?;
        Ok(fleet)
    }

    async fn wait_connected(&self, endpoints: &[String], count: usize) -> anyhow::Result<()> {
        let client = Client::new(endpoints.to_vec())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let agents = client.list_agents().await.context("listing agents")?;
            let connected = agents
                .iter()
                .filter(|a| a.connected && a.capabilities.iter().any(|c| c == CAPABILITY))
                .count();
            if connected >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("only {connected} of {count} bench agents connected after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for agent in &self.agents {
            agent.abort();
        }
    }
}
