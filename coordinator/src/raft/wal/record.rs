//! The write-ahead log's record format: what a record says and how it is framed on disk.
//!
//! ```text
//!   ┌──────────┬──────────┬──────┬────────────────────┐
//!   │ len: u32 │ crc: u32 │ kind │ body (len - 1)     │   little-endian; crc32 of kind+body
//!   └──────────┴──────────┴──────┴────────────────────┘
//!   len == 0 marks the end of a segment's records (its preallocated tail is zeros).
//! ```
//!
//! Pure data and byte shuffling: no I/O.

/// Bytes before a record's kind: its length and checksum.
pub const HEADER_BYTES: usize = 8;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A log entry at `index`, encoded by the caller.
    Entry {
        /// Raft log index.
        index: u64,
        /// The encoded entry.
        bytes: Vec<u8>,
    },
    /// Entries at `from_index` and after are gone.
    Truncate {
        /// First removed index.
        from_index: u64,
    },
    /// Entries up to this log id (encoded) are purged.
    Purge {
        /// Highest purged index.
        upto_index: u64,
        /// The encoded purged log id.
        log_id: Vec<u8>,
    },
    /// The encoded Raft vote.
    Vote(Vec<u8>),
    /// The encoded committed log id.
    Committed(Vec<u8>),
}

const ENTRY: u8 = 1;
const TRUNCATE: u8 = 2;
const PURGE: u8 = 3;
const VOTE: u8 = 4;
const COMMITTED: u8 = 5;

/// Where an entry's bytes start within its framed record.
pub const ENTRY_BYTES_OFFSET: usize = HEADER_BYTES + 1 + 8;

impl Record {
    /// Appends the framed record to `buffer`.
    pub fn encode_into(&self, buffer: &mut Vec<u8>) {
        let start = buffer.len();
        buffer.extend_from_slice(&[0; HEADER_BYTES]);
        match self {
            Record::Entry { index, bytes } => {
                buffer.push(ENTRY);
                buffer.extend_from_slice(&index.to_le_bytes());
                buffer.extend_from_slice(bytes);
            }
            Record::Truncate { from_index } => {
                buffer.push(TRUNCATE);
                buffer.extend_from_slice(&from_index.to_le_bytes());
            }
            Record::Purge { upto_index, log_id } => {
                buffer.push(PURGE);
                buffer.extend_from_slice(&upto_index.to_le_bytes());
                buffer.extend_from_slice(log_id);
            }
            Record::Vote(bytes) => {
                buffer.push(VOTE);
                buffer.extend_from_slice(bytes);
            }
            Record::Committed(bytes) => {
                buffer.push(COMMITTED);
                buffer.extend_from_slice(bytes);
            }
        }
        let payload = &buffer[start + HEADER_BYTES..];
        let len = u32::try_from(payload.len()).expect("a record is under 4 GiB");
        let crc = crc32fast::hash(payload);
        buffer[start..start + 4].copy_from_slice(&len.to_le_bytes());
        buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What is found at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned {
    /// A whole, intact record and the length of its frame.
    Record(Record, usize),
    /// Zeros: no record was ever written here.
    End,
    /// Fewer bytes than the record needs: read more, or (at the end of the file) it is torn.
    Short,
    /// A record cut short or failing its checksum (a write torn by a crash, or corruption).
    Damaged,
}

/// Reads the record framed at the start of `bytes`.
pub fn scan(bytes: &[u8]) -> Scanned {
    if bytes.len() < HEADER_BYTES {
        return Scanned::Short;
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return match crc == 0 {
            true => Scanned::End,
            false => Scanned::Damaged,
        };
    }
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Scanned::Short;
    };
    if crc32fast::hash(payload) != crc {
        return Scanned::Damaged;
    }
    match decode(payload) {
        Some(record) => Scanned::Record(record, HEADER_BYTES + len),
        None => Scanned::Damaged,
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let (kind, body) = payload.split_first()?;
    let index = || Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?));
    Some(match *kind {
        ENTRY => Record::Entry {
            index: index()?,
            bytes: body[8..].to_vec(),
        },
        TRUNCATE => Record::Truncate {
            from_index: index()?,
        },
        PURGE => Record::Purge {
            upto_index: index()?,
            log_id: body[8..].to_vec(),
        },
        VOTE => Record::Vote(body.to_vec()),
        COMMITTED => Record::Committed(body.to_vec()),
        _ => return None,
    })
}

/// `record` framed on its own.
#[cfg(test)]
pub fn framed(record: &Record) -> Vec<u8> {
    let mut buffer = Vec::new();
    record.encode_into(&mut buffer);
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_record_reads_back_as_written() {
        let records = [
            Record::Entry {
                index: 42,
                bytes: b"entry".to_vec(),
            },
            Record::Truncate { from_index: 7 },
            Record::Purge {
                upto_index: 9,
                log_id: b"id".to_vec(),
            },
            Record::Vote(b"vote".to_vec()),
            Record::Committed(Vec::new()),
        ];
        for record in records {
            let bytes = framed(&record);
            assert_eq!(scan(&bytes), Scanned::Record(record, bytes.len()));
        }
    }

    #[test]
    fn an_entry_s_bytes_sit_at_the_documented_offset() {
        let bytes = framed(&Record::Entry {
            index: 1,
            bytes: b"payload".to_vec(),
        });
        assert_eq!(&bytes[ENTRY_BYTES_OFFSET..], b"payload");
    }

    #[test]
    fn zeros_end_the_records_and_damage_is_told_apart() {
        assert_eq!(scan(&[0; 64]), Scanned::End);
        assert_eq!(scan(&[0; 3]), Scanned::Short);
        assert_eq!(scan(&[]), Scanned::Short);
        let good = framed(&Record::Vote(b"vote".to_vec()));
        assert_eq!(scan(&good[..good.len() - 1]), Scanned::Short, "cut short");
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(scan(&flipped), Scanned::Damaged, "checksum");
        let mut unknown = Vec::new();
        unknown.extend_from_slice(&1u32.to_le_bytes());
        unknown.extend_from_slice(&crc32fast::hash(&[99]).to_le_bytes());
        unknown.push(99);
        assert_eq!(scan(&unknown), Scanned::Damaged, "unknown kind");
    }
}
