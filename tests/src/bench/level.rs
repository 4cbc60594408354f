//! One measured level: a system under `writers` closed-loop writers for a warm-up and a
//! measured window, observed from outside (CPU of every process, the leader's log progress).
//!
//! ```text
//!   connect ─► spawn writers ─► sleep to window.start ─► sample ─► sleep to window.end ─► sample
//!                                                          └──────── diff ──────────┘
//! ```

use serde::Serialize;

use super::cpu::{CpuSample, CpuUsage};
use super::load::{self, LoadPlan, LoadTally, Window};
use super::system::{LogProgress, ServerProcess, System};

/// Results of one level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    /// Concurrent writers.
    pub writers: usize,
    /// Client connections they shared.
    pub connections: usize,
    /// Puts acknowledged inside the window.
    pub ops: u64,
    /// Acknowledged puts per second.
    pub ops_per_sec: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
    /// Slowest counted put.
    pub max_ms: f64,
    /// Failed or timed-out puts.
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Commands per Raft entry on the leader during the window, when observable.
    pub commands_per_entry: Option<f64>,
    /// CPU used during the window.
    pub cpu: CpuUsage,
}

/// Runs `plan` against `system` with one connection per `writers_per_connection` writers.
pub async fn measure<S: System>(
    system: &S,
    plan: &LoadPlan,
    writers_per_connection: usize,
) -> anyhow::Result<LevelResult> {
    let connections = plan.writers.div_ceil(writers_per_connection.max(1));
    let leader = system.leader().await?;
    let writers = system.connect(leader, connections).await?;
    let processes = system.processes(leader).await?;
    let mut pids: Vec<u32> = processes.iter().map(|p| p.pid).collect();
    pids.push(std::process::id());

    // Log progress is read before and after the load, not at the window's edges: reading it
    // costs the servers CPU. The commands-per-entry ratio does not depend on the interval.
    let log_before = system.progress(leader).await;
    let window = Window::after_warmup(plan);
    let tasks = load::spawn(plan, &writers, window)?;
    tokio::time::sleep_until(window.start).await;
    let cpu_before = CpuSample::take(&pids);
    tokio::time::sleep_until(window.end).await;
    let cpu_after = CpuSample::take(&pids);
    let tally = load::collect(tasks).await?;
    let log_after = system.progress(leader).await;

    let mut result = summarize(plan, connections, tally);
    result.cpu = cpu_usage(&processes, &cpu_before, &cpu_after);
    result.commands_per_entry = batch_size(log_before, log_after);
    Ok(result)
}

fn summarize(plan: &LoadPlan, connections: usize, tally: LoadTally) -> LevelResult {
    let ms = |quantile: f64| tally.latency_us.value_at_quantile(quantile) as f64 / 1000.0;
    LevelResult {
        writers: plan.writers,
        connections,
        ops: tally.ops,
        ops_per_sec: tally.ops as f64 / plan.measure.as_secs_f64(),
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: tally.latency_us.max() as f64 / 1000.0,
        errors: tally.errors,
        first_error: tally.first_error,
        commands_per_entry: None,
        cpu: CpuUsage::default(),
    }
}

fn cpu_usage(processes: &[ServerProcess], before: &CpuSample, after: &CpuSample) -> CpuUsage {
    let of = |leader: bool| -> Option<f64> {
        let selected = processes.iter().filter(|p| p.leader == leader);
        selected
            .map(|p| before.process_percent(after, p.pid))
            .sum::<Option<f64>>()
    };
    CpuUsage {
        leader_pct: of(true),
        followers_pct: of(false),
        bench_pct: before.process_percent(after, std::process::id()),
        machine_pct: before.machine_percent(after),
    }
}

fn batch_size(before: Option<LogProgress>, after: Option<LogProgress>) -> Option<f64> {
    let (before, after) = (before?, after?);
    let entries = after
        .entries
        .checked_sub(before.entries)
        .filter(|e| *e > 0)?;
    let commands = after.commands.checked_sub(before.commands)?;
    Some(commands as f64 / entries as f64)
}
