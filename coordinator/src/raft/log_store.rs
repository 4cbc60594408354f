//! The Raft log on disk, with group commit.
//!
//! Appends are encoded on the caller's task, kept in memory until durable (so they are readable
//! at once, as openraft requires) and handed to one writer thread. The writer drains everything
//! queued, writes it to the write-ahead log as one group (one write, one fsync) and only then
//! reports the entries flushed. Truncate, purge and vote writes travel through the same queue,
//! so disk order always equals call order. The most recent durable entries stay in memory too
//! (up to [`RECENT_BYTES`]): applying and replicating an entry right after its flush reads no
//! disk, which the log writes past the page cache.
//!
//! ```text
//!  append ─► cached (memory) ─► queue ─► writer thread: [ops..] ─► 1 write + fsync ─► callbacks
//!                                        durable: the oldest beyond RECENT_BYTES leave the cache
//!  read   ─► cached first, then the write-ahead log
//! ```

// openraft's StorageError is large by design; it is what the storage traits return.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader,
    StorageError, StorageIOError, Vote,
};
use tokio::sync::oneshot;

use super::codec::{decode, encode};
use super::disk::DiskError;
use super::types::{NodeId, TypeConfig};
use super::wal::{Record, Recovered, Wal, WalReader, SEGMENT_BYTES};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Encoded bytes of durable entries kept in memory, newest first.
pub const RECENT_BYTES: usize = 8 * 1024 * 1024;

/// The Raft log of one node. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    wal: WalReader,
    /// Entries appended but not yet durable, and the most recent durable ones, by index.
    cached: Mutex<BTreeMap<u64, Entry<TypeConfig>>>,
    /// Durable entries still cached, oldest first, with their encoded sizes.
    recent: Mutex<Recent>,
    /// Last log id and last purged log id, kept in memory.
    bounds: Mutex<Bounds>,
    /// Highest committed index reported by openraft.
    committed_index: AtomicU64,
    /// Latest committed log id, persisted lazily by the writer.
    committed: Mutex<Option<LogId<NodeId>>>,
    /// Committed log id found on disk at start.
    recovered_committed: Option<LogId<NodeId>>,
    /// Latest durable vote.
    vote: Mutex<Option<Vote<NodeId>>>,
    queue: Mutex<mpsc::Sender<WriteOp>>,
}

/// The durable entries still in the cache.
#[derive(Default)]
struct Recent {
    entries: VecDeque<(LogId<NodeId>, usize)>,
    bytes: usize,
}

#[derive(Clone, Copy, Default)]
struct Bounds {
    last: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

enum WriteOp {
    Append {
        /// Log ids, encoded entries (moved out into the write) and their sizes.
        entries: Vec<(LogId<NodeId>, Vec<u8>, usize)>,
        callback: LogFlushed<TypeConfig>,
    },
    Truncate {
        from_index: u64,
        done: oneshot::Sender<Result<(), DiskError>>,
    },
    Purge {
        upto_index: u64,
        log_id: Vec<u8>,
        done: oneshot::Sender<Result<(), DiskError>>,
    },
    /// Completes once everything queued before it is durable.
    Flush {
        done: oneshot::Sender<Result<(), DiskError>>,
    },
    Vote {
        encoded: Vec<u8>,
        done: oneshot::Sender<Result<(), DiskError>>,
    },
}

impl LogStore {
    /// Opens the log kept in `data_dir` (its `wal` directory) and starts its writer thread.
    pub fn open(data_dir: &Path) -> Result<Self, DiskError> {
        let (wal, recovered) = Wal::open(&data_dir.join("wal"), SEGMENT_BYTES)?;
        let found = Found::decode(&recovered)?;
        let (sender, receiver) = mpsc::channel();
        let inner = Arc::new(Inner {
            wal: wal.reader(),
            cached: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(Recent::default()),
            bounds: Mutex::new(Bounds {
                last: found.last.or(found.purged),
                purged: found.purged,
            }),
            committed_index: AtomicU64::new(found.committed.map_or(0, |id| id.index)),
            committed: Mutex::new(found.committed),
            recovered_committed: found.committed,
            vote: Mutex::new(found.vote),
            queue: Mutex::new(sender),
        });
        let writer_inner = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("synod-log-writer".into())
            .spawn(move || run_writer(wal, receiver, writer_inner, found.committed))
            .map_err(|source| DiskError::DataDir {
                path: "log writer thread".into(),
                source,
            })?;
        Ok(Self { inner })
    }

    /// Waits until every write queued so far (and the latest committed index) is on disk.
    pub async fn flush(&self) -> Result<(), DiskError> {
        self.enqueue_and_wait(|done| WriteOp::Flush { done }).await
    }

