//! The Python participant (`examples/python/synod_participant.py`) in a real 3-node cluster:
//! two Python processes and one in-process Rust participant train a 2-round FedAvg federation
//! whose global model and loss equal the hand-computed weighted averages, and the Python
//! processes deregister and exit 0 on SIGTERM.
//!
//! ```text
//!   ensure_venv(target/python-venv, requirements.txt) ─► generate_stubs(proto/) ─► cluster
//!     ─► py-1 (0.5 × 20) + py-2 (2.0 × 60) + rust-1 (1.0 × 20) register ─► 2 rounds of FedAvg
//!     ─► model = 2 × 1.5 everywhere, loss 1.5 ─► SIGTERM ─► agents LEFT, exit 0
//! ```
//!
//! The first run on a machine creates the venv (pip needs the package index); later runs
//! reuse it until requirements.txt changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};
use synod_coordinator::local_cluster::{wait_until, LocalCluster};
use synod_sdk::agent::{AgentBuilder, FitRequest, FitResult, Participant};
use synod_sdk::proto as pb;
use synod_sdk::proto::agent_service_client::AgentServiceClient;
use synod_sdk::tensors::{specs_to_proto, Model, TensorSpec};
use synod_sdk::Client;
use synod_tests::jobs::{cluster_up, options};
use synod_tests::python_env;
use synod_tests::serial;
use tokio_util::sync::CancellationToken;

/// How long the federation may take.
const FEDERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the participants may take to register (Python imports grpc first).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a Python participant may take to deregister and exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of each Python participant's log shown when the test fails.
const LOG_TAIL_LINES: usize = 40;
/// Time limit of one round.
const ROUND_TIMEOUT_MS: u64 = 30_000;
/// The Python participants: name, step, examples.
const PYTHON_PARTICIPANTS: [(&str, f32, u64); 2] = [("py-1", 0.5, 20), ("py-2", 2.0, 60)];
/// The Rust participant: name, step, examples.
const RUST_PARTICIPANT: (&str, f32, u64) = ("rust-1", 1.0, 20);
/// Rounds of the federation.
const ROUNDS: u32 = 2;
/// Each round moves every weight by (20·0.5 + 60·2.0 + 20·1.0) / 100, and that is the loss too.
const ROUND_STEP: f64 = 1.5;

/// Adds `step` to every weight and reports `examples` examples and loss = `step`.
struct Stepper {
    step: f32,
    examples: u64,
}

impl Participant for Stepper {
    fn fit(&self, request: &FitRequest) -> Result<FitResult, String> {
        Ok(FitResult {
            weights: request.model.values.iter().map(|w| w + self.step).collect(),
            num_examples: self.examples,
            metrics: BTreeMap::from([("loss".to_owned(), f64::from(self.step))]),
        })
    }
}

/// Python participant processes, killed and reaped when dropped (also when the test fails).
/// Their logs go to files, shown in the test's error when it fails.
struct PythonParticipants {
    children: Vec<(String, Child)>,
    logs: tempfile::TempDir,
}

impl PythonParticipants {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            children: Vec::new(),
            logs: tempfile::tempdir()?,
        })
    }

    /// Starts `synod_participant.py` as `name`.
    fn spawn(
        &mut self,
        env: &PythonEnv,
        endpoints: &str,
        participant: (&str, f32, u64),
    ) -> anyhow::Result<()> {
        let (name, step, examples) = participant;
        let log = std::fs::File::create(self.log_path(name))?;
        let child = Command::new(&env.python)
            .arg(script())
            .args(["--endpoints", endpoints, "--name", name])
            .args([
                "--step",
                &step.to_string(),
                "--examples",
                &examples.to_string(),
            ])
            .arg("--stubs")
            .arg(env.stubs.path())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", env.python.display()))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("{name}.log"))
    }

    /// Fails naming any participant that has already exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("python participant {name} exited early ({status})");
            }
        }
        Ok(())
    }

    /// Each participant's process state and log, for error messages.
    fn report(&mut self) -> String {
        let mut report = String::new();
        for (name, child) in &mut self.children {
            let state = match child.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                Ok(None) => "running".to_owned(),
                Err(error) => error.to_string(),
            };
            let log = std::fs::read_to_string(self.logs.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            report.push_str(&format!("--- python participant {name}: {state}\n{tail}\n"));
        }
        report
    }

    /// Sends SIGTERM to every participant and checks each exits with status 0 in time.
    fn terminate(&mut self) -> anyhow::Result<()> {
        for (name, child) in &self.children {
            let sent = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            anyhow::ensure!(sent.success(), "kill -TERM {name} failed");
        }
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        for (name, child) in &mut self.children {
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{name} did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            anyhow::ensure!(
                status.success(),
                "{name} exited with {status} after SIGTERM"
            );
        }
        Ok(())
    }
}

