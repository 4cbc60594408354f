//! The write-ahead log holding a node's Raft log and Raft metadata (vote, committed, purged):
//! a directory of preallocated segment files written strictly in order.
//!
//! ```text
//!   write([records]) ─► frame all (len, crc32, kind, body) into aligned staging memory
//!                       ─► 1 pwrite of whole blocks (direct I/O) + 1 fdatasync
//!                     └► segment full? new segment, headed by the current vote/committed/purge
//!   open(dir)        ─► replay every segment in order; a torn record ends the last one
//!                       (cut there); damage in an earlier segment refuses to start
//!   read(range)      ─► in-memory index: entry index ─► (segment, offset, len) ─► pread
//!   purge(upto)      ─► a purge record; segments wholly at or below it are deleted
//! ```
//!
//! One sequential write and one flush per group, to blocks the file already owns, is the least
//! a durable log can ask of a disk — and what keeps Synod's commit latency steady when several
//! replicas share one. The log never interprets what it stores: entries and metadata arrive
//! encoded.

mod record;
mod segment;
mod staging;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use record::Record;
use record::{scan, Scanned, ENTRY_BYTES_OFFSET};
use segment::Segment;
use staging::Staging;

/// Space allocated for each segment; a group larger than what is left starts a new one.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A flush at least this slow is logged: the disk stalled, and every commit waited for it.
const SLOW_FLUSH: Duration = Duration::from_millis(100);

/// The log on disk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("write-ahead log in {dir}: {source}")]
    Io {
        /// The log's directory.
        dir: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// A segment other than the last holds a damaged record: not a torn write, so corruption.
    #[error("write-ahead log segment {segment} is damaged at byte {offset}; restore this node from a peer (remove its data directory and add it again)")]
    Damaged {
        /// The segment's sequence number.
        segment: u64,
        /// Where the damaged record starts.
        offset: usize,
    },
    /// An earlier write failed; what reached the disk is unknown, so nothing more is written.
    #[error("write-ahead log stopped after a failed write; restart the node")]
    Stopped,
}

/// The metadata found when the log was opened (each as last written, encoded).
#[derive(Debug, Default, Clone)]
pub struct Recovered {
    /// The latest vote.
    pub vote: Option<Vec<u8>>,
    /// The latest committed log id.
    pub committed: Option<Vec<u8>>,
    /// The latest purge: highest purged index and its encoded log id.
    pub purged: Option<(u64, Vec<u8>)>,
    /// The encoded entry with the highest index still in the log.
    pub last_entry: Option<Vec<u8>>,
}

/// Where an entry's bytes are.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    offset: u64,
    len: usize,
}

/// What readers share with the writer.
#[derive(Debug, Default)]
struct Index {
    entries: BTreeMap<u64, Location>,
    segments: BTreeMap<u64, Segment>,
}

/// Reads entries while the writer goes on. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WalReader {
    index: Arc<Mutex<Index>>,
}

impl WalReader {
    /// The encoded entries with indexes in `start..end` that the log holds, in order.
    pub fn read(&self, start: u64, end: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let wanted: Vec<(u64, Segment, Location)> = {
            let index = self.index.lock().expect("wal index lock");
            index
                .entries
                .range(start..end)
                .filter_map(|(i, at)| Some((*i, index.segments.get(&at.segment)?.clone(), *at)))
                .collect()
        };
        wanted
            .into_iter()
            .map(|(i, segment, at)| Ok((i, segment.read_at(at.offset, at.len)?)))
            .collect()
    }
}

/// The writing side of the log; owned by one writer.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    current: Segment,
    /// Next write position in `current`.
    offset: u64,
    /// Highest entry index written to each segment.
    last_index_of: BTreeMap<u64, u64>,
    meta: Recovered,
    index: Arc<Mutex<Index>>,
    staging: Staging,
    stopped: bool,
}

