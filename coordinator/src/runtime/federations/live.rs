//! [`LiveRound`]: the leader's in-memory side of one open round attempt: the global model it
//! trains on and the running aggregate that accepted updates are folded into. Lost with the
//! leader, which is why a new leader restarts the attempt.
//!
//! ```text
//!   update received ─► in_flight + 1 ─► fold (validates first) ─► RecordUpdate committed
//!                                                                 ─► in_flight − 1
//!   finisher: wait for in_flight = 0 ─► take the aggregate (once) ─► the folded set must be
//!             exactly the receipted set ─► new global model
//! ```
//!
//! Folding before the receipt commits frees an upload's memory without waiting for Raft; an
//! update folded whose receipt is then refused leaves the aggregate unusable, which the
//! finisher detects (the folded and receipted sets differ) and answers by failing the attempt.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use synod_sdk::secagg::MaskedSum;
use synod_sdk::tensors::F32Payload;

use crate::aggregation::RoundAggregator;
use crate::state::federations::RoundStart;

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

/// Why an update was not folded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FoldError {
    /// The update itself is unusable (not finite, outside the masking group, wrong encoding).
    #[error("{0}")]
    Refused(String),
    /// This node failed to hold it (the spill file).
    #[error("{0}")]
    Broken(String),
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
    pub global: Arc<F32Payload>,
    /// CRC-32 of the global model's payload.
    pub global_crc32: u32,
    /// The sampled participants.
    pub participants: BTreeSet<String>,
    aggregate: Mutex<Option<Aggregate>>,
    folded: Mutex<BTreeSet<String>>,
    in_flight: AtomicUsize,
    finishing: AtomicBool,
}

/// The global model an attempt trains on.
#[derive(Clone)]
pub struct GlobalModel {
    /// The round it was committed by (0: the initial model).
    pub round: u32,
    /// Its values, over its payload.
    pub values: Arc<F32Payload>,
    /// CRC-32 of its payload.
    pub crc32: u32,
}

/// Counts an update from its check to its fold, so the finisher waits for it.
pub struct InFlight(Arc<LiveRound>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LiveRound {
    /// The attempt `start` opens on the model of `model_round`, aggregating into `aggregate`.
    pub fn new(start: &RoundStart, model: GlobalModel, aggregate: Aggregate) -> Self {
        Self {
            round: start.round,
            attempt: start.attempt,
            model_round: model.round,
            global: model.values,
            global_crc32: model.crc32,
            participants: start.participants.iter().cloned().collect(),
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

    /// Folds `agent_id`'s update in, once, after the aggregate has validated it (a refused
    /// update changes nothing). False when the aggregate was already taken or the agent's
    /// update was folded before. CPU-bound: call it off the async workers.
    pub fn fold(
        &self,
        agent_id: &str,
        update: &Decoded,
        num_examples: u64,
    ) -> Result<bool, FoldError> {
        let mut aggregate = self.aggregate.lock().expect("aggregate lock");
        let Some(aggregate) = aggregate.as_mut() else {
            return Ok(false);
        };
        let mut folded = self.folded.lock().expect("folded lock");
        if folded.contains(agent_id) {
            return Ok(false);
        }
        match (aggregate, update) {
            (Aggregate::Plain(sum), Decoded::Plain(values)) => sum
                .add(values, num_examples)
                .map_err(|e| match e.is_node_broken() {
                    true => FoldError::Broken(e.to_string()),
                    false => FoldError::Refused(e.to_string()),
                })?,
            (Aggregate::Masked(sum), Decoded::Masked(values)) => sum
                .add(values)
                .map_err(|e| FoldError::Refused(e.to_string()))?,
            _ => {
                return Err(FoldError::Refused(
                    "update encoding does not match the round".to_owned(),
                ))
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    use crate::aggregation::{ServerState, Strategy};

    fn fedavg_round(dim: usize) -> LiveRound {
        let aggregator = RoundAggregator::new(&Strategy::FedAvg, dim, None).expect("fedavg");
        let start = RoundStart {
            federation_id: "f".into(),
            round: 1,
            attempt: 1,
            participants: vec!["alice".into(), "bob".into(), "carol".into()],
            sampling_rate: 1.0,
            phase_deadline_at_ms: 0,
            deadline_at_ms: 0,
        };
        let model = GlobalModel {
            round: 0,
            values: Arc::new(F32Payload::from_values(vec![0.0; dim])),
            crc32: 0,
        };
        LiveRound::new(&start, model, Aggregate::Plain(aggregator))
    }

    fn finish(live: &LiveRound) -> Vec<f32> {
        let Some(Aggregate::Plain(aggregator)) = live.take() else {
            panic!("a plain aggregate");
        };
        let mut state = ServerState::default();
        aggregator
            .finish(
                live.global.values(),
                &mut state,
                &mut rand::rngs::StdRng::seed_from_u64(7),
            )
            .expect("finishes")
    }

    #[test]
    fn a_refused_update_leaves_the_aggregate_and_the_folded_set_unchanged() {
        let live = fedavg_round(3);
        let poisoned = Decoded::Plain(vec![1.0, f32::NAN, 1.0]);
        assert_eq!(
            live.fold("mallory", &poisoned, 10),
            Err(FoldError::Refused(
                "update value at index 1 is not finite".into()
            ))
        );
        let masked = Decoded::Masked(vec![1, 2, 3]);
        assert!(matches!(
            live.fold("mallory", &masked, 10),
            Err(FoldError::Refused(_))
        ));
        assert!(live.folded().is_empty());
        let honest = Decoded::Plain(vec![1.0, 2.0, 3.0]);
        assert_eq!(live.fold("alice", &honest, 1), Ok(true));
        assert_eq!(live.folded(), BTreeSet::from(["alice".to_owned()]));
        assert_eq!(finish(&live), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn an_update_is_folded_once_and_not_after_the_aggregate_is_taken() {
        let live = fedavg_round(2);
        let first = Decoded::Plain(vec![2.0, 2.0]);
        let second = Decoded::Plain(vec![4.0, 4.0]);
        assert_eq!(live.fold("alice", &first, 1), Ok(true));
        assert_eq!(live.fold("alice", &second, 1), Ok(false), "folded once");
        assert_eq!(live.fold("bob", &second, 3), Ok(true));
        assert_eq!(finish(&live), vec![3.5, 3.5], "(2·1 + 4·3) / 4");
        assert_eq!(live.fold("carol", &first, 1), Ok(false), "taken");
    }
}
