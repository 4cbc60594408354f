//! [`LiveRound`]: the leader's in-memory side of one open round attempt: the global model it
//! trains on and the running aggregate that accepted updates are folded into. Lost with the
//! leader, which is why a new leader restarts the attempt.
//!
//! ```text
//!   update received ─► in_flight + 1 ─► fold (validates first) ─► its receipt's batch
//!                                        (see `receipts`) committed ─► in_flight − 1
//!   finisher: wait for in_flight = 0 ─► take the aggregate (once) ─► the folded set must be
//!             exactly the receipted set ─► new global model
//! ```
//!
//! Folding before the receipt commits frees an upload's memory without waiting for Raft; an
//! update folded whose receipt is then refused leaves the aggregate unusable, which the
//! finisher detects (the folded and receipted sets differ) and answers by failing the attempt.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use synod_sdk::secagg::MaskedSum;
use synod_sdk::tensors::F32Payload;

use super::buffers::PooledUpdate;
use super::receipts::ReceiptBatch;
use crate::aggregation::{first_non_finite, AggregationError, RoundAggregator};
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
    Plain(PlainUpdate),
    /// Masked fixed-point values.
    Masked(Vec<i64>),
}

impl Decoded {
    /// Plain `values`, checked here.
    pub fn plain(values: PooledUpdate) -> Self {
        Self::Plain(PlainUpdate::check(values))
    }
}

/// Plain f32 values whose finiteness is known.
pub struct PlainUpdate {
    values: PooledUpdate,
    /// The first value that is not finite, if any.
    non_finite: Option<usize>,
}

impl PlainUpdate {
    /// `values`, checked here.
    pub fn check(values: PooledUpdate) -> Self {
        let non_finite = first_non_finite(&values);
        Self { values, non_finite }
    }
}

/// Checks a plain update for finiteness as its chunks arrive, each while it is still in the
/// cache; [`finish`](Self::finish) gives the checked update. The received elements are
/// little-endian, so a big-endian machine checks the whole update at the end instead.
#[derive(Default)]
pub struct FiniteScan {
    non_finite: Option<usize>,
}

impl FiniteScan {
    /// Looks at the received elements `values`, the first of which is at index `start`.
    pub fn observe(&mut self, start: usize, values: &[f32]) {
        if self.non_finite.is_none() && cfg!(target_endian = "little") {
            self.non_finite = first_non_finite(values).map(|i| start + i);
        }
    }

    /// The update whose every element was observed, with what the scan found.
    pub fn finish(self, values: PooledUpdate) -> PlainUpdate {
        match cfg!(target_endian = "little") {
            true => PlainUpdate {
                values,
                non_finite: self.non_finite,
            },
            false => PlainUpdate::check(values),
        }
    }
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
    queue: Mutex<Vec<Queued>>,
    folded: Mutex<BTreeSet<String>>,
    in_flight: AtomicUsize,
    /// Woken when `in_flight` drops to zero.
    settled: tokio::sync::Notify,
    finishing: AtomicBool,
    /// Receipts of folded updates on their way to Raft.
    pub receipts: ReceiptBatch,
}

/// An update waiting for the fold in progress to end.
struct Queued {
    agent_id: String,
    update: Decoded,
    num_examples: u64,
    outcome: Arc<OnceLock<Result<bool, FoldError>>>,
}

