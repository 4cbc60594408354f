//! CPU accounting from `/proc`: how much CPU the servers, the bench itself and the whole
//! machine used during a measured window. Linux only; on other systems samples are empty and
//! usage is reported as unknown.
//!
//! ```text
//!   before = CpuSample::take(pids)   …window…   after = CpuSample::take(pids)
//!   usage  = (after - before) / (wall time × ticks per second)   (100 % = one core)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Clock ticks per second of `/proc` counters (USER_HZ); 100 on every common Linux build.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU counters at one moment.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    /// Ticks used so far by each sampled process, by pid.
    process_ticks: BTreeMap<u32, u64>,
    /// (busy, total) ticks of the whole machine since boot.
    machine_ticks: Option<(u64, u64)>,
}

impl CpuSample {
    /// Reads the counters of `pids` and of the machine.
    pub fn take(pids: &[u32]) -> Self {
        let process_ticks = pids
            .iter()
            .filter_map(|pid| Some((*pid, process_ticks(*pid)?)))
            .collect();
        Self {
            at: Instant::now(),
            process_ticks,
            machine_ticks: machine_ticks(),
        }
    }

    /// CPU used by `pid` between `self` and the later `after`, in % of one core.
    pub fn process_percent(&self, after: &CpuSample, pid: u32) -> Option<f64> {
        let used = after.process_ticks.get(&pid)? - self.process_ticks.get(&pid)?;
        Some(percent(used, wall(self, after)))
    }

    /// CPU seconds `pids` used together between `self` and the later `after`; `None` when
    /// one of them was not sampled both times.
    pub fn seconds_used(&self, after: &CpuSample, pids: &[u32]) -> Option<f64> {
        pids.iter()
            .map(|pid| {
                let used = after.process_ticks.get(pid)? - self.process_ticks.get(pid)?;
                Some(used as f64 / TICKS_PER_SEC)
            })
            .sum()
    }

    /// Busy share of the whole machine between `self` and `after`, in % of all cores.
    pub fn machine_percent(&self, after: &CpuSample) -> Option<f64> {
        let (busy0, total0) = self.machine_ticks?;
        let (busy1, total1) = after.machine_ticks?;
        let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
        Some(100.0 * busy1.saturating_sub(busy0) as f64 / total as f64)
    }
}

fn wall(before: &CpuSample, after: &CpuSample) -> Duration {
    after.at - before.at
}

fn percent(ticks: u64, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64().max(1e-3);
    100.0 * ticks as f64 / TICKS_PER_SEC / secs
}

/// utime + stime of `pid`, from `/proc/<pid>/stat`.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing ')' start at 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// (busy, total) ticks of all CPUs, from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// The pid of a running process whose command line holds an argument equal to `arg`.
pub fn find_pid_with_arg(arg: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.filter_map(Result::ok).find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let found = cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes());
        found.then_some(pid)
    })
}

/// CPU used during a window, in % of one core (200 % = both cores of a 2-core machine).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUsage {
    /// The leader's process.
    pub leader_pct: Option<f64>,
    /// The followers' processes together.
    pub followers_pct: Option<f64>,
    /// The bench process (the clients).
    pub bench_pct: Option<f64>,
    /// The whole machine, in % of all cores (100 % = saturated).
    pub machine_pct: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_used_counts_the_cpu_a_process_burned_and_needs_every_pid_sampled() {
        let me = std::process::id();
        let before = CpuSample::take(&[me]);
        let started = std::time::Instant::now();
        let mut x = 0u64;
        // Spins until the counters show 0.1 s used; on a loaded machine that takes longer.
        let after = loop {
            let spin = std::time::Instant::now();
            while spin.elapsed() < Duration::from_millis(50) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let after = CpuSample::take(&[me]);
            let used = before
                .seconds_used(&after, &[me])
                .expect("sampled both times");
            if used >= 0.1 {
                break after;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{used} s of CPU after 30 s of spinning"
            );
        };
        assert_eq!(before.seconds_used(&after, &[me, u32::MAX]), None);
    }
}