    /// Highest log index known to be committed.
    pub fn committed_index(&self) -> u64 {
        self.inner.committed_index.load(Ordering::Relaxed)
    }

    fn enqueue(&self, op: WriteOp) -> Result<(), DiskError> {
        let queue = self.inner.queue.lock().expect("log queue lock");
        queue.send(op).map_err(|_| DiskError::WriterStopped)
    }

    async fn enqueue_and_wait(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), DiskError>>) -> WriteOp,
    ) -> Result<(), DiskError> {
        let (done, wait) = oneshot::channel();
        self.enqueue(make(done))?;
        wait.await.map_err(|_| DiskError::WriterStopped)?
    }

    fn read_range(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        if start >= end {
            return Ok(Vec::new());
        }
        // Cached first, then disk: an entry leaves the cache only after it is on disk.
        let mut found: BTreeMap<u64, Entry<TypeConfig>> = {
            let cached = self.inner.cached.lock().expect("cache lock");
            cached
                .range(start..end)
                .map(|(i, e)| (*i, e.clone()))
                .collect()
        };
        if let Some((first, last)) = missing(&found, start, end) {
            // Only the span the cache lacks (its oldest entries leave first, so usually a
            // prefix): the cached entries in the range may be models of several MB.
            let from_disk = self
                .inner
                .wal
                .read(first, last + 1)
                .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            for (index, bytes) in from_disk {
                if let std::collections::btree_map::Entry::Vacant(slot) = found.entry(index) {
                    let entry = decode::<Entry<TypeConfig>>("log entry", &bytes)
                        .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                    slot.insert(entry);
                }
            }
        }
        Ok(found.into_values().collect())
    }
}

/// The first and last index in `start..end` that `found` lacks, if any.
fn missing<V>(found: &BTreeMap<u64, V>, start: u64, end: u64) -> Option<(u64, u64)> {
    if found.len() as u64 == end - start {
        return None;
    }
    let first = (start..end).find(|index| !found.contains_key(index))?;
    let last = (first..end)
        .rev()
        .find(|index| !found.contains_key(index))?;
    Some((first, last))
}

/// What the log held when it was opened, decoded.
struct Found {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    last: Option<LogId<NodeId>>,
}

impl Found {
    fn decode(recovered: &Recovered) -> Result<Self, DiskError> {
        let vote = recovered
            .vote
            .as_deref()
            .map(|b| decode("vote", b))
            .transpose()?;
        let committed = match &recovered.committed {
            Some(bytes) => decode::<Option<LogId<NodeId>>>("committed", bytes)?,
            None => None,
        };
        let purged = match &recovered.purged {
            Some((_, bytes)) => Some(decode::<LogId<NodeId>>("purged log id", bytes)?),
            None => None,
        };
        let last = match &recovered.last_entry {
            Some(bytes) => Some(decode::<Entry<TypeConfig>>("log entry", bytes)?.log_id),
            None => None,
        };
        // Followers may learn of a commit before the entries reach their disk, so the committed
        // id written may run ahead of the log a crash left behind: it never counts beyond it.
        let end = last.or(purged);
        let committed = match (committed, end) {
            (Some(committed), Some(end)) if committed.index > end.index => Some(end),
            (Some(_), None) => None,
            (committed, _) => committed,
        };
        Ok(Self {
            vote,
            committed,
            purged,
            last,
        })
    }
}

fn run_writer(
    mut wal: Wal,
    receiver: mpsc::Receiver<WriteOp>,
    inner: std::sync::Weak<Inner>,
    mut written_committed: Option<LogId<NodeId>>,
) {
    while let Ok(first) = receiver.recv() {
        let mut ops = vec![first];
        ops.extend(receiver.try_iter().take(4096));
        let Some(inner) = inner.upgrade() else { return };
        let committed = *inner.committed.lock().expect("committed lock");
        let mut records: Vec<Record> = ops.iter_mut().flat_map(records_of).collect();
        // Last in the group: a torn group never keeps the commit point without the entries.
        if committed != written_committed {
            if let Ok(bytes) = encode("committed", &committed) {
                records.push(Record::Committed(bytes));
            }
        }
        let result = wal.write(&records).map_err(DiskError::from);
        if result.is_ok() {
            written_committed = committed;
        }
        finish_ops(&inner, ops, result);
    }
}

