//! Participants' updates on the leader: the header is checked against the open attempt before
//! any payload is read; a complete, checksummed payload is validated and folded into the
//! attempt's aggregate by the aggregate itself (a refused update changes nothing), its memory
//! freed, and only then receipted through Raft, so an upload never holds its memory budget
//! while a commit is under way. Receipts of updates folded close together are committed as one
//! entry ([`super::receipts`]).
//!
//! ```text
//!   header ─► check_header (federation, specs, masking, attempt, participant)
//!   payload (API: order, size, CRC-32) ─► fold (finite / in the masking group)
//!        ─► RecordUpdate, in the attempt's batch of receipts
//!        └─ refused ─► RejectUpdate
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use synod_sdk::tensors::{self, Dtype, TensorSpec};
use tokio::sync::{oneshot, SemaphorePermit};

use super::live::{Decoded, FoldError, InFlight, LiveRound};
use super::receipts::{Waiting, RECEIPT_LINGER};
use super::{FederationRuntime, UPLOAD_KIB_IN_MEMORY_MAX};
use crate::raft::ProposeError;
use crate::runtime::CommandResult;
use crate::state::federations::{ParticipantState, UpdateReceipt};
use crate::state::{Applied, Command, Rejection};

/// Why an update was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Malformed: a field is wrong.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// No such federation.
    #[error("federation_id: no federation '{0}'")]
    UnknownFederation(String),
    /// The proposal could not be committed.
    #[error("{0}")]
    NotCommitted(#[from] crate::raft::ProposeError),
    /// This node could not fold the update (its aggregate's storage failed).
    #[error("update not folded: {0}")]
    NotFolded(String),
}

/// A received update, checked for order, size and checksum by the API.
pub struct UpdateSubmission {
    /// Federation, round, attempt and participant.
    pub receipt: UpdateReceipt,
    /// The values: plain or masked (secure aggregation).
    pub values: Decoded,
}

/// The answer to an update: accepted, or refused with a reason.
pub struct UpdateAnswer {
    /// Whether it is in the aggregate.
    pub accepted: bool,
    /// Why not.
    pub reason: String,
    /// Where the receipt or refusal was committed, when it was.
    pub committed: Option<CommandResult>,
}

impl UpdateAnswer {
    fn refused(reason: impl Into<String>) -> Self {
        Self {
            accepted: false,
            reason: reason.into(),
            committed: None,
        }
    }
}

/// The attempt an update header is for, and the payload size it must have.
pub enum HeaderCheck {
    /// Read the payload: it must be `expected_bytes` long.
    Receive {
        /// The attempt.
        live: Arc<LiveRound>,
        /// Payload size.
        expected_bytes: u64,
    },
    /// Well-formed, but the round cannot use it.
    Refused(String),
}

