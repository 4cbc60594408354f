//! The agents file of `synod-agent`: which agents to run and how each kind of task is handled.
//!
//! ```toml
//! [[agents]]
//! name = "summarizer"
//! replicas = 2
//! capabilities = ["text"]
//! max_concurrent = 4
//! labels = { zone = "a" }
//! bid = { cost = 1.0, estimate_ms = 500 }     # answer auctions with this offer
//! [[agents.handlers]]
//! kind = "text.wc"
//! command = ["wc", "-w"]                     # payload (a fan-out item) on stdin, stdout out
//! [[agents.handlers]]
//! kind = "echo"
//! demo = "echo"                              # a built-in demo handler
//! [[agents.campaigns]]
//! election = "summarizer-lead"               # campaign once registered, lead until gone
//! value = "summarizer:9000"
//! [[agents]]
//! name = "auditor"
//! [[agents.subscriptions]]
//! channel = "events"                         # follow a channel into a local journal,
//! journal = "events.log"                     # resuming after its last offset on restart
//! ```
//! An agent with `participant = { step = 0.5, examples = 20 }` also takes part in federated
//! rounds (see [`participant`](crate::participant)).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use synod_sdk::agent::{AgentBuilder, Offer, Task};

use crate::demo;
use crate::journal::SubscriptionSection;
use crate::participant::{ParticipantSection, StepParticipant};
use crate::shell::ShellHandler;

/// The whole agents file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// The agents.
    #[serde(default)]
    pub agents: Vec<AgentSection>,
}

/// One `[[agents]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Name (replicas get `-1`, `-2`, ... appended).
    pub name: String,
    /// How many identical agents to run.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Capabilities advertised.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Numeric resources.
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    /// Most tasks at once.
    #[serde(default = "one")]
    pub max_concurrent: u32,
    /// Auction offer; absent: decline every call for bids.
    pub bid: Option<BidSection>,
    /// Handlers by task kind.
    #[serde(default)]
    pub handlers: Vec<HandlerSection>,
    /// Elections to campaign in once registered (the agent then leads until it is gone).
    #[serde(default)]
    pub campaigns: Vec<CampaignSection>,
    /// Takes part in federated rounds with the built-in step trainer.
    pub participant: Option<ParticipantSection>,
    /// Channels followed into local journals (resumed from the journal's last offset).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionSection>,
}

/// One `[[agents.campaigns]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSection {
    /// Election name.
    pub election: String,
    /// Value published while leading, e.g. an address.
    #[serde(default)]
    pub value: String,
}

fn one() -> u32 {
    1
}

/// A fixed auction offer.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BidSection {
    /// Cost offered.
    pub cost: f64,
    /// Estimated run time.
    #[serde(default)]
    pub estimate_ms: u64,
}

/// One `[[agents.handlers]]` entry: exactly one of `command` and `demo`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSection {
    /// Task kind handled; `*` handles every kind without a handler of its own.
    pub kind: String,
    /// Program and arguments.
    pub command: Option<Vec<String>>,
    /// Name of a built-in demo handler.
    pub demo: Option<String>,
}

/// A bad agents file.
#[derive(Debug, thiserror::Error)]
pub enum AgentFileError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Invalid TOML or a setting out of range (names key and line).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl AgentFile {
    /// Reads and checks an agents file.
    pub fn load(path: &Path) -> Result<Self, AgentFileError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AgentFileError::Read {
            path: display.clone(),
            source,
        })?;
        let file: AgentFile = toml::from_str(&text).map_err(|e| AgentFileError::Invalid {
            path: display.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        file.check().map_err(|message| AgentFileError::Invalid {
            path: display,
            message,
        })?;
        Ok(file)
    }

    fn check(&self) -> Result<(), String> {
        for (i, agent) in self.agents.iter().enumerate() {
            for (j, handler) in agent.handlers.iter().enumerate() {
                let field = format!("agents[{i}].handlers[{j}]");
                match (&handler.command, &handler.demo) {
                    (Some(argv), None) if argv.is_empty() => {
                        return Err(format!("{field}.command: must name a program"))
                    }
                    (Some(_), None) => {}
                    (None, Some(name)) if demo::handler(name).is_none() => {
                        return Err(format!(
                            "{field}.demo: unknown demo handler '{name}' (known: {})",
                            demo::NAMES.join(", ")
                        ))
                    }
                    (None, Some(_)) => {}
                    _ => return Err(format!("{field}: give exactly one of `command` and `demo`")),
                }
            }
            if !agent.subscriptions.is_empty() && agent.replicas > 1 {
                return Err(format!(
                    "agents[{i}].subscriptions: a journal belongs to one agent; set replicas = 1"
                ));
            }
            for (j, subscription) in agent.subscriptions.iter().enumerate() {
                if subscription.channel.is_empty() {
                    return Err(format!("agents[{i}].subscriptions[{j}].channel: required"));
                }
            }
        }
        Ok(())
    }
}

