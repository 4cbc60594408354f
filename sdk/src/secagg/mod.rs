//! Secure aggregation by pairwise masking (Bonawitz et al., simplified: no self-masks), so the
//! coordinator learns only the sum of the participants' updates. This module owns the
//! cryptography and arithmetic of both sides: per-attempt X25519 keys, Shamir shares of private
//! keys sealed for peers, fixed-point masked updates, and the coordinator's unmasked sum. It
//! does no I/O, reads no clock and draws randomness only from the RNG a caller passes in; it
//! must never hand out an individual participant's plaintext update.
//!
//! ```text
//!  participant i (each of n)                 coordinator
//!  1 KeyPair::generate ── pk_i ─────────────► sorted [(id, pk)] ──► every participant
//!  2 share_private_key ── E_ij(x_j ‖ share_j) ─► relays to j ──► j: open_share (kept)
//!  3 mask_update ── y_i = q_i ± PRG(k_ij)… ───► MaskedSum::add(y_i)
//!       ┆ peer d completed 2 but sent no update in 3 (dropped)
//!  4 open_share(d's share) ── x ‖ share ──────► reconstruct_private_key(shares, t, pk_d)
//!                                              MaskedSum::remove_dropped_masks(d, sk_d, S)
//!                                              MaskedSum::decode() ──► Σ_{s ∈ S} v_s
//! ```
//!
//! Conventions fixed by Synod's public proto: ids compare byte-wise; peer lists are sorted by
//! id; a share's x-coordinate is the recipient's index in the sorted list plus one, carried as
//! 4 bytes big-endian before the 32-byte share value; the pairwise mask is added by the pair's
//! lower id and subtracted by the higher. Derivations are described in `keys`, `shares`,
//! `masking` and `params`.
//!
//! Security model: an honest-but-curious coordinator that relays keys and shares faithfully.
//! It then sees each masked update as uniform noise and learns only the sum over survivors;
//! fewer than `threshold` participants together learn nothing about a peer's private key.
//! Not covered: a coordinator that substitutes public keys (they are not signed), or that
//! declares a participant dropped after receiving its update and so collects the shares that
//! unmask it (there are no self-masks and no consistency round: a late update of a dropped
//! participant must be refused); a coordinator colluding with every peer of a participant;
//! malformed but in-range updates, which poison the sum undetected.

mod encoding;
mod error;
mod keys;
mod masking;
mod params;
mod peers;
mod shamir;
mod shares;
mod sum;
mod unmask;

#[cfg(test)]
mod tests;

pub use encoding::{i64s_from_le_bytes, i64s_to_le_bytes};
pub use error::SecAggError;
pub use keys::{KeyPair, MASK_SEED_INFO, SHARE_KEY_INFO};
pub use masking::mask_update;
pub use params::{MaskingParams, DEFAULT_MODULUS_BITS, DEFAULT_SCALE, MAX_MODULUS_BITS};
pub use peers::Peer;
pub use shares::{
    open_share, parse_share, share_private_key, EncryptedShare, NONCE_LEN, SHARE_LEN,
};
pub use sum::MaskedSum;
pub use unmask::reconstruct_private_key;
