//! One segment file of the write-ahead log: created with its space allocated up front, so a
//! group write is one positioned write and one `fdatasync` of blocks the file already owns.
//!
//! Writes of whole aligned blocks go through a second handle opened for direct I/O: the data
//! goes from Synod's buffer to the disk without a copy into the page cache (for a multi-MB
//! model that copy costs more CPU than everything else the write does). Where the filesystem
//! refuses direct I/O, the same writes go through the page cache.
//!
//! Files are named by a sequence number (`00000000000000000001.wal`) so their order on disk is
//! their order in the log.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::staging::BLOCK;

/// A segment file. Cheap to clone the handle; reads may run while the writer appends.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Sequence number.
    pub id: u64,
    file: Arc<File>,
    /// The same file opened for direct I/O, while the filesystem accepts it.
    direct: Option<Arc<Direct>>,
}

#[derive(Debug)]
struct Direct {
    file: File,
    refused: AtomicBool,
}

impl Segment {
    /// Creates segment `id` in `dir` with `bytes` allocated, and makes its name durable.
    pub fn create(dir: &Path, id: u64, bytes: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path_of(dir, id))?;
        allocate(&file, bytes)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Self {
            id,
            file: Arc::new(file),
            direct: open_direct(&path_of(dir, id)),
        })
    }

    /// Opens an existing segment.
    pub fn open(dir: &Path, id: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path_of(dir, id))?;
        Ok(Self {
            id,
            file: Arc::new(file),
            direct: open_direct(&path_of(dir, id)),
        })
    }

    /// The file's length in bytes (allocated space included).
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// `len` bytes at `offset`, fewer if the file ends first.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let available = self.len()?.saturating_sub(offset);
        let mut bytes = vec![0; len.min(available as usize)];
        self.file.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    }

    /// Writes `bytes` at `offset` and waits until they are on disk; whole aligned blocks go
    /// by direct I/O where the filesystem allows it.
    pub fn write_durably(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let aligned = offset.is_multiple_of(BLOCK as u64)
            && bytes.len().is_multiple_of(BLOCK)
            && (bytes.as_ptr() as usize).is_multiple_of(BLOCK);
        let direct = self
            .direct
            .as_ref()
            .filter(|d| aligned && !d.refused.load(Ordering::Relaxed));
        match direct.map(|d| (d, d.file.write_all_at(bytes, offset))) {
            Some((_, Ok(()))) => {}
            Some((d, Err(error))) if error.raw_os_error() == Some(nix::libc::EINVAL) => {
                tracing::info!("the write-ahead log's filesystem refuses direct I/O; writing through the page cache");
                d.refused.store(true, Ordering::Relaxed);
                self.file.write_all_at(bytes, offset)?;
            }
            Some((_, Err(error))) => return Err(error),
            None => self.file.write_all_at(bytes, offset)?,
        }
        self.file.sync_data()
    }

    /// The segment's last `len` bytes before `end` (the partial block a writer carries on).
    pub fn tail(&self, end: u64) -> io::Result<Vec<u8>> {
        let len = (end % BLOCK as u64) as usize;
        self.read_at(end - len as u64, len)
    }

    /// Drops everything from `offset` on (a torn tail) and allocates the space again.
    pub fn cut_at(&self, offset: u64, bytes: u64) -> io::Result<()> {
        self.file.set_len(offset)?;
        allocate(&self.file, bytes)?;
        self.file.sync_all()
    }

    /// Deletes segment `id` from `dir`; open handles keep reading until dropped.
    pub fn remove(dir: &Path, id: u64) -> io::Result<()> {
        std::fs::remove_file(path_of(dir, id))
    }
}

/// Sequence numbers of the segments in `dir`, in order.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// `path` opened for direct writes, if the platform and filesystem allow it.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<Arc<Direct>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path)
        .ok()?;
    Some(Arc::new(Direct {
        file,
        refused: AtomicBool::new(false),
    }))
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<Arc<Direct>> {
    None
}

fn path_of(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// Gives `file` at least `bytes` of allocated space (zeros past its data).
#[cfg(target_os = "linux")]
fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let len = i64::try_from(bytes).map_err(io::Error::other)?;
    fallocate(file, FallocateFlags::empty(), 0, len).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    if file.metadata()?.len() < bytes {
        file.set_len(bytes)?;
    }
    Ok(())
}