impl AgentSection {
    /// The SDK builder for replica `replica` of this agent.
    pub fn builder(&self, replica: u32, endpoints: &[String]) -> anyhow::Result<AgentBuilder> {
        let name = if self.replicas > 1 {
            format!("{}-{}", self.name, replica + 1)
        } else {
            self.name.clone()
        };
        let mut builder =
            AgentBuilder::new(name, endpoints.iter().cloned()).max_concurrent(self.max_concurrent);
        for capability in &self.capabilities {
            builder = builder.capability(capability.clone());
        }
        for (key, value) in &self.labels {
            builder = builder.label(key.clone(), value.clone());
        }
        for (resource, capacity) in &self.resources {
            builder = builder.resource(resource.clone(), *capacity);
        }
        if let Some(bid) = self.bid {
            builder = builder.bid_handler(move |_: &synod_sdk::proto::CallForBids| {
                Some(Offer {
                    cost: bid.cost,
                    estimate_ms: bid.estimate_ms,
                })
            });
        }
        for handler in &self.handlers {
            builder = attach(builder, handler)?;
        }
        if let Some(participant) = self.participant {
            builder = builder.participant(StepParticipant(participant));
        }
        Ok(builder)
    }
}

fn attach(builder: AgentBuilder, section: &HandlerSection) -> anyhow::Result<AgentBuilder> {
    let kind = section.kind.clone();
    let wildcard = kind == "*";
    if let Some(argv) = &section.command {
        let shell = ShellHandler::new(argv.clone());
        let run = move |task: Task| {
            let shell = shell.clone();
            async move { shell.run(task).await }
        };
        return Ok(if wildcard {
            builder.fallback_handler(run)
        } else {
            builder.handler(kind, run)
        });
    }
    let name = section.demo.as_deref().unwrap_or_default();
    let demo =
        demo::handler(name).ok_or_else(|| anyhow::anyhow!("unknown demo handler '{name}'"))?;
    Ok(if wildcard {
        builder.fallback_handler(demo)
    } else {
        builder.handler(kind, demo)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<AgentFile, AgentFileError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.toml");
        std::fs::write(&path, text).unwrap();
        AgentFile::load(&path)
    }

    #[test]
    fn a_valid_file_loads() {
        let file = load("[[agents]]\nname = \"a\"\nreplicas = 3\n[[agents.handlers]]\nkind = \"x\"\ncommand = [\"cat\"]\n").unwrap();
        assert_eq!(file.agents[0].replicas, 3);
        assert!(file.agents[0].builder(0, &["127.0.0.1:1".into()]).is_ok());
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                "[[agents]]\nname = \"a\"\n[[agents.handlers]]\nkind = \"x\"\n",
                "agents[0].handlers[0]: give exactly one",
            ),
            (
                "[[agents]]\nname = \"a\"\n[[agents.handlers]]\nkind = \"x\"\ndemo = \"nope\"\n",
                "unknown demo handler 'nope'",
            ),
            ("[[agents]]\nnam = \"a\"\n", "unknown field `nam`"),
        ];
        for (text, expected) in cases {
            let error = load(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
