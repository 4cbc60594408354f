//! Secure aggregation's replicated part: public keys, encrypted key shares and revealed
//! unmask shares of an attempt, and the phase changes the leader decides.
//!
//! ```text
//!   ADVERTISING_KEYS ─AdvertiseKey…─► AdvancePhase ─► SHARING_KEYS (silent ones dropped)
//!   SHARING_KEYS ─ShareKeys…─► AdvancePhase ─► TRAINING (non-sharers dropped; the rest's
//!                                                   masks are in every update)
//!   TRAINING ─(someone who shared dropped)─► AdvancePhase ─► UNMASKING ─RevealShares…─►
//! ```
//! The peer list is every participant that advertised a key (final once past
//! ADVERTISING_KEYS). Pure.

use serde::{Deserialize, Serialize};

use super::record::{EncryptedShare, ParticipantState, RoundRecord};
use super::rounds::{drop_active, open_attempt};
use super::{changed, conflict, FederationTable, RoundState};
use crate::state::{Meta, Outcome, Rejection};

/// Bytes of an X25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Longest encrypted or revealed share.
pub const SHARE_BYTES_MAX: usize = 512;

/// Which attempt and participant a secure-aggregation command is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureStep {
    /// Federation.
    pub federation_id: String,
    /// Round.
    pub round: u32,
    /// Attempt.
    pub attempt: u32,
    /// Participant.
    pub agent_id: String,
}

impl FederationTable {
    /// Records a participant's public key.
    pub fn advertise_key(&mut self, step: &SecureStep, public_key: &[u8]) -> Outcome {
        let open = self.secure_attempt(step, RoundState::AdvertisingKeys)?;
        if public_key.len() != PUBLIC_KEY_BYTES {
            return Err(invalid("public_key", "must be 32 bytes"));
        }
        let participant = participant_in(open, step)?;
        match participant.state {
            ParticipantState::Selected => {
                participant.state = ParticipantState::KeysAdvertised;
                participant.public_key = public_key.to_vec();
                Ok(changed(&step.federation_id))
            }
            ParticipantState::KeysAdvertised if participant.public_key == public_key => {
                Ok(changed(&step.federation_id))
            }
            state => Err(conflict(
                &step.federation_id,
                format!("participant '{}' is {state:?}", step.agent_id),
            )),
        }
    }

    /// Records a participant's encrypted shares: exactly one for every other peer.
    pub fn share_keys(&mut self, step: &SecureStep, shares: &[EncryptedShare]) -> Outcome {
        let open = self.secure_attempt(step, RoundState::SharingKeys)?;
        check_shares(open, step, shares)?;
        let participant = participant_in(open, step)?;
        if participant.state != ParticipantState::KeysAdvertised {
            return Err(conflict(
                &step.federation_id,
                format!("participant '{}' is {:?}", step.agent_id, participant.state),
            ));
        }
        participant.state = ParticipantState::KeysShared;
        open.shares.extend(shares.iter().cloned());
        Ok(changed(&step.federation_id))
    }

    /// Records a survivor's revealed shares of the dropped participants' keys.
    pub fn reveal_shares(
        &mut self,
        step: &SecureStep,
        shares: &[(String, serde_bytes::ByteBuf)],
    ) -> Outcome {
        let open = self.secure_attempt(step, RoundState::Unmasking)?;
        let dropped: Vec<String> = open.dropped_after_sharing().cloned().collect();
        let participant = participant_in(open, step)?;
        if participant.state != ParticipantState::Submitted || participant.unmask_submitted {
            return Err(conflict(
                &step.federation_id,
                format!(
                    "participant '{}' has no unmask shares to give",
                    step.agent_id
                ),
            ));
        }
        for (i, (of, share)) in shares.iter().enumerate() {
            if !dropped.contains(of) {
                return Err(invalid(
                    &format!("shares[{i}].dropped_agent_id"),
                    &format!("'{of}' is not a dropped participant whose key was shared"),
                ));
            }
            if share.is_empty() || share.len() > SHARE_BYTES_MAX {
                return Err(invalid(&format!("shares[{i}].share"), "bad length"));
            }
        }
        participant.unmask_submitted = true;
        for (of, share) in shares {
            let by = open.unmask_shares.entry(of.clone()).or_default();
            by.insert(step.agent_id.clone(), share.clone());
        }
        Ok(changed(&step.federation_id))
    }

