//! Settings of one coordinator node: read from a TOML file, overridden by flags and `SYNOD_*`
//! environment variables, and validated before anything is bound or written.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration problem, named by key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node config (the message names key, line and column).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message with the position.
        message: String,
    },
    /// A setting is missing or invalid.
    #[error("{key}: {problem}")]
    Invalid {
        /// Config key (also the flag name with dashes).
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// Raft timing and log compaction.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries since the last one.
    pub snapshot_logs: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            snapshot_logs: 20_000,
        }
    }
}

/// Limits on requests and batches.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Largest gRPC message accepted from clients.
    pub message_bytes_max: usize,
    /// Most commands in one Raft entry.
    pub batch_commands_max: usize,
    /// Most approximate bytes in one Raft entry.
    pub batch_bytes_max: usize,
    /// Most batches being replicated at once; fewer in flight means larger batches.
    pub batches_in_flight_max: usize,
    /// Largest checkpoint payload a save may stream.
    pub checkpoint_bytes_max: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            message_bytes_max: 4 * 1024 * 1024,
            batch_commands_max: 4096,
            batch_bytes_max: 512 * 1024,
            batches_in_flight_max: 2,
            checkpoint_bytes_max: 16 * 1024 * 1024,
        }
    }
}

/// Agent sessions and the leader's coordination loop.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSessionSettings {
    /// An agent silent this long expires and its tasks are re-queued.
    pub lease_ms: u64,
    /// Interval agents are asked to heartbeat at.
    pub heartbeat_ms: u64,
    /// How long an auction collects bids when the task does not say.
    pub bid_window_ms: u64,
    /// Period of the leader's loop (expiry, timeouts, auctions; placement also runs as soon
    /// as tasks become ready).
    pub tick_ms: u64,
    /// A ready task that no live agent could ever take ends unsatisfiable after this long.
    pub unsatisfiable_ms: u64,
    /// Failed attempts in a row that quarantine an agent (its circuit opens); 0 turns the
    /// breaker off.
    pub breaker_failures: u32,
    /// How long a quarantine lasts before the agent may take one probe task.
    pub breaker_cooldown_ms: u64,
}

impl Default for AgentSessionSettings {
    fn default() -> Self {
        Self {
            lease_ms: 5_000,
            heartbeat_ms: 1_000,
            bid_window_ms: 200,
            tick_ms: 20,
            unsatisfiable_ms: 30_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 30_000,
        }
    }
}

/// Settings of one node.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Raft node id, unique in the cluster, never 0.
    #[serde(default)]
    pub id: u64,
    /// Address to listen on for clients and peers.
    #[serde(default)]
    pub listen: String,
    /// Address other nodes and clients use to reach this node; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Directory holding the node's log, snapshots and metadata.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Members of a new cluster, `id=host:port,...`; empty for a node joining by add-learner.
    #[serde(default)]
    pub initial_members: String,
    /// Raft timing and compaction.
    #[serde(default)]
    pub raft: RaftSettings,
    /// Request and batch limits.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Agent sessions.
    #[serde(default)]
    pub agents: AgentSessionSettings,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node id.
    pub id: u64,
    /// Listen address.
    pub listen: SocketAddr,
    /// Advertised address.
    pub advertise: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Initial members by id (empty when joining).
    pub initial_members: BTreeMap<u64, String>,
    /// Raft settings.
    pub raft: RaftSettings,
    /// Limits.
    pub limits: LimitSettings,
    /// Agent sessions.
    pub agents: AgentSessionSettings,
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })
    }

    /// Checks every setting and resolves defaults.
    pub fn validate(self) -> Result<NodeConfig, ConfigError> {
        if self.id == 0 {
            return Err(invalid(
                "id",
                "required, a positive integer (--id, SYNOD_ID or key `id`)",
            ));
        }
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("'{}' is not an IP:port address", self.listen),
            )
        })?;
        let advertise = match self.advertise {
            Some(addr) => addr,
            None if listen.ip().is_unspecified() => {
                return Err(invalid(
                    "advertise",
                    format!("required when listening on {listen}"),
                ))
            }
            None => listen.to_string(),
        };
        let data_dir = self.data_dir.ok_or_else(|| {
            invalid(
                "data_dir",
                "required (--data-dir, SYNOD_DATA_DIR or key `data_dir`)",
            )
        })?;
        let initial_members = parse_members(&self.initial_members)?;
        if let Some(listed) = initial_members.get(&self.id) {
            if *listed != advertise {
                return Err(invalid(
                    "initial_members",
                    format!(
                        "lists node {} at {listed} but it advertises {advertise}",
                        self.id
                    ),
                ));
            }
        } else if !initial_members.is_empty() {
            return Err(invalid(
                "initial_members",
                format!(
                    "does not include this node ({}); omit it on a node that joins by add-learner",
                    self.id
                ),
            ));
        }
        validate_raft(&self.raft)?;
        validate_limits(&self.limits)?;
        validate_agents(&self.agents)?;
        Ok(NodeConfig {
            id: self.id,
            listen,
            advertise,
            data_dir,
            initial_members,
            raft: self.raft,
            limits: self.limits,
            agents: self.agents,
        })
    }
}