/// The log records that carry out `op` (an append's encoded entries move into them).
fn records_of(op: &mut WriteOp) -> Vec<Record> {
    match op {
        WriteOp::Append { entries, .. } => entries
            .iter_mut()
            .map(|(log_id, bytes, _)| Record::Entry {
                index: log_id.index,
                bytes: std::mem::take(bytes),
            })
            .collect(),
        WriteOp::Truncate { from_index, .. } => vec![Record::Truncate {
            from_index: *from_index,
        }],
        WriteOp::Purge {
            upto_index, log_id, ..
        } => vec![Record::Purge {
            upto_index: *upto_index,
            log_id: log_id.clone(),
        }],
        WriteOp::Vote { encoded, .. } => vec![Record::Vote(encoded.clone())],
        WriteOp::Flush { .. } => Vec::new(),
    }
}

fn finish_ops(inner: &Inner, ops: Vec<WriteOp>, result: Result<(), DiskError>) {
    let failed = result.as_ref().err().map(|e| e.to_string());
    let io_error = || std::io::Error::other(failed.clone().unwrap_or_default());
    for op in ops {
        match op {
            WriteOp::Append { entries, callback } => {
                if failed.is_none() {
                    inner.keep_recent(entries.iter().map(|(id, _, len)| (*id, *len)));
                }
                callback.log_io_completed(failed.as_ref().map_or(Ok(()), |_| Err(io_error())));
            }
            WriteOp::Truncate { done, .. }
            | WriteOp::Purge { done, .. }
            | WriteOp::Vote { done, .. }
            | WriteOp::Flush { done } => {
                let _ = done.send(match &failed {
                    None => Ok(()),
                    Some(error) => Err(DiskError::WriteFailed(error.clone())),
                });
            }
        }
    }
    if let Some(error) = failed {
        tracing::error!(%error, "log write failed");
    }
}

impl Inner {
    /// Notes `durable` entries as recent; the oldest beyond [`RECENT_BYTES`] leave the cache.
    fn keep_recent(&self, durable: impl Iterator<Item = (LogId<NodeId>, usize)>) {
        let mut recent = self.recent.lock().expect("recent lock");
        for (log_id, len) in durable {
            recent.entries.push_back((log_id, len));
            recent.bytes += len;
        }
        let mut cached = self.cached.lock().expect("cache lock");
        while recent.bytes > RECENT_BYTES {
            let Some((log_id, len)) = recent.entries.pop_front() else {
                break;
            };
            recent.bytes -= len;
            if cached.get(&log_id.index).map(|e| e.log_id) == Some(log_id) {
                cached.remove(&log_id.index);
            }
        }
    }
}

fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, AnyError::new(&error)),
    }
}

fn write_error(error: DiskError) -> StorageError<NodeId> {
    storage_error(ErrorSubject::Logs, ErrorVerb::Write, error)
}

