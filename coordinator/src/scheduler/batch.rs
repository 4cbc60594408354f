//! Batch placement: many ready tasks in one pass over one snapshot of the candidates, each
//! choice counted against its agent before the next task is placed.
//!
//! ```text
//!   tasks (in priority order) ──► for each: group of same needs ──► best member with room
//!        │                          (static matches, cached)          │ per-strategy index
//!        │ auction ──► BatchPlan.auctions                              ▼
//!        └──────────────────────────────────────────────► reserve slot + resources
//! ```
//!
//! Choices are exactly those of [`choose`](super::choose) applied task by task, with the
//! candidates updated and the round-robin cursor advanced after each placement. To stay fast at
//! thousands of agents and a hundred thousand tasks it works on indexes and id ranks (no string
//! compares or clones in the inner loop) and keeps, per recent distinct needs, the statically
//! matching agents in an index per strategy: an id-ordered set for round-robin, lazy min-heaps
//! for least-loaded and capability (loads only grow during a pass, so stale keys are refreshed
//! when they surface). An agent without room for some needs is dropped from their indexes for
//! good, since room only shrinks during a pass; and the pass stops looking once every slot is
//! taken. A placement costs O(log agents) amortized instead of a scan of every agent.
//!
//! Pure: no tokio, I/O, clock or randomness.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::eligibility::{has_room, matches_statically};
use super::{Candidate, Load, RoundRobinCursor, Strategy, TaskNeeds};

/// Distinct needs whose matching agents are cached at once.
const GROUPS_MAX: usize = 64;

/// The result of one batch placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan<K> {
    /// Tasks placed, in input order, with the chosen agent's id.
    pub assigned: Vec<(K, String)>,
    /// Auction tasks, in input order, left untouched: they need a call for bids first.
    pub auctions: Vec<K>,
    /// Tasks no candidate could take in this pass, in input order. [`eligible`](super::eligible)
    /// names the reason per agent.
    pub unplaced: Vec<K>,
}

impl<K> Default for BatchPlan<K> {
    fn default() -> Self {
        Self {
            assigned: Vec::new(),
            auctions: Vec::new(),
            unplaced: Vec::new(),
        }
    }
}

/// Places `tasks` in order on `candidates`, reserving a slot and the task's resources on each
/// chosen agent (so `candidates` ends up as it will be once the assignments apply) and
/// advancing `cursor` past every round-robin choice. Auction tasks are not placed; they are
/// returned in [`BatchPlan::auctions`].
pub fn place_batch<K: Clone>(
    tasks: &[(K, TaskNeeds, Strategy)],
    candidates: &mut [Candidate],
    cursor: &mut RoundRobinCursor,
) -> BatchPlan<K> {
    let mut pass = Pass::new(candidates, cursor);
    let mut plan = BatchPlan::default();
    for (key, needs, strategy) in tasks {
        if *strategy == Strategy::Auction {
            plan.auctions.push(key.clone());
            continue;
        }
        match pass.place(needs, *strategy, candidates) {
            Some(index) => plan
                .assigned
                .push((key.clone(), candidates[index].id.clone())),
            None => plan.unplaced.push(key.clone()),
        }
    }
    if let Some(index) = pass.last_round_robin {
        cursor.advance(&candidates[index].id);
    }
    plan
}

/// An agent that statically matches a group's needs.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// Position in the candidate slice.
    index: usize,
    /// Position in id order.
    rank: usize,
    /// Preferred labels matched.
    affinity: usize,
}

/// A member's key in a ranked strategy's heap, best first: most affinity, lowest load, lowest
/// id rank. `running` is the count the key was computed from; loads only grow during a pass,
/// so an entry whose count is behind is stale, and is refreshed when it reaches the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ranked {
    affinity: Reverse<usize>,
    load: Load,
    rank: usize,
    index: usize,
    running: u32,
}

