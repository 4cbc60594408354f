//! `synod-agent`: runs the agents described in a TOML file against a Synod cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use synod_agent::config::AgentFile;
use tokio_util::sync::CancellationToken;

/// Runs Synod agents from an agents file.
#[derive(Parser)]
#[command(name = "synod-agent", version, about)]
struct Args {
    /// The agents file (TOML); see examples/agents/.
    #[arg(long, env = "SYNOD_AGENTS")]
    config: PathBuf,
    /// Any cluster member (host:port); several may be given comma-separated.
    #[arg(
        long,
        env = "SYNOD_ADDR",
        default_value = "127.0.0.1:7100",
        value_delimiter = ','
    )]
    addr: Vec<String>,
    /// Log filter.
    #[arg(long, env = "SYNOD_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::new(&args.log);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let file = match AgentFile::load(&args.config) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    match synod_agent::run_agents(file, args.addr, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
