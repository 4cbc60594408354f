//! [`BarrierTable`]: named barriers and their generations, changed by `CreateBarrier`,
//! `ArriveBarrier` (arrive, enter or leave), `BreakBarrier` (timeout), `DeleteBarrier` and the
//! loss of an agent that is a party.
//!
//! ```text
//!   single: Waiting ─every party arrived─► Released
//!   double: Waiting ─every party entered─► Entered ─every party left─► Released
//!   either: ─timeout / party lost / deleted─► Broken
//!   cyclic: generation g ends ─► generation g + 1 starts Waiting at once
//! ```
//! A generation ends exactly once. Arrivals are idempotent per party; an arrival names its
//! generation (0 for the current one), so a retried arrival is never counted in a later
//! generation. Pure: no I/O, clock or randomness.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::jobs::SpecError;
use super::{AgentRegistry, Applied, Meta, Outcome, Rejection};

/// Longest barrier name, in characters.
pub const NAME_CHARS_MAX: usize = 256;
/// Most parties a barrier may have.
pub const PARTIES_MAX: u32 = 10_000;
/// Longest generation timeout: a day.
pub const TIMEOUT_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Ended generations of a cyclic barrier remembered for late callers.
const PAST_GENERATIONS_KEPT: usize = 64;

/// How parties use a barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierKind {
    /// Parties arrive; all are released together.
    Single,
    /// Parties enter, work, then leave (ZooKeeper's double barrier).
    Double,
}

/// Who must arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parties {
    /// Any this many distinct party ids.
    Count(u32),
    /// Exactly these agents.
    Agents(Vec<String>),
}

impl Parties {
    /// How many parties complete a generation.
    pub fn count(&self) -> usize {
        match self {
            Parties::Count(n) => *n as usize,
            Parties::Agents(ids) => ids.len(),
        }
    }
}

/// A barrier as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierSpec {
    /// Kind.
    pub kind: BarrierKind,
    /// Who must arrive.
    pub parties: Parties,
    /// Time limit of a generation from its first arrival; 0 means none.
    pub timeout_ms: u64,
    /// Whether generations repeat.
    pub cyclic: bool,
}

/// What a party does at a barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Arrive at a single barrier.
    Arrive,
    /// Enter a double barrier.
    Enter,
    /// Leave a double barrier.
    Leave,
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationEnd {
    /// Every party arrived (or left); false when broken.
    pub released: bool,
    /// Why it broke: "timeout", "party <id> lost", "deleted"; empty when released.
    pub reason: String,
    /// When it ended.
    pub ended_at_ms: u64,
}

/// One use of a barrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Its number, from 1.
    pub number: u64,
    /// Parties that arrived (or entered), in order.
    pub arrived: Vec<String>,
    /// Double barrier: parties that left, in order.
    pub left: Vec<String>,
    /// Double barrier: every party entered.
    pub entered: bool,
    /// When its first party arrived.
    pub started_at_ms: Option<u64>,
    /// When it breaks by timeout if still open.
    pub deadline_at_ms: Option<u64>,
    /// How it ended, once it has.
    pub end: Option<GenerationEnd>,
    /// Arrival order of each party, for lookups.
    pub positions: BTreeMap<String, u32>,
    /// Parties that left, for lookups.
    pub departed: BTreeSet<String>,
}

impl Generation {
    fn new(number: u64) -> Self {
        Self {
            number,
            arrived: Vec::new(),
            left: Vec::new(),
            entered: false,
            started_at_ms: None,
            deadline_at_ms: None,
            end: None,
            positions: BTreeMap::new(),
            departed: BTreeSet::new(),
        }
    }

    /// 0-based arrival order of `party`, if it arrived.
    pub fn arrival_index(&self, party: &str) -> Option<u32> {
        self.positions.get(party).copied()
    }

    /// Whether `party` left.
    pub fn has_left(&self, party: &str) -> bool {
        self.departed.contains(party)
    }
}