impl FederationRuntime {
    /// Waits for room to hold one more update of `bytes` in memory.
    pub async fn upload_permit(&self, bytes: u64) -> SemaphorePermit<'_> {
        let kib = bytes
            .div_ceil(1024)
            .clamp(1, u64::from(UPLOAD_KIB_IN_MEMORY_MAX)) as u32;
        self.inner
            .uploads
            .acquire_many(kib)
            .await
            .expect("upload semaphore is never closed")
    }

    /// Checks an update header before its payload is read.
    pub fn check_header(
        &self,
        receipt: &UpdateReceipt,
        specs: &[TensorSpec],
        masked: bool,
    ) -> Result<HeaderCheck, UpdateError> {
        let id = &receipt.federation_id;
        let checked = self.agents().read(|state| {
            let federation = state
                .federations
                .get(id)
                .ok_or_else(|| UpdateError::UnknownFederation(id.clone()))?;
            let secure = federation.spec.secure_aggregation.is_some();
            if masked != secure {
                return Err(invalid(
                    "header.masked",
                    match secure {
                        true => "this federation uses secure aggregation: updates must be masked",
                        false => "this federation does not use secure aggregation",
                    },
                ));
            }
            tensors::check_update_specs(&federation.spec.tensors, specs, masked)
                .map_err(|e| invalid(&format!("header.{}", e.field), &e.problem))?;
            let elements = tensors::elements(&federation.spec.tensors);
            let size = match masked {
                true => Dtype::I64.size_bytes(),
                false => Dtype::F32.size_bytes(),
            };
            // `None`: the state holds no such attempt (yet, when its start is on its way).
            let recorded = federation
                .rounds
                .get(&receipt.round)
                .filter(|r| r.attempt == receipt.attempt)
                .map(|r| r.participants.get(&receipt.agent_id).map(|p| p.state));
            Ok((elements * size, recorded, federation.state.is_terminal()))
        })?;
        let (expected_bytes, recorded, finished) = checked;
        let live = self
            .live(id)
            .filter(|l| l.round == receipt.round && l.attempt == receipt.attempt);
        // An attempt opened behind the previous commit: its sample is the leader's until its
        // start applies, and the receipt will follow that start in the log.
        let participant = recorded.unwrap_or_else(|| {
            live.as_ref()
                .filter(|l| l.participants.contains(&receipt.agent_id))
                .map(|_| ParticipantState::Selected)
        });
        let refusal = match (participant, live.is_some()) {
            _ if finished => Some("round closed"),
            (None, _) if live.is_some() => Some("not selected"),
            (_, false) => Some("stale attempt"),
            (Some(ParticipantState::Dropped), _) => Some("participant dropped"),
            (Some(ParticipantState::Rejected), _) => Some("participant's update was rejected"),
            _ => None,
        };
        match (refusal, live) {
            (Some(reason), _) => Ok(HeaderCheck::Refused(reason.into())),
            (None, Some(live)) => Ok(HeaderCheck::Receive {
                live,
                expected_bytes,
            }),
            (None, None) => Ok(HeaderCheck::Refused("round closed".into())),
        }
    }

    /// Folds a received update, frees its memory (`permit`), then receipts it. The fold and
    /// the queuing of its receipt run apart from the caller: an update folded is receipted even
    /// if the caller goes away (else the round would wait for its receipt forever).
    pub async fn accept(
        &self,
        live: Arc<LiveRound>,
        submission: UpdateSubmission,
        permit: SemaphorePermit<'_>,
    ) -> Result<UpdateAnswer, UpdateError> {
        let UpdateSubmission { receipt, values } = submission;
        let in_flight = live.begin();
        let (runtime, folding, queued) = (self.clone(), live.clone(), receipt.clone());
        let folded = tokio::task::spawn_blocking(move || {
            folding
                .fold(&queued.agent_id, values, queued.num_examples)
                .map(|folded| (folded, runtime.queue_receipt(&folding, queued, in_flight)))
        })
        .await
        .map_err(|e| UpdateError::NotFolded(format!("fold task: {e}")))?;
        drop(permit);
        let receipted = match folded {
            Ok((folded, receipted)) => {
                tracing::debug!(agent_id = %receipt.agent_id, round = receipt.round, folded, "update folded");
                receipted
            }
            Err(FoldError::Refused(reason)) => {
                let answer = self.reject(&receipt, &reason).await;
                // The refused participant is no longer waited on.
                self.complete_receipts_if_done(&receipt.federation_id, &live);
                return answer;
            }
            Err(FoldError::Broken(reason)) => return Err(UpdateError::NotFolded(reason)),
        };
        let result = receipted.await.map_err(|_| ProposeError::ShuttingDown)??;
        let answer = match &result.outcome {
            Ok(Applied::UpdateRecorded { .. }) => UpdateAnswer {
                accepted: true,
                reason: String::new(),
                committed: None,
            },
            Err(Rejection::UpdateRefused { reason, .. }) => UpdateAnswer::refused(reason.clone()),
            Err(rejection) => UpdateAnswer::refused(rejection.to_string()),
            Ok(other) => UpdateAnswer::refused(format!("unexpected outcome {other:?}")),
        };
        tracing::debug!(agent_id = %receipt.agent_id, round = receipt.round, "update receipted");
        self.wake();
        Ok(UpdateAnswer {
            committed: Some(result),
            ..answer
        })
    }

    /// Queues `receipt` in the attempt's open batch of receipts (see [`super::receipts`]),
    /// opening one if none is; the receiver gets its outcome. Runs inside the runtime, from
    /// any thread.
    fn queue_receipt(
        &self,
        live: &Arc<LiveRound>,
        receipt: UpdateReceipt,
        in_flight: InFlight,
    ) -> oneshot::Receiver<Result<CommandResult, ProposeError>> {
        let federation_id = receipt.federation_id.clone();
        let (reply, outcome) = oneshot::channel();
        let opened = live.receipts.push(Waiting {
            receipt,
            in_flight,
            reply,
        });
        if opened {
            // Started first, so nothing can leave the batch open without its flush.
            let (runtime, live) = (self.clone(), live.clone());
            tokio::spawn(async move {
                live.receipts.linger(RECEIPT_LINGER).await;
                runtime.commit_receipts(live.receipts.take()).await;
            });
        }
        self.complete_receipts_if_done(&federation_id, live);
        outcome
    }

    /// Flushes the attempt's open batch of receipts at once when every participant it still
    /// waits on has been folded: those still active once its start has applied, every one
    /// sampled before (a round opened behind the previous commit takes updates before its
    /// start applies).
    pub(super) fn complete_receipts_if_done(&self, federation_id: &str, live: &LiveRound) {
        let done = self.agents().read(|state| {
            let open = state
                .federations
                .get(federation_id)
                .and_then(|f| f.open_round())
                .filter(|open| open.round == live.round && open.attempt == live.attempt);
            match open {
                Some(open) => live.has_folded_all(open.active().map(|(id, _)| id)),
                None => live.has_folded_all(live.participants.iter()),
            }
        });
        if done {
            live.receipts.complete();
        }
    }

    /// Commits a batch's receipts as one entry and answers each with its outcome.
    async fn commit_receipts(&self, batch: Vec<Waiting>) {
        let (commands, waiting): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|w| (Command::RecordUpdate(w.receipt), (w.in_flight, w.reply)))
            .unzip();
        let outcomes = match self.agents().enqueue_group(commands).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                for (_, reply) in waiting {
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
        };
        let answered =
            outcomes
                .into_iter()
                .zip(waiting)
                .map(|(outcome, (in_flight, reply))| async move {
                    let _ = reply.send(outcome.await);
                    drop(in_flight);
                });
        futures::future::join_all(answered).await;
    }

    async fn reject(
        &self,
        receipt: &UpdateReceipt,
        reason: &str,
    ) -> Result<UpdateAnswer, UpdateError> {
        let command = Command::RejectUpdate {
            federation_id: receipt.federation_id.clone(),
            round: receipt.round,
            attempt: receipt.attempt,
            agent_id: receipt.agent_id.clone(),
            reason: reason.to_owned(),
        };
        let result = self.agents().propose(command).await?;
        self.wake();
        Ok(UpdateAnswer {
            committed: Some(result),
            ..UpdateAnswer::refused(reason)
        })
    }
}

fn invalid(field: &str, problem: &str) -> UpdateError {
    UpdateError::Invalid {
        field: field.to_owned(),
        problem: problem.to_owned(),
    }
}

/// Metrics from the wire, finite values only.
pub fn finite_metrics(metrics: &std::collections::HashMap<String, f64>) -> BTreeMap<String, f64> {
    metrics
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}
