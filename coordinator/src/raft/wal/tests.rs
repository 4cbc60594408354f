//! The write-ahead log across reopenings: what was written durably is what is read back, a
//! torn tail is cut off, and purged segments go away.

use std::io::Write;

use super::*;

fn entry(index: u64) -> Record {
    Record::Entry {
        index,
        bytes: format!("entry-{index}").into_bytes(),
    }
}

fn entries(range: std::ops::Range<u64>) -> Vec<Record> {
    range.map(entry).collect()
}

fn read_all(wal: &Wal) -> Vec<u64> {
    let read = wal.reader().read(0, u64::MAX).unwrap();
    for (index, bytes) in &read {
        assert_eq!(bytes, format!("entry-{index}").as_bytes());
    }
    read.into_iter().map(|(i, _)| i).collect()
}

fn segment_files(dir: &Path) -> Vec<u64> {
    segment::list(dir).unwrap()
}

#[test]
fn entries_and_metadata_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, recovered) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert!(recovered.vote.is_none() && recovered.last_entry.is_none());
    wal.write(&entries(1..4)).unwrap();
    wal.write(&[Record::Vote(b"v1".to_vec()), entry(4)])
        .unwrap();
    wal.write(&[Record::Committed(b"c3".to_vec())]).unwrap();
    assert_eq!(read_all(&wal), vec![1, 2, 3, 4]);
    drop(wal);

    let (wal, recovered) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(read_all(&wal), vec![1, 2, 3, 4]);
    assert_eq!(recovered.vote.as_deref(), Some(&b"v1"[..]));
    assert_eq!(recovered.committed.as_deref(), Some(&b"c3"[..]));
    assert_eq!(recovered.last_entry.as_deref(), Some(&b"entry-4"[..]));
    assert_eq!(wal.reader().read(2, 4).unwrap().len(), 2);
}

#[test]
fn a_truncation_holds_after_a_reopen_and_new_entries_replace_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    wal.write(&entries(1..6)).unwrap();
    wal.write(&[Record::Truncate { from_index: 3 }]).unwrap();
    assert_eq!(read_all(&wal), vec![1, 2]);
    drop(wal);
    let (mut wal, recovered) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(read_all(&wal), vec![1, 2]);
    assert_eq!(recovered.last_entry.as_deref(), Some(&b"entry-2"[..]));
    wal.write(&entries(3..5)).unwrap();
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(read_all(&wal), vec![1, 2, 3, 4]);
}

#[test]
fn purged_segments_are_deleted_and_metadata_moves_to_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny segments: every group of ten entries fills one.
    let (mut wal, _) = Wal::open(dir.path(), 150).unwrap();
    wal.write(&[Record::Vote(b"v".to_vec())]).unwrap();
    for start in (1..50).step_by(10) {
        wal.write(&entries(start..start + 10)).unwrap();
    }
    assert!(segment_files(dir.path()).len() >= 5, "segments rotate");
    wal.write(&[Record::Purge {
        upto_index: 35,
        log_id: b"p35".to_vec(),
    }])
    .unwrap();
    assert_eq!(read_all(&wal), (36..51).collect::<Vec<_>>());
    let left = segment_files(dir.path());
    assert!(left.len() <= 3, "segments wholly purged are gone: {left:?}");
    drop(wal);

    let (wal, recovered) = Wal::open(dir.path(), 150).unwrap();
    assert_eq!(read_all(&wal), (36..51).collect::<Vec<_>>());
    assert_eq!(recovered.vote.as_deref(), Some(&b"v"[..]), "vote kept");
    assert_eq!(recovered.purged, Some((35, b"p35".to_vec())));
}

#[test]
fn a_torn_last_record_is_cut_off_and_writing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    wal.write(&entries(1..4)).unwrap();
    let end = wal.offset;
    drop(wal);
    // A crash mid-write: half a record where the next group would go.
    let mut torn = Vec::new();
    entry(4).encode_into(&mut torn);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(format!("{:020}.wal", 1)))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &torn[..torn.len() / 2], end).unwrap();
    drop(file);

    let (mut wal, recovered) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(read_all(&wal), vec![1, 2, 3]);
    assert_eq!(recovered.last_entry.as_deref(), Some(&b"entry-3"[..]));
    wal.write(&entries(4..6)).unwrap();
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(read_all(&wal), vec![1, 2, 3, 4, 5]);
}

