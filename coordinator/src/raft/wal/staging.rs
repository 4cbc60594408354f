//! The memory a group is framed in before it is written: block-aligned, reused from group to
//! group, and starting with the segment's partial last block, so every group reaches the disk
//! as whole blocks at a block boundary, which direct I/O requires.
//!
//! ```text
//!   segment:  … | block k: [records on disk][ zeros … ] | …
//!   staging:      [records on disk][this group's records][zeros to a block end]
//!                 └─ written at block k; the group's partial last block stays for the next
//! ```
//!
//! Rewriting the bytes of the partial block already on disk writes them unchanged, so a crash
//! during the write can tear only this group's records.

use super::record::Record;

/// Alignment and size unit of every write (the largest logical block size in common use).
pub const BLOCK: usize = 4096;

/// Staging memory kept between groups; a larger buffer is released after the group it served.
const RETAINED_BYTES: usize = 8 * 1024 * 1024;

/// Reusable framing memory for one writer.
#[derive(Debug, Default)]
pub struct Staging {
    bytes: Vec<u8>,
    /// The current segment's bytes from its last block boundary to its end.
    tail: Vec<u8>,
}

/// A group framed and ready to write.
#[derive(Debug)]
pub struct Framed<'a> {
    /// Whole blocks, block-aligned in memory.
    pub blocks: &'a [u8],
    /// Segment offset of `blocks` (a block boundary).
    pub at: u64,
    /// Where each record starts, counted from the group's first byte.
    pub starts: Vec<usize>,
    /// Bytes of the group's records.
    pub len: usize,
}

impl Staging {
    /// Starts a segment whose data ends at `tail.len()` bytes past a block boundary, `tail`
    /// being the bytes from that boundary on (empty for a new segment).
    pub fn resume(&mut self, tail: Vec<u8>) {
        debug_assert!(tail.len() < BLOCK);
        self.tail = tail;
    }

    /// Frames `groups` of records, in order, to follow the segment's data at `offset`.
    pub fn frame(&mut self, offset: u64, groups: &[&[Record]]) -> Framed<'_> {
        let lead = self.tail.len();
        debug_assert_eq!(lead as u64, offset % BLOCK as u64, "tail out of step");
        let len: usize = groups.iter().flat_map(|g| g.iter()).map(framed_len).sum();
        let padded = (lead + len).next_multiple_of(BLOCK);
        if self.bytes.capacity() > RETAINED_BYTES.max(padded + BLOCK) {
            self.bytes = Vec::new();
        }
        self.bytes.clear();
        // Room for the data and for moving its start to a block boundary: no reallocation
        // below, so the alignment holds.
        self.bytes.reserve(padded + BLOCK);
        let start = self.bytes.as_ptr().align_offset(BLOCK);
        self.bytes.resize(start, 0);
        self.bytes.extend_from_slice(&self.tail);
        let mut starts = Vec::new();
        for record in groups.iter().flat_map(|g| g.iter()) {
            starts.push(self.bytes.len() - start - lead);
            record.encode_into(&mut self.bytes);
        }
        let end = lead + len;
        self.bytes.resize(start + padded, 0);
        let data = &self.bytes[start..];
        self.tail.clear();
        self.tail.extend_from_slice(&data[end - end % BLOCK..end]);
        Framed {
            blocks: data,
            at: offset - lead as u64,
            starts,
            len,
        }
    }
}

/// Bytes `record` takes once framed.
pub fn framed_len(record: &Record) -> usize {
    super::record::HEADER_BYTES
        + 1
        + match record {
            Record::Entry { bytes, .. } => 8 + bytes.len(),
            Record::Truncate { .. } => 8,
            Record::Purge { log_id, .. } => 8 + log_id.len(),
            Record::Vote(bytes) | Record::Committed(bytes) => bytes.len(),
        }
}

#[cfg(test)]
mod tests {
    use super::super::record::framed;
    use super::*;

    fn vote(len: usize) -> Record {
        Record::Vote(vec![7; len])
    }

    #[test]
    fn framed_len_is_what_encoding_writes() {
        let records = [
            Record::Entry {
                index: 3,
                bytes: vec![1; 10],
            },
            Record::Truncate { from_index: 2 },
            Record::Purge {
                upto_index: 1,
                log_id: vec![2; 5],
            },
            vote(4),
            Record::Committed(Vec::new()),
        ];
        for record in &records {
            assert_eq!(framed_len(record), framed(record).len(), "{record:?}");
        }
    }

    #[test]
    fn groups_are_whole_aligned_blocks_that_carry_the_partial_block_forward() {
        let mut staging = Staging::default();
        let first = [vote(100)];
        let framed_first = staging.frame(0, &[&first]);
        assert_eq!(framed_first.at, 0);
        assert_eq!(framed_first.blocks.len(), BLOCK);
        assert_eq!(framed_first.blocks.as_ptr() as usize % BLOCK, 0);
        assert_eq!(framed_first.starts, vec![0]);
        let first_len = framed_first.len;
        let on_disk = framed_first.blocks[..first_len].to_vec();
        assert!(framed_first.blocks[first_len..].iter().all(|b| *b == 0));

        // A group crossing a block boundary starts at the same block, old bytes first.
        let second = [vote(5000), vote(1)];
        let framed_second = staging.frame(first_len as u64, &[&second]);
        assert_eq!(framed_second.at, 0);
        let end = first_len + framed_second.len;
        assert_eq!(framed_second.blocks.len(), end.next_multiple_of(BLOCK));
        assert!(framed_second.blocks.len() > BLOCK);
        assert_eq!(&framed_second.blocks[..first_len], &on_disk[..]);
        assert_eq!(framed_second.starts, vec![0, framed(&second[0]).len()]);
        let expected: Vec<u8> = second.iter().flat_map(framed).collect();
        assert_eq!(&framed_second.blocks[first_len..end], &expected[..]);

        // The next group starts at the block where the second one ended.
        let third = [vote(1)];
        let framed_third = staging.frame(end as u64, &[&third]);
        assert_eq!(framed_third.at, (end - end % BLOCK) as u64);
        assert_eq!(framed_third.blocks.len(), BLOCK);
    }

    #[test]
    fn a_new_segment_starts_without_a_tail() {
        let mut staging = Staging::default();
        let records = [vote(10)];
        let len = staging.frame(0, &[&records]).len;
        staging.resume(Vec::new());
        let framed = staging.frame(0, &[&records]);
        assert_eq!((framed.at, framed.len), (0, len));
    }
}