fn bounds_of<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(x) => x.saturating_add(1),
        Bound::Excluded(x) => *x,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let (start, end) = bounds_of(&range);
        let last = self.inner.bounds.lock().expect("bounds lock").last;
        let end = end.min(last.map_or(0, |id| id.index + 1));
        self.read_range(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let bounds = *self.inner.bounds.lock().expect("bounds lock");
        Ok(LogState {
            last_purged_log_id: bounds.purged,
            last_log_id: bounds.last.or(bounds.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let encoded = encode("vote", vote)
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.enqueue_and_wait(|done| WriteOp::Vote { encoded, done })
            .await
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        *self.inner.vote.lock().expect("vote lock") = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(*self.inner.vote.lock().expect("vote lock"))
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Durability of `committed` is optional in Raft: the writer persists the latest value
        // with its next transaction, and nobody waits for it.
        *self.inner.committed.lock().expect("committed lock") = committed;
        let index = committed.map_or(0, |id| id.index);
        self.inner
            .committed_index
            .fetch_max(index, Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.inner.recovered_committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        let mut last = None;
        {
            let mut cached = self.inner.cached.lock().expect("cache lock");
            for entry in entries {
                let bytes = encode("log entry", &entry)
                    .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
                let log_id = *entry.get_log_id();
                let len = bytes.len();
                encoded.push((log_id, bytes, len));
                last = Some(log_id);
                cached.insert(log_id.index, entry);
            }
        }
        if let Some(last) = last {
            self.inner.bounds.lock().expect("bounds lock").last = Some(last);
        }
        self.enqueue(WriteOp::Append {
            entries: encoded,
            callback,
        })
        .map_err(write_error)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let from_index = log_id.index;
        self.inner
            .cached
            .lock()
            .expect("cache lock")
            .retain(|index, _| *index < from_index);
        let previous = if from_index == 0 {
            None
        } else {
            self.read_range(from_index - 1, from_index)?
                .pop()
                .map(|e| e.log_id)
        };
        {
            let mut bounds = self.inner.bounds.lock().expect("bounds lock");
            bounds.last = previous.or(bounds.purged);
        }
        self.enqueue_and_wait(|done| WriteOp::Truncate { from_index, done })
            .await
            .map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let encoded = encode("purged log id", &log_id)
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        {
            let mut bounds = self.inner.bounds.lock().expect("bounds lock");
            bounds.purged = Some(log_id);
            if bounds.last.is_none_or(|last| last.index < log_id.index) {
                bounds.last = Some(log_id);
            }
        }
        self.inner
            .cached
            .lock()
            .expect("cache lock")
            .retain(|index, _| *index > log_id.index);
        self.enqueue_and_wait(|done| WriteOp::Purge {
            upto_index: log_id.index,
            log_id: encoded,
            done,
        })
        .await
        .map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[tokio::test]
    async fn a_commit_point_ahead_of_the_durable_log_is_clamped_to_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(&dir.path().join("wal"), SEGMENT_BYTES).unwrap();
            let entries: Vec<Record> = (1..=3)
                .map(|i| Record::Entry {
                    index: i,
                    bytes: encode(
                        "entry",
                        &Entry::<TypeConfig> {
                            log_id: log_id(i),
                            payload: EntryPayload::Blank,
                        },
                    )
                    .unwrap(),
                })
                .collect();
            wal.write(&entries).unwrap();
            // A follower heard of commit index 5 before entries 4 and 5 reached its disk.
            let committed = encode("committed", &Some(log_id(5))).unwrap();
            wal.write(&[Record::Committed(committed)]).unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3)));
        assert_eq!(store.committed_index(), 3);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(3)));
    }

    #[tokio::test]
    async fn durable_entries_leave_memory_oldest_first_beyond_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let blank = |i| Entry::<TypeConfig> {
            log_id: log_id(i),
            payload: EntryPayload::Blank,
        };
        let third = RECENT_BYTES / 3 + 1;
        {
            let mut cached = store.inner.cached.lock().unwrap();
            for i in 1..=4 {
                cached.insert(i, blank(i));
            }
        }
        store.inner.keep_recent((1..=2).map(|i| (log_id(i), third)));
        let cached = |store: &LogStore| -> Vec<u64> {
            store.inner.cached.lock().unwrap().keys().copied().collect()
        };
        assert_eq!(cached(&store), vec![1, 2, 3, 4], "within the budget");
        store.inner.keep_recent((3..=4).map(|i| (log_id(i), third)));
        assert_eq!(cached(&store), vec![3, 4], "the two oldest left");
        // An entry replaced (truncated, appended again under another term) stays.
        let other = LogId::new(CommittedLeaderId::new(2, 1), 5);
        store.inner.cached.lock().unwrap().insert(
            5,
            Entry {
                log_id: other,
                payload: EntryPayload::Blank,
            },
        );
        store
            .inner
            .keep_recent([(log_id(5), RECENT_BYTES)].into_iter());
        assert_eq!(cached(&store), vec![5]);
    }

    #[test]
    fn only_the_span_the_cache_lacks_is_read_from_disk() {
        let found =
            |indexes: &[u64]| -> BTreeMap<u64, ()> { indexes.iter().map(|i| (*i, ())).collect() };
        assert_eq!(missing(&found(&[3, 4, 5]), 3, 6), None);
        assert_eq!(
            missing(&found(&[5, 6]), 2, 7),
            Some((2, 4)),
            "evicted prefix"
        );
        assert_eq!(missing(&found(&[2, 6]), 2, 7), Some((3, 5)), "a hole");
        assert_eq!(missing(&found(&[]), 2, 4), Some((2, 3)));
    }

    #[tokio::test]
    async fn a_read_joins_entries_from_disk_with_the_cached_rest() {
        let dir = tempfile::tempdir().unwrap();
        let blank = |i| Entry::<TypeConfig> {
            log_id: log_id(i),
            payload: EntryPayload::Blank,
        };
        {
            let (mut wal, _) = Wal::open(&dir.path().join("wal"), SEGMENT_BYTES).unwrap();
            let durable: Vec<Record> = (1..=2)
                .map(|i| Record::Entry {
                    index: i,
                    bytes: encode("entry", &blank(i)).unwrap(),
                })
                .collect();
            wal.write(&durable).unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        {
            // Appended, not yet on disk.
            let mut cached = store.inner.cached.lock().unwrap();
            for i in 3..=4 {
                cached.insert(i, blank(i));
            }
        }
        store.inner.bounds.lock().unwrap().last = Some(log_id(4));
        let read = store.try_get_log_entries(1..5).await.unwrap();
        let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4]);
        let tail = store.try_get_log_entries(2..=3).await.unwrap();
        assert_eq!(
            tail.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }
}
