//! Why a secure-aggregation step refused its input.
//!
//! Every variant is a rejected request (bad parameters, a malformed or tampered message, a
//! value that does not fit the group); none means the local node is broken, so none is worth
//! retrying with the same input.

/// A secure-aggregation step refused its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecAggError {
    /// `modulus_bits` is outside 1..=62.
    #[error("modulus_bits {bits} is outside 1..=62")]
    InvalidModulusBits {
        /// The bits given.
        bits: u32,
    },
    /// `scale` is not a finite number above zero.
    #[error("scale {scale} is not a finite number above zero")]
    InvalidScale {
        /// The scale given.
        scale: f64,
    },
    /// The threshold is below 2, above the peer count or above 255.
    #[error("threshold {threshold} is outside 2..=min({peers}, 255)")]
    InvalidThreshold {
        /// The threshold given.
        threshold: u32,
        /// Peers in the list (including the caller), or 255 where no list applies.
        peers: usize,
    },
    /// The peer list is longer than GF(2^8) Shamir sharing allows.
    #[error("{peers} peers; at most {max} can take part")]
    TooManyPeers {
        /// Peers in the list.
        peers: usize,
        /// The limit.
        max: usize,
    },
    /// A peer list is not strictly sorted by agent id (byte-wise), or repeats an id.
    #[error("peer list not strictly sorted: '{previous}' then '{next}'")]
    PeersNotSorted {
        /// The earlier id.
        previous: String,
        /// The id after it.
        next: String,
    },
    /// The caller's id is missing from the peer list.
    #[error("'{agent_id}' is not in the peer list")]
    NotInPeerList {
        /// The caller's id.
        agent_id: String,
    },
    /// The peer list carries a different public key for the caller than its own.
    #[error("the peer list's public key for '{agent_id}' is not this key pair's")]
    OwnKeyMismatch {
        /// The caller's id.
        agent_id: String,
    },
    /// A peer's public key is of low order: the shared secret would be all zeros.
    #[error("public key of '{agent_id}' is of low order")]
    LowOrderPublicKey {
        /// The peer.
        agent_id: String,
    },
    /// A share ciphertext is shorter than a nonce plus a GCM tag.
    #[error("share from '{from}' is {len} bytes; too short to be a ciphertext")]
    CiphertextTooShort {
        /// The sender.
        from: String,
        /// Bytes received.
        len: usize,
    },
    /// A share did not decrypt: tampered, truncated, addressed to someone else or not from
    /// `from`.
    #[error("share from '{from}' to '{to}' failed authentication")]
    ShareDecryptionFailed {
        /// The claimed sender.
        from: String,
        /// The recipient.
        to: String,
    },
    /// A share plaintext is not 4 bytes of x-coordinate plus 32 bytes of value.
    #[error("share is {len} bytes, expected 36")]
    ShareLength {
        /// Bytes received.
        len: usize,
    },
    /// A share's x-coordinate is outside 1..=255.
    #[error("share x-coordinate {x} is outside 1..=255")]
    ShareXOutOfRange {
        /// The x-coordinate.
        x: u32,
    },
    /// Two shares carry the same x-coordinate.
    #[error("two shares have x-coordinate {x}")]
    DuplicateShareX {
        /// The x-coordinate.
        x: u32,
    },
    /// Fewer distinct shares than the threshold.
    #[error("{have} shares, {threshold} needed")]
    NotEnoughShares {
        /// Distinct shares given.
        have: usize,
        /// Shares needed.
        threshold: u32,
    },
    /// The shares interpolate to a key whose public key is not the advertised one: at least
    /// one share is wrong.
    #[error("shares do not reconstruct the advertised key")]
    ReconstructedKeyMismatch,
    /// An update value is NaN or infinite.
    #[error("update value {index} is not finite")]
    NonFiniteValue {
        /// Index in the update.
        index: usize,
    },
    /// An update value times the scale does not fit in half the group.
    #[error("update value {index} ({value}) times the scale does not fit in half the group")]
    ValueOutOfRange {
        /// Index in the update.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A masked update has the wrong number of values.
    #[error("masked update has {actual} values, expected {expected}")]
    DimensionMismatch {
        /// Values expected.
        expected: usize,
        /// Values received.
        actual: usize,
    },
    /// A masked value is outside [0, 2^modulus_bits).
    #[error("masked value {index} ({value}) is outside [0, 2^modulus_bits)")]
    ValueOutsideGroup {
        /// Index in the update.
        index: usize,
        /// The value.
        value: i64,
    },
    /// A dropped participant is also listed as a survivor.
    #[error("'{agent_id}' is both dropped and a survivor")]
    DroppedIsSurvivor {
        /// The participant.
        agent_id: String,
    },
    /// A byte payload is not a whole number of 8-byte values.
    #[error("payload of {len} bytes is not a multiple of 8")]
    PayloadLength {
        /// Bytes received.
        len: usize,
    },
}
