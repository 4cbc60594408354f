//! `synod vote open | status | list`: putting a question to agents and reading the results.
//!
//! Rules are written `majority`, `unanimous`, `supermajority:0.67`, `byzantine:1` or
//! `weighted` (with `--weight AGENT=W` per voter and optionally `--threshold`).

use std::collections::HashMap;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::json;
use synod_sdk::proto as pb;

use super::ClientArgs;

/// Vote commands.
#[derive(Subcommand)]
pub enum VoteCommand {
    /// Open a vote among agents.
    Open(Box<OpenArgs>),
    /// Show a vote, its tally and ballots.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// The vote's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List votes, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only votes in this state: open, decided or failed.
        #[arg(long)]
        state: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `synod vote open`.
#[derive(clap::Args)]
pub struct OpenArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The question put to the voters.
    #[arg(long)]
    question: String,
    /// An option (give 2 to 64).
    #[arg(long = "option", required = true)]
    options: Vec<String>,
    /// An eligible agent id (repeat); without any, --capability and --label select the
    /// connected agents.
    #[arg(long = "voter")]
    voters: Vec<String>,
    /// Select connected agents offering this capability (repeat).
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    /// Select connected agents with this label, KEY=VALUE (repeat).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// majority | unanimous | supermajority:T | byzantine:F | weighted.
    #[arg(long, default_value = "majority")]
    rule: String,
    /// With the weighted rule: a voter's weight, AGENT=W (repeat for every voter).
    #[arg(long = "weight")]
    weights: Vec<String>,
    /// With the weighted rule: the share of the total weight to exceed (default 0.5).
    #[arg(long, default_value_t = 0.0)]
    threshold: f64,
    /// How long the vote stays open, in ms.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Follow the vote until it closes; exit non-zero unless it is decided.
    #[arg(long)]
    wait: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a vote command.
pub async fn run(command: VoteCommand) -> anyhow::Result<()> {
    match command {
        VoteCommand::Open(args) => open(*args).await,
        VoteCommand::Status { client, id, json } => {
            let vote = client.client()?.get_vote(&id).await?;
            print_vote(&vote, json)
        }
        VoteCommand::List {
            client,
            state,
            json,
        } => list(&client, state.as_deref(), json).await,
    }
}

async fn open(args: OpenArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let voters = match args.voters.is_empty() {
        false => pb::open_vote_request::Voters::AgentIds(pb::AgentIdList {
            agent_ids: args.voters.clone(),
        }),
        true => pb::open_vote_request::Voters::Selector(pb::AgentSelector {
            capabilities: args.capabilities.clone(),
            labels: pairs("--label", &args.labels)?.into_iter().collect(),
        }),
    };
    let request = pb::OpenVoteRequest {
        question: args.question.clone(),
        options: args.options.clone(),
        voters: Some(voters),
        timeout_ms: args.timeout_ms,
        rule: Some(parse_rule(&args.rule, &args.weights, args.threshold)?),
        idempotency_key: String::new(),
    };
    let vote = client.open_vote(request).await?;
    if !args.wait {
        return print_vote(&vote, args.json);
    }
    if !args.json {
        println!(
            "vote {} open: {} voters, closes in {} ms",
            vote.vote_id,
            vote.eligible_agent_ids.len(),
            args.timeout_ms
        );
    }
    let closed = client
        .watch_vote(&vote.vote_id, |v| {
            if !args.json {
                println!("  {}", tally_line(v));
            }
        })
        .await?;
    print_vote(&closed, args.json)?;
    match closed.state == pb::VoteState::Decided as i32 {
        true => Ok(()),
        false => bail!("vote {} failed: {}", closed.vote_id, closed.state_reason),
    }
}

/// A rule from its command-line form.
fn parse_rule(rule: &str, weights: &[String], threshold: f64) -> anyhow::Result<pb::VoteRule> {
    use pb::vote_rule::Rule;
    let (name, parameter) = rule.split_once(':').unwrap_or((rule, ""));
    let number = || -> anyhow::Result<f64> {
        parameter
            .parse()
            .with_context(|| format!("--rule: '{rule}' needs a number after ':'"))
    };
    let rule = match name {
        "majority" => Rule::Majority(pb::MajorityRule {}),
        "unanimous" => Rule::Unanimous(pb::UnanimousRule {}),
        "supermajority" => Rule::Supermajority(pb::SupermajorityRule {
            threshold: number()?,
        }),
        "byzantine" => Rule::Byzantine(pb::ByzantineRule {
            f: number()? as u32,
        }),
        "weighted" => {
            let weights: HashMap<String, f64> = pairs("--weight", weights)?
                .into_iter()
                .map(|(id, w)| {
                    let w: f64 = w.parse().with_context(|| format!("--weight: '{w}' is not a number"))?;
                    Ok((id, w))
                })
                .collect::<anyhow::Result<_>>()?;
            Rule::Weighted(pb::WeightedRule { weights, threshold })
        }
        other => bail!(
            "--rule: '{other}' is not a rule (majority, unanimous, supermajority:T, byzantine:F, weighted)"
        ),
    };
    Ok(pb::VoteRule { rule: Some(rule) })
}

/// `KEY=VALUE` arguments.
fn pairs(flag: &str, items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => bail!("{flag}: '{item}' is not KEY=VALUE"),
        })
        .collect()
}

