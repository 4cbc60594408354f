//! openraft's storage conformance suite run against Synod's stores (write-ahead log and redb
//! snapshots).

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::{open_disk, LogStore, NodeId, StateMachineStore, TypeConfig};

struct DiskBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for DiskBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = open_disk(dir.path()).expect("open disk");
        let log = LogStore::open(dir.path()).expect("open log");
        let state_machine = StateMachineStore::open(disk)?;
        Ok((dir, log, state_machine))
    }
}

#[test]
#[allow(clippy::result_large_err)]
fn the_stores_pass_the_openraft_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(DiskBuilder)
}
