//! The closed-loop workload: `writers` tasks each put distinct keys back to back, sharing a few
//! connections. Puts that start after the warm-up and finish inside the measured window are
//! counted and their latencies go to one HDR histogram (microseconds).
//!
//! ```text
//!   start ── warm-up ──► window.start ───── measured ─────► window.end   (writers stop)
//!   writer i: loop { t0 = now; put("<prefix>/<i>/<seq>", payload); record if t0, t1 in window }
//! ```
//! Every loop is bounded: by the window's end, by a per-put timeout and by a count cap.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::system::Writer;

/// Longest a single put may take before it counts as an error.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed put, so a broken system is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Most puts one writer issues in one run.
const PUTS_PER_WRITER_MAX: u64 = 10_000_000;
/// Highest latency the histogram tracks, in microseconds.
const LATENCY_US_MAX: u64 = 60_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Concurrent closed-loop writers.
    pub writers: usize,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Length of the measured window.
    pub measure: Duration,
    /// Bytes per value.
    pub payload_bytes: usize,
    /// Prefix of every key written.
    pub key_prefix: String,
}

/// The measured window, shared by all writers.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When measuring starts.
    pub start: Instant,
    /// When measuring and writing stop.
    pub end: Instant,
}

impl Window {
    /// The window of `plan` if the load starts now.
    pub fn after_warmup(plan: &LoadPlan) -> Self {
        let start = Instant::now() + plan.warmup;
        Self {
            start,
            end: start + plan.measure,
        }
    }

    fn contains(&self, began: Instant, ended: Instant) -> bool {
        began >= self.start && ended <= self.end
    }
}

/// Counts and latencies of one run.
pub struct LoadTally {
    /// Puts acknowledged inside the window.
    pub ops: u64,
    /// Puts that failed or timed out (whole run, warm-up included).
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Latency of each counted put, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl LoadTally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ops: 0,
            errors: 0,
            first_error: None,
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?,
        })
    }

    fn merge(&mut self, other: LoadTally) -> anyhow::Result<()> {
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency_us.add(&other.latency_us)?;
        Ok(())
    }

    fn record_error(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// Starts `plan.writers` writer tasks over `connections` (round-robin) for `window`.
/// Await the returned set with [`collect`].
pub fn spawn<W: Writer>(
    plan: &LoadPlan,
    connections: &[W],
    window: Window,
) -> anyhow::Result<JoinSet<anyhow::Result<LoadTally>>> {
    anyhow::ensure!(!connections.is_empty(), "no connections to write through");
    let payload: Arc<[u8]> = (0..plan.payload_bytes).map(|i| (i % 251) as u8).collect();
    let mut tasks = JoinSet::new();
    for id in 0..plan.writers {
        let writer = connections[id % connections.len()].clone();
        let prefix = format!("{}/{id:04}", plan.key_prefix);
        tasks.spawn(write_loop(writer, prefix, payload.clone(), window));
    }
    Ok(tasks)
}

/// Waits for every writer and merges their tallies.
pub async fn collect(mut tasks: JoinSet<anyhow::Result<LoadTally>>) -> anyhow::Result<LoadTally> {
    let mut total = LoadTally::new()?;
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined??)?;
    }
    Ok(total)
}

async fn write_loop<W: Writer>(
    writer: W,
    prefix: String,
    payload: Arc<[u8]>,
    window: Window,
) -> anyhow::Result<LoadTally> {
    let mut tally = LoadTally::new()?;
    for seq in 0..PUTS_PER_WRITER_MAX {
        let began = Instant::now();
        if began >= window.end {
            break;
        }
        let put = writer.put(format!("{prefix}/{seq:09}"), payload.to_vec());
        let result = tokio::time::timeout(PUT_TIMEOUT, put).await;
        let ended = Instant::now();
        match result {
            Ok(Ok(())) if window.contains(began, ended) => {
                tally.ops += 1;
                let micros = (ended - began).as_micros();
                tally.latency_us.saturating_record(micros.max(1) as u64);
            }
            Ok(Ok(())) => {}
            Ok(Err(error)) => fail(&mut tally, format!("{error:#}")).await,
            Err(_) => fail(&mut tally, format!("put timed out after {PUT_TIMEOUT:?}")).await,
        }
    }
    Ok(tally)
}

async fn fail(tally: &mut LoadTally, error: String) {
    tally.record_error(error);
    tokio::time::sleep(ERROR_PAUSE).await;
}