/// Parses `1=127.0.0.1:7101,2=127.0.0.1:7102`.
pub fn parse_members(text: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut members = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| invalid("initial_members", format!("'{item}' is not id=host:port")))?;
        let id: u64 = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            invalid(
                "initial_members",
                format!("'{id}' is not a positive node id"),
            )
        })?;
        let addr = addr.trim();
        if !addr.contains(':') {
            return Err(invalid(
                "initial_members",
                format!("node {id}: '{addr}' is not host:port"),
            ));
        }
        if members.insert(id, addr.to_owned()).is_some() {
            return Err(invalid(
                "initial_members",
                format!("node {id} is listed twice"),
            ));
        }
    }
    Ok(members)
}

fn validate_raft(raft: &RaftSettings) -> Result<(), ConfigError> {
    if raft.heartbeat_ms == 0 {
        return Err(invalid("raft.heartbeat_ms", "must be positive"));
    }
    if raft.election_timeout_min_ms <= raft.heartbeat_ms {
        return Err(invalid(
            "raft.election_timeout_min_ms",
            format!(
                "{} must exceed raft.heartbeat_ms ({})",
                raft.election_timeout_min_ms, raft.heartbeat_ms
            ),
        ));
    }
    if raft.election_timeout_max_ms <= raft.election_timeout_min_ms {
        return Err(invalid(
            "raft.election_timeout_max_ms",
            format!(
                "{} must exceed raft.election_timeout_min_ms ({})",
                raft.election_timeout_max_ms, raft.election_timeout_min_ms
            ),
        ));
    }
    if raft.snapshot_logs < 10 {
        return Err(invalid("raft.snapshot_logs", "must be at least 10"));
    }
    Ok(())
}

fn validate_limits(limits: &LimitSettings) -> Result<(), ConfigError> {
    if limits.message_bytes_max < 64 * 1024 {
        return Err(invalid(
            "limits.message_bytes_max",
            "must be at least 65536",
        ));
    }
    if limits.batch_commands_max == 0 {
        return Err(invalid("limits.batch_commands_max", "must be positive"));
    }
    let checkpoint_max = crate::state::checkpoints::CHECKPOINT_BYTES_MAX;
    if !(1..=checkpoint_max).contains(&limits.checkpoint_bytes_max) {
        return Err(invalid(
            "limits.checkpoint_bytes_max",
            format!("must be between 1 and {checkpoint_max}"),
        ));
    }
    if !(1..=64).contains(&limits.batches_in_flight_max) {
        return Err(invalid(
            "limits.batches_in_flight_max",
            "must be between 1 and 64",
        ));
    }
    if limits.batch_bytes_max == 0 || limits.batch_bytes_max > 16 * 1024 * 1024 {
        return Err(invalid(
            "limits.batch_bytes_max",
            "must be between 1 and 16777216",
        ));
    }
    Ok(())
}

