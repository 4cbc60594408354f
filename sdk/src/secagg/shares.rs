//! A participant's side of key sharing: Shamir shares of its private key, each sealed for one
//! peer, and opening the shares addressed to it.
//!
//! ```text
//!   peers (sorted): [p_0, p_1, …, p_{n−1}]           me = p_m
//!   for every j ≠ m:
//!     plaintext_j  = x_j (u32 BE, = j + 1) ‖ Shamir value at x_j (32 bytes)   36 bytes
//!     aad          = len(from) (u32 BE) ‖ from ‖ len(to) (u32 BE) ‖ to
//!     ciphertext_j = nonce (12 random bytes) ‖ AES-256-GCM(k_enc(m, j), nonce, plaintext_j, aad)
//! ```
//!
//! The associated data binds sender and recipient, so a ciphertext replayed under another
//! `from`, or delivered to another `to`, fails to open. The x-coordinate is fixed by the
//! recipient's position, so a revealed plaintext is enough to reconstruct, with no side table.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rand::CryptoRng;

use super::keys::KeyPurpose;
use super::peers::{check_sorted, index_of, Peer};
use super::{shamir, KeyPair, SecAggError};

/// Bytes of an AES-GCM nonce, prepended to each ciphertext.
pub const NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM tag, appended by the cipher.
const TAG_LEN: usize = 16;
/// Bytes of a share plaintext: a 4-byte x-coordinate and a 32-byte value.
pub const SHARE_LEN: usize = 4 + 32;

/// One Shamir share of `from`'s private key, encrypted for `to` (the proto's
/// `EncryptedShare`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShare {
    /// Participant whose key was shared.
    pub from: String,
    /// Participant that can decrypt the share.
    pub to: String,
    /// Nonce followed by the AES-256-GCM output.
    pub ciphertext: Vec<u8>,
}

/// Splits `keys`' private key into shares, any `threshold` of which reconstruct it: one for
/// every peer of the final sorted list `peers` other than `me`, in list order. `threshold` must
/// be in 2..=`peers.len()` (with `threshold == peers.len()` no dropout can ever be recovered,
/// since only n − 1 shares exist) and at most 255 peers may take part.
pub fn share_private_key<R: CryptoRng + ?Sized>(
    me: &str,
    keys: &KeyPair,
    peers: &[Peer],
    threshold: u32,
    rng: &mut R,
) -> Result<Vec<EncryptedShare>, SecAggError> {
    let my_index = check_share_inputs(me, keys, peers, threshold)?;
    let recipients: Vec<(usize, &Peer)> = peers
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != my_index)
        .collect();
    let xs: Vec<u8> = recipients.iter().map(|&(i, _)| x_of(i)).collect();
    let values = shamir::split(&keys.secret_bytes(), threshold as usize, &xs, rng);
    recipients
        .iter()
        .zip(values)
        .map(|(&(i, (to, public)), value)| {
            let key = keys.pairwise_key(to, public, KeyPurpose::Share)?;
            let plaintext = frame_share(u32::from(x_of(i)), &value);
            Ok(EncryptedShare {
                from: me.to_owned(),
                to: to.clone(),
                ciphertext: seal(&key, &aad(me, to), &plaintext, rng),
            })
        })
        .collect()
}

/// Decrypts a share `from` sent to `me`; returns its plaintext (x-coordinate, value), the bytes
/// a survivor reveals if `from` drops. Fails on any tampering, a wrong sender or recipient, or a
/// malformed plaintext.
pub fn open_share(
    me: &str,
    keys: &KeyPair,
    from: &str,
    from_public: &[u8; 32],
    ciphertext: &[u8],
) -> Result<Vec<u8>, SecAggError> {
    if ciphertext.len() < NONCE_LEN + TAG_LEN {
        return Err(SecAggError::CiphertextTooShort {
            from: from.to_owned(),
            len: ciphertext.len(),
        });
    }
    let key = keys.pairwise_key(from, from_public, KeyPurpose::Share)?;
    let (nonce, sealed) = ciphertext.split_at(NONCE_LEN);
    let payload = Payload {
        msg: sealed,
        aad: &aad(from, me),
    };
    let plaintext = Aes256Gcm::new(&key.into())
        .decrypt(Nonce::from_slice(nonce), payload)
        .map_err(|_| SecAggError::ShareDecryptionFailed {
            from: from.to_owned(),
            to: me.to_owned(),
        })?;
    parse_share(&plaintext)?;
    Ok(plaintext)
}

