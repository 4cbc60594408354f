//! Following a federation as it trains: a progress bar of committed rounds and one line per
//! round with the participants' training and evaluation metrics, read from its event stream.
//!
//! ```text
//!   WatchFederation ─► RoundStarted   ─► bar message
//!                   ─► RoundCommitted ─► bar +1, a line: train loss/acc │ eval loss/acc
//!                   ─► FederationCompleted ─► the rounds seen (fails unless COMPLETED)
//! ```
//!
//! A round's evaluation metrics are those of the model it received, the previous round's.

use std::collections::HashMap;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use synod_sdk::proto as pb;
use synod_sdk::Client;

/// Loss and accuracy, as averaged by the leader over the participants' reports.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Share classified right.
    pub accuracy: f64,
}

/// What a committed round reported.
#[derive(Debug, Clone)]
pub struct RoundRow {
    /// Round number.
    pub round: u32,
    /// The participants' local models on their training data.
    pub train: Option<Metrics>,
    /// The received global model on the participants' held-out data.
    pub eval: Option<Metrics>,
}

/// Follows federation `id` until it finishes; returns its committed rounds in order.
pub async fn follow(client: &Client, id: &str, rounds: u32) -> anyhow::Result<Vec<RoundRow>> {
    let bar = ProgressBar::new(u64::from(rounds));
    bar.set_style(
        ProgressStyle::with_template("{spinner} round {pos}/{len} [{bar:30}] {elapsed} {msg}")?
            .progress_chars("=> "),
    );
    print_line(&bar, HEADER);
    let mut events = client.watch_federation(id, 0).await?;
    let mut rows = Vec::new();
    while let Some(event) = events.message().await? {
        use pb::federation_event::Kind;
        match event.kind {
            Some(Kind::RoundStarted(started)) => bar.set_message(started_message(&started, &rows)),
            Some(Kind::RoundCommitted(done)) => {
                let row = RoundRow {
                    round: done.round,
                    train: metrics(&done.metrics),
                    eval: metrics(&done.evaluation_metrics),
                };
                bar.set_position(u64::from(done.round));
                print_line(&bar, &line(&row));
                rows.push(row);
            }
            Some(Kind::RoundFailed(failed)) => print_line(
                &bar,
                &format!(
                    "round {:>3} attempt {} failed: {}",
                    failed.round, failed.attempt, failed.reason
                ),
            ),
            Some(Kind::FederationCompleted(done)) => {
                bar.finish_and_clear();
                return completed(done, rows);
            }
            _ => {}
        }
    }
    bar.finish_and_clear();
    anyhow::bail!("the event stream ended before the federation finished")
}

const HEADER: &str =
    "round │ train loss train acc │  eval loss  eval acc   (eval: the model the round received)";

fn completed(
    done: pb::federation_event::FederationCompleted,
    rows: Vec<RoundRow>,
) -> anyhow::Result<Vec<RoundRow>> {
    let completed = done.state == pb::FederationState::Completed as i32;
    anyhow::ensure!(
        completed,
        "the federation ended {:?} after {} rounds: {}",
        pb::FederationState::try_from(done.state).unwrap_or_default(),
        done.committed_round,
        done.reason
    );
    Ok(rows)
}

/// Prints above the bar, or plainly when the bar is hidden (output not a terminal).
fn print_line(bar: &ProgressBar, line: &str) {
    bar.suspend(|| println!("{line}"));
}

fn metrics(values: &HashMap<String, f64>) -> Option<Metrics> {
    Some(Metrics {
        loss: *values.get("loss")?,
        accuracy: *values.get("accuracy")?,
    })
}

/// The bar's message while a round trains: its size and the latest evaluation accuracy.
fn started_message(started: &pb::federation_event::RoundStarted, rows: &[RoundRow]) -> String {
    let latest = rows.iter().rev().find_map(|r| r.eval);
    let eval = latest.map_or(String::new(), |m| {
        format!(", last eval acc {}", percent(m.accuracy))
    });
    format!(
        "training round {} on {} participants{eval}",
        started.round,
        started.participant_agent_ids.len()
    )
}

fn line(row: &RoundRow) -> String {
    let cell = |m: Option<Metrics>| match m {
        Some(m) => format!("{:>10.4} {:>9}", m.loss, percent(m.accuracy)),
        None => format!("{:>10} {:>9}", "–", "–"),
    };
    format!(
        "{:>5} │ {} │ {}",
        row.round,
        cell(row.train),
        cell(row.eval)
    )
}

fn percent(share: f64) -> String {
    format!("{:.1} %", 100.0 * share)
}

/// The evaluation accuracy of the first round that evaluated, with its round.
pub fn first_eval(rows: &[RoundRow]) -> anyhow::Result<(u32, f64)> {
    rows.iter()
        .find_map(|r| Some((r.round, r.eval?.accuracy)))
        .context("no round reported evaluation metrics (is evaluate_every_rounds set?)")
}