/// One barrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierRecord {
    /// Its name.
    pub name: String,
    /// As created.
    pub spec: BarrierSpec,
    /// When it was created.
    pub created_at_ms: u64,
    /// The current generation (the last one, ended, for a barrier that is not cyclic).
    pub current: Generation,
    /// Recently ended generations of a cyclic barrier, by number.
    pub past: BTreeMap<u64, Generation>,
    /// A listed party was lost: no generation starts any more.
    pub retired: bool,
}

impl BarrierRecord {
    /// Generation `number` if still known (current or recently ended).
    pub fn generation(&self, number: u64) -> Option<&Generation> {
        match number == self.current.number {
            true => Some(&self.current),
            false => self.past.get(&number),
        }
    }
}

/// Every barrier by name, and the open generations with a timeout by deadline.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarrierTable {
    barriers: BTreeMap<String, BarrierRecord>,
    deadlines: BTreeSet<(u64, String)>,
}

impl BarrierTable {
    /// Creates a barrier.
    pub fn create(
        &mut self,
        name: &str,
        spec: &BarrierSpec,
        agents: &AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        if let Some(existing) = self.barriers.get(name) {
            // Creating it again with the same settings is a retry: the barrier as it is.
            return match existing.spec == *spec {
                true => Ok(changed(name, existing.current.number)),
                false => Err(Rejection::BarrierExists {
                    name: name.to_owned(),
                }),
            };
        }
        validate(name, spec, agents).map_err(Rejection::InvalidSpec)?;
        let record = BarrierRecord {
            name: name.to_owned(),
            spec: spec.clone(),
            created_at_ms: meta.now_ms,
            current: Generation::new(1),
            past: BTreeMap::new(),
            retired: false,
        };
        self.barriers.insert(name.to_owned(), record);
        Ok(Applied::BarrierChanged {
            name: name.to_owned(),
            generation: 1,
        })
    }

    /// A party arrives at, enters or leaves generation `generation` (0: the current one).
    pub fn step(
        &mut self,
        name: &str,
        party: &str,
        generation: u64,
        step: Step,
        meta: Meta,
    ) -> Outcome {
        let barrier = self.barriers.get(name).ok_or_else(|| unknown(name))?;
        check_step(barrier, step)?;
        let number = match generation {
            0 => barrier.current.number,
            number => number,
        };
        let refuse = |problem: String| {
            Err(Rejection::BarrierStep {
                name: name.to_owned(),
                problem,
            })
        };
        if number != barrier.current.number {
            // A retried arrival at a generation that ended meanwhile: its outcome stands.
            return match barrier.past.get(&number) {
                Some(past) if past.arrival_index(party).is_some() => Ok(changed(name, number)),
                Some(_) => refuse(format!("generation {number} ended without party '{party}'")),
                None if number > barrier.current.number => {
                    refuse(format!("generation {number} has not started"))
                }
                None => refuse(format!("generation {number} is no longer known")),
            };
        }
        if let Parties::Agents(ids) = &barrier.spec.parties {
            if !ids.iter().any(|id| id == party) {
                return Err(Rejection::NotAParty {
                    name: name.to_owned(),
                    party: party.to_owned(),
                });
            }
        }
        let current = &barrier.current;
        let arrived = current.arrival_index(party).is_some();
        let repeated = match step {
            Step::Arrive | Step::Enter => arrived,
            Step::Leave => current.has_left(party),
        };
        if repeated {
            return Ok(changed(name, number));
        }
        if let Some(end) = &current.end {
            let how = if end.released { "released" } else { "broken" };
            let why = match barrier.retired {
                true => "a listed party was lost",
                false => "it is not cyclic",
            };
            return refuse(format!("generation {number} is {how}; {why}"));
        }
        if current.deadline_at_ms.is_some_and(|at| at <= meta.now_ms) {
            return Err(Rejection::PastDeadline {
                name: name.to_owned(),
                deadline_at_ms: current.deadline_at_ms.unwrap_or(0),
            });
        }
        if step == Step::Enter && current.entered {
            return refuse(format!("every party already entered generation {number}"));
        }
        if step == Step::Leave && !arrived {
            return refuse(format!("party '{party}' did not enter generation {number}"));
        }
        if step == Step::Leave && !current.entered {
            return refuse(format!(
                "generation {number} is still waiting for parties to enter"
            ));
        }
        if (step != Step::Leave) && current.arrived.len() >= barrier.spec.parties.count() {
            return refuse(format!("generation {number} is full"));
        }
        self.apply_step(name, party, step, meta);
        Ok(changed(name, number))
    }