impl Drop for PythonParticipants {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The venv's python and the stubs generated for this run.
struct PythonEnv {
    python: PathBuf,
    stubs: tempfile::TempDir,
}

fn script() -> PathBuf {
    python_env::workspace_root().join("examples/python/synod_participant.py")
}

/// Creates (or reuses) the venv and generates the stubs; blocking.
fn prepare_python() -> anyhow::Result<PythonEnv> {
    let root = python_env::workspace_root();
    let started = Instant::now();
    let requirements = root.join("examples/python/requirements.txt");
    let python = python_env::ensure_venv(&python_env::default_venv_dir(), &requirements)
        .context("preparing the Python venv")?;
    let stubs = tempfile::tempdir()?;
    python_env::generate_stubs(&python, &root.join("proto"), stubs.path())
        .context("generating the Python stubs")?;
    eprintln!(
        "python environment ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(PythonEnv { python, stubs })
}

fn specs() -> Vec<TensorSpec> {
    vec![TensorSpec::f32("w", &[2, 2]), TensorSpec::f32("b", &[2])]
}

fn spec() -> pb::FederationSpec {
    let initial = Model::new(specs(), vec![0.0; 6]).expect("a valid model");
    pb::FederationSpec {
        name: "python-and-rust".into(),
        initial_model: Some(pb::InitialModel {
            tensors: specs_to_proto(&specs()),
            inline_data: initial.payload(),
        }),
        rounds: ROUNDS,
        participants: Some(pb::ParticipantSelection {
            selector: Some(pb::AgentSelector {
                capabilities: vec!["fl".into()],
                ..Default::default()
            }),
            fraction: 1.0,
            min_participants: 3,
            max_participants: 0,
        }),
        round_timeout_ms: ROUND_TIMEOUT_MS,
        ..Default::default()
    }
}

/// Starts the in-process Rust participant; returns its agent id once registered.
async fn start_rust_participant(
    cluster: &LocalCluster,
    stop: &CancellationToken,
) -> anyhow::Result<String> {
    let (name, step, examples) = RUST_PARTICIPANT;
    let agent = AgentBuilder::new(name, cluster.addrs())
        .capability("fl")
        .participant(Stepper { step, examples });
    let handle = agent.handle();
    let token = stop.clone();
    tokio::spawn(async move { agent.run(token).await });
    tokio::time::timeout(REGISTER_TIMEOUT, handle.agent_id())
        .await
        .context("the Rust participant did not register")
}

/// Waits until an agent of each name is connected; returns their ids by name.
async fn wait_for_named_agents(
    client: &Client,
    pythons: &mut PythonParticipants,
    names: &[&str],
) -> anyhow::Result<BTreeMap<String, String>> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    loop {
        pythons.check_running()?;
        let agents = client.list_agents().await.unwrap_or_default();
        let connected: BTreeMap<String, String> = agents
            .into_iter()
            .filter(|a| a.state == pb::AgentState::Connected as i32)
            .filter(|a| names.contains(&a.name.as_str()))
            .map(|a| (a.name, a.agent_id))
            .collect();
        if connected.len() == names.len() {
            return Ok(connected);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "after {REGISTER_TIMEOUT:?} only {connected:?} of {names:?} are connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_finished(client: &Client, id: &str) -> anyhow::Result<pb::Federation> {
    wait_until(FEDERATION_TIMEOUT, "the federation to finish", || async {
        let f = client.get_federation(id).await.ok()?;
        let running = [
            pb::FederationState::Running,
            pb::FederationState::AwaitingModel,
        ];
        (!running.map(|s| s as i32).contains(&f.state)).then_some(f)
    })
    .await
}

async fn agent_state(client: &Client, agent_id: &str) -> anyhow::Result<i32> {
    let request = pb::GetAgentRequest {
        agent_id: agent_id.to_owned(),
        ..Default::default()
    };
    let response = client
        .call(|channel| {
            let request = request.clone();
            async move { AgentServiceClient::new(channel).get_agent(request).await }
        })
        .await?;
    Ok(response.agent.context("agent missing")?.state)
}

/// Checks one committed round: every participant submitted its example count, and the loss
/// is the weighted average of the steps.
fn check_round(round: &pb::Round, examples: &BTreeMap<String, u64>) -> anyhow::Result<()> {
    let number = round.round;
    ensure!(
        round.state == pb::RoundState::Committed as i32,
        "round {number} did not commit: {round:?}"
    );
    let submitted: BTreeMap<String, u64> = round
        .participants
        .iter()
        .filter(|p| p.state == pb::ParticipantState::Submitted as i32)
        .map(|p| (p.agent_id.clone(), p.num_examples))
        .collect();
    ensure!(
        &submitted == examples,
        "round {number}: submitted {submitted:?}, expected {examples:?}: {round:?}"
    );
    let loss = round.metrics.get("loss").copied().unwrap_or(f64::NAN);
    ensure!(
        (loss - ROUND_STEP).abs() < 1e-9,
        "round {number}: loss {loss}, expected {ROUND_STEP} (the Python participants' metrics \
         must reach the round): {:?}",
        round.metrics
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_participants_train_with_a_rust_one_and_fedavg_weighs_them() -> anyhow::Result<()> {
    let _serial = serial().await;
    let env = tokio::task::spawn_blocking(prepare_python).await??;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let _stop_rust = stop.clone().drop_guard();
    let mut pythons = PythonParticipants::new()?;
    let outcome = federate(&env, &cluster, &client, &stop, &mut pythons).await;
    outcome.map_err(|error| anyhow!("{error:#}\n\n{}", pythons.report()))
}

/// The test proper; its error is shown with the Python participants' logs.
async fn federate(
    env: &PythonEnv,
    cluster: &LocalCluster,
    client: &Client,
    stop: &CancellationToken,
    pythons: &mut PythonParticipants,
) -> anyhow::Result<()> {
    let endpoints = cluster.addrs().join(",");
    for participant in PYTHON_PARTICIPANTS {
        pythons.spawn(env, &endpoints, participant)?;
    }
    let rust_id = start_rust_participant(cluster, stop).await?;
    let names: Vec<&str> = PYTHON_PARTICIPANTS.iter().map(|p| p.0).collect();
    let ids = wait_for_named_agents(client, pythons, &names).await?;
    let mut examples: BTreeMap<String, u64> = PYTHON_PARTICIPANTS
        .iter()
        .map(|(name, _, n)| (ids[*name].clone(), *n))
        .collect();
    examples.insert(rust_id, RUST_PARTICIPANT.2);

    let started = client.start_federation(spec(), "").await?;
    let id = started
        .federation
        .context("federation missing")?
        .federation_id;
    let done = wait_finished(client, &id).await?;
    ensure!(
        done.state == pb::FederationState::Completed as i32,
        "the federation did not complete: {done:?}"
    );
    ensure!(done.committed_round == ROUNDS, "{done:?}");
    let (round, model) = client.download_model(&id, None).await?;
    let expected = ROUND_STEP * f64::from(ROUNDS);
    ensure!(
        round == ROUNDS
            && model
                .values
                .iter()
                .all(|v| (f64::from(*v) - expected).abs() < 1e-4),
        "model of round {round}: {:?}, expected {expected} everywhere",
        model.values
    );
    for number in 1..=ROUNDS {
        check_round(&client.get_round(&id, number).await?, &examples)?;
    }

    // SIGTERM: each Python participant deregisters and exits 0.
    tokio::task::block_in_place(|| pythons.terminate())?;
    for (name, agent_id) in &ids {
        wait_until(Duration::from_secs(10), "the agent to leave", || async {
            let state = agent_state(client, agent_id).await.ok()?;
            (state == pb::AgentState::Left as i32).then_some(())
        })
        .await
        .with_context(|| format!("{name} did not deregister after SIGTERM"))?;
    }
    Ok(())
}