/// Splits a share plaintext into its x-coordinate (1..=255) and 32-byte value.
pub fn parse_share(share: &[u8]) -> Result<(u32, [u8; 32]), SecAggError> {
    let (x, value) = share
        .split_first_chunk::<4>()
        .filter(|_| share.len() == SHARE_LEN)
        .ok_or(SecAggError::ShareLength { len: share.len() })?;
    let x = u32::from_be_bytes(*x);
    if !(1..=shamir::MAX_SHARES as u32).contains(&x) {
        return Err(SecAggError::ShareXOutOfRange { x });
    }
    let value: [u8; 32] = value.try_into().expect("length checked above");
    Ok((x, value))
}

/// Validates the sharing inputs; returns `me`'s index in `peers`.
fn check_share_inputs(
    me: &str,
    keys: &KeyPair,
    peers: &[Peer],
    threshold: u32,
) -> Result<usize, SecAggError> {
    if peers.len() > shamir::MAX_SHARES {
        return Err(SecAggError::TooManyPeers {
            peers: peers.len(),
            max: shamir::MAX_SHARES,
        });
    }
    check_sorted(peers)?;
    let my_index = index_of(peers, me, &keys.public())?;
    if threshold < 2 || threshold as usize > peers.len() {
        return Err(SecAggError::InvalidThreshold {
            threshold,
            peers: peers.len(),
        });
    }
    Ok(my_index)
}

/// The x-coordinate of the peer at `index` of the sorted list (< 255 by the length check).
fn x_of(index: usize) -> u8 {
    u8::try_from(index + 1).expect("peer lists hold at most 255 entries")
}

/// A share plaintext: `x` big-endian, then `value`.
fn frame_share(x: u32, value: &[u8]) -> Vec<u8> {
    let mut plaintext = Vec::with_capacity(SHARE_LEN);
    plaintext.extend_from_slice(&x.to_be_bytes());
    plaintext.extend_from_slice(value);
    plaintext
}

/// The associated data binding a share to its sender and recipient.
fn aad(from: &str, to: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(8 + from.len() + to.len());
    for id in [from, to] {
        let len = u32::try_from(id.len()).expect("agent ids are shorter than 4 GiB");
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(id.as_bytes());
    }
    aad
}

