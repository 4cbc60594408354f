//! [`ReceiptBatch`]: the receipts of one round attempt's folded updates, gathered so that
//! updates folded close together are committed as one Raft entry. A round of N updates then
//! costs a few log writes on every replica instead of N.
//!
//! ```text
//!   update folded ─► receipt ─► batch open? ── no ──► open it; its flush waits for
//!                                   │                 RECEIPT_LINGER or "nothing left to fold"
//!                                   └─ yes ─► join it        └─► every RecordUpdate queued, in order
//!   each update's caller waits for its own outcome; its in-flight mark is released with it
//! ```
//!
//! The linger only delays a participant's answer, never the round: the update that leaves
//! nothing to fold flushes its batch at once (so do dropping the late participants and refusing
//! the last update), and the finisher waits for every receipt anyway.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use super::live::InFlight;
use crate::raft::ProposeError;
use crate::runtime::CommandResult;
use crate::state::federations::UpdateReceipt;

/// Longest a receipt waits for others to join its batch.
pub const RECEIPT_LINGER: Duration = Duration::from_millis(20);

/// Where a receipt's outcome goes.
pub type ReceiptReply = oneshot::Sender<Result<CommandResult, ProposeError>>;

/// One folded update waiting for its receipt to be committed.
pub struct Waiting {
    /// The receipt to commit.
    pub receipt: UpdateReceipt,
    /// Keeps the finisher waiting until the receipt is committed.
    pub in_flight: InFlight,
    /// Where its outcome goes.
    pub reply: ReceiptReply,
}

/// The receipts of one attempt not yet handed to Raft.
#[derive(Default)]
pub struct ReceiptBatch {
    pending: Mutex<Pending>,
    complete: Notify,
}

#[derive(Default)]
struct Pending {
    waiting: Vec<Waiting>,
    open: bool,
}

impl ReceiptBatch {
    /// Adds `waiting` to the open batch; true when it opened a new one, whose flush the caller
    /// then runs.
    pub fn push(&self, waiting: Waiting) -> bool {
        let mut pending = self.pending.lock().expect("receipts lock");
        pending.waiting.push(waiting);
        !std::mem::replace(&mut pending.open, true)
    }

    /// No further update is expected: the open batch (or the next one) flushes at once.
    pub fn complete(&self) {
        self.complete.notify_one();
    }

    /// Waits until [`Self::complete`] is called or `linger` passes.
    pub async fn linger(&self, linger: Duration) {
        let _ = tokio::time::timeout(linger, self.complete.notified()).await;
    }

    /// Takes the open batch; the next push opens a new one.
    pub fn take(&self) -> Vec<Waiting> {
        let mut pending = self.pending.lock().expect("receipts lock");
        pending.open = false;
        std::mem::take(&mut pending.waiting)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;

    use super::*;
    use crate::runtime::federations::live::tests::fedavg_round;

    fn waiting(live: &Arc<crate::runtime::federations::LiveRound>, agent: &str) -> Waiting {
        let receipt = UpdateReceipt {
            federation_id: "f".into(),
            round: 1,
            attempt: 1,
            agent_id: agent.into(),
            num_examples: 1,
            crc32: 0,
            metrics: Default::default(),
            evaluation_metrics: Default::default(),
        };
        Waiting {
            receipt,
            in_flight: live.begin(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn the_first_receipt_opens_a_batch_the_next_ones_join_it_until_it_is_taken() {
        let live = Arc::new(fedavg_round(2));
        let batch = ReceiptBatch::default();
        assert!(batch.push(waiting(&live, "a")), "the first opens a batch");
        assert!(!batch.push(waiting(&live, "b")), "the second joins it");
        let taken: Vec<String> = batch
            .take()
            .into_iter()
            .map(|w| w.receipt.agent_id)
            .collect();
        assert_eq!(taken, ["a", "b"], "in arrival order");
        assert!(batch.take().is_empty());
        assert!(batch.push(waiting(&live, "c")), "after a take, a new batch");
    }

    #[test]
    fn taken_receipts_keep_the_finisher_waiting_until_they_are_dropped() {
        let live = Arc::new(fedavg_round(2));
        let batch = ReceiptBatch::default();
        batch.push(waiting(&live, "a"));
        let taken = batch.take();
        assert!(
            live.settled().now_or_never().is_none(),
            "a receipt is pending"
        );
        drop(taken);
        assert!(live.settled().now_or_never().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_lingers_until_the_round_has_nothing_left_to_fold() {
        let batch = Arc::new(ReceiptBatch::default());
        let started = tokio::time::Instant::now();
        batch.linger(RECEIPT_LINGER).await;
        assert_eq!(started.elapsed(), RECEIPT_LINGER, "nobody completed it");

        let waiter = tokio::spawn({
            let batch = batch.clone();
            async move {
                let started = tokio::time::Instant::now();
                batch.linger(Duration::from_secs(3600)).await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        batch.complete();
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_millis(10), "{waited:?}");

        // Completed before anyone lingers (the last update opened its own batch): no wait.
        batch.complete();
        let started = tokio::time::Instant::now();
        batch.linger(Duration::from_secs(3600)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
