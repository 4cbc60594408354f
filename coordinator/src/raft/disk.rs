//! The node's embedded, crash-safe snapshot store: one redb database file in the data directory
//! holding the latest snapshot (the Raft log and its metadata live in the write-ahead log,
//! `wal/`), and the one error type of the node's storage.
//!
//! Every write transaction commits with fsync (redb's immediate durability).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};

/// Stored values by name.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Metadata key of the latest snapshot (meta and data).
pub(super) const SNAPSHOT_KEY: &str = "snapshot";

/// The on-disk store failed: the node cannot go on safely.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// redb reported an error.
    #[error("storage: {0}")]
    Redb(Box<redb::Error>),
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] super::wal::WalError),
    /// Stored metadata could not be decoded.
    #[error("stored log metadata: {0}")]
    Undecodable(#[from] super::codec::CodecError),
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A group write failed; every operation in it failed with it.
    #[error("log write failed: {0}")]
    WriteFailed(String),
    /// The writer thread is gone (the node is shutting down).
    #[error("storage writer stopped")]
    WriterStopped,
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for DiskError {
            fn from(e: $t) -> Self { DiskError::Redb(Box::new(e.into())) }
        }
    )*};
}
redb_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A shared handle on the node's database.
pub type Disk = Arc<Database>;

/// Opens (or creates) the database in `data_dir`, creating the directory and tables if needed.
pub fn open_disk(data_dir: &Path) -> Result<Disk, DiskError> {
    std::fs::create_dir_all(data_dir).map_err(|source| DiskError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let db = Database::create(data_dir.join("synod.redb"))?;
    let txn = db.begin_write()?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(Arc::new(db))
}

/// Reads one metadata value.
pub(super) fn read_meta(disk: &Database, key: &str) -> Result<Option<Vec<u8>>, DiskError> {
    let txn = disk.begin_read()?;
    let table = txn.open_table(META)?;
    Ok(table.get(key)?.map(|value| value.value().to_vec()))
}

/// Writes one metadata value durably.
pub(super) fn write_meta(disk: &Database, key: &str, value: &[u8]) -> Result<(), DiskError> {
    let txn = disk.begin_write()?;
    txn.open_table(META)?.insert(key, value)?;
    txn.commit()?;
    Ok(())
}
