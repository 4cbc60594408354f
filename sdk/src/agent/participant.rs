//! Federated participation: a [`Participant`] trains (and evaluates) on the models the cluster
//! sends it; [`Rounds`] runs one task per `RoundInvitation`, once per attempt, that downloads
//! the global model, calls the handlers on the blocking pool, and submits the update (masked,
//! through the secure-aggregation steps, when the round asks for it).
//!
//! ```text
//!   RoundInvitation ─► download model (checked; into the last round's model memory)
//!     ─► [secure: AdvertiseKeys ─► peers ─► SubmitKeyShares ─► mask peers]
//!     ─► [evaluate] ─► fit ─► Δ = local − global ─► [clip to clip_norm]
//!     ─► plain: SubmitUpdate │ secure: mask ─► SubmitUpdate(masked) ─► [SubmitUnmaskShares]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_proto::v1 as pb;

use super::weights_memory::WeightsMemory;
use crate::federation::UpdateUpload;
use crate::payload::{into_le_bytes, into_le_bytes_then};
use crate::secagg::{self, KeyPair, MaskingParams};
use crate::tensors::{specs_to_proto, Dtype, Model};
use crate::{Client, ClientError};

/// How often a secure round's phase is polled.
const PHASE_POLL: Duration = Duration::from_millis(20);

/// What a round asks the participant to train with.
#[derive(Debug, Clone)]
pub struct FitRequest {
    /// Federation.
    pub federation_id: String,
    /// Round.
    pub round: u32,
    /// The global model to start from.
    pub model: Model,
    /// Training settings (epochs, batch size, learning rate, extra).
    pub config: pb::RoundConfig,
    /// FedProx: weight μ of the proximal term (μ/2)·‖w − w_global‖²; 0 otherwise.
    pub proximal_mu: f64,
    weights_memory: WeightsMemory,
}

impl FitRequest {
    /// A request to train `model` in `round` of `federation_id`, as the SDK makes one for each
    /// round (also to try a participant's handlers outside a federation); no memory is kept
    /// for its weights buffer yet.
    pub fn new(
        federation_id: impl Into<String>,
        round: u32,
        model: Model,
        config: pb::RoundConfig,
        proximal_mu: f64,
    ) -> Self {
        Self {
            federation_id: federation_id.into(),
            round,
            model,
            config,
            proximal_mu,
            weights_memory: WeightsMemory::default(),
        }
    }

    /// An empty vector with room for the model's values, in the memory of this participant's
    /// last update once it has been sent (when that update was built in it too). Building
    /// [`FitResult::weights`] in it (`extend`, `push`) rather than in a new vector spares
    /// faulting a model's worth of fresh pages in every round.
    pub fn weights_buffer(&self) -> Vec<f32> {
        self.weights_memory.take(self.model.values.len())
    }

    /// The model's values, each passed through `update`, in [`Self::weights_buffer`]: the
    /// weights of a fit that moves every weight on its own.
    pub fn map_weights(&self, update: impl FnMut(f32) -> f32) -> Vec<f32> {
        let mut weights = self.weights_buffer();
        weights.extend(self.model.values.iter().copied().map(update));
        weights
    }
}

/// The participant's answer to a fit.
#[derive(Debug, Clone)]
pub struct FitResult {
    /// Locally trained weights, in the model's layout (built, ideally, in
    /// [`FitRequest::weights_buffer`]).
    pub weights: Vec<f32>,
    /// Examples trained on (> 0).
    pub num_examples: u64,
    /// Training metrics, e.g. `loss`, `accuracy`.
    pub metrics: BTreeMap<String, f64>,
}

/// An evaluation of the received model.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Metrics, e.g. `loss`, `accuracy`.
    pub metrics: BTreeMap<String, f64>,
}

/// Local training for federated rounds. Handlers run on the blocking pool.
pub trait Participant: Send + Sync + 'static {
    /// Trains on the request's model; an error leaves the round without this participant.
    fn fit(&self, request: &FitRequest) -> Result<FitResult, String>;

    /// Evaluates the received model, when the round asks for it.
    fn evaluate(&self, _request: &FitRequest) -> Option<Evaluation> {
        None
    }
}

/// Runs the rounds the agent is invited to, once per attempt.
pub(crate) struct Rounds {
    participant: Arc<dyn Participant>,
    client: Client,
    agent_id: Arc<Mutex<String>>,
    seen: HashSet<(String, u32, u32)>,
    spare: Spare,
    weights_memory: WeightsMemory,
}

