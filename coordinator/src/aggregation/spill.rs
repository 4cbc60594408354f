//! [`SpillFile`]: where the robust strategies keep every update of a round — on disk, not in
//! RAM — and how they read them back a block of coordinates at a time.
//!
//! One anonymous temporary file (deleted by the OS when dropped) holds fixed-size records,
//! update i at byte offset 4·i·dim, f32 little-endian. One file rather than one per update keeps
//! a round with thousands of participants inside the open-file limit; the reads are the same
//! positioned reads. Reading a block fetches coordinates `[start, start + len)` of every update:
//!
//! ```text
//!   file:  [Δ₀ ──────────][Δ₁ ──────────] … [Δₙ₋₁ ────────]
//!   block:   └ start..+len ┘  └ start..+len ┘      └ start..+len ┘  ─► n × len values in RAM
//! ```
//!
//! Memory while reading is O(n × block + one row of bytes); [`block_coords`] keeps n × block
//! under [`BLOCK_VALUES_MAX`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Largest block, in coordinates.
pub(crate) const BLOCK_COORDS_MAX: usize = 64 * 1024;
/// Smallest block, in coordinates, however many updates there are.
const BLOCK_COORDS_MIN: usize = 1024;
/// Budget for one block of every update: 4 Mi values (16 MiB).
pub(crate) const BLOCK_VALUES_MAX: usize = 4 * 1024 * 1024;
/// Values encoded per write call.
const WRITE_CHUNK: usize = 16 * 1024;

/// Coordinates per block for `count` updates: 64 Ki, fewer when n × 64 Ki exceeds the budget.
pub(crate) fn block_coords(count: usize) -> usize {
    (BLOCK_VALUES_MAX / count.max(1)).clamp(BLOCK_COORDS_MIN, BLOCK_COORDS_MAX)
}

/// The round's updates, spilled to one temporary file.
#[derive(Debug)]
pub(crate) struct SpillFile {
    file: File,
    dim: usize,
    count: usize,
    bytes: Vec<u8>,
}

/// Coordinates `[start, start + len)` of every update, update-major.
pub(crate) struct Block<'a> {
    pub(crate) start: usize,
    pub(crate) len: usize,
    values: &'a [f32],
}

impl Block<'_> {
    /// Update `i`'s values in this block.
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.len..(i + 1) * self.len]
    }

    /// Coordinate `start + j` of every update, into `out`.
    pub(crate) fn column(&self, j: usize, out: &mut Vec<f32>) {
        out.clear();
        out.extend(self.values.iter().skip(j).step_by(self.len));
    }
}

impl SpillFile {
    /// An empty spill file in `dir`, or in the system temp directory.
    pub(crate) fn create(dim: usize, dir: Option<&Path>) -> io::Result<Self> {
        let file = match dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        };
        Ok(Self {
            file,
            dim,
            count: 0,
            bytes: Vec::new(),
        })
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Appends one update (already checked for length); on failure the file is cut back, so
    /// a failed append leaves no trace.
    pub(crate) fn append(&mut self, update: &[f32]) -> io::Result<()> {
        let offset = self.row_offset(self.count);
        let written = self.write_at(offset, update);
        if written.is_err() {
            self.file.set_len(offset)?;
        }
        written?;
        self.count += 1;
        Ok(())
    }

    fn write_at(&mut self, offset: u64, update: &[f32]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        for chunk in update.chunks(WRITE_CHUNK) {
            self.bytes.clear();
            self.bytes
                .extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
            self.file.write_all(&self.bytes)?;
        }
        Ok(())
    }

    /// Calls `visit` on consecutive blocks of at most `block` coordinates covering `0..dim`.
    pub(crate) fn for_each_block(
        &mut self,
        block: usize,
        mut visit: impl FnMut(&Block<'_>),
    ) -> io::Result<()> {
        let block = block.max(1);
        let mut values = Vec::with_capacity(self.count * block.min(self.dim));
        for start in (0..self.dim).step_by(block) {
            let len = block.min(self.dim - start);
            self.read_block(start, len, &mut values)?;
            visit(&Block {
                start,
                len,
                values: &values,
            });
        }
        Ok(())
    }

    /// One f64 per coordinate: `reduce` applied to that coordinate's values across all
    /// updates (in update order; `reduce` may reorder its scratch slice).
    pub(crate) fn map_coordinates(
        &mut self,
        block: usize,
        mut reduce: impl FnMut(&mut [f32]) -> f64,
    ) -> io::Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.dim);
        let mut column = Vec::with_capacity(self.count);
        self.for_each_block(block, |b| {
            debug_assert_eq!(out.len(), b.start);
            for j in 0..b.len {
                b.column(j, &mut column);
                out.push(reduce(&mut column));
            }
        })?;
        Ok(out)
    }

    fn read_block(&mut self, start: usize, len: usize, values: &mut Vec<f32>) -> io::Result<()> {
        values.clear();
        self.bytes.resize(4 * len, 0);
        for i in 0..self.count {
            let offset = self.row_offset(i) + 4 * start as u64;
            self.file.seek(SeekFrom::Start(offset))?;
            self.file.read_exact(&mut self.bytes)?;
            values.extend(
                self.bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(())
    }

    fn row_offset(&self, i: usize) -> u64 {
        4 * i as u64 * self.dim as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_shrinks_with_many_updates() {
        assert_eq!(block_coords(1), BLOCK_COORDS_MAX);
        assert_eq!(block_coords(64), BLOCK_COORDS_MAX);
        assert_eq!(block_coords(128), 32 * 1024);
        assert_eq!(block_coords(1_000_000), BLOCK_COORDS_MIN);
    }

    #[test]
    fn blocks_and_columns_read_back_what_was_written() {
        let mut spill = SpillFile::create(5, None).unwrap();
        spill.append(&[0.0, 1.0, 2.0, 3.0, 4.0]).unwrap();
        spill.append(&[10.0, 11.0, 12.0, 13.0, 14.0]).unwrap();
        let mut seen = Vec::new();
        let mut column = Vec::new();
        spill
            .for_each_block(2, |b| {
                b.column(0, &mut column);
                seen.push((b.start, b.len, b.row(1).to_vec(), column.clone()));
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, 2, vec![10.0, 11.0], vec![0.0, 10.0]),
                (2, 2, vec![12.0, 13.0], vec![2.0, 12.0]),
                (4, 1, vec![14.0], vec![4.0, 14.0]),
            ]
        );
        let sums = spill.map_coordinates(3, |c| c.iter().map(|&x| f64::from(x)).sum());
        assert_eq!(sums.unwrap(), vec![10.0, 12.0, 14.0, 16.0, 18.0]);
    }
}
