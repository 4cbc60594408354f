//! [`WeightsMemory`]: a participant's memory for the weights its fit returns, passed from round
//! to round. A fit that asks for it ([`super::FitRequest::weights_buffer`]) builds its weights
//! in the last update's memory; that update (the fit's weights, turned into Δ in place) comes
//! back here once its upload lets go of it. A fresh model-sized vector each round would be
//! given back to the system when freed (glibc maps large vectors on their own and trims its
//! heaps) and faulted in again, page by page, by the next fit. A participant whose fit never
//! asks keeps nothing here.
//!
//! ```text
//!   fit: weights_buffer() ─► weights ─► Δ in place ─► upload ─► sent ─► keep() ─► next fit
//! ```

use std::sync::{Arc, Mutex};

/// The kept memory of one participant's weights; clones share it.
#[derive(Clone, Default)]
pub(crate) struct WeightsMemory(Arc<Mutex<Kept>>);

#[derive(Default)]
struct Kept {
    values: Vec<f32>,
    /// A fit took memory since the last [`WeightsMemory::keep`]: the update it made is worth
    /// keeping.
    asked: bool,
}

impl WeightsMemory {
    /// The kept memory, emptied, with room for at least `len` values; fresh memory instead
    /// when what is kept is more than twice what `len` needs (a smaller model than before).
    pub(crate) fn take(&self, len: usize) -> Vec<f32> {
        let mut kept = self.0.lock().expect("weights memory lock");
        kept.asked = true;
        let mut values = std::mem::take(&mut kept.values);
        drop(kept);
        if values.capacity() > len.saturating_mul(2) {
            values = Vec::new();
        }
        values.clear();
        values.reserve(len);
        values
    }

    /// Keeps the memory of `values` for the next fit if a fit asked for memory since the
    /// last call; frees it otherwise.
    pub(crate) fn keep(&self, mut values: Vec<f32>) {
        let mut kept = self.0.lock().expect("weights memory lock");
        if std::mem::take(&mut kept.asked) {
            values.clear();
            kept.values = values;
        }
    }
}

impl std::fmt::Debug for WeightsMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.0.lock().map(|k| k.values.capacity()).unwrap_or(0);
        write!(f, "WeightsMemory {{ capacity: {kept} }}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_made_in_lent_memory_is_lent_to_the_next_fit_empty() {
        let memory = WeightsMemory::default();
        let mut weights = memory.take(8);
        weights.extend([1.0f32; 8]);
        let address = weights.as_ptr();
        memory.keep(weights);
        let lent = memory.take(8);
        assert!(lent.is_empty());
        assert_eq!(lent.as_ptr(), address, "the same memory");
        assert_eq!(memory.take(0).capacity(), 0, "lent once");
    }

    #[test]
    fn nothing_is_kept_for_a_fit_that_never_asks() {
        let memory = WeightsMemory::default();
        memory.keep(vec![0.0; 16]);
        assert!(format!("{memory:?}").contains("capacity: 0"), "{memory:?}");
    }

    #[test]
    fn memory_kept_for_a_larger_model_is_not_lent_to_a_much_smaller_one() {
        let memory = WeightsMemory::default();
        memory.take(0);
        memory.keep(vec![0.0; 1024]);
        let small = memory.take(100);
        assert!(small.capacity() >= 100 && small.capacity() < 1024);
        memory.keep(small);
        assert!(
            memory.take(100).capacity() < 1024,
            "the smaller memory is kept"
        );
    }
}
