//! Peer lists: `(agent_id, public_key)` pairs strictly sorted by agent id, compared byte-wise.
//!
//! The coordinator publishes the final list sorted this way; a participant's position in it
//! fixes the x-coordinate of the Shamir share it holds (position + 1), and the order between
//! two ids fixes the sign of their pairwise mask. Only checks live here; nothing is reordered.

use super::SecAggError;

/// One participant of a round attempt: its agent id and 32-byte X25519 public key.
pub type Peer = (String, [u8; 32]);

/// Checks that `peers` is strictly increasing by id (byte-wise), so no id repeats.
pub(crate) fn check_sorted(peers: &[Peer]) -> Result<(), SecAggError> {
    match peers
        .windows(2)
        .find(|pair| pair[0].0.as_bytes() >= pair[1].0.as_bytes())
    {
        Some(pair) => Err(SecAggError::PeersNotSorted {
            previous: pair[0].0.clone(),
            next: pair[1].0.clone(),
        }),
        None => Ok(()),
    }
}

/// The index of `me` in a sorted list whose entry for `me` must carry `public`.
pub(crate) fn index_of(peers: &[Peer], me: &str, public: &[u8; 32]) -> Result<usize, SecAggError> {
    let index = peers
        .binary_search_by(|(id, _)| id.as_bytes().cmp(me.as_bytes()))
        .map_err(|_| SecAggError::NotInPeerList {
            agent_id: me.to_owned(),
        })?;
    if peers[index].1 != *public {
        return Err(SecAggError::OwnKeyMismatch {
            agent_id: me.to_owned(),
        });
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &[&str]) -> Vec<Peer> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| ((*id).to_owned(), [i as u8; 32]))
            .collect()
    }

    #[test]
    fn sorted_lists_pass_and_others_name_the_offending_pair() {
        type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (&[], None),
            (&["a"], None),
            (&["a", "b", "c"], None),
            (&["B", "a"], None), // byte-wise: uppercase sorts first
            (&["a", "c", "b"], Some(("c", "b"))),
            (&["a", "a"], Some(("a", "a"))),
        ];
        for (ids, expected) in cases {
            let expected = expected.map(|(p, n)| SecAggError::PeersNotSorted {
                previous: p.to_owned(),
                next: n.to_owned(),
            });
            assert_eq!(check_sorted(&list(ids)).err(), expected, "{ids:?}");
        }
    }

    #[test]
    fn index_of_finds_me_and_checks_my_key() {
        let peers = list(&["a", "b", "c"]);
        assert_eq!(index_of(&peers, "c", &[2; 32]), Ok(2));
        assert_eq!(
            index_of(&peers, "c", &[9; 32]),
            Err(SecAggError::OwnKeyMismatch {
                agent_id: "c".into()
            })
        );
        assert_eq!(
            index_of(&peers, "d", &[2; 32]),
            Err(SecAggError::NotInPeerList {
                agent_id: "d".into()
            })
        );
    }
}