async fn list(client: &ClientArgs, state: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let states = match state {
        None => Vec::new(),
        Some(name) => vec![parse_state(name)?],
    };
    let votes = client.client()?.list_votes(&states, 1000).await?;
    if as_json {
        let list: Vec<_> = votes.iter().map(vote_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{:<36}  {:<8}  {:<10}  QUESTION", "VOTE", "STATE", "RESULT");
    for vote in &votes {
        println!(
            "{:<36}  {:<8}  {:<10}  {}",
            vote.vote_id,
            state_name(vote.state),
            vote.decided_option,
            vote.question
        );
    }
    Ok(())
}

fn parse_state(name: &str) -> anyhow::Result<pb::VoteState> {
    match name {
        "open" => Ok(pb::VoteState::Open),
        "decided" => Ok(pb::VoteState::Decided),
        "failed" => Ok(pb::VoteState::Failed),
        other => bail!("--state: '{other}' is not a vote state (open, decided, failed)"),
    }
}

fn state_name(state: i32) -> String {
    pb::VoteState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("VOTE_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state {state}"))
}

/// "yes 3 · no 1 (4 of 5 ballots)".
fn tally_line(vote: &pb::Vote) -> String {
    let counts: Vec<String> = vote
        .tallies
        .iter()
        .map(|t| format!("{} {}", t.option, t.ballots))
        .collect();
    format!(
        "{} ({} of {} ballots)",
        counts.join(" · "),
        vote.ballots.len(),
        vote.eligible_agent_ids.len()
    )
}

fn vote_json(vote: &pb::Vote) -> serde_json::Value {
    let tallies: Vec<_> = vote
        .tallies
        .iter()
        .map(|t| json!({ "option": t.option, "ballots": t.ballots, "weight": t.weight }))
        .collect();
    let ballots: Vec<_> = vote
        .ballots
        .iter()
        .map(|b| json!({ "agent_id": b.agent_id, "option": b.option, "cast_at_ms": b.cast_at_ms }))
        .collect();
    json!({
        "vote_id": vote.vote_id, "question": vote.question, "options": vote.options,
        "state": state_name(vote.state), "decided": vote.decided_option,
        "reason": vote.state_reason, "voters": vote.eligible_agent_ids,
        "tallies": tallies, "ballots": ballots, "deadline_at_ms": vote.deadline_at_ms,
    })
}

fn print_vote(vote: &pb::Vote, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&vote_json(vote))?);
        return Ok(());
    }
    let result = match pb::VoteState::try_from(vote.state) {
        Ok(pb::VoteState::Decided) => format!("decided: {}", vote.decided_option),
        Ok(pb::VoteState::Failed) => format!("failed: {}", vote.state_reason),
        _ => "open".to_owned(),
    };
    println!("vote {} — {}", vote.vote_id, vote.question);
    println!("  {result}");
    println!("  {}", tally_line(vote));
    for ballot in &vote.ballots {
        println!("  {} voted {}", ballot.agent_id, ballot.option);
    }
    Ok(())
}