/// The last round's model values, kept to receive the next model into (a model's memory is
/// reused round after round instead of being returned to the system and faulted in again).
type Spare = Arc<Mutex<Vec<f32>>>;

impl Rounds {
    pub(crate) fn new(participant: Arc<dyn Participant>, client: Client) -> Self {
        Self {
            participant,
            client,
            agent_id: Arc::new(Mutex::new(String::new())),
            seen: HashSet::new(),
            spare: Spare::default(),
            weights_memory: WeightsMemory::default(),
        }
    }

    /// The agent's id, once registered.
    pub(crate) fn registered_as(&self, agent_id: &str) {
        *self.agent_id.lock().expect("agent id lock") = agent_id.to_owned();
    }

    /// Starts the round of `invitation` unless it already runs.
    pub(crate) fn invited(&mut self, invitation: pb::RoundInvitation) {
        let key = (
            invitation.federation_id.clone(),
            invitation.round,
            invitation.attempt,
        );
        if !self.seen.insert(key) {
            return;
        }
        let round = RoundRun {
            participant: self.participant.clone(),
            client: self.client.clone(),
            agent_id: self.agent_id.lock().expect("agent id lock").clone(),
            invitation,
            spare: self.spare.clone(),
            weights_memory: self.weights_memory.clone(),
        };
        tokio::spawn(async move {
            let (id, number) = (
                round.invitation.federation_id.clone(),
                round.invitation.round,
            );
            match round.run().await {
                Ok(answer) if answer.accepted => {
                    tracing::debug!(federation_id = %id, round = number, "update accepted")
                }
                Ok(answer) => {
                    tracing::info!(federation_id = %id, round = number, reason = %answer.rejection_reason, "update refused")
                }
                Err(error) => {
                    tracing::warn!(federation_id = %id, round = number, %error, "round not completed")
                }
            }
        });
    }
}

/// One invited round attempt.
struct RoundRun {
    participant: Arc<dyn Participant>,
    client: Client,
    agent_id: String,
    invitation: pb::RoundInvitation,
    spare: Spare,
    weights_memory: WeightsMemory,
}

/// Why a round could not be completed.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Participant(String),
    #[error("secure aggregation: {0}")]
    Secure(#[from] secagg::SecAggError),
    #[error("the round moved on: {0}")]
    Superseded(String),
}

impl RoundRun {
    async fn run(self) -> Result<pb::SubmitUpdateResponse, RoundError> {
        let inv = &self.invitation;
        // Checked against its header's size and CRC-32; a round's model never changes.
        let buffer = std::mem::take(&mut *self.spare.lock().expect("spare lock"));
        let (_, model) = self
            .client
            .download_model_into(&inv.federation_id, Some(inv.model_round), buffer)
            .await?;
        let request = FitRequest {
            weights_memory: self.weights_memory.clone(),
            ..FitRequest::new(
                inv.federation_id.clone(),
                inv.round,
                model,
                inv.config.clone().unwrap_or_default(),
                inv.proximal_mu,
            )
        };
        let keyed = match inv.secure_aggregation {
            Some(secure) => Some(self.share_keys(secure).await?),
            None => None,
        };
        let participant = self.participant.clone();
        let evaluate = inv.evaluate;
        let (fit, evaluation, request) = tokio::task::spawn_blocking(move || {
            let evaluation = evaluate.then(|| participant.evaluate(&request)).flatten();
            (participant.fit(&request), evaluation, request)
        })
        .await
        .map_err(|e| RoundError::Participant(e.to_string()))?;
        let fit = fit.map_err(RoundError::Participant)?;
        let Delta {
            values: update,
            crc32,
        } = delta(fit.weights, &request.model.values, inv.clip_norm)?;
        *self.spare.lock().expect("spare lock") = request.model.values;
        let mut header = pb::UpdateHeader {
            federation_id: inv.federation_id.clone(),
            round: inv.round,
            attempt: inv.attempt,
            agent_id: self.agent_id.clone(),
            num_examples: fit.num_examples.max(1),
            metrics: fit.metrics.into_iter().collect(),
            evaluation_metrics: evaluation
                .map(|e| e.metrics.into_iter().collect())
                .unwrap_or_default(),
            tensors: specs_to_proto(&request.model.specs),
            blob: None,
            masked: false,
        };
        let Some((secure, keyed)) = inv.secure_aggregation.zip(keyed) else {
            header.blob = crc32.map(|crc32| pb::BlobInfo {
                size_bytes: (update.len() * 4) as u64,
                crc32,
                ..Default::default()
            });
            let memory = self.weights_memory.clone();
            let payload = into_le_bytes_then(update, move |sent| memory.keep(sent));
            return Ok(self
                .client
                .submit_update(UpdateUpload { header, payload })
                .await?);
        };
        let params = MaskingParams::from_proto(secure.modulus_bits, secure.scale)?;
        let values = secagg::mask_update(
            &self.agent_id,
            &keyed.keys,
            &update,
            &keyed.mask_peers,
            params,
        )?;
        self.weights_memory.keep(update);
        let masked = keyed;
        header.masked = true;
        header.tensors = request
            .model
            .specs
            .iter()
            .map(|s| pb::TensorSpec::from(&s.with_dtype(Dtype::I64)))
            .collect();
        let payload = into_le_bytes(values);
        let answer = self
            .client
            .submit_update(UpdateUpload { header, payload })
            .await?;
        if answer.accepted {
            self.reveal_dropped(&masked).await?;
        }
        Ok(answer)
    }

