//! Leader fail-over rounds: kill -9 the leader of an idle cluster, time until a client of the
//! surviving members gets its first put acknowledged, restart the killed member and wait until
//! it has caught up before the next round.
//!
//! ```text
//!   leader? ─► probe writer on survivors (connected) ─► SIGKILL ─┬─ put every 10 ms … ok ─► elapsed
//!                                                                └─ t0
//!   restart killed member ─► wait caught up ─► next round
//! ```
//! The probe starts a put every [`PROBE_INTERVAL`] without waiting for earlier ones (bounded in
//! number and time), so the measurement has that resolution whatever the client's retry timing.

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::system::{System, Writer};

/// Longest a fail-over may take before the round fails.
const PROBE_DEADLINE: Duration = Duration::from_secs(15);
/// Bound on one probe attempt (the writer's own retries included).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// A new probe attempt starts this often: the resolution of the measurement.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Most probe attempts outstanding at once.
const IN_FLIGHT_MAX: usize = 200;

/// Fail-over times of all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    /// Kill-to-first-acknowledged-write time of each round, in ms.
    pub rounds_ms: Vec<f64>,
    /// Median of the rounds.
    pub median_ms: f64,
    /// Slowest round.
    pub max_ms: f64,
}

/// Runs `rounds` fail-over rounds against `system`.
pub async fn measure<S: System>(system: &mut S, rounds: usize) -> anyhow::Result<FailoverResult> {
    let mut rounds_ms = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let elapsed = one_round(system, round).await?;
        rounds_ms.push(elapsed.as_secs_f64() * 1000.0);
    }
    Ok(FailoverResult {
        median_ms: median(&rounds_ms),
        max_ms: rounds_ms.iter().copied().fold(0.0, f64::max),
        rounds_ms,
    })
}

async fn one_round<S: System>(system: &mut S, round: usize) -> anyhow::Result<Duration> {
    let leader = system.leader().await?;
    let probe = system.probe_without(leader).await?;
    system.kill(leader)?;
    let killed_at = Instant::now();
    first_write(&probe, format!("bench-failover/{round}")).await?;
    let elapsed = killed_at.elapsed();
    eprintln!(
        "  {} fail-over round {}: killed member {leader}, first write after {} ms",
        system.name(),
        round + 1,
        elapsed.as_millis()
    );
    system.restart(leader).await?;
    Ok(elapsed)
}

/// Starts a put attempt every [`PROBE_INTERVAL`] (at most [`IN_FLIGHT_MAX`] outstanding, each
/// bounded by [`ATTEMPT_TIMEOUT`]) until one is acknowledged, so the result does not depend on
/// the client's retry timeouts: a put sent once the new leader is known succeeds at once.
async fn first_write<W: Writer>(probe: &W, key: String) -> anyhow::Result<()> {
    let deadline = Instant::now() + PROBE_DEADLINE;
    let mut attempts = JoinSet::new();
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut launched, mut last_error) = (0u64, String::from("no attempt finished"));
    loop {
        tokio::select! {
            _ = ticks.tick(), if attempts.len() < IN_FLIGHT_MAX => {
                let (probe, key) = (probe.clone(), format!("{key}/{launched}"));
                attempts.spawn(async move {
                    let put = probe.put(key, b"failover-probe".to_vec());
                    tokio::time::timeout(ATTEMPT_TIMEOUT, put).await
                });
                launched += 1;
            }
            Some(done) = attempts.join_next() => match done {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(error))) => last_error = format!("{error:#}"),
                Ok(Err(_)) => last_error = format!("attempt timed out after {ATTEMPT_TIMEOUT:?}"),
                Err(join) => last_error = join.to_string(),
            },
            _ = tokio::time::sleep_until(deadline) => bail!(
                "no write succeeded within {PROBE_DEADLINE:?} of the kill ({launched} attempts); \
                 last error: {last_error}"
            ),
        }
    }
}

/// Median of `values` (mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        let cases: [(&[f64], f64); 4] = [
            (&[], 0.0),
            (&[3.0], 3.0),
            (&[5.0, 1.0, 3.0], 3.0),
            (&[4.0, 1.0, 3.0, 2.0], 2.5),
        ];
        for (values, expected) in cases {
            assert_eq!(median(values), expected, "{values:?}");
        }
    }
}