#[test]
fn damage_before_the_last_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 150).unwrap();
    for start in (1..30).step_by(10) {
        wal.write(&entries(start..start + 10)).unwrap();
    }
    drop(wal);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(format!("{:020}.wal", 1)))
        .unwrap();
    file.write_all(b"garbage!garbage!").unwrap();
    drop(file);
    let error = Wal::open(dir.path(), 150).unwrap_err();
    assert!(
        matches!(
            error,
            WalError::Damaged {
                segment: 1,
                offset: 0
            }
        ),
        "{error}"
    );
}

#[test]
fn a_record_larger_than_a_segment_is_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 4096).unwrap();
    let big = Record::Entry {
        index: 1,
        bytes: vec![7; 3 << 20],
    };
    wal.write(&[entry(0)]).unwrap();
    wal.write(std::slice::from_ref(&big)).unwrap();
    drop(wal);
    let (wal, recovered) = Wal::open(dir.path(), 4096).unwrap();
    let read = wal.reader().read(1, 2).unwrap();
    assert_eq!(read[0].1.len(), 3 << 20);
    assert_eq!(recovered.last_entry.map(|b| b.len()), Some(3 << 20));
}

#[test]
fn a_crash_right_after_a_new_segment_was_created_keeps_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 150).unwrap();
    wal.write(&[Record::Vote(b"v".to_vec())]).unwrap();
    wal.write(&entries(1..6)).unwrap();
    wal.write(&[Record::Purge {
        upto_index: 5,
        log_id: b"p5".to_vec(),
    }])
    .unwrap();
    let next = wal.current.id + 1;
    drop(wal);
    // Rotation created the next segment, then the node died before writing to it.
    segment::Segment::create(dir.path(), next, 150).unwrap();
    for reopening in 1..=2 {
        let (_wal, recovered) = Wal::open(dir.path(), 150).unwrap();
        assert_eq!(
            recovered.vote.as_deref(),
            Some(&b"v"[..]),
            "reopen {reopening}"
        );
        assert_eq!(
            recovered.purged,
            Some((5, b"p5".to_vec())),
            "reopen {reopening}"
        );
    }
}

#[test]
fn records_of_a_lost_group_behind_a_gap_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    wal.write(&entries(1..2)).unwrap();
    let lost_at = wal.offset;
    wal.write(&entries(2..4)).unwrap();
    drop(wal);
    // A crash kept the page of entry 3 but not the one of entry 2 (same group, never acked).
    let mut framed = Vec::new();
    entry(2).encode_into(&mut framed);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(format!("{:020}.wal", 1)))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![0; framed.len()], lost_at).unwrap();
    drop(file);
    let (mut wal, _) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(read_all(&wal), vec![1]);
    // A new entry 2 of the same size ends exactly where the stale entry 3 began.
    wal.write(&entries(2..3)).unwrap();
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), SEGMENT_BYTES).unwrap();
    assert_eq!(read_all(&wal), vec![1, 2], "the stale entry 3 came back");
}

#[test]
fn groups_of_every_size_straddling_blocks_read_back_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 256 * 1024).unwrap();
    let sized = |index: u64| Record::Entry {
        index,
        bytes: vec![index as u8; (index as usize * 997) % 9000],
    };
    let mut next = 1;
    for group in 0..60u64 {
        let records: Vec<Record> = (next..next + group % 4 + 1).map(sized).collect();
        next += records.len() as u64;
        wal.write(&records).unwrap();
        if group % 20 == 19 {
            drop(wal);
            wal = Wal::open(dir.path(), 256 * 1024).unwrap().0;
        }
    }
    drop(wal);
    let (wal, recovered) = Wal::open(dir.path(), 256 * 1024).unwrap();
    let read = wal.reader().read(0, u64::MAX).unwrap();
    assert_eq!(read.len() as u64, next - 1);
    for (index, bytes) in read {
        let Record::Entry {
            bytes: expected, ..
        } = sized(index)
        else {
            unreachable!()
        };
        assert_eq!(bytes, expected, "entry {index}");
    }
    assert!(recovered.last_entry.is_some());
    assert!(segment_files(dir.path()).len() > 1, "segments rotated");
}