    fn apply_step(&mut self, name: &str, party: &str, step: Step, meta: Meta) {
        let Some(barrier) = self.barriers.get_mut(name) else {
            return;
        };
        let count = barrier.spec.parties.count();
        let current = &mut barrier.current;
        let complete = match step {
            Step::Leave => {
                current.left.push(party.to_owned());
                current.departed.insert(party.to_owned());
                current.left.len() == count
            }
            Step::Arrive | Step::Enter => {
                let position = current.arrived.len() as u32;
                current.positions.insert(party.to_owned(), position);
                current.arrived.push(party.to_owned());
                if current.started_at_ms.is_none() {
                    current.started_at_ms = Some(meta.now_ms);
                    if barrier.spec.timeout_ms > 0 {
                        let deadline = meta.now_ms.saturating_add(barrier.spec.timeout_ms);
                        current.deadline_at_ms = Some(deadline);
                        self.deadlines.insert((deadline, name.to_owned()));
                    }
                }
                let all = current.arrived.len() == count;
                if all && step == Step::Enter {
                    current.entered = true;
                }
                all && step == Step::Arrive
            }
        };
        if complete {
            self.end_generation(name, true, String::new(), meta.now_ms);
        }
    }

    /// Ends the current generation; a cyclic barrier starts the next one.
    fn end_generation(&mut self, name: &str, released: bool, reason: String, now_ms: u64) {
        let Some(barrier) = self.barriers.get_mut(name) else {
            return;
        };
        if let Some(deadline) = barrier.current.deadline_at_ms {
            self.deadlines.remove(&(deadline, name.to_owned()));
        }
        barrier.current.end = Some(GenerationEnd {
            released,
            reason,
            ended_at_ms: now_ms,
        });
        if barrier.spec.cyclic && !barrier.retired {
            let next = Generation::new(barrier.current.number + 1);
            let ended = std::mem::replace(&mut barrier.current, next);
            barrier.past.insert(ended.number, ended);
            while barrier.past.len() > PAST_GENERATIONS_KEPT {
                barrier.past.pop_first();
            }
        }
    }

    /// The current generation passed its deadline: it breaks.
    pub fn time_out(&mut self, name: &str, generation: u64, meta: Meta) -> Outcome {
        let barrier = self.barriers.get(name).ok_or_else(|| unknown(name))?;
        let current = &barrier.current;
        let due = current.number == generation
            && current.end.is_none()
            && current.deadline_at_ms.is_some_and(|at| at <= meta.now_ms);
        if !due {
            return Err(Rejection::BarrierStep {
                name: name.to_owned(),
                problem: format!("generation {generation} is not past its deadline"),
            });
        }
        self.end_generation(name, false, "timeout".to_owned(), meta.now_ms);
        Ok(changed(name, generation))
    }

    /// An agent was lost: every open generation it is a party of breaks.
    pub fn party_lost(&mut self, agent_id: &str, meta: Meta) -> Vec<(String, u64)> {
        let broken: Vec<(String, u64)> = self
            .barriers
            .values()
            .filter(|b| b.current.end.is_none())
            .filter(|b| {
                let listed = matches!(&b.spec.parties, Parties::Agents(ids) if ids.iter().any(|id| id == agent_id));
                let arrived = b.current.arrival_index(agent_id).is_some();
                let left = b.current.has_left(agent_id);
                (listed || arrived) && !left
            })
            .map(|b| (b.name.clone(), b.current.number))
            .collect();
        for (name, _) in &broken {
            if let Some(barrier) = self.barriers.get_mut(name) {
                // A listed party is needed by every generation to come: none can complete.
                let listed = matches!(&barrier.spec.parties, Parties::Agents(ids) if ids.iter().any(|id| id == agent_id));
                barrier.retired |= listed;
            }
            let reason = format!("party {agent_id} lost");
            self.end_generation(name, false, reason, meta.now_ms);
        }
        broken
    }