fn validate_agents(agents: &AgentSessionSettings) -> Result<(), ConfigError> {
    if agents.heartbeat_ms == 0 {
        return Err(invalid("agents.heartbeat_ms", "must be positive"));
    }
    if agents.lease_ms < 2 * agents.heartbeat_ms {
        return Err(invalid(
            "agents.lease_ms",
            format!(
                "{} must be at least twice agents.heartbeat_ms ({}), or one late heartbeat expires the agent",
                agents.lease_ms, agents.heartbeat_ms
            ),
        ));
    }
    if !(1..=60_000).contains(&agents.bid_window_ms) {
        return Err(invalid("agents.bid_window_ms", "must be 1 to 60000"));
    }
    if !(1..=1_000).contains(&agents.tick_ms) {
        return Err(invalid("agents.tick_ms", "must be 1 to 1000"));
    }
    if !(100..=86_400_000).contains(&agents.breaker_cooldown_ms) {
        return Err(invalid(
            "agents.breaker_cooldown_ms",
            "must be 100 to 86400000 (a day)",
        ));
    }
    if !(100..=86_400_000).contains(&agents.unsatisfiable_ms) {
        return Err(invalid(
            "agents.unsatisfiable_ms",
            "must be 100 to 86400000 (a day)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config {
            id: 1,
            listen: "127.0.0.1:7101".into(),
            data_dir: Some("/tmp/x".into()),
            initial_members: "1=127.0.0.1:7101,2=127.0.0.1:7102".into(),
            ..Config::default()
        }
    }

    #[test]
    fn a_complete_config_validates() {
        let node = base().validate().unwrap();
        assert_eq!(node.advertise, "127.0.0.1:7101");
        assert_eq!(node.initial_members.len(), 2);
    }

    #[test]
    fn each_bad_setting_is_named() {
        let cases: Vec<(Config, &str)> = vec![
            (Config { id: 0, ..base() }, "id: required"),
            (
                Config {
                    listen: "nowhere".into(),
                    ..base()
                },
                "listen: 'nowhere'",
            ),
            (
                Config {
                    data_dir: None,
                    ..base()
                },
                "data_dir: required",
            ),
            (
                Config {
                    initial_members: "1=127.0.0.1:7101,1=127.0.0.1:7102".into(),
                    ..base()
                },
                "node 1 is listed twice",
            ),
            (
                Config {
                    initial_members: "2=127.0.0.1:7102".into(),
                    ..base()
                },
                "does not include this node",
            ),
            (
                Config {
                    initial_members: "x=1".into(),
                    ..base()
                },
                "'x' is not a positive node id",
            ),
            (
                Config {
                    listen: "0.0.0.0:7101".into(),
                    initial_members: String::new(),
                    ..base()
                },
                "advertise: required",
            ),
            (
                Config {
                    raft: RaftSettings {
                        election_timeout_min_ms: 10,
                        ..RaftSettings::default()
                    },
                    ..base()
                },
                "raft.election_timeout_min_ms: 10 must exceed",
            ),
            (
                Config {
                    agents: AgentSessionSettings {
                        lease_ms: 1_500,
                        ..AgentSessionSettings::default()
                    },
                    ..base()
                },
                "agents.lease_ms: 1500 must be at least twice agents.heartbeat_ms (1000)",
            ),
            (
                Config {
                    agents: AgentSessionSettings {
                        bid_window_ms: 0,
                        ..AgentSessionSettings::default()
                    },
                    ..base()
                },
                "agents.bid_window_ms: must be 1 to 60000",
            ),
        ];
        for (config, expected) in cases {
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn the_example_config_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/node.example.toml");
        let node = Config::from_file(&path).unwrap().validate().unwrap();
        assert_eq!(node.agents, AgentSessionSettings::default());
        assert_eq!(node.raft, RaftSettings::default());
        assert_eq!(node.limits, LimitSettings::default());
    }

    #[test]
    fn toml_errors_name_the_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 1\nlisten = \"127.0.0.1:1\"\n[raft]\nheartbeat = 5\n",
        )
        .unwrap();
        let error = Config::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("line 4"), "{error}");
        assert!(error.contains("unknown field `heartbeat`"), "{error}");
    }
}
