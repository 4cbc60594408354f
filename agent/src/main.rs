//! `synod-agent`: runs Synod agents from a config file.
//!
//! The agent session protocol is defined in `proto/synod/v1/agent.proto`; the runtime that
//! speaks it lands with the agents-and-jobs work. Until then this binary only reports its
//! version, so that packaging and deployment can already include it.

use clap::Parser;

/// Runs Synod agents from a config file.
#[derive(Parser)]
#[command(name = "synod-agent", version, about)]
struct Args {}

fn main() {
    let _ = Args::parse();
    eprintln!(
        "synod-agent {}: the agent runtime is not available in this version",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
