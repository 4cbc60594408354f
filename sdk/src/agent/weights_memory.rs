//! [`WeightsMemory`]: a participant's memory for the weights its fit returns, passed from round
//! to round. The last update (the fit's weights, turned into Δ in place) comes back here once
//! its upload lets go of it, and the next fit builds its weights in it
//! ([`super::FitRequest::weights_buffer`]). A fresh model-sized vector each round would be
//! given back to the system when freed (glibc maps large vectors on their own and trims its
//! heaps) and faulted in again, page by page, by the next fit.
//!
//! ```text
//!   fit: weights_buffer() ─► weights ─► Δ in place ─► upload ─► sent ─► keep() ─► next fit
//! ```

use std::sync::{Arc, Mutex};

/// The kept memory of one participant's weights; clones share it.
#[derive(Clone, Default)]
pub(crate) struct WeightsMemory(Arc<Mutex<Vec<f32>>>);

impl WeightsMemory {
    /// The kept memory, emptied, with room for at least `len` values.
    pub(crate) fn take(&self, len: usize) -> Vec<f32> {
        let mut values = std::mem::take(&mut *self.0.lock().expect("weights memory lock"));
        values.clear();
        values.reserve(len);
        values
    }

    /// Keeps the memory of `values` for the next fit, unless more is already kept.
    pub(crate) fn keep(&self, values: Vec<f32>) {
        let mut kept = self.0.lock().expect("weights memory lock");
        if values.capacity() > kept.capacity() {
            *kept = values;
            kept.clear();
        }
    }
}

impl std::fmt::Debug for WeightsMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.lock().map(|v| v.capacity()).unwrap_or(0);
        write!(f, "WeightsMemory {{ capacity: {kept} }}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_memory_is_lent_to_the_next_fit_empty() {
        let memory = WeightsMemory::default();
        assert_eq!(memory.take(0).capacity(), 0, "nothing kept yet");
        let update = vec![1.0f32; 8];
        let address = update.as_ptr();
        memory.keep(update);
        let lent = memory.take(8);
        assert!(lent.is_empty());
        assert_eq!(lent.as_ptr(), address, "the same memory");
        assert_eq!(memory.take(0).capacity(), 0, "lent once");
    }

    #[test]
    fn the_larger_memory_is_kept() {
        let memory = WeightsMemory::default();
        memory.keep(vec![0.0; 16]);
        memory.keep(vec![0.0; 4]);
        assert!(memory.take(1).capacity() >= 16);
        let grown = memory.take(32);
        assert!(
            grown.capacity() >= 32,
            "room for the model however little is kept"
        );
    }
}