    /// Moves the open attempt to its next secure phase, dropping who did not finish this one.
    pub fn advance_phase(
        &mut self,
        federation_id: &str,
        round: u32,
        attempt: u32,
        to: RoundState,
        phase_deadline_at_ms: u64,
        meta: Meta,
    ) -> Outcome {
        let federation = self.federation_mut(federation_id)?;
        let threshold = match federation.spec.secure_aggregation {
            Some(secure) => secure.threshold as usize,
            None => return Err(conflict(federation_id, "does not use secure aggregation")),
        };
        let min = federation.spec.selection.min_participants as usize;
        let open = open_attempt(federation, round, attempt)?;
        let (from, laggard) = match to {
            RoundState::SharingKeys => (RoundState::AdvertisingKeys, ParticipantState::Selected),
            RoundState::Training => (RoundState::SharingKeys, ParticipantState::KeysAdvertised),
            RoundState::Unmasking => (RoundState::Training, ParticipantState::KeysShared),
            _ => {
                return Err(conflict(
                    federation_id,
                    format!("{to:?} is not a secure phase"),
                ))
            }
        };
        if open.state != from {
            return Err(conflict(
                federation_id,
                format!("round {round} is {:?}, not {from:?}", open.state),
            ));
        }
        let remaining = open
            .participants
            .values()
            .filter(|p| {
                (p.state != laggard && p.state.is_active())
                    || p.state == ParticipantState::Submitted
            })
            .count();
        if remaining < threshold.max(min) {
            return Err(conflict(
                federation_id,
                format!(
                    "{remaining} participants left, at least {} needed",
                    threshold.max(min)
                ),
            ));
        }
        let laggards: Vec<String> = open
            .participants
            .iter()
            .filter(|(_, p)| p.state == laggard)
            .map(|(id, _)| id.clone())
            .collect();
        open.state = to;
        open.phase_deadline_at_ms = phase_deadline_at_ms;
        if to == RoundState::Training {
            for participant in open.participants.values_mut() {
                participant.shared_keys = participant.state == ParticipantState::KeysShared;
            }
        }
        let reason = format!("did not finish {from:?} in time");
        drop_active(federation, &laggards, &reason, meta);
        Ok(changed(federation_id))
    }

    fn secure_attempt(
        &mut self,
        step: &SecureStep,
        phase: RoundState,
    ) -> Result<&mut RoundRecord, Rejection> {
        let federation = self.federation_mut(&step.federation_id)?;
        if federation.spec.secure_aggregation.is_none() {
            return Err(conflict(
                &step.federation_id,
                "does not use secure aggregation",
            ));
        }
        let open = open_attempt(federation, step.round, step.attempt)?;
        match open.state == phase {
            true => Ok(open),
            false => Err(conflict(
                &step.federation_id,
                format!("round {} is {:?}, not {phase:?}", step.round, open.state),
            )),
        }
    }
}

fn participant_in<'a>(
    open: &'a mut RoundRecord,
    step: &SecureStep,
) -> Result<&'a mut super::Participant, Rejection> {
    open.participants
        .get_mut(&step.agent_id)
        .ok_or_else(|| Rejection::UpdateRefused {
            agent_id: step.agent_id.clone(),
            reason: "not selected".into(),
        })
}

/// One share from the caller to every other peer that advertised a key, nothing else.
fn check_shares(
    open: &RoundRecord,
    step: &SecureStep,
    shares: &[EncryptedShare],
) -> Result<(), Rejection> {
    let mut peers: Vec<&String> = open
        .participants
        .iter()
        .filter(|(id, p)| !p.public_key.is_empty() && **id != step.agent_id)
        .map(|(id, _)| id)
        .collect();
    let mut to: Vec<&String> = shares.iter().map(|s| &s.to).collect();
    peers.sort();
    to.sort();
    if let Some(i) = shares.iter().position(|s| s.from != step.agent_id) {
        return Err(invalid(
            &format!("shares[{i}].from_agent_id"),
            "must be agent_id",
        ));
    }
    if let Some(i) = shares
        .iter()
        .position(|s| s.ciphertext.is_empty() || s.ciphertext.len() > SHARE_BYTES_MAX)
    {
        return Err(invalid(&format!("shares[{i}].ciphertext"), "bad length"));
    }
    match peers == to {
        true => Ok(()),
        false => Err(invalid(
            "shares",
            &format!(
                "one share for each of the {} other peers is needed",
                peers.len()
            ),
        )),
    }
}

fn invalid(field: &str, problem: &str) -> Rejection {
    Rejection::InvalidSpec(crate::state::jobs::SpecError::new(field, problem))
}