/// Folds `batch` into `aggregate` (none: taken) in order, recording each outcome. `folded` is
/// held throughout, so an update being folded never looks late.
fn fold_batch(
    aggregate: Option<&mut Aggregate>,
    folded: &mut BTreeSet<String>,
    batch: Vec<Queued>,
) {
    let Some(aggregate) = aggregate else {
        batch.iter().for_each(|q| {
            let _ = q.outcome.set(Ok(false));
        });
        return;
    };
    let mut fresh = Vec::with_capacity(batch.len());
    for queued in batch {
        match folded.contains(&queued.agent_id)
            || fresh.iter().any(|f: &Queued| f.agent_id == queued.agent_id)
        {
            true => {
                let _ = queued.outcome.set(Ok(false));
            }
            false => fresh.push(queued),
        }
    }
    let outcomes: Vec<Result<(), FoldError>> = match aggregate {
        Aggregate::Plain(sum) => {
            let finite: Vec<(&[f32], u64)> = fresh
                .iter()
                .filter_map(|q| match &q.update {
                    Decoded::Plain(plain) if plain.non_finite.is_none() => {
                        Some((&plain.values[..], q.num_examples))
                    }
                    _ => None,
                })
                .collect();
            let mut results = sum.add_many_finite(&finite).into_iter();
            fresh
                .iter()
                .map(|q| match &q.update {
                    Decoded::Plain(PlainUpdate {
                        non_finite: Some(index),
                        ..
                    }) => Err(FoldError::Refused(
                        AggregationError::NonFinite {
                            what: "update",
                            index: *index,
                        }
                        .to_string(),
                    )),
                    Decoded::Plain(_) => results
                        .next()
                        .expect("one result per finite plain update")
                        .map_err(|e| match e.is_node_broken() {
                            true => FoldError::Broken(e.to_string()),
                            false => FoldError::Refused(e.to_string()),
                        }),
                    Decoded::Masked(_) => Err(mismatch()),
                })
                .collect()
        }
        Aggregate::Masked(sum) => fresh
            .iter()
            .map(|q| match &q.update {
                Decoded::Masked(values) => sum
                    .add(values)
                    .map_err(|e| FoldError::Refused(e.to_string())),
                Decoded::Plain(_) => Err(mismatch()),
            })
            .collect(),
    };
    for (queued, outcome) in fresh.into_iter().zip(outcomes) {
        if outcome.is_ok() {
            folded.insert(queued.agent_id.clone());
        }
        let _ = queued.outcome.set(outcome.map(|()| true));
    }
}

