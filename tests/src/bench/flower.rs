//! Flower as the reference of the `federated` bench: a private virtualenv with a pinned `flwr`,
//! and one run of `bench/flower_baseline.py` (FedAvg over Flower's legacy gRPC streaming path,
//! N clients × P float32 parameters, trivial local training), parsed from its JSON line.
//!
//! ```text
//!   ensure_flower_env(dir) ── python3 -m venv dir; dir/bin/python -m pip install flwr==1.41.0
//!          │                   (skipped when dir/bin/python already imports that version)
//!          ▼
//!   run_flower(python, script, opts) ── python flower_baseline.py --participants N …
//!          │     the script spawns and supervises the server and client processes itself
//!          │     (server pinned alone to the first CPU, clients on the others);
//!          │     stdout: one JSON line, stderr: progress (passed through)
//!          ▼
//!   FlowerResult { seconds_per_round_median, server_peak_rss_bytes, … }
//! ```
//!
//! Installing is the only network access of the bench, and only `ensure_flower_env` does it.
//! `run_flower` blocks the calling thread (call it from `spawn_blocking` in async code); on
//! timeout it kills the script, whose children die with it (they ask the kernel for
//! `PR_SET_PDEATHSIG`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

/// The `flwr` release the comparison is pinned to.
pub const FLWR_VERSION: &str = "1.41.0";
/// The baseline script, relative to the tests crate root.
const SCRIPT_RELATIVE_PATH: &str = "bench/flower_baseline.py";
/// Time for the script to start the server and import flwr in every client process.
const STARTUP_BUDGET: Duration = Duration::from_secs(180);
/// Time allowed per round on top of the per-parameter share below.
const ROUND_BUDGET_BASE: Duration = Duration::from_secs(30);
/// Time allowed per round for each parameter of each participant, ns (Flower on 2 cores needs
/// about 30 ns; this leaves a wide margin).
const ROUND_BUDGET_PER_CLIENT_PARAM_NS: u64 = 300;
/// How often `run_flower` checks whether the script has exited.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One Flower run: the workload and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowerOptions {
    /// Clients taking part in every round (N).
    pub participants: usize,
    /// float32 parameters of the model (P), one tensor.
    pub params: usize,
    /// Timed rounds.
    pub rounds: usize,
    /// Rounds run before the timed ones and left out of the result.
    pub warmup: usize,
}

impl FlowerOptions {
    /// Rejects workloads the script cannot run.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.participants >= 1, "participants must be at least 1");
        ensure!(self.params >= 1, "params must be at least 1");
        ensure!(self.rounds >= 1, "rounds must be at least 1");
        Ok(())
    }

    /// How long a whole run may take before it is killed.
    pub fn timeout(&self) -> Duration {
        let client_params = (self.participants as u64).saturating_mul(self.params as u64);
        let per_round = ROUND_BUDGET_BASE
            + Duration::from_nanos(client_params.saturating_mul(ROUND_BUDGET_PER_CLIENT_PARAM_NS));
        let rounds = u32::try_from(self.rounds + self.warmup).unwrap_or(u32::MAX);
        STARTUP_BUDGET + per_round.saturating_mul(rounds)
    }

    fn script_args(&self) -> Vec<String> {
        [
            ("--participants", self.participants),
            ("--params", self.params),
            ("--rounds", self.rounds),
            ("--warmup", self.warmup),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
    }
}

/// What the baseline script measured, as it prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowerResult {
    /// Always "flower".
    pub system: String,
    /// `flwr.__version__` of the server.
    pub flwr_version: String,
    /// numpy and grpcio the server ran with (pip resolves them; they move the numbers too).
    #[serde(default)]
    pub numpy_version: Option<String>,
    #[serde(default)]
    pub grpcio_version: Option<String>,
    pub participants: usize,
    pub params: usize,
    /// Timed rounds.
    pub rounds: usize,
    /// Median of `seconds_per_round`.
    pub seconds_per_round_median: f64,
    /// Wall time of every timed round, measured in the server (end of one aggregation to the
    /// end of the next).
    pub seconds_per_round: Vec<f64>,
    /// High-water mark of the server process's resident memory (VmHWM).
    pub server_peak_rss_bytes: u64,
    /// Resident memory of the server before any client connected.
    #[serde(default)]
    pub server_idle_rss_bytes: Option<u64>,
    /// Median CPU time the server process used per timed round.
    #[serde(default)]
    pub server_cpu_seconds_per_round_median: Option<f64>,
    /// Processes the client threads ran in.
    #[serde(default)]
    pub client_procs: Option<usize>,
    /// True when the server had the first CPU to itself and the clients the others (the
    /// script's default on machines with two or more CPUs).
    #[serde(default)]
    pub pinned: Option<bool>,
    /// CPU time all client processes together used per timed round (mean).
    #[serde(default)]
    pub clients_cpu_seconds_per_round: Option<f64>,
    /// Busy share of the whole machine during the timed rounds, % of all cores.
    #[serde(default)]
    pub machine_busy_percent: Option<f64>,
    /// Share of the machine's CPU used by processes outside the run during the timed rounds,
    /// % of all cores; high means the numbers are noisy.
    #[serde(default)]
    pub foreign_cpu_percent: Option<f64>,
    /// Wall time of the whole script run.
    #[serde(default)]
    pub wall_seconds: Option<f64>,
}

