//! Channel subscriptions that keep their place in a local journal file, so a subscriber process
//! that is killed (even with SIGKILL) and started again resumes right after the last message it
//! recorded: every message exactly once, in offset order.
//!
//! ```text
//!   start: read the journal ─► last offset L (a torn last line is cut off)
//!   subscribe(channel, from L + 1) ─► each message: one line "offset<TAB>payload" appended
//! ```
//!
//! A line is written with one `write` call before the next message is taken, so the journal
//! never holds a message whose predecessors are missing. Payloads are written escaped
//! (`\n`, `\t`, non-ASCII bytes as `\xNN`) so that each message stays on one line.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use synod_sdk::Client;

/// One `[[agents.subscriptions]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSection {
    /// Channel to follow.
    pub channel: String,
    /// Journal file the messages are appended to (created if missing); relative paths are
    /// taken from the working directory.
    pub journal: PathBuf,
}

/// Why a journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the file failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A complete line does not start with an offset.
    #[error("journal {path}: line {line} does not start with an offset")]
    Malformed {
        /// The journal.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// An open journal, positioned for appending.
pub struct Journal {
    path: PathBuf,
    file: File,
    last_offset: Option<u64>,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, cutting off a torn last line.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io)?;
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            file.set_len(complete as u64).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        let last_offset = last_offset(path, &text[..complete])?;
        Ok(Self {
            path: path.to_owned(),
            file,
            last_offset,
        })
    }

    /// Offset of the last message recorded.
    pub fn last_offset(&self) -> Option<u64> {
        self.last_offset
    }

    /// Appends one message as one line.
    pub fn record(&mut self, offset: u64, payload: &[u8]) -> Result<(), JournalError> {
        let line = format!("{offset}\t{}\n", payload.escape_ascii());
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.last_offset = Some(offset);
        Ok(())
    }
}

fn last_offset(path: &Path, complete: &[u8]) -> Result<Option<u64>, JournalError> {
    let lines: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
    let Some(index) = lines.iter().rposition(|line| !line.is_empty()) else {
        return Ok(None);
    };
    let line = lines[index];
    let offset = line.split(|&b| b == b'\t').next().unwrap_or_default();
    std::str::from_utf8(offset)
        .ok()
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or_else(|| JournalError::Malformed {
            path: path.to_owned(),
            line: index + 1,
        })
}

/// Follows `section.channel` into its journal until the subscription ends.
pub async fn follow(client: Client, section: SubscriptionSection) -> Result<(), JournalError> {
    let mut journal = Journal::open(&section.journal)?;
    let from = journal.last_offset().map_or(1, |last| last + 1);
    tracing::info!(channel = %section.channel, from, "following channel");
    let mut subscription = client.subscribe(&section.channel, Some(from));
    while let Some(received) = subscription.next().await {
        match received {
            Ok(response) => {
                if response.dropped > 0 {
                    tracing::warn!(channel = %section.channel, dropped = response.dropped, "messages missed");
                }
                if let Some(message) = response.message {
                    journal.record(message.offset, &message.payload)?;
                }
            }
            Err(error) => {
                tracing::warn!(channel = %section.channel, %error, "subscription failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_journal_resumes_after_its_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut journal = Journal::open(&path).unwrap();
        assert_eq!(journal.last_offset(), None);
        journal.record(1, b"one").unwrap();
        journal.record(2, b"two\tlines\n\xff").unwrap();
        drop(journal);
        // A torn line, as a kill in the middle of a write would leave.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"3\tthr")
            .unwrap();
        let mut journal = Journal::open(&path).unwrap();
        assert_eq!(journal.last_offset(), Some(2));
        journal.record(3, b"three").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "1\tone\n2\ttwo\\tlines\\n\\xff\n3\tthree\n");
    }

    #[test]
    fn a_line_without_an_offset_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        std::fs::write(&path, "1\tone\nbogus\n\n").unwrap();
        let error = Journal::open(&path).err().expect("malformed");
        assert!(error
            .to_string()
            .ends_with("line 2 does not start with an offset"));
    }
}
