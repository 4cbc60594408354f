//! [`LiveRound`]: the leader's in-memory side of one open round attempt: the global model it
//! trains on and the running aggregate that accepted updates are folded into. Lost with the
//! leader, which is why a new leader restarts the attempt.
//!
//! ```text
//!   update checked ─► in_flight + 1 ─► RecordUpdate committed ─► fold ─► in_flight − 1
//!   finisher: wait for in_flight = 0 ─► take the aggregate (once) ─► new global model
//! ```

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use synod_sdk::secagg::MaskedSum;

use crate::aggregation::RoundAggregator;

/// What updates are folded into.
pub enum Aggregate {
    /// Plain updates, by the federation's strategy.
    Plain(RoundAggregator),
    /// Masked updates: only their sum is ever known.
    Masked(MaskedSum),
}

/// A decoded update, ready to fold.
pub enum Decoded {
    /// f32 values.
    Plain(Vec<f32>),
    /// Masked fixed-point values.
    Masked(Vec<i64>),
}

/// The leader's state of one open attempt.
pub struct LiveRound {
    /// Round.
    pub round: u32,
    /// Attempt.
    pub attempt: u32,
    /// Round the global model is from.
    pub model_round: u32,
    /// The global model participants train on.
    pub global: Arc<Vec<f32>>,
    aggregate: Mutex<Option<Aggregate>>,
    folded: Mutex<BTreeSet<String>>,
    in_flight: AtomicUsize,
    finishing: AtomicBool,
}

/// Counts an update from its check to its fold, so the finisher waits for it.
pub struct InFlight(Arc<LiveRound>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LiveRound {
    /// A new attempt aggregating into `aggregate`.
    pub fn new(
        round: u32,
        attempt: u32,
        model_round: u32,
        global: Arc<Vec<f32>>,
        aggregate: Aggregate,
    ) -> Self {
        Self {
            round,
            attempt,
            model_round,
            global,
            aggregate: Mutex::new(Some(aggregate)),
            folded: Mutex::new(BTreeSet::new()),
            in_flight: AtomicUsize::new(0),
            finishing: AtomicBool::new(false),
        }
    }

    /// Marks an update as on its way to the aggregate.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Updates between their check and their fold.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Folds `agent_id`'s committed update in, once. False when the aggregate was already
    /// taken or the agent's update was folded before.
    pub fn fold(
        &self,
        agent_id: &str,
        update: &Decoded,
        num_examples: u64,
    ) -> Result<bool, String> {
        let mut aggregate = self.aggregate.lock().expect("aggregate lock");
        let Some(aggregate) = aggregate.as_mut() else {
            return Ok(false);
        };
        let mut folded = self.folded.lock().expect("folded lock");
        if folded.contains(agent_id) {
            return Ok(false);
        }
        match (aggregate, update) {
            (Aggregate::Plain(sum), Decoded::Plain(values)) => {
                sum.add(values, num_examples).map_err(|e| e.to_string())?
            }
            (Aggregate::Masked(sum), Decoded::Masked(values)) => {
                sum.add(values).map_err(|e| e.to_string())?
            }
            _ => return Err("update encoding does not match the round".to_owned()),
        }
        folded.insert(agent_id.to_owned());
        Ok(true)
    }

    /// Agents whose updates are in the aggregate.
    pub fn folded(&self) -> BTreeSet<String> {
        self.folded.lock().expect("folded lock").clone()
    }

    /// Claims the right to finish the attempt; true for the first caller only.
    pub fn claim_finish(&self) -> bool {
        !self.finishing.swap(true, Ordering::AcqRel)
    }

    /// True once a finisher claimed the attempt.
    pub fn is_finishing(&self) -> bool {
        self.finishing.load(Ordering::Acquire)
    }

    /// Takes the aggregate; later folds are ignored.
    pub fn take(&self) -> Option<Aggregate> {
        self.aggregate.lock().expect("aggregate lock").take()
    }
}
