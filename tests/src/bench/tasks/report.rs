//! What `bench tasks` prints: each run, the medians across runs, the targets with
//! met/not met, and Ray's published figures for the same kind of machine. Pure formatting.

use serde::Serialize;

use super::latency::LatencyResult;
use super::throughput::ThroughputResult;

/// End-to-end tasks/s required on the reference 2-core machine.
const TARGET_TASKS_PER_SEC: f64 = 10_000.0;
/// p99 submit-to-assignment latency required at 1,000 tasks/s.
const TARGET_ASSIGN_P99_MS: f64 = 20.0;
/// Ray 2.60 running 100,000 no-op tasks on this kind of machine (no replication).
const RAY_TASKS_PER_SEC: (f64, f64) = (1_600.0, 3_700.0);

/// One run's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The throughput batch, unless skipped.
    pub throughput: Option<ThroughputResult>,
    /// The latency run, unless skipped.
    pub latency: Option<LatencyResult>,
}

impl RunResult {
    /// One line for progress output.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.throughput {
            parts.push(format!(
                "{:.0} tasks/s ({} tasks in {:.2} s, submitted in {:.2} s)",
                t.tasks_per_sec, t.tasks, t.seconds, t.submit_seconds
            ));
        }
        if let Some(l) = &self.latency {
            parts.push(format!(
                "assignment at {}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms (submit call p50 {:.2} ms, p99 {:.2} ms)",
                l.rate, l.assign_p50_ms, l.assign_p99_ms, l.assign_max_ms, l.submit_p50_ms, l.submit_p99_ms
            ));
        }
        parts.join("; ")
    }
}

/// Medians across runs.
#[derive(Debug, Clone, Serialize)]
pub struct Medians {
    /// Median tasks/s.
    pub tasks_per_sec: Option<f64>,
    /// Median p50 assignment latency, ms.
    pub assign_p50_ms: Option<f64>,
    /// Median p99 assignment latency, ms.
    pub assign_p99_ms: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct TasksReport {
    /// Flags of the run.
    pub settings: serde_json::Value,
    /// CPU model and cores.
    pub machine: String,
    /// Every run.
    pub runs: Vec<RunResult>,
    /// Their medians.
    pub medians: Medians,
}

impl TasksReport {
    /// Builds the report and its medians.
    pub fn new(settings: serde_json::Value, runs: Vec<RunResult>) -> Self {
        let throughput: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.throughput.as_ref().map(|t| t.tasks_per_sec))
            .collect();
        let p50: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.latency.as_ref().map(|l| l.assign_p50_ms))
            .collect();
        let p99: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.latency.as_ref().map(|l| l.assign_p99_ms))
            .collect();
        Self {
            settings,
            machine: crate::bench::report::machine(),
            medians: Medians {
                tasks_per_sec: median(throughput),
                assign_p50_ms: median(p50),
                assign_p99_ms: median(p99),
            },
            runs,
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = format!("\nmachine: {}\n\n", self.machine);
        out.push_str(&format!(
            "{:<4} {:>10} {:>8} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9} {:>7}\n",
            "run",
            "tasks/s",
            "tasks",
            "seconds",
            "rate/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors"
        ));
        for (i, run) in self.runs.iter().enumerate() {
            let t = run.throughput.as_ref();
            let l = run.latency.as_ref();
            let num = |v: Option<f64>, digits: usize| {
                v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
            };
            out.push_str(&format!(
                "{:<4} {:>10} {:>8} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9} {:>7}\n",
                i + 1,
                num(t.map(|t| t.tasks_per_sec), 0),
                t.map_or("-".into(), |t| t.tasks.to_string()),
                num(t.map(|t| t.seconds), 2),
                l.map_or("-".into(), |l| l.rate.to_string()),
                num(l.map(|l| l.assign_p50_ms), 2),
                num(l.map(|l| l.assign_p99_ms), 2),
                num(l.map(|l| l.assign_p999_ms), 2),
                num(l.map(|l| l.assign_max_ms), 1),
                l.map_or("-".into(), |l| l.errors.to_string()),
            ));
        }
        out.push_str(&self.target_lines());
        out
    }

    fn target_lines(&self) -> String {
        let mut out = String::from("\nmedians and targets (2-core reference machine):\n");
        if let Some(tps) = self.medians.tasks_per_sec {
            out.push_str(&format!(
                "  end-to-end throughput {tps:>9.0} tasks/s   target >= {TARGET_TASKS_PER_SEC:.0}: {}\n",
                verdict(tps >= TARGET_TASKS_PER_SEC)
            ));
            out.push_str(&format!(
                "  Ray 2.60, 100,000 no-op tasks, no replication: {:.0}-{:.0} tasks/s ({:.1}-{:.1}x slower)\n",
                RAY_TASKS_PER_SEC.0,
                RAY_TASKS_PER_SEC.1,
                tps / RAY_TASKS_PER_SEC.1,
                tps / RAY_TASKS_PER_SEC.0
            ));
        }
        if let (Some(p50), Some(p99)) = (self.medians.assign_p50_ms, self.medians.assign_p99_ms) {
            out.push_str(&format!(
                "  submit-to-assignment  p50 {p50:.2} ms, p99 {p99:.2} ms   target p99 < {TARGET_ASSIGN_P99_MS:.0} ms: {}\n",
                verdict(p99 < TARGET_ASSIGN_P99_MS)
            ));
        }
        out
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT MET"
    }
}

/// Median of `values`, None when there are none.
fn median(values: Vec<f64>) -> Option<f64> {
    (!values.is_empty()).then(|| crate::bench::failover::median(&values))
}
