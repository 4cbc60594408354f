//! Per-attempt X25519 key pairs and the two keys every pair of participants derives.
//!
//! ```text
//!   s = X25519(sk_i, pk_j) = X25519(sk_j, pk_i)          (rejected if all zeros: low order)
//!   share key k_enc = HKDF-SHA256(salt = none, ikm = s, info = "synod secagg share key")
//!   mask seed k_ij  = HKDF-SHA256(salt = none, ikm = s, info = "synod secagg mask seed")
//! ```
//!
//! Both outputs are 32 bytes and symmetric in i and j. Secrets are taken as bytes drawn from a
//! caller-supplied rand 0.9 RNG and handed to x25519-dalek as `StaticSecret::from(bytes)`, so
//! x25519-dalek's own rand_core 0.6 never meets the caller's rand_core 0.9. A key pair must be
//! fresh for every round attempt: its private key is revealed if the participant drops.
//! Private keys are kept and shared in clamped form, so a reconstructed key can be checked bit
//! for bit: clamped, and yielding the advertised public key.

use std::fmt;

use hkdf::Hkdf;
use rand::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use super::SecAggError;

/// HKDF info of the AES-256-GCM key that encrypts Shamir shares between a pair.
pub const SHARE_KEY_INFO: &[u8] = b"synod secagg share key";
/// HKDF info of the ChaCha20 seed of a pair's mask.
pub const MASK_SEED_INFO: &[u8] = b"synod secagg mask seed";

/// What a pairwise key is for; each purpose has its own HKDF info string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPurpose {
    /// Encrypting Shamir shares.
    Share,
    /// Seeding the mask PRG.
    MaskSeed,
}

impl KeyPurpose {
    fn info(self) -> &'static [u8] {
        match self {
            KeyPurpose::Share => SHARE_KEY_INFO,
            KeyPurpose::MaskSeed => MASK_SEED_INFO,
        }
    }
}

/// A participant's X25519 key pair for one round attempt. The secret is wiped on drop (by
/// x25519-dalek) and never printed by `Debug`.
#[derive(Clone)]
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl KeyPair {
    /// A fresh key pair from 32 bytes of `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> KeyPair {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        KeyPair::from_secret_bytes(bytes)
    }

    /// The key pair of a given private key, e.g. one reconstructed from Shamir shares. The
    /// bytes are stored clamped (RFC 7748 `decodeScalar25519`), which X25519 does anyway.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> KeyPair {
        let secret = StaticSecret::from(clamp(bytes));
        let public = PublicKey::from(&secret);
        KeyPair { secret, public }
    }

    /// The public key to advertise.
    pub fn public(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The private key's 32 bytes, clamped, as split into Shamir shares.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The 32-byte key for `purpose` shared with peer `peer_id` holding `peer_public`.
    pub(crate) fn pairwise_key(
        &self,
        peer_id: &str,
        peer_public: &[u8; 32],
        purpose: KeyPurpose,
    ) -> Result<[u8; 32], SecAggError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return Err(SecAggError::LowOrderPublicKey {
                agent_id: peer_id.to_owned(),
            });
        }
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, shared.as_bytes())
            .expand(purpose.info(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(key)
    }
}

/// `bytes` with the three low bits cleared, the top bit cleared and the next one set.
fn clamp(mut bytes: [u8; 32]) -> [u8; 32] {
    bytes[0] &= 0b1111_1000;
    bytes[31] &= 0b0111_1111;
    bytes[31] |= 0b0100_0000;
    bytes
}

/// Whether `bytes` is a clamped private key, as every shared one is.
pub(crate) fn is_clamped(bytes: &[u8; 32]) -> bool {
    clamp(*bytes) == *bytes
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public.as_bytes())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    #[test]
    fn secret_bytes_round_trip_to_the_same_public_key() {
        let keys = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let again = KeyPair::from_secret_bytes(keys.secret_bytes());
        assert_eq!(again.public(), keys.public());
        assert_eq!(again.secret_bytes(), keys.secret_bytes());
    }

    #[test]
    fn secrets_are_stored_clamped() {
        let keys = KeyPair::from_secret_bytes([0xFF; 32]);
        let mut clamped = [0xFF; 32];
        clamped[0] = 0xF8;
        clamped[31] = 0x7F;
        assert_eq!(keys.secret_bytes(), clamped);
        assert!(is_clamped(&clamped));
        assert!(!is_clamped(&[0xFF; 32]));
        assert_eq!(keys.public(), KeyPair::from_secret_bytes(clamped).public());
    }

    #[test]
    fn rfc7748_vector_gives_the_expected_public_key() {
        let alice = KeyPair::from_secret_bytes(hex32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            alice.public(),
            hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
    }

    #[test]
    fn both_sides_derive_the_same_keys_and_purposes_differ() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (a, b) = (KeyPair::generate(&mut rng), KeyPair::generate(&mut rng));
        for purpose in [KeyPurpose::Share, KeyPurpose::MaskSeed] {
            assert_eq!(
                a.pairwise_key("b", &b.public(), purpose),
                b.pairwise_key("a", &a.public(), purpose)
            );
        }
        assert_ne!(
            a.pairwise_key("b", &b.public(), KeyPurpose::Share),
            a.pairwise_key("b", &b.public(), KeyPurpose::MaskSeed)
        );
    }

    #[test]
    fn low_order_public_key_is_rejected() {
        let keys = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(3));
        assert_eq!(
            keys.pairwise_key("evil", &[0; 32], KeyPurpose::MaskSeed),
            Err(SecAggError::LowOrderPublicKey {
                agent_id: "evil".into()
            })
        );
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let keys = KeyPair::from_secret_bytes([0xAB; 32]);
        let printed = format!("{keys:?}");
        assert!(!printed.contains("171, 171"), "{printed}");
        assert!(printed.starts_with("KeyPair { public: "), "{printed}");
    }

    pub(crate) fn hex32(hex: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
