//! Private Python virtualenvs for tests that run Python programs, and gRPC stubs generated for
//! them. A venv is created with `python3 -m venv` and filled from a requirements file only when
//! it is missing or the file changed; stubs come from the standard `grpc_tools.protoc`.
//!
//! ```text
//!   ensure_venv(dir, requirements)
//!     dir/bin/python runs and dir/REQUIREMENTS_STAMP == sha256(requirements)? ─► reuse it
//!     otherwise: rm -r dir ─► python3 -m venv dir ─► dir/bin/python -m pip install -r …
//!                ─► write the stamp (last: an interrupted install is redone next time)
//!   generate_stubs(python, proto_root, out)
//!     python -m grpc_tools.protoc -I proto_root --python_out=out --grpc_python_out=out *.proto
//! ```
//!
//! Installing is the only network access (to the package index pip is configured with). Every
//! child process runs under a timeout and is killed past it, with its output in the error. Two
//! processes preparing the same `dir` at once are not supported; the tests of one binary run
//! serially.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

/// File in the venv holding the SHA-256 of the requirements it was installed from.
pub const REQUIREMENTS_STAMP: &str = "synod-requirements.sha256";
/// Time for `python3 -m venv` (it also installs pip from the standard library's wheel).
const VENV_TIMEOUT: Duration = Duration::from_secs(180);
/// Time for `pip install` (downloads and unpacks wheels).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
/// Time for short commands: checking the venv's python, generating stubs.
const SHORT_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a child is checked for having exited.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes of a failed command's output kept for its error.
const OUTPUT_TAIL_BYTES: usize = 4000;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).to_path_buf()
}

/// The workspace's target directory: `CARGO_TARGET_DIR` when set (relative to the workspace
/// root), `<workspace>/target` otherwise.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Where the tests' shared venv lives: `<target>/python-venv`.
pub fn default_venv_dir() -> PathBuf {
    target_dir().join("python-venv")
}

/// The python of the venv at `dir`.
pub fn venv_python(dir: &Path) -> PathBuf {
    dir.join("bin").join("python")
}

/// A venv at `dir` with the packages of `requirements` installed; returns its python. Creates
/// and installs only when `dir` holds no working venv installed from this exact file.
pub fn ensure_venv(dir: &Path, requirements: &Path) -> anyhow::Result<PathBuf> {
    let wanted = std::fs::read(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let wanted = synod_sdk::tensors::sha256_hex(&wanted);
    let python = venv_python(dir);
    let stamp = dir.join(REQUIREMENTS_STAMP);
    let installed = std::fs::read_to_string(&stamp).unwrap_or_default();
    if installed.trim() == wanted && python_runs(&python) {
        return Ok(python);
    }
    eprintln!(
        "python_env: creating {} from {}",
        dir.display(),
        requirements.display()
    );
    remove_venv(dir)?;
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv"]).arg(dir);
    run(
        &mut venv,
        VENV_TIMEOUT,
        "python3 -m venv (python3 with its venv module is needed)",
    )?;
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
    ])
    .args(["--progress-bar", "off", "-r"])
    .arg(requirements);
    let started = Instant::now();
    run(&mut pip, INSTALL_TIMEOUT, "pip install -r requirements")?;
    eprintln!(
        "python_env: installed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    std::fs::write(&stamp, format!("{wanted}\n"))
        .with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// Generates the Python messages and gRPC stubs of every `.proto` file under `proto_root` into
/// `out` (created if missing), with `python -m grpc_tools.protoc` (grpcio-tools must be
/// installed in `python`'s environment). The modules import each other by package path, e.g.
/// `synod.v1.common_pb2`: put `out` on the program's `sys.path`.
pub fn generate_stubs(python: &Path, proto_root: &Path, out: &Path) -> anyhow::Result<()> {
    let mut files = Vec::new();
    collect_protos(proto_root, &mut files)?;
    ensure!(
        !files.is_empty(),
        "no .proto files under {}",
        proto_root.display()
    );
    files.sort();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut protoc = Command::new(python);
    protoc
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(proto_root)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&files);
    run(&mut protoc, SHORT_TIMEOUT, "grpc_tools.protoc")
}

fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}

fn python_runs(python: &Path) -> bool {
    let mut check = Command::new(python);
    check.args(["-c", "import sys; sys.exit(0)"]);
    python.is_file() && run(&mut check, SHORT_TIMEOUT, "python").is_ok()
}

/// Removes a previous (stale or broken) venv at `dir`; refuses to delete anything else.
fn remove_venv(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let is_venv = dir.join("pyvenv.cfg").is_file();
    let is_empty = std::fs::read_dir(dir)?.next().is_none();
    if !is_venv && !is_empty {
        bail!(
            "{} exists and is not a Python venv; remove it or choose another directory",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Runs `command` to completion within `timeout` with its output captured; on failure or
/// timeout the error names `what` and ends with the output's tail.
fn run(command: &mut Command, timeout: Duration, what: &str) -> anyhow::Result<()> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: could not start {command:?}"))?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        drain(child.stdout.take(), output.clone()),
        drain(child.stderr.take(), output.clone()),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    if status.is_some() {
        // The pipes close with the child (a timed-out child's descendants may hold them open:
        // then the readers are left behind instead).
        readers.into_iter().for_each(|reader| {
            let _ = reader.join();
        });
    }
    let output = String::from_utf8_lossy(&output.lock().expect("output lock")).into_owned();
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("{what} failed ({status}):\n{}", tail(&output)),
        None => bail!(
            "{what} did not finish within {} s and was killed:\n{}",
            timeout.as_secs(),
            tail(&output)
        ),
    }
}

/// Copies a child's pipe into `output` on a thread of its own, so the child never blocks on
/// a full pipe.
fn drain(pipe: Option<impl Read + Send + 'static>, output: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut buffer = [0u8; 8192];
        while let Ok(read @ 1..) = pipe.read(&mut buffer) {
            output
                .lock()
                .expect("output lock")
                .extend_from_slice(&buffer[..read]);
        }
    })
}

fn tail(output: &str) -> &str {
    let start = output.len().saturating_sub(OUTPUT_TAIL_BYTES);
    let start = (start..=output.len())
        .find(|&i| output.is_char_boundary(i))
        .unwrap_or(output.len());
    &output[start..]
}