impl Ranked {
    fn new(member: &Member, candidate: &Candidate, use_affinity: bool) -> Self {
        Self {
            affinity: Reverse(if use_affinity { member.affinity } else { 0 }),
            load: candidate.load(),
            rank: member.rank,
            index: member.index,
            running: candidate.running,
        }
    }

    fn refreshed(self, candidate: &Candidate) -> Self {
        Self {
            load: candidate.load(),
            running: candidate.running,
            ..self
        }
    }
}

/// Min-heap of ranked members.
type RankedHeap = BinaryHeap<Reverse<Ranked>>;

/// The statically matching agents of one distinct `needs`, with one lazily built index per
/// strategy. A member without room for these needs is dropped for good: room only shrinks
/// during a pass.
struct Group<'t> {
    needs: &'t TaskNeeds,
    members: Vec<Member>,
    round_robin: Option<BTreeSet<usize>>,
    least_loaded: Option<RankedHeap>,
    capability: Option<RankedHeap>,
}

impl<'t> Group<'t> {
    fn build(needs: &'t TaskNeeds, candidates: &[Candidate], ranks: &[usize]) -> Self {
        let members = candidates
            .iter()
            .enumerate()
            .filter(|(_, candidate)| matches_statically(needs, candidate))
            .filter(|(_, candidate)| has_room(needs, candidate))
            .map(|(index, candidate)| Member {
                index,
                rank: ranks[index],
                affinity: needs.affinity(&candidate.labels),
            })
            .collect();
        Self {
            needs,
            members,
            round_robin: None,
            least_loaded: None,
            capability: None,
        }
    }

    /// The slice position and id rank of the member `strategy` picks.
    fn pick(&mut self, strategy: Strategy, pass: &PassView<'_>) -> Option<(usize, usize)> {
        let (needs, members) = (self.needs, &self.members);
        match strategy {
            Strategy::RoundRobin => {
                let ranks = self
                    .round_robin
                    .get_or_insert_with(|| members.iter().map(|m| m.rank).collect());
                pick_round_robin(ranks, needs, pass)
            }
            Strategy::LeastLoaded => {
                let heap = self
                    .least_loaded
                    .get_or_insert_with(|| heap(members, pass.candidates, false));
                pick_ranked(heap, needs, pass.candidates)
            }
            Strategy::Capability | Strategy::Auction => {
                let heap = self
                    .capability
                    .get_or_insert_with(|| heap(members, pass.candidates, true));
                pick_ranked(heap, needs, pass.candidates)
            }
        }
    }
}

/// What a group reads of the pass while picking.
struct PassView<'a> {
    candidates: &'a [Candidate],
    by_rank: &'a [usize],
    round_robin_from: usize,
}

fn heap(members: &[Member], candidates: &[Candidate], use_affinity: bool) -> RankedHeap {
    members
        .iter()
        .map(|member| Reverse(Ranked::new(member, &candidates[member.index], use_affinity)))
        .collect()
}

/// The first member with room at or after `round_robin_from` in id order, wrapping.
fn pick_round_robin(
    ranks: &mut BTreeSet<usize>,
    needs: &TaskNeeds,
    pass: &PassView<'_>,
) -> Option<(usize, usize)> {
    loop {
        let next = ranks.range(pass.round_robin_from..).next();
        let rank = *next.or_else(|| ranks.first())?;
        let index = pass.by_rank[rank];
        if has_room(needs, &pass.candidates[index]) {
            return Some((index, rank));
        }
        ranks.remove(&rank);
    }
}

/// The best member with room by the heap's order, dropping members without room and
/// refreshing stale keys on the way.
fn pick_ranked(
    heap: &mut RankedHeap,
    needs: &TaskNeeds,
    candidates: &[Candidate],
) -> Option<(usize, usize)> {
    while let Some(&Reverse(top)) = heap.peek() {
        let candidate = &candidates[top.index];
        if !has_room(needs, candidate) {
            heap.pop();
        } else if top.running != candidate.running {
            heap.pop();
            heap.push(Reverse(top.refreshed(candidate)));
        } else {
            return Some((top.index, top.rank));
        }
    }
    None
}

