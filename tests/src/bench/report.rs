//! What the bench prints: a table of every level, fail-over times, Synod/etcd ratios, the
//! targets from the issue with met/not met, and (with `--json`) one JSON object of it all.
//! Pure formatting; no measuring happens here.

use serde::Serialize;

use super::failover::FailoverResult;
use super::level::LevelResult;

/// Targets on the reference 2-core machine.
const TARGET_OPS_AT_256: f64 = 30_000.0;
const TARGET_P99_MS_AT_64: f64 = 10.0;
const TARGET_FAILOVER_MS: f64 = 1_500.0;

/// Everything measured for one system.
#[derive(Debug, Clone, Serialize)]
pub struct SystemReport {
    /// "synod" or "etcd".
    pub system: String,
    /// One entry per writer count.
    pub levels: Vec<LevelResult>,
    /// Fail-over rounds, when run.
    pub failover: Option<FailoverResult>,
}

/// Synod relative to etcd at one writer count.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Concurrent writers.
    pub writers: usize,
    /// Synod ops/s divided by etcd ops/s (above 1: Synod is faster).
    pub throughput: f64,
    /// Synod p99 divided by etcd p99 (below 1: Synod is faster).
    pub p99: f64,
}

/// One target of the issue and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What was required.
    pub target: String,
    /// What this run measured.
    pub measured: String,
    /// Whether the measurement meets the target.
    pub met: bool,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Settings of the run (flags).
    pub settings: serde_json::Value,
    /// CPU model and core count.
    pub machine: String,
    /// Synod first, then etcd when it ran.
    pub systems: Vec<SystemReport>,
    /// Synod/etcd per writer count measured on both.
    pub ratios: Vec<Ratio>,
    /// The targets, checked against Synod.
    pub targets: Vec<TargetCheck>,
}

impl Report {
    /// Builds the report, deriving ratios and target checks.
    pub fn new(settings: serde_json::Value, machine: String, systems: Vec<SystemReport>) -> Self {
        let ratios = match systems.as_slice() {
            [synod, etcd, ..] => ratios(synod, etcd),
            _ => Vec::new(),
        };
        let targets = systems.first().map(targets).unwrap_or_default();
        Self {
            settings,
            machine,
            systems,
            ratios,
            targets,
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = format!("\nmachine: {}\n\n{}\n", self.machine, header());
        for system in &self.systems {
            for level in &system.levels {
                out.push_str(&row(&system.system, level));
            }
        }
        out.push_str(&failovers(&self.systems));
        out.push_str(&ratio_lines(&self.ratios));
        out.push_str(&target_lines(&self.targets));
        out
    }
}

fn header() -> String {
    format!(
        "{:<6} {:>7} {:>5} {:>9} {:>7} {:>7} {:>8} {:>8} {:>6} {:>10}  {}",
        "system",
        "writers",
        "conns",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "cmds/entry",
        "cpu % leader/followers/bench (machine busy %)"
    )
}

fn row(system: &str, level: &LevelResult) -> String {
    let pct = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0}"));
    let batch = level
        .commands_per_entry
        .map_or("-".into(), |b| format!("{b:.1}"));
    let mut line = format!(
        "{:<6} {:>7} {:>5} {:>9.0} {:>7.2} {:>7.2} {:>8.2} {:>8.1} {:>6} {:>10}  {}/{}/{} ({})\n",
        system,
        level.writers,
        level.connections,
        level.ops_per_sec,
        level.p50_ms,
        level.p99_ms,
        level.p999_ms,
        level.max_ms,
        level.errors,
        batch,
        pct(level.cpu.leader_pct),
        pct(level.cpu.followers_pct),
        pct(level.cpu.bench_pct),
        pct(level.cpu.machine_pct),
    );
    if let Some(error) = &level.first_error {
        line.push_str(&format!("       first error: {error}\n"));
    }
    line
}

fn failovers(systems: &[SystemReport]) -> String {
    let mut out = String::from("\nleader fail-over (kill -9 → first acknowledged write):\n");
    for system in systems {
        if let Some(f) = &system.failover {
            let rounds: Vec<String> = f.rounds_ms.iter().map(|r| format!("{r:.0}")).collect();
            out.push_str(&format!(
                "  {:<6} median {:.0} ms, max {:.0} ms (rounds: {} ms)\n",
                system.system,
                f.median_ms,
                f.max_ms,
                rounds.join(", ")
            ));
        }
    }
    out
}