impl Wal {
    /// Opens the log in `dir` (creating it when new) and replays it.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Self, Recovered), WalError> {
        let io = io_error(dir);
        std::fs::create_dir_all(dir).map_err(&io)?;
        let ids = segment::list(dir).map_err(&io)?;
        let segments = match ids.is_empty() {
            true => vec![Segment::create(dir, 1, segment_bytes).map_err(&io)?],
            false => ids
                .iter()
                .map(|id| Segment::open(dir, *id))
                .collect::<io::Result<_>>()
                .map_err(&io)?,
        };
        let mut wal = Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            current: segments[0].clone(),
            offset: 0,
            last_index_of: BTreeMap::new(),
            meta: Recovered::default(),
            index: Arc::default(),
            staging: Staging::default(),
            stopped: false,
        };
        let count = segments.len();
        for (n, segment) in segments.into_iter().enumerate() {
            wal.replay(segment, n + 1 == count)?;
        }
        let tail = wal.current.tail(wal.offset).map_err(&io)?;
        wal.staging.resume(tail);
        if wal.offset == 0 {
            // A segment created just before a crash holds nothing yet: give it the metadata
            // before any older segment may go.
            wal.write_group(&[]).map_err(&io)?;
        }
        wal.drop_purged_segments();
        let recovered = wal.recovered().map_err(&io)?;
        Ok((wal, recovered))
    }

    /// A reader sharing this log's index.
    pub fn reader(&self) -> WalReader {
        WalReader {
            index: self.index.clone(),
        }
    }

    /// Writes `records` in order, durably, as one group.
    pub fn write(&mut self, records: &[Record]) -> Result<(), WalError> {
        if self.stopped {
            return Err(WalError::Stopped);
        }
        if records.is_empty() {
            return Ok(());
        }
        let result = self.write_group(records);
        if result.is_err() {
            self.stopped = true;
        }
        result.map_err(io_error(&self.dir))
    }

    fn write_group(&mut self, records: &[Record]) -> io::Result<()> {
        let len: usize = records.iter().map(staging::framed_len).sum();
        if self.offset > 0 && self.offset + len as u64 > self.segment_bytes {
            let next = Segment::create(&self.dir, self.current.id + 1, self.segment_bytes)?;
            self.adopt(next);
        }
        // A segment starts with the current metadata, so older segments can be deleted.
        let head = match self.offset {
            0 => self.head_records(),
            _ => Vec::new(),
        };
        let staging::Framed {
            blocks,
            at,
            starts,
            len: written,
        } = self.staging.frame(self.offset, &[&head, records]);
        let segment = &self.current;
        let took = timed(|| segment.write_durably(at, blocks))?;
        if took >= SLOW_FLUSH {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                bytes = written,
                "slow write-ahead log flush: the disk stalled"
            );
        }
        let (head_starts, body_starts) = starts.split_at(head.len());
        self.note_all(&head, head_starts);
        self.note_all(records, body_starts);
        self.offset += written as u64;
        if records.iter().any(|r| matches!(r, Record::Purge { .. })) {
            self.drop_purged_segments();
        }
        Ok(())
    }

    /// The metadata a new segment starts with, so older segments can be deleted.
    fn head_records(&self) -> Vec<Record> {
        let mut head = Vec::new();
        if let Some(vote) = &self.meta.vote {
            head.push(Record::Vote(vote.clone()));
        }
        if let Some(committed) = &self.meta.committed {
            head.push(Record::Committed(committed.clone()));
        }
        if let Some((upto_index, log_id)) = &self.meta.purged {
            head.push(Record::Purge {
                upto_index: *upto_index,
                log_id: log_id.clone(),
            });
        }
        head
    }

    /// Makes `segment` the one written to, from its start.
    fn adopt(&mut self, segment: Segment) {
        self.offset = 0;
        self.staging.resume(Vec::new());
        self.index
            .lock()
            .expect("wal index lock")
            .segments
            .insert(segment.id, segment.clone());
        self.current = segment;
    }

    /// Replays `segment`; the last one may end in a torn record, cut off here.
    fn replay(&mut self, segment: Segment, last: bool) -> Result<(), WalError> {
        let io = io_error(&self.dir.clone());
        self.adopt(segment.clone());
        let file_len = segment.len().map_err(&io)?;
        let mut chunk = ChunkReader::default();
        loop {
            match scan(chunk.rest()) {
                Scanned::Record(record, len) => {
                    self.note(&record, chunk.position() as usize);
                    chunk.consume(len);
                }
                Scanned::Short if chunk.end() < file_len => {
                    chunk.read_more(&segment).map_err(&io)?;
                }
                Scanned::End => break,
                Scanned::Short if chunk.rest().iter().all(|b| *b == 0) => break,
                Scanned::Short | Scanned::Damaged if last => {
                    tracing::warn!(
                        segment = segment.id,
                        offset = chunk.position(),
                        "write-ahead log ends in a torn record; cutting it off"
                    );
                    break;
                }
                Scanned::Short | Scanned::Damaged => {
                    return Err(WalError::Damaged {
                        segment: segment.id,
                        offset: chunk.position() as usize,
                    })
                }
            }
        }
        self.offset = chunk.position();
        if last {
            // Zero everything past the end: a crash may have left later records of a lost group
            // behind a gap, and they must not come back once new records fill the gap.
            segment
                .cut_at(self.offset, self.segment_bytes)
                .map_err(&io)?;
        }
        Ok(())
    }

    fn note_all(&mut self, records: &[Record], starts: &[usize]) {
        let base = self.offset as usize;
        for (record, start) in records.iter().zip(starts) {
            self.note(record, base + start);
        }
    }

    /// Applies what `record`, framed at `position` of the current segment, says to the index
    /// and metadata.
    fn note(&mut self, record: &Record, position: usize) {
        let segment = self.current.id;
        let mut index = self.index.lock().expect("wal index lock");
        match record {
            Record::Entry { index: i, bytes } => {
                if self.meta.purged.as_ref().is_some_and(|(p, _)| i <= p) {
                    return;
                }
                let at = Location {
                    segment,
                    offset: (position + ENTRY_BYTES_OFFSET) as u64,
                    len: bytes.len(),
                };
                index.entries.insert(*i, at);
                let last = self.last_index_of.entry(segment).or_default();
                *last = (*last).max(*i);
            }
            Record::Truncate { from_index } => {
                index.entries.split_off(from_index);
            }
            Record::Purge { upto_index, log_id } => {
                index.entries = index.entries.split_off(&(upto_index + 1));
                self.meta.purged = Some((*upto_index, log_id.clone()));
            }
            Record::Vote(vote) => self.meta.vote = Some(vote.clone()),
            Record::Committed(committed) => self.meta.committed = Some(committed.clone()),
        }
    }

    /// Deletes the oldest segments whose entries are all purged (never the current one, which
    /// starts with the metadata). A segment that cannot be deleted stays, with every newer one,
    /// until the next purge: it costs disk space, never correctness.
    fn drop_purged_segments(&mut self) {
        let purged = self.meta.purged.as_ref().map_or(0, |(upto, _)| *upto);
        let ids: Vec<u64> = {
            let index = self.index.lock().expect("wal index lock");
            index.segments.keys().copied().collect()
        };
        for id in ids {
            let all_purged = self
                .last_index_of
                .get(&id)
                .is_none_or(|last| *last <= purged);
            if id == self.current.id || !all_purged {
                break;
            }
            if let Err(error) = Segment::remove(&self.dir, id) {
                tracing::warn!(segment = id, %error, "purged write-ahead log segment not deleted");
                break;
            }
            self.last_index_of.remove(&id);
            self.index
                .lock()
                .expect("wal index lock")
                .segments
                .remove(&id);
        }
    }

    fn recovered(&self) -> io::Result<Recovered> {
        let last = {
            let index = self.index.lock().expect("wal index lock");
            index.entries.keys().next_back().copied()
        };
        let last_entry = match last {
            Some(i) => self.reader().read(i, i + 1)?.pop().map(|(_, bytes)| bytes),
            None => None,
        };
        Ok(Recovered {
            last_entry,
            ..self.meta.clone()
        })
    }
}