fn mismatch() -> FoldError {
    FoldError::Refused("update encoding does not match the round".to_owned())
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
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
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
            queue: Mutex::new(Vec::new()),
            folded: Mutex::new(BTreeSet::new()),
            in_flight: AtomicUsize::new(0),
            settled: tokio::sync::Notify::new(),
            finishing: AtomicBool::new(false),
            receipts: ReceiptBatch::default(),
        }
    }

    /// Marks an update as on its way to the aggregate.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Updates between their check and their fold.
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Returns once no update is between its check and its fold.
    pub async fn settled(&self) {
        loop {
            // Registered before the check, so a drop to zero in between still wakes it.
            let woken = self.settled.notified();
            if self.in_flight() == 0 {
                return;
            }
            woken.await;
        }
    }

    /// Folds `agent_id`'s update in, once, after the aggregate has validated it (a refused
    /// update changes nothing). False when the aggregate was already taken or the agent's
    /// update was folded before. CPU-bound: call it off the async workers.
    ///
    /// Updates that arrive while another fold runs wait in a queue; whoever folds next takes
    /// them all in one pass over the aggregate, in arrival order, and each caller gets its own
    /// outcome. An update's memory is freed as soon as it is folded.
    pub fn fold(
        &self,
        agent_id: &str,
        update: Decoded,
        num_examples: u64,
    ) -> Result<bool, FoldError> {
        let outcome = Arc::new(OnceLock::new());
        self.queue.lock().expect("fold queue lock").push(Queued {
            agent_id: agent_id.to_owned(),
            update,
            num_examples,
            outcome: outcome.clone(),
        });
        let mut aggregate = self.aggregate.lock().expect("aggregate lock");
        if outcome.get().is_none() {
            let batch = std::mem::take(&mut *self.queue.lock().expect("fold queue lock"));
            let mut folded = self.folded.lock().expect("folded lock");
            fold_batch(aggregate.as_mut(), &mut folded, batch);
        }
        drop(aggregate);
        outcome
            .get()
            .cloned()
            .expect("every queued update is folded")
    }

    /// Whether `agent_id`'s update is in the aggregate.
    pub fn has_folded(&self, agent_id: &str) -> bool {
        self.folded.lock().expect("folded lock").contains(agent_id)
    }

    /// Whether the updates of every one of `agent_ids` are in the aggregate.
    pub fn has_folded_all<'a>(&self, mut agent_ids: impl Iterator<Item = &'a String>) -> bool {
        let folded = self.folded.lock().expect("folded lock");
        agent_ids.all(|id| folded.contains(id))
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
pub(super) mod tests {
    use super::*;
    use rand::SeedableRng;

    use crate::aggregation::{ServerState, Strategy};

    /// A FedAvg attempt of round 1 over `dim` weights for alice, bob and carol.
    pub(crate) fn fedavg_round(dim: usize) -> LiveRound {
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

    #[tokio::test]
    async fn the_finisher_waits_until_the_last_update_in_flight_lands() {
        use futures::FutureExt;
        let live = Arc::new(fedavg_round(2));
        live.settled()
            .now_or_never()
            .expect("nothing in flight: settled at once");
        let (first, second) = (live.begin(), live.begin());
        let waiter = tokio::spawn({
            let live = live.clone();
            async move { live.settled().await }
        });
        drop(first);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one update is still in flight");
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken when the last update lands")
            .unwrap();
        assert_eq!(live.in_flight(), 0);
    }

    #[test]
    fn a_scan_over_received_runs_finds_the_first_non_finite_value() {
        let values = vec![1.0, 2.0, 3.0, f32::INFINITY, f32::NAN];
        let mut scan = FiniteScan::default();
        scan.observe(0, &values[..2]);
        scan.observe(2, &values[2..4]);
        scan.observe(4, &values[4..]);
        let live = fedavg_round(5);
        let scanned = Decoded::Plain(scan.finish(values.into()));
        assert_eq!(
            live.fold("mallory", scanned, 1),
            Err(FoldError::Refused(
                "update value at index 3 is not finite".into()
            ))
        );
        let mut clean = FiniteScan::default();
        clean.observe(0, &[1.0, 2.0]);
        let honest = Decoded::Plain(clean.finish(vec![1.0, 2.0, 3.0, 4.0, 5.0].into()));
        assert_eq!(live.fold("alice", honest, 1), Ok(true));
    }

    #[test]
    fn a_refused_update_leaves_the_aggregate_and_the_folded_set_unchanged() {
        let live = fedavg_round(3);
        let poisoned = Decoded::plain(vec![1.0, f32::NAN, 1.0].into());
        assert_eq!(
            live.fold("mallory", poisoned, 10),
            Err(FoldError::Refused(
                "update value at index 1 is not finite".into()
            ))
        );
        let masked = Decoded::Masked(vec![1, 2, 3]);
        assert!(matches!(
            live.fold("mallory", masked, 10),
            Err(FoldError::Refused(_))
        ));
        assert!(live.folded().is_empty());
        let honest = Decoded::plain(vec![1.0, 2.0, 3.0].into());
        assert_eq!(live.fold("alice", honest, 1), Ok(true));
        assert_eq!(live.folded(), BTreeSet::from(["alice".to_owned()]));
        assert_eq!(finish(&live), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn an_update_is_folded_once_and_not_after_the_aggregate_is_taken() {
        let live = fedavg_round(2);
        let first = || Decoded::plain(vec![2.0, 2.0].into());
        let second = || Decoded::plain(vec![4.0, 4.0].into());
        assert_eq!(live.fold("alice", first(), 1), Ok(true));
        assert_eq!(live.fold("alice", second(), 1), Ok(false), "folded once");
        assert_eq!(live.fold("bob", second(), 3), Ok(true));
        assert_eq!(finish(&live), vec![3.5, 3.5], "(2·1 + 4·3) / 4");
        assert_eq!(live.fold("carol", first(), 1), Ok(false), "taken");
    }

    #[test]
    fn updates_folded_from_many_threads_at_once_each_get_their_outcome() {
        let dim = 10_000;
        let live = Arc::new(fedavg_round(dim));
        let threads: Vec<_> = (0..16u64)
            .map(|i| {
                let live = live.clone();
                std::thread::spawn(move || {
                    let update = match i {
                        // One poisoned update among them is refused alone.
                        7 => vec![f32::INFINITY; dim],
                        _ => vec![i as f32; dim],
                    };
                    let agent = format!("agent-{}", i % 15);
                    (i, live.fold(&agent, Decoded::plain(update.into()), i + 1))
                })
            })
            .collect();
        let outcomes: Vec<(u64, Result<bool, FoldError>)> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        let refused = outcomes.iter().filter(|(_, o)| o.is_err()).count();
        assert_eq!(refused, 1, "{outcomes:?}");
        // agent-0 sent twice (i = 0 and i = 15): one of the two was folded.
        let folded: Vec<u64> = outcomes
            .iter()
            .filter(|(_, o)| *o == Ok(true))
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(folded.len(), 14, "{outcomes:?}");
        assert_eq!(live.folded().len(), 14);
        let weight: u64 = folded.iter().map(|i| i + 1).sum();
        let expected = folded.iter().map(|i| (i * (i + 1)) as f64).sum::<f64>() / weight as f64;
        let model = finish(&live);
        assert!(model
            .iter()
            .all(|v| (f64::from(*v) - expected).abs() < 1e-4));
    }
}