    /// Deletes a barrier, breaking its open generation; false when there was none.
    pub fn delete(&mut self, name: &str, meta: Meta) -> Outcome {
        if !self.barriers.contains_key(name) {
            return Ok(Applied::Deleted(false));
        }
        let open = self
            .barriers
            .get(name)
            .is_some_and(|b| b.current.end.is_none());
        if open {
            self.end_generation(name, false, "deleted".to_owned(), meta.now_ms);
        }
        if let Some(barrier) = self.barriers.remove(name) {
            if let Some(deadline) = barrier.current.deadline_at_ms {
                self.deadlines.remove(&(deadline, name.to_owned()));
            }
        }
        Ok(Applied::Deleted(true))
    }

    /// One barrier.
    pub fn get(&self, name: &str) -> Option<&BarrierRecord> {
        self.barriers.get(name)
    }

    /// Open generations past their deadline at `now_ms`: candidates for `BreakBarrier`.
    pub fn timed_out(&self, now_ms: u64) -> impl Iterator<Item = (&str, u64)> {
        self.deadlines
            .iter()
            .take_while(move |(deadline, _)| *deadline <= now_ms)
            .filter_map(|(_, name)| {
                let barrier = self.barriers.get(name)?;
                Some((name.as_str(), barrier.current.number))
            })
    }
}

fn changed(name: &str, generation: u64) -> Applied {
    Applied::BarrierChanged {
        name: name.to_owned(),
        generation,
    }
}

fn unknown(name: &str) -> Rejection {
    Rejection::UnknownBarrier {
        name: name.to_owned(),
    }
}

fn check_step(barrier: &BarrierRecord, step: Step) -> Result<(), Rejection> {
    let fits = matches!(
        (barrier.spec.kind, step),
        (BarrierKind::Single, Step::Arrive) | (BarrierKind::Double, Step::Enter | Step::Leave)
    );
    match fits {
        true => Ok(()),
        false => Err(Rejection::BarrierStep {
            name: barrier.name.clone(),
            problem: match barrier.spec.kind {
                BarrierKind::Single => "a single barrier: arrive at it".to_owned(),
                BarrierKind::Double => "a double barrier: enter and leave it".to_owned(),
            },
        }),
    }
}

/// The rules a new barrier must satisfy; listed parties must be live agents.
pub fn validate(name: &str, spec: &BarrierSpec, agents: &AgentRegistry) -> Result<(), SpecError> {
    let chars = name.chars().count();
    if chars == 0 || chars > NAME_CHARS_MAX {
        let problem = format!("{chars} chars, must be 1 to {NAME_CHARS_MAX}");
        return Err(SpecError::new("name", problem));
    }
    match &spec.parties {
        Parties::Count(0) => {
            return Err(SpecError::new(
                "party_count",
                "0: a barrier needs at least one party",
            ))
        }
        Parties::Count(n) if *n > PARTIES_MAX => {
            let problem = format!("{n}, the limit is {PARTIES_MAX}");
            return Err(SpecError::new("party_count", problem));
        }
        Parties::Count(_) => {}
        Parties::Agents(ids) => {
            if ids.is_empty() {
                return Err(SpecError::new(
                    "agent_ids",
                    "a barrier needs at least one party",
                ));
            }
            let live: BTreeSet<&str> = agents.live().map(|agent| agent.id.as_str()).collect();
            let mut seen = BTreeSet::new();
            for (i, id) in ids.iter().enumerate() {
                let field = format!("agent_ids[{i}]");
                if !seen.insert(id) {
                    return Err(SpecError::new(field, format!("duplicate party '{id}'")));
                }
                if !live.contains(id.as_str()) {
                    return Err(SpecError::new(field, format!("no live agent '{id}'")));
                }
            }
        }
    }
    if spec.timeout_ms > TIMEOUT_MS_MAX {
        let problem = format!("{}, the limit is {TIMEOUT_MS_MAX}", spec.timeout_ms);
        return Err(SpecError::new("timeout_ms", problem));
    }
    Ok(())
}