/// Runs `write` and tells how long it took (disk I/O time, not replicated time).
#[allow(clippy::disallowed_methods)]
fn timed(write: impl FnOnce() -> io::Result<()>) -> io::Result<Duration> {
    let started = std::time::Instant::now();
    write()?;
    Ok(started.elapsed())
}

/// Wraps a file error with the log's directory.
fn io_error(dir: &Path) -> impl Fn(io::Error) -> WalError {
    let dir = dir.display().to_string();
    move |source| WalError::Io {
        dir: dir.clone(),
        source,
    }
}

/// Reads a segment front to back in growing chunks, so replay reads only what was written.
#[derive(Default)]
struct ChunkReader {
    bytes: Vec<u8>,
    /// File offset of `bytes[0]`.
    start: u64,
    /// Consumed bytes of `bytes`.
    consumed: usize,
}

impl ChunkReader {
    const CHUNK_BYTES: usize = 1 << 20;

    fn rest(&self) -> &[u8] {
        &self.bytes[self.consumed..]
    }

    /// File offset of the next unread byte.
    fn position(&self) -> u64 {
        self.start + self.consumed as u64
    }

    /// File offset just past what was read.
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn consume(&mut self, len: usize) {
        self.consumed += len;
    }

    /// Reads at least a chunk more (and at least as much as is buffered, so a large record
    /// takes few reads).
    fn read_more(&mut self, segment: &Segment) -> io::Result<()> {
        self.bytes.drain(..self.consumed);
        self.start += self.consumed as u64;
        self.consumed = 0;
        let want = Self::CHUNK_BYTES.max(self.bytes.len());
        let more = segment.read_at(self.end(), want)?;
        if more.is_empty() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        self.bytes.extend_from_slice(&more);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
