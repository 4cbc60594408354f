//! [`UpdateBuffers`]: the leader's spare update vectors. An update is received into the
//! memory of one folded before it, so that memory is neither allocated nor zeroed again; a
//! [`PooledUpdate`] goes back to its pool when it is dropped after its fold. The pool keeps at
//! most the upload budget's worth of vectors, the most that updates in memory ever hold.
//!
//! ```text
//!   take(len) ─► receive into it ─► PooledUpdate ─► fold ─► drop ─► back to the pool
//! ```

use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// Spare f32 vectors, bounded in bytes.
pub struct UpdateBuffers {
    spare: Mutex<Vec<Vec<f32>>>,
    max_bytes: usize,
}

impl UpdateBuffers {
    /// A pool keeping at most `max_bytes` of vectors.
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            spare: Mutex::new(Vec::new()),
            max_bytes,
        })
    }

    /// A spare vector that holds `len` values without growing, or an empty one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut spare = self.spare.lock().expect("update buffers lock");
        match spare.iter().position(|b| b.capacity() >= len) {
            Some(i) => spare.swap_remove(i),
            None => Vec::new(),
        }
    }

    /// `values`, returned to this pool once dropped.
    pub fn pooled(self: &Arc<Self>, values: Vec<f32>) -> PooledUpdate {
        PooledUpdate {
            values,
            home: Some(self.clone()),
        }
    }

    fn give(&self, values: Vec<f32>) {
        let mut spare = self.spare.lock().expect("update buffers lock");
        let held: usize = spare.iter().map(|b| b.capacity() * 4).sum();
        if held + values.capacity() * 4 <= self.max_bytes {
            spare.push(values);
        }
    }

    /// Bytes of spare vectors held.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        let spare = self.spare.lock().expect("update buffers lock");
        spare.iter().map(|b| b.capacity() * 4).sum()
    }
}

/// An update's values; their memory returns to the pool they came from when dropped.
pub struct PooledUpdate {
    values: Vec<f32>,
    home: Option<Arc<UpdateBuffers>>,
}

impl Deref for PooledUpdate {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.values
    }
}

impl From<Vec<f32>> for PooledUpdate {
    /// Values of no pool (freed when dropped).
    fn from(values: Vec<f32>) -> Self {
        Self { values, home: None }
    }
}

impl Drop for PooledUpdate {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.give(std::mem::take(&mut self.values));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_update_lends_its_memory_to_the_next_within_the_bound() {
        let pool = UpdateBuffers::new(64);
        assert!(pool.take(4).capacity() == 0, "nothing spare yet");
        let first = pool.pooled(vec![1.0; 8]);
        let memory = first.as_ptr();
        drop(first);
        assert_eq!(pool.held_bytes(), 32);
        assert!(pool.take(9).is_empty(), "too small for 9 values");
        let reused = pool.take(8);
        assert_eq!(reused.as_ptr(), memory, "the same memory, not zeroed again");
        assert_eq!(pool.held_bytes(), 0);
        drop(pool.pooled(vec![0.0; 20]));
        assert_eq!(pool.held_bytes(), 0, "80 bytes exceed the bound");
        drop(PooledUpdate::from(vec![0.0; 2]));
        assert_eq!(pool.held_bytes(), 0, "values of no pool are freed");
    }
}
