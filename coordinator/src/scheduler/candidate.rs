//! [`Candidate`]: a connected agent as the scheduler sees it, and [`Load`], its ordering by
//! busyness.
//!
//! The runtime builds candidates from the replicated state (connected agents only); the
//! strategies read them and never reach tokio, I/O, a clock or randomness.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::TaskNeeds;

/// A connected agent as the scheduler sees it. Ids are unique within one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    /// The agent's id; the last tie-break of every strategy.
    pub id: String,
    /// Capabilities the agent advertised at registration.
    pub capabilities: BTreeSet<String>,
    /// Labels the agent advertised at registration.
    pub labels: BTreeMap<String, String>,
    /// Tasks currently assigned to the agent.
    pub running: u32,
    /// Tasks the agent runs at once; `running >= max_concurrent` means full.
    pub max_concurrent: u32,
    /// Capacity not taken by assigned tasks, e.g. `{"cpu": 6.0, "gpu": 1.0}`.
    pub free_resources: BTreeMap<String, f64>,
    /// Draining or quarantined agents receive no new work.
    pub draining_or_quarantined: bool,
    /// Anti-affinity keys of the tasks the agent runs (see [`TaskNeeds::anti_affinity`]).
    pub anti_affinity: BTreeSet<String>,
}

impl Candidate {
    /// True when the agent runs as many tasks as it allows.
    pub fn is_full(&self) -> bool {
        self.running >= self.max_concurrent
    }

    /// Counts one more task against the agent: a slot, the task's resources and its
    /// anti-affinity key. Resources the agent does not list stay unlisted (only a zero need
    /// fits them).
    pub fn reserve(&mut self, needs: &TaskNeeds) {
        self.running = self.running.saturating_add(1);
        if let Some(key) = &needs.anti_affinity {
            self.anti_affinity.insert(key.clone());
        }
        for (name, need) in &needs.resources {
            if let Some(free) = self.free_resources.get_mut(name) {
                *free -= need;
            }
        }
    }

    /// True when the agent takes work and has room for one more task.
    pub fn has_free_slot(&self) -> bool {
        !self.draining_or_quarantined && self.running < self.max_concurrent
    }

    /// The agent's busyness, for ranking.
    pub fn load(&self) -> Load {
        Load {
            running: self.running,
            max_concurrent: self.max_concurrent,
        }
    }
}

/// Busyness of an agent: ordered by `running / max_concurrent`, then by fewer running tasks.
///
/// The ratio is compared exactly (cross-multiplied integers, no floats), so equal ratios such
/// as 1/2 and 2/4 tie and fall through to `running`. An agent with `max_concurrent == 0` ranks
/// after every other (it is never eligible anyway).
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Tasks currently assigned.
    pub running: u32,
    /// Tasks allowed at once.
    pub max_concurrent: u32,
}

impl Load {
    fn cmp_ratio(&self, other: &Self) -> Ordering {
        let unbounded = (self.max_concurrent == 0).cmp(&(other.max_concurrent == 0));
        let lhs = u64::from(self.running) * u64::from(other.max_concurrent);
        let rhs = u64::from(other.running) * u64::from(self.max_concurrent);
        unbounded.then(lhs.cmp(&rhs))
    }
}

impl Ord for Load {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_ratio(other).then(self.running.cmp(&other.running))
    }
}

impl PartialOrd for Load {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Load {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Load {}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(running: u32, max_concurrent: u32) -> Load {
        Load {
            running,
            max_concurrent,
        }
    }

    #[test]
    fn load_orders_by_ratio_then_running() {
        // (lhs, rhs, expected lhs.cmp(rhs))
        let cases = [
            (load(0, 4), load(1, 4), Ordering::Less),
            (load(1, 4), load(1, 2), Ordering::Less),
            (load(1, 2), load(2, 4), Ordering::Less),
            (load(2, 4), load(2, 4), Ordering::Equal),
            (load(0, 1), load(0, 8), Ordering::Equal),
            (load(3, 4), load(1, 2), Ordering::Greater),
            (load(5, 4), load(4, 4), Ordering::Greater),
            (load(0, 0), load(9, 10), Ordering::Greater),
            (load(u32::MAX, u32::MAX), load(1, 1), Ordering::Greater),
        ];
        for (lhs, rhs, want) in cases {
            assert_eq!(lhs.cmp(&rhs), want, "{lhs:?} vs {rhs:?}");
            assert_eq!(rhs.cmp(&lhs), want.reverse(), "{rhs:?} vs {lhs:?}");
        }
    }

    #[test]
    fn full_means_running_reached_max() {
        let cases = [
            (0, 0, true),
            (0, 1, false),
            (3, 4, false),
            (4, 4, true),
            (5, 4, true),
        ];
        for (running, max_concurrent, want) in cases {
            let agent = Candidate {
                running,
                max_concurrent,
                ..Candidate::default()
            };
            assert_eq!(agent.is_full(), want, "{running}/{max_concurrent}");
        }
    }
}