    /// Runs key advertisement and sharing before training, so the key phases' deadlines do
    /// not depend on how long training takes; returns the keys and the peers to mask for.
    async fn share_keys(&self, secure: pb::SecureAggregation) -> Result<Masked, RoundError> {
        let inv = &self.invitation;
        let keys = KeyPair::generate(&mut rand::rng());
        self.client
            .advertise_keys(pb::AdvertiseKeysRequest {
                federation_id: inv.federation_id.clone(),
                round: inv.round,
                attempt: inv.attempt,
                agent_id: self.agent_id.clone(),
                public_key: keys.public().to_vec(),
            })
            .await?;
        let peers = self.wait_past(pb::RoundState::AdvertisingKeys).await?;
        let peer_list: Vec<(String, [u8; 32])> = peers.peers.iter().filter_map(peer).collect();
        let shares = secagg::share_private_key(
            &self.agent_id,
            &keys,
            &peer_list,
            secure.threshold,
            &mut rand::rng(),
        )?;
        self.client
            .submit_key_shares(pb::SubmitKeySharesRequest {
                federation_id: inv.federation_id.clone(),
                round: inv.round,
                attempt: inv.attempt,
                agent_id: self.agent_id.clone(),
                shares: shares
                    .into_iter()
                    .map(|s| pb::EncryptedShare {
                        from_agent_id: s.from,
                        to_agent_id: s.to,
                        ciphertext: s.ciphertext,
                    })
                    .collect(),
            })
            .await?;
        let training = self.wait_past(pb::RoundState::SharingKeys).await?;
        let publics: BTreeMap<String, [u8; 32]> = peer_list.iter().cloned().collect();
        let mut mask_peers: Vec<(String, [u8; 32])> = training
            .shares
            .iter()
            .filter_map(|s| Some((s.from_agent_id.clone(), *publics.get(&s.from_agent_id)?)))
            .collect();
        mask_peers.sort();
        Ok(Masked {
            keys,
            mask_peers,
            shares: training.shares,
            publics,
        })
    }

    /// Polls the attempt's keys until it is past `phase`.
    async fn wait_past(
        &self,
        phase: pb::RoundState,
    ) -> Result<pb::GetPeerKeysResponse, RoundError> {
        let inv = &self.invitation;
        loop {
            let keys = self
                .client
                .get_peer_keys(&inv.federation_id, inv.round, &self.agent_id)
                .await?;
            if keys.attempt != inv.attempt {
                return Err(RoundError::Superseded(format!(
                    "attempt {} started",
                    keys.attempt
                )));
            }
            let state = pb::RoundState::try_from(keys.state).unwrap_or(pb::RoundState::Unspecified);
            if matches!(state, pb::RoundState::Failed | pb::RoundState::Committed) {
                return Err(RoundError::Superseded(format!("{state:?}")));
            }
            if state as i32 > phase as i32 {
                return Ok(keys);
            }
            tokio::time::sleep(PHASE_POLL).await;
        }
    }

