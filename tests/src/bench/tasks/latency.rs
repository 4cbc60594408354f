//! Submit-to-assignment latency at a fixed, moderate rate: an open loop submits one-task jobs
//! on a timer (late submits are not skipped, so a slow cluster cannot slow the load down) and
//! the fleet records, for each task, the time from just before its submit call to its
//! handler starting on an agent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;
use synod_sdk::proto as pb;
use synod_sdk::Client;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::fleet::AssignmentClock;
use super::jobs::noop_job;

/// What to submit.
#[derive(Debug, Clone)]
pub struct LatencyPlan {
    /// Tasks per second.
    pub rate: u32,
    /// Seconds at the rate before measuring.
    pub warmup: Duration,
    /// Seconds measured.
    pub measure: Duration,
    /// Connections the submits are spread over.
    pub connections: usize,
    /// How tasks are placed.
    pub strategy: pb::AssignmentStrategy,
}

/// Latencies of one run, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    /// Tasks per second offered.
    pub rate: u32,
    /// Tasks whose assignment was measured.
    pub tasks: u64,
    /// Submit-to-assignment percentiles.
    pub assign_p50_ms: f64,
    /// 99th percentile.
    pub assign_p99_ms: f64,
    /// 99.9th percentile.
    pub assign_p999_ms: f64,
    /// Worst.
    pub assign_max_ms: f64,
    /// Submit call (job committed) percentiles.
    pub submit_p50_ms: f64,
    /// 99th percentile of the submit call.
    pub submit_p99_ms: f64,
    /// Failed submits.
    pub errors: u64,
}

/// Runs the open loop against `leader_addrs`; `clock` is the fleet's.
pub async fn measure(
    plan: &LatencyPlan,
    leader_addrs: &[String],
    clock: Arc<AssignmentClock>,
) -> anyhow::Result<LatencyResult> {
    let clients = (0..plan.connections)
        .map(|_| Client::new(leader_addrs.to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let (errors_tx, mut errors_rx) = mpsc::unbounded_channel::<String>();
    let submits = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
    ));
    let period = Duration::from_secs_f64(1.0 / f64::from(plan.rate));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);

    let started = Instant::now();
    let end = started + plan.warmup + plan.measure;
    let mut measuring = false;
    let mut measured_submits = 0u64;
    let mut sent = 0usize;
    while Instant::now() < end {
        ticker.tick().await;
        if !measuring && started.elapsed() >= plan.warmup {
            clock.measure_from_now();
            measuring = true;
        }
        let client = clients[sent % clients.len()].clone();
        sent += 1;
        let spec = noop_job(
            format!("latency-{sent}"),
            vec![clock.stamp()],
            plan.strategy,
        );
        let errors = errors_tx.clone();
        let submits = measuring.then(|| submits.clone());
        tokio::spawn(async move {
            let begun = Instant::now();
            match client.submit_job(spec, String::new()).await {
                Ok(_) => {
                    if let Some(submits) = submits {
                        let micros = begun.elapsed().as_micros() as u64;
                        let _ = submits.lock().expect("histogram").record(micros.max(1));
                    }
                }
                Err(error) => {
                    let _ = errors.send(error.to_string());
                }
            }
        });
        if measuring {
            measured_submits += 1;
        }
    }
    drop(errors_tx);
    let mut errors = 0;
    while let Ok(error) = errors_rx.try_recv() {
        if errors == 0 {
            eprintln!("  submit failed: {error}");
        }
        errors += 1;
    }
    wait_assigned(&clock, measured_submits.saturating_sub(errors))
        .await
        .context("waiting for the measured tasks to be assigned")?;
    let latencies = clock.latencies();
    let ms = |quantile: f64| latencies.value_at_quantile(quantile) as f64 / 1000.0;
    let submits = submits.lock().expect("histogram").clone();
    let submit_ms = |quantile: f64| submits.value_at_quantile(quantile) as f64 / 1000.0;
    Ok(LatencyResult {
        rate: plan.rate,
        tasks: latencies.len(),
        assign_p50_ms: ms(0.5),
        assign_p99_ms: ms(0.99),
        assign_p999_ms: ms(0.999),
        assign_max_ms: latencies.max() as f64 / 1000.0,
        submit_p50_ms: submit_ms(0.5),
        submit_p99_ms: submit_ms(0.99),
        errors,
    })
}

/// Waits (up to 30 s) until at least `count` assignments were recorded.
async fn wait_assigned(clock: &AssignmentClock, count: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recorded = clock.recorded();
        if recorded >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{recorded} of {count} tasks assigned after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