/// Nonce ‖ AES-256-GCM(key, nonce, plaintext, aad), with a fresh random nonce.
fn seal<R: CryptoRng + ?Sized>(
    key: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    let sealed = Aes256Gcm::new(&(*key).into())
        .encrypt(Nonce::from_slice(&nonce), payload)
        .expect("AES-GCM encrypts any plaintext shorter than 64 GiB");
    [&nonce[..], &sealed].concat()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    struct Round {
        keys: Vec<KeyPair>,
        peers: Vec<Peer>,
    }

    fn round(ids: &[&str], seed: u64) -> Round {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys: Vec<KeyPair> = ids.iter().map(|_| KeyPair::generate(&mut rng)).collect();
        let peers = ids
            .iter()
            .zip(&keys)
            .map(|(id, k)| ((*id).to_owned(), k.public()))
            .collect();
        Round { keys, peers }
    }

    #[test]
    fn shares_go_to_every_other_peer_in_order_and_open_with_their_x() {
        let r = round(&["a", "b", "c", "d"], 1);
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let shares = share_private_key("b", &r.keys[1], &r.peers, 2, &mut rng).unwrap();
        let to: Vec<&str> = shares.iter().map(|s| s.to.as_str()).collect();
        assert_eq!(to, ["a", "c", "d"]);
        for (share, index) in shares.iter().zip([0usize, 2, 3]) {
            assert_eq!(share.from, "b");
            assert_eq!(share.ciphertext.len(), NONCE_LEN + SHARE_LEN + TAG_LEN);
            let plaintext = open_share(
                &share.to,
                &r.keys[index],
                "b",
                &r.peers[1].1,
                &share.ciphertext,
            )
            .unwrap();
            assert_eq!(parse_share(&plaintext).unwrap().0, index as u32 + 1);
            assert_eq!(plaintext[..4], (index as u32 + 1).to_be_bytes());
        }
    }

    #[test]
    fn tampering_or_misdelivery_fails_to_open() {
        let r = round(&["a", "b", "c"], 3);
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let shares = share_private_key("a", &r.keys[0], &r.peers, 2, &mut rng).unwrap();
        let for_b = &shares[0].ciphertext;
        let failed = |from: &str, to: &str| SecAggError::ShareDecryptionFailed {
            from: from.into(),
            to: to.into(),
        };
        for i in [0, NONCE_LEN, for_b.len() - 1] {
            let mut tampered = for_b.clone();
            tampered[i] ^= 1;
            let opened = open_share("b", &r.keys[1], "a", &r.peers[0].1, &tampered);
            assert_eq!(opened, Err(failed("a", "b")), "byte {i}");
        }
        // Right key, wrong recipient id in the associated data.
        assert_eq!(
            open_share("c", &r.keys[1], "a", &r.peers[0].1, for_b),
            Err(failed("a", "c"))
        );
        // Wrong recipient key.
        assert_eq!(
            open_share("b", &r.keys[2], "a", &r.peers[0].1, for_b),
            Err(failed("a", "b"))
        );
        // Claimed sender with another key.
        assert_eq!(
            open_share("b", &r.keys[1], "c", &r.peers[2].1, for_b),
            Err(failed("c", "b"))
        );
        assert_eq!(
            open_share("b", &r.keys[1], "a", &r.peers[0].1, &for_b[..27]),
            Err(SecAggError::CiphertextTooShort {
                from: "a".into(),
                len: 27
            })
        );
    }

    #[test]
    fn sharing_inputs_are_validated() {
        let r = round(&["a", "b", "c"], 5);
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let mut unsorted = r.peers.clone();
        unsorted.swap(0, 1);
        let too_many: Vec<Peer> = (0..256).map(|i| (format!("p{i:03}"), [1; 32])).collect();
        let cases: Vec<(&str, usize, &[Peer], u32, SecAggError)> = vec![
            (
                "a",
                0,
                &r.peers,
                1,
                SecAggError::InvalidThreshold {
                    threshold: 1,
                    peers: 3,
                },
            ),
            (
                "a",
                0,
                &r.peers,
                4,
                SecAggError::InvalidThreshold {
                    threshold: 4,
                    peers: 3,
                },
            ),
            (
                "z",
                0,
                &r.peers,
                2,
                SecAggError::NotInPeerList {
                    agent_id: "z".into(),
                },
            ),
            (
                "b",
                0,
                &r.peers,
                2,
                SecAggError::OwnKeyMismatch {
                    agent_id: "b".into(),
                },
            ),
            (
                "a",
                0,
                &unsorted,
                2,
                SecAggError::PeersNotSorted {
                    previous: "b".into(),
                    next: "a".into(),
                },
            ),
            (
                "a",
                0,
                &too_many,
                2,
                SecAggError::TooManyPeers {
                    peers: 256,
                    max: 255,
                },
            ),
        ];
        for (me, key, peers, threshold, expected) in cases {
            let result = share_private_key(me, &r.keys[key], peers, threshold, &mut rng);
            assert_eq!(result, Err(expected.clone()), "{expected}");
        }
    }

    #[test]
    fn parse_share_checks_length_and_x() {
        let mut share = frame_share(7, &[9; 32]);
        assert_eq!(parse_share(&share), Ok((7, [9; 32])));
        share.push(0);
        assert_eq!(
            parse_share(&share),
            Err(SecAggError::ShareLength { len: 37 })
        );
        assert_eq!(
            parse_share(&[1, 2]),
            Err(SecAggError::ShareLength { len: 2 })
        );
        for x in [0, 256, u32::MAX] {
            let share = frame_share(x, &[9; 32]);
            assert_eq!(
                parse_share(&share),
                Err(SecAggError::ShareXOutOfRange { x })
            );
        }
    }

    #[test]
    fn aad_is_unambiguous() {
        assert_ne!(aad("ab", "c"), aad("a", "bc"));
        assert_eq!(aad("a", "bc"), [0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c']);
    }
}