    /// After submitting: if the attempt unmasks, reveals the shares held of dropped peers.
    async fn reveal_dropped(&self, masked: &Masked) -> Result<(), RoundError> {
        let inv = &self.invitation;
        let round = loop {
            let round = self.client.get_round(&inv.federation_id, inv.round).await?;
            let state =
                pb::RoundState::try_from(round.state).unwrap_or(pb::RoundState::Unspecified);
            if round.attempt != inv.attempt || state != pb::RoundState::Training {
                break round;
            }
            tokio::time::sleep(PHASE_POLL).await;
        };
        if round.attempt != inv.attempt || round.state != pb::RoundState::Unmasking as i32 {
            return Ok(());
        }
        let dropped: HashSet<&str> = round
            .participants
            .iter()
            .filter(|p| p.state == pb::ParticipantState::Dropped as i32)
            .map(|p| p.agent_id.as_str())
            .collect();
        let mut shares = Vec::new();
        for share in masked
            .shares
            .iter()
            .filter(|s| dropped.contains(s.from_agent_id.as_str()))
        {
            let Some(public) = masked.publics.get(&share.from_agent_id) else {
                continue;
            };
            let plain = secagg::open_share(
                &self.agent_id,
                &masked.keys,
                &share.from_agent_id,
                public,
                &share.ciphertext,
            )?;
            shares.push(pb::UnmaskShare {
                dropped_agent_id: share.from_agent_id.clone(),
                share: plain,
            });
        }
        self.client
            .submit_unmask_shares(pb::SubmitUnmaskSharesRequest {
                federation_id: inv.federation_id.clone(),
                round: inv.round,
                attempt: inv.attempt,
                agent_id: self.agent_id.clone(),
                shares,
            })
            .await?;
        Ok(())
    }
}

/// A masked update (empty until training is done) and what masking and revealing need.
struct Masked {
    keys: KeyPair,
    mask_peers: Vec<(String, [u8; 32])>,
    shares: Vec<pb::EncryptedShare>,
    publics: BTreeMap<String, [u8; 32]>,
}

fn peer(key: &pb::PeerKey) -> Option<(String, [u8; 32])> {
    let public: [u8; 32] = key.public_key.as_slice().try_into().ok()?;
    Some((key.agent_id.clone(), public))
}

/// Elements per block of [`delta`]'s pass: the block is checksummed while it is still in
/// the cache that the subtraction left it in.
const DELTA_BLOCK: usize = 16 * 1024;

/// An update ready to send: its values and, when it could be computed along the way, the
/// CRC-32 of their little-endian bytes.
struct Delta {
    values: Vec<f32>,
    crc32: Option<u32>,
}

/// local − global, clipped to `clip_norm` in L2 when it is > 0; checksummed in the same pass
/// over the values unless clipping rescales them.
fn delta(mut local: Vec<f32>, global: &[f32], clip_norm: f64) -> Result<Delta, RoundError> {
    if local.len() != global.len() {
        return Err(RoundError::Participant(format!(
            "fit returned {} weights, the model has {}",
            local.len(),
            global.len()
        )));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut squares = 0.0f64;
    for (l, g) in local
        .chunks_mut(DELTA_BLOCK)
        .zip(global.chunks(DELTA_BLOCK))
    {
        l.iter_mut().zip(g).for_each(|(l, g)| *l -= g);
        if clip_norm > 0.0 {
            squares += l.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
        }
        crc.update(bytemuck::cast_slice(l));
    }
    let mut crc32 = cfg!(target_endian = "little").then(|| crc.finalize());
    let norm = squares.sqrt();
    if clip_norm > 0.0 && norm > clip_norm {
        let scale = (clip_norm / norm) as f32;
        local.iter_mut().for_each(|v| *v *= scale);
        crc32 = None;
    }
    Ok(Delta {
        values: local,
        crc32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_local_minus_global_and_clipped() {
        let update = delta(vec![4.0, 6.0], &[1.0, 2.0], 0.0).unwrap();
        assert_eq!(update.values, vec![3.0, 4.0]);
        let bytes = crate::payload::into_le_bytes(update.values);
        assert_eq!(update.crc32, Some(crate::payload::crc32(&bytes)));
        let clipped = delta(vec![4.0, 6.0], &[1.0, 2.0], 1.0).unwrap();
        let c = &clipped.values;
        assert!((c[0] - 0.6).abs() < 1e-6 && (c[1] - 0.8).abs() < 1e-6);
        assert_eq!(clipped.crc32, None, "rescaled after the checksum");
        assert!(delta(vec![1.0], &[1.0, 2.0], 0.0).is_err());
    }
}
