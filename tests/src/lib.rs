//! Shared fixtures of the multi-process tests and benchmarks: where the `synod` binary is and
//! how to start a cluster of it.

pub mod bench;
pub mod jobs;
pub mod python_env;

use std::path::PathBuf;

use synod_coordinator::local_cluster::{LocalCluster, NodeOptions};

/// The `synod` binary built alongside the running test or bench executable (same profile).
///
/// `cargo test --workspace` builds it (the coordinator package has integration tests, which
/// makes cargo build its binaries first); for the bench, `cargo build --release -p
/// synod-coordinator --bin synod` does.
pub fn synod_binary() -> anyhow::Result<PathBuf> {
    sibling_binary("synod")
}

/// A binary of this workspace built alongside the running test or bench executable, such as
/// `synod-agent` (built by `cargo test --workspace` because the agent package has tests).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let candidates = exe.ancestors().skip(1).take(2).map(|dir| dir.join(name));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "the {name} binary was not found next to {}; build it with `cargo build --workspace --bins` (add --release for release tests)",
        exe.display()
    )
}

/// Starts a `size`-node cluster of real processes.
pub fn start_cluster(size: u64, options: NodeOptions) -> anyhow::Result<LocalCluster> {
    LocalCluster::start(&synod_binary()?, size, options)
}

/// Serializes the multi-process tests of one test binary: they measure fail-over times, and
/// several clusters at once on a 2-core machine would measure the machine instead.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
