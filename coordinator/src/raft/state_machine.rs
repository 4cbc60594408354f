//! openraft's state-machine adapter: applies committed entries to the pure [`State`], builds
//! and installs snapshots, and keeps the latest snapshot on disk.
//!
//! The applied state lives behind a shared lock so the API layer can read it. On restart the
//! latest snapshot is loaded and openraft replays the log after it. After each applied batch
//! that leaves tasks ready, [`StateMachineStore::tasks_ready`] is notified for the leader's
//! scheduler.

// openraft's StorageError is large by design; it is what the storage traits return.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::codec::{decode, encode};
use super::disk::{read_meta, write_meta, Disk, SNAPSHOT_KEY};
use super::types::{NodeId, TypeConfig};
use crate::state::{Outcome, State};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The applied state with its Raft position.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct AppliedState {
    /// The replicated state.
    pub state: State,
    /// Log id of the last applied entry.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last applied membership configuration.
    pub membership: StoredMembership<NodeId, BasicNode>,
}

/// The applied state shared between the state machine and readers.
pub type SharedState = Arc<RwLock<AppliedState>>;

/// A snapshot as kept on disk.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// openraft's view of the state machine.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: SharedState,
    disk: Disk,
    /// Signalled after applying entries while some task is ready to be placed.
    tasks_ready: Arc<Notify>,
}

impl StateMachineStore {
    /// Opens the state machine, loading the latest snapshot from `disk` when there is one.
    pub fn open(disk: Disk) -> StorageResult<Self> {
        let store = Self {
            shared: SharedState::default(),
            disk,
            tasks_ready: Arc::default(),
        };
        if let Some(stored) = store.read_snapshot()? {
            store.load(&stored)?;
        }
        Ok(store)
    }

    /// The shared applied state, for readers.
    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }

    /// Notified when applied entries leave tasks ready to place (new ones, or slots freed
    /// for waiting ones), so the leader places them without waiting for its next tick.
    pub fn tasks_ready(&self) -> Arc<Notify> {
        self.tasks_ready.clone()
    }

    fn read_snapshot(&self) -> StorageResult<Option<StoredSnapshot>> {
        let bytes = read_meta(&self.disk, SNAPSHOT_KEY)
            .map_err(|e| snapshot_error(None, ErrorVerb::Read, e))?;
        bytes
            .map(|b| decode("snapshot", &b))
            .transpose()
            .map_err(|e| snapshot_error(None, ErrorVerb::Read, e))
    }

    fn write_snapshot(&self, stored: &StoredSnapshot) -> StorageResult<()> {
        let signature = Some(stored.meta.signature());
        let bytes = encode("snapshot", stored)
            .map_err(|e| snapshot_error(signature.clone(), ErrorVerb::Write, e))?;
        write_meta(&self.disk, SNAPSHOT_KEY, &bytes)
            .map_err(|e| snapshot_error(signature, ErrorVerb::Write, e))
    }

    fn load(&self, stored: &StoredSnapshot) -> StorageResult<()> {
        let state: State = decode("snapshot state", &stored.data)
            .map_err(|e| snapshot_error(Some(stored.meta.signature()), ErrorVerb::Read, e))?;
        let mut applied = self.shared.write().expect("state lock");
        *applied = AppliedState {
            state,
            last_applied: stored.meta.last_log_id,
            membership: stored.meta.last_membership.clone(),
        };
        Ok(())
    }
}

fn snapshot_error(
    signature: Option<openraft::storage::SnapshotSignature<NodeId>>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::new(
            ErrorSubject::Snapshot(signature),
            verb,
            AnyError::new(&error),
        ),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let copy = self.shared.read().expect("state lock").clone();
        let store = self.clone();
        let stored = tokio::task::spawn_blocking(move || -> StorageResult<StoredSnapshot> {
            let data = encode("snapshot state", &copy.state)
                .map_err(|e| snapshot_error(None, ErrorVerb::Write, e))?;
            let snapshot_id = match copy.last_applied {
                Some(id) => format!(
                    "{}-{}-{}",
                    id.leader_id.term, id.leader_id.node_id, id.index
                ),
                None => "empty".to_owned(),
            };
            let stored = StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: copy.last_applied,
                    last_membership: copy.membership,
                    snapshot_id,
                },
                data,
            };
            store.write_snapshot(&stored)?;
            Ok(stored)
        })
        .await
        .map_err(|e| snapshot_error(None, ErrorVerb::Write, e))??;
        tracing::info!(snapshot = %stored.meta.snapshot_id, bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let applied = self.shared.read().expect("state lock");
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<Outcome>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.shared.write().expect("state lock");
        let mut replies = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let outcomes = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(proposal) => {
                    applied.state.apply_proposal(&proposal, entry.log_id.index)
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            replies.push(outcomes);
        }
        let ready = applied.state.jobs.ready_len() > 0;
        drop(applied);
        if ready {
            self.tasks_ready.notify_one();
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        self.load(&stored)?;
        self.write_snapshot(&stored)?;
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.read_snapshot()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