/// `bench/flower_baseline.py` of this crate.
pub fn baseline_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT_RELATIVE_PATH)
}

/// A virtualenv at `dir` with `flwr` [`FLWR_VERSION`]; returns its python. Creates the venv
/// and installs only when `dir` does not already hold a python importing that version.
pub fn ensure_flower_env(dir: &Path) -> anyhow::Result<PathBuf> {
    let python = dir.join("bin").join("python");
    if installed_flwr_version(&python).as_deref() == Some(FLWR_VERSION) {
        return Ok(python);
    }
    if !python.is_file() {
        eprintln!("creating a Python virtualenv in {}", dir.display());
        run_to_stderr(Command::new("python3").arg("-m").arg("venv").arg(dir))
            .context("python3 -m venv (is python3 with the venv module installed?)")?;
    }
    eprintln!("installing flwr=={FLWR_VERSION} into {}", dir.display());
    run_to_stderr(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
        &format!("flwr=={FLWR_VERSION}"),
    ]))
    .context("pip install flwr")?;
    match installed_flwr_version(&python) {
        Some(version) if version == FLWR_VERSION => Ok(python),
        other => bail!("flwr {FLWR_VERSION} not importable after install (found {other:?})"),
    }
}

/// `flwr.__version__` as seen by `python`, if it runs and imports flwr.
fn installed_flwr_version(python: &Path) -> Option<String> {
    if !python.is_file() {
        return None;
    }
    let output = Command::new(python)
        .args(["-c", "import flwr; print(flwr.__version__)"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let version = String::from_utf8(output.stdout).ok()?;
    output.status.success().then(|| version.trim().to_string())
}

/// Runs `command` to completion with its output on our stderr (keeps stdout for reports).
fn run_to_stderr(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("spawn {:?}", command.get_program()))?;
    ensure!(
        status.success(),
        "{:?} failed: {status}",
        command.get_program()
    );
    Ok(())
}

/// Runs the baseline `script` with `python` for `opts` and returns what it measured. Blocks
/// for the whole run, at most [`FlowerOptions::timeout`].
pub fn run_flower(
    python: &Path,
    script: &Path,
    opts: &FlowerOptions,
) -> anyhow::Result<FlowerResult> {
    opts.validate()?;
    let timeout = opts.timeout();
    let mut child = Command::new(python)
        .arg(script)
        .args(opts.script_args())
        // The script gives up a little earlier, so it can clean up and say why.
        .arg("--timeout-s")
        .arg(
            timeout
                .saturating_sub(Duration::from_secs(10))
                .as_secs()
                .to_string(),
        )
        .env("FLWR_TELEMETRY_ENABLED", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawn {} {}", python.display(), script.display()))?;
    let status = wait_with_deadline(&mut child, timeout)?;
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_string(&mut stdout)
            .context("read the baseline's output")?;
    }
    ensure!(status.success(), "flower baseline failed: {status}");
    let result = parse_result(&stdout)?;
    check_matches(&result, opts)?;
    Ok(result)
}

/// Waits for `child` to exit; kills it once `timeout` has passed. The script prints a single
/// short line, so its stdout pipe cannot fill up while we wait.
fn wait_with_deadline(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("flower baseline did not finish within {timeout:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The result in the last JSON line of the script's stdout.
fn parse_result(stdout: &str) -> anyhow::Result<FlowerResult> {
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('{'))
        .context("flower baseline printed no JSON line")?;
    serde_json::from_str(line).with_context(|| format!("parse the flower baseline's output {line}"))
}

/// The script measured the workload we asked for.
fn check_matches(result: &FlowerResult, opts: &FlowerOptions) -> anyhow::Result<()> {
    ensure!(
        result.system == "flower",
        "unexpected system {:?}",
        result.system
    );
    ensure!(
        (result.participants, result.params, result.rounds)
            == (opts.participants, opts.params, opts.rounds),
        "flower baseline ran {}×{} for {} rounds, not the requested workload",
        result.participants,
        result.params,
        result.rounds
    );
    ensure!(
        result.seconds_per_round.len() == opts.rounds,
        "flower baseline timed {} rounds, not {}",
        result.seconds_per_round.len(),
        opts.rounds
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: FlowerOptions = FlowerOptions {
        participants: 10,
        params: 1_000_000,
        rounds: 2,
        warmup: 1,
    };

    const OUTPUT: &str = concat!(
        "some stray line\n",
        r#"{"system": "flower", "flwr_version": "1.41.0", "participants": 10, "#,
        r#""params": 1000000, "rounds": 2, "warmup": 1, "client_procs": 1, "pinned": true, "#,
        r#""seconds_per_round_median": 0.4, "seconds_per_round": [0.3, 0.5], "#,
        r#""server_cpu_seconds_per_round_median": 0.28, "server_peak_rss_bytes": 523825152, "#,
        r#""server_sampled_max_rss_bytes": 520814592, "server_idle_rss_bytes": 75988992, "#,
        r#""clients_cpu_seconds_per_round": 0.41, "machine_busy_percent": 84.0, "#,
        r#""wall_seconds": 7.0, "foreign_cpu_percent": 1.7}"#,
        "\n"
    );

    #[test]
    fn parses_the_last_json_line_and_ignores_unknown_fields() {
        let result = parse_result(OUTPUT).unwrap();
        assert_eq!(result.flwr_version, FLWR_VERSION);
        assert_eq!(result.seconds_per_round, vec![0.3, 0.5]);
        assert_eq!(result.server_peak_rss_bytes, 523_825_152);
        assert_eq!(result.server_idle_rss_bytes, Some(75_988_992));
        assert_eq!(result.client_procs, Some(1));
        assert_eq!(result.pinned, Some(true));
        assert_eq!(result.clients_cpu_seconds_per_round, Some(0.41));
        check_matches(&result, &OPTIONS).unwrap();
    }

    #[test]
    fn missing_optional_fields_are_none() {
        let line = r#"{"system":"flower","flwr_version":"1.41.0","participants":1,"params":1,
            "rounds":1,"seconds_per_round_median":0.1,"seconds_per_round":[0.1],
            "server_peak_rss_bytes":1}"#
            .replace('\n', "");
        let result = parse_result(&line).unwrap();
        assert_eq!(result.foreign_cpu_percent, None);
        assert_eq!(result.wall_seconds, None);
    }

    #[test]
    fn no_json_is_an_error() {
        assert!(parse_result("Traceback (most recent call last):\n").is_err());
    }

    #[test]
    fn a_different_workload_is_rejected() {
        let result = parse_result(OUTPUT).unwrap();
        let other = FlowerOptions {
            participants: 50,
            ..OPTIONS
        };
        assert!(check_matches(&result, &other).is_err());
    }

    #[test]
    fn script_args_name_every_option() {
        assert_eq!(
            OPTIONS.script_args(),
            [
                "--participants",
                "10",
                "--params",
                "1000000",
                "--rounds",
                "2",
                "--warmup",
                "1"
            ]
        );
    }

    #[test]
    fn timeout_grows_with_the_workload() {
        let small = FlowerOptions {
            participants: 1,
            params: 1,
            rounds: 1,
            warmup: 0,
        };
        assert_eq!(
            small.timeout(),
            STARTUP_BUDGET + ROUND_BUDGET_BASE + Duration::from_nanos(300)
        );
        // 50 × 1M × 300 ns = 15 s per round on top of the base, for 6 rounds.
        let large = FlowerOptions {
            participants: 50,
            rounds: 5,
            ..OPTIONS
        };
        assert_eq!(
            large.timeout(),
            STARTUP_BUDGET + (ROUND_BUDGET_BASE + Duration::from_secs(15)) * 6
        );
    }

    #[test]
    fn empty_workloads_are_invalid() {
        let zero = FlowerOptions {
            participants: 0,
            ..OPTIONS
        };
        assert!(zero.validate().is_err());
        assert!(OPTIONS.validate().is_ok());
    }

    #[test]
    fn a_run_past_its_deadline_is_killed() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let error = wait_with_deadline(&mut child, Duration::from_millis(200)).unwrap_err();
        assert!(error.to_string().contains("did not finish"), "{error}");
        assert!(child.try_wait().unwrap().is_some(), "the child still runs");
    }

    #[test]
    fn the_script_ships_with_the_crate() {
        assert!(
            baseline_script().is_file(),
            "{}",
            baseline_script().display()
        );
    }
}