fn ratios(synod: &SystemReport, etcd: &SystemReport) -> Vec<Ratio> {
    synod
        .levels
        .iter()
        .filter_map(|s| {
            let e = etcd.levels.iter().find(|e| e.writers == s.writers)?;
            Some(Ratio {
                writers: s.writers,
                throughput: s.ops_per_sec / e.ops_per_sec.max(f64::MIN_POSITIVE),
                p99: s.p99_ms / e.p99_ms.max(f64::MIN_POSITIVE),
            })
        })
        .collect()
}

fn ratio_lines(ratios: &[Ratio]) -> String {
    if ratios.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nsynod / etcd:\n");
    for r in ratios {
        out.push_str(&format!(
            "  {:>3} writers: throughput ×{:.2}, p99 ×{:.2}\n",
            r.writers, r.throughput, r.p99
        ));
    }
    out
}

fn targets(synod: &SystemReport) -> Vec<TargetCheck> {
    let level = |writers| synod.levels.iter().find(|l| l.writers == writers);
    let mut checks = Vec::new();
    if let Some(l) = level(256) {
        checks.push(TargetCheck {
            target: format!("≥ {TARGET_OPS_AT_256:.0} commands/s at 256 writers"),
            measured: format!("{:.0}/s", l.ops_per_sec),
            met: l.ops_per_sec >= TARGET_OPS_AT_256,
        });
    }
    if let Some(l) = level(64) {
        checks.push(TargetCheck {
            target: format!("p99 < {TARGET_P99_MS_AT_64} ms at 64 writers"),
            measured: format!("{:.2} ms", l.p99_ms),
            met: l.p99_ms < TARGET_P99_MS_AT_64,
        });
    }
    if let Some(f) = &synod.failover {
        checks.push(TargetCheck {
            target: format!("fail-over < {TARGET_FAILOVER_MS:.0} ms, every round"),
            measured: format!("median {:.0} ms, max {:.0} ms", f.median_ms, f.max_ms),
            met: f.max_ms < TARGET_FAILOVER_MS,
        });
    }
    checks
}

fn target_lines(checks: &[TargetCheck]) -> String {
    let mut out = String::from("\ntargets (synod):\n");
    for c in checks {
        let verdict = if c.met { "met" } else { "NOT met" };
        out.push_str(&format!(
            "  {:<40} {:<32} {verdict}\n",
            c.target, c.measured
        ));
    }
    out
}

/// CPU model and core count, from `/proc/cpuinfo` and the scheduler.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cpu::CpuUsage;

    fn level(writers: usize, ops_per_sec: f64, p99_ms: f64) -> LevelResult {
        LevelResult {
            writers,
            connections: 1,
            ops: 0,
            ops_per_sec,
            p50_ms: 0.0,
            p99_ms,
            p999_ms: 0.0,
            max_ms: 0.0,
            errors: 0,
            first_error: None,
            commands_per_entry: None,
            cpu: CpuUsage::default(),
        }
    }

    fn system(name: &str, levels: Vec<LevelResult>, failover_max_ms: f64) -> SystemReport {
        SystemReport {
            system: name.into(),
            levels,
            failover: Some(FailoverResult {
                rounds_ms: vec![failover_max_ms],
                median_ms: failover_max_ms,
                max_ms: failover_max_ms,
            }),
        }
    }

    #[test]
    fn targets_and_ratios_follow_the_measurements() {
        let synod = system(
            "synod",
            vec![level(64, 9_000.0, 9.0), level(256, 20_000.0, 30.0)],
            1_600.0,
        );
        let etcd = system("etcd", vec![level(256, 10_000.0, 60.0)], 500.0);
        let report = Report::new(serde_json::Value::Null, String::new(), vec![synod, etcd]);
        let met: Vec<bool> = report.targets.iter().map(|t| t.met).collect();
        assert_eq!(met, [false, true, false]);
        assert_eq!(report.ratios.len(), 1);
        assert_eq!(report.ratios[0].writers, 256);
        assert_eq!(report.ratios[0].throughput, 2.0);
        assert_eq!(report.ratios[0].p99, 0.5);
    }
}