/// State of one batch pass.
struct Pass<'t> {
    /// Id rank of each candidate, by slice position.
    ranks: Vec<usize>,
    /// Slice position of each candidate, by id rank.
    by_rank: Vec<usize>,
    /// Ranks from here on come after the round-robin cursor.
    round_robin_from: usize,
    /// Slice position of the last round-robin choice.
    last_round_robin: Option<usize>,
    /// Slots left on available agents; nothing more can be placed at 0.
    free_slots: u64,
    groups: Vec<Group<'t>>,
    /// Group slot replaced next once `groups` is at `GROUPS_MAX`.
    evict_next: usize,
    /// Group slot used last, looked at first.
    recent: usize,
}

impl<'t> Pass<'t> {
    fn new(candidates: &[Candidate], cursor: &RoundRobinCursor) -> Self {
        let mut by_rank: Vec<usize> = (0..candidates.len()).collect();
        by_rank.sort_by(|&lhs, &rhs| candidates[lhs].id.cmp(&candidates[rhs].id));
        let mut ranks = vec![0; candidates.len()];
        for (rank, &index) in by_rank.iter().enumerate() {
            ranks[index] = rank;
        }
        let round_robin_from = by_rank.partition_point(|&i| !cursor.is_after(&candidates[i].id));
        Self {
            ranks,
            by_rank,
            round_robin_from,
            last_round_robin: None,
            free_slots: free_slots(candidates),
            groups: Vec::new(),
            evict_next: 0,
            recent: 0,
        }
    }

    /// Chooses an agent for one task and reserves it; its slice position.
    fn place(
        &mut self,
        needs: &'t TaskNeeds,
        strategy: Strategy,
        candidates: &mut [Candidate],
    ) -> Option<usize> {
        if self.free_slots == 0 {
            return None;
        }
        let slot = self.group_slot(needs, candidates);
        let view = PassView {
            candidates,
            by_rank: &self.by_rank,
            round_robin_from: self.round_robin_from,
        };
        let (index, rank) = self.groups[slot].pick(strategy, &view)?;
        candidates[index].reserve(needs);
        self.free_slots -= 1;
        if strategy == Strategy::RoundRobin {
            self.round_robin_from = rank + 1;
            self.last_round_robin = Some(index);
        }
        Some(index)
    }

    /// The cache slot of the group for `needs`, building it on a miss.
    fn group_slot(&mut self, needs: &'t TaskNeeds, candidates: &[Candidate]) -> usize {
        if let Some(slot) = self.find_group(needs) {
            self.recent = slot;
            return slot;
        }
        let group = Group::build(needs, candidates, &self.ranks);
        let slot = if self.groups.len() < GROUPS_MAX {
            self.groups.push(group);
            self.groups.len() - 1
        } else {
            let slot = self.evict_next;
            self.evict_next = (slot + 1) % GROUPS_MAX;
            self.groups[slot] = group;
            slot
        };
        self.recent = slot;
        slot
    }

    fn find_group(&self, needs: &TaskNeeds) -> Option<usize> {
        let same = |group: &Group<'_>| std::ptr::eq(group.needs, needs) || group.needs == needs;
        if self.groups.get(self.recent).is_some_and(same) {
            return Some(self.recent);
        }
        self.groups.iter().position(same)
    }
}

/// Free slots on agents that take work.
fn free_slots(candidates: &[Candidate]) -> u64 {
    candidates
        .iter()
        .filter(|candidate| !candidate.draining_or_quarantined)
        .map(|candidate| u64::from(candidate.max_concurrent.saturating_sub(candidate.running)))
        .sum()
}

#[cfg(test)]
mod tests;
