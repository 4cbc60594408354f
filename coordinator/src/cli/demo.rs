//! `synod demo`: a 3-node cluster of real processes on loopback takes concurrent writes through
//! every member, loses its leader to SIGKILL half-way, elects a new one and carries on; then
//! every acknowledged write is verified, the killed node restarts from disk and catches up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use synod_sdk::proto as pb;
use tokio::time::Instant;

use crate::local_cluster::{LocalCluster, NodeOptions};

/// Flags of `synod demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Commands to write.
    #[arg(long, default_value_t = 4000)]
    writes: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    writers: u64,
}

/// Runs the demo; fails if any acknowledged write is missing or replicas diverge.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.writers == 0 || args.writes < 10 {
        bail!("--writers must be positive and --writes at least 10");
    }
    let binary = std::env::current_exe().context("locating the synod binary")?;
    let options = NodeOptions {
        log: "warn".into(),
        ..NodeOptions::default()
    };
    let started = Instant::now();
    let mut cluster = LocalCluster::start(&binary, 3, options)?;
    println!(
        "▸ started 3 coordinator processes: {}",
        cluster.addrs().join(", ")
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    println!(
        "▸ node {leader} elected leader in {} ms",
        started.elapsed().as_millis()
    );

    let acked = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args.writes);
    let writing = tokio::spawn(write_all(
        cluster.addrs(),
        args.writes,
        args.writers,
        acked.clone(),
        progress.clone(),
    ));

    wait_for(&acked, args.writes / 2).await;
    cluster.kill(leader)?;
    let killed_at = Instant::now();
    say(
        &progress,
        format!(
            "✖ killed leader node {leader} with SIGKILL after {} writes",
            acked.load(Ordering::Relaxed)
        ),
    );
    let survivors: Vec<String> = cluster
        .running_ids()
        .iter()
        .map(|id| cluster.addr(*id).to_owned())
        .collect();
    synod_sdk::Client::new(survivors)?
        .put("demo-failover-probe", "ok")
        .await?;
    let failover_ms = killed_at.elapsed().as_millis();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    say(&progress, format!("▸ node {new_leader} took over; first write after the kill succeeded in {failover_ms} ms"));

    let write_secs = writing.await??;
    progress.finish_and_clear();
    println!(
        "▸ {} writes acknowledged in {write_secs:.2} s ({:.0}/s) across a leader failure",
        args.writes,
        args.writes as f64 / write_secs
    );

    let found = count_keys(&cluster).await?;
    if found != args.writes {
        bail!(
            "expected {} keys, found {found}: acknowledged writes were lost",
            args.writes
        );
    }
    println!("▸ verified: all {found} acknowledged writes are present (linearizable read)");

    cluster.restart(leader)?;
    let committed = cluster.client()?.status(true).await?.commit_index;
    let (index, digest) = cluster
        .wait_converged(&[1, 2, 3], committed, Duration::from_secs(20))
        .await?;
    println!("▸ node {leader} restarted from its data dir and caught up: 3 replicas at index {index}, state digest {}", &digest[..16]);
    println!("\nsummary: {} writes, 0 lost, leader fail-over {failover_ms} ms, replicas identical. demo passed.", args.writes);
    Ok(())
}

/// Prints a line above the progress bar (or plainly when output is not a terminal).
fn say(progress: &ProgressBar, line: String) {
    progress.suspend(|| println!("{line}"));
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("  writing {bar:40} {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes keys `demo/000000..` with `writers` tasks, each starting at a different member.
async fn write_all(
    addrs: Vec<String>,
    writes: u64,
    writers: u64,
    acked: Arc<AtomicU64>,
    progress: ProgressBar,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let mut order = addrs.clone();
        order.rotate_left(writer as usize % addrs.len());
        let client = synod_sdk::Client::new(order)?;
        let (next, acked, progress) = (next.clone(), acked.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return anyhow::Ok(());
                }
                client
                    .put(format!("demo/{i:06}"), format!("value-{i}"))
                    .await?;
                acked.fetch_add(1, Ordering::Relaxed);
                progress.inc(1);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn count_keys(cluster: &LocalCluster) -> anyhow::Result<u64> {
    let client = cluster.client()?;
    let (mut count, mut page_token) = (0, String::new());
    loop {
        let response = client
            .list(pb::ListRequest {
                prefix: "demo/".into(),
                page: Some(pb::PageRequest {
                    page_size: 1000,
                    page_token,
                }),
                consistency: pb::Consistency::Linearizable as i32,
            })
            .await?;
        for kv in &response.kvs {
            let i: u64 = kv.key["demo/".len()..].parse()?;
            if kv.value != format!("value-{i}").as_bytes() {
                bail!("key {} holds a wrong value", kv.key);
            }
        }
        count += response.kvs.len() as u64;
        if response.next_page_token.is_empty() {
            return Ok(count);
        }
        page_token = response.next_page_token;
    }
}
