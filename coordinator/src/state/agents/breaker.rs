//! [`CircuitBreaker`]: one agent's circuit breaker. After `failures_max` failed attempts in a
//! row the circuit opens and the agent gets no work for `cooldown_ms`; then it is half-open and
//! takes one task as a probe: success closes the circuit, failure opens it again.
//!
//! ```text
//!   Closed ──failures_max failures in a row──► Open { until } ──until passes──► (half-open)
//!     ▲                                           ▲                              │ one probe
//!     └──────────── probe succeeded ──────────────┴──────── probe failed ◄────────┘
//! ```
//! Time enters as the leader's timestamp of the command. Pure data.

use serde::{Deserialize, Serialize};

/// When a circuit opens and how long it stays open; chosen by the leader's configuration and
/// written into the agent's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerPolicy {
    /// Failed attempts in a row that open the circuit; 0 turns the breaker off.
    pub failures_max: u32,
    /// How long an open circuit keeps work away.
    pub cooldown_ms: u64,
}

impl Default for BreakerPolicy {
    /// Five failures in a row; thirty seconds of cool-down.
    fn default() -> Self {
        Self {
            failures_max: 5,
            cooldown_ms: 30_000,
        }
    }
}

/// Where an agent's circuit is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Circuit {
    /// Work flows.
    #[default]
    Closed,
    /// No work until `until_ms`; afterwards one probe.
    Open {
        /// End of the cool-down.
        until_ms: u64,
    },
    /// A probe is running; its outcome closes or reopens the circuit.
    HalfOpen,
}

/// An agent's breaker: its policy, its circuit and its current run of failures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    /// When to open and for how long.
    pub policy: BreakerPolicy,
    /// Where the circuit is.
    pub circuit: Circuit,
    /// Failed attempts since the last success.
    pub failures_in_a_row: u32,
    /// An operator's quarantine, with its reason: no work until released.
    #[serde(default)]
    pub manual: Option<String>,
}

impl CircuitBreaker {
    /// Counts an attempt's end: a success closes the circuit, a failure may open it.
    pub fn record(&mut self, succeeded: bool, now_ms: u64) {
        if succeeded {
            self.failures_in_a_row = 0;
            self.circuit = Circuit::Closed;
            return;
        }
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let trips = match self.circuit {
            Circuit::HalfOpen => true,
            Circuit::Closed => {
                self.policy.failures_max > 0 && self.failures_in_a_row >= self.policy.failures_max
            }
            Circuit::Open { .. } => false,
        };
        if trips {
            let until_ms = now_ms.saturating_add(self.policy.cooldown_ms);
            self.circuit = Circuit::Open { until_ms };
        }
    }

    /// True while the circuit (or an operator) keeps all work away.
    pub fn blocks(&self, now_ms: u64) -> bool {
        self.manual.is_some()
            || matches!(self.circuit, Circuit::Open { until_ms } if now_ms < until_ms)
    }

    /// Quarantines until released (`Some(reason)`); releasing also closes the circuit.
    pub fn set_manual(&mut self, reason: Option<String>) {
        if reason.is_none() {
            self.circuit = Circuit::Closed;
            self.failures_in_a_row = 0;
        }
        self.manual = reason;
    }

    /// True when the agent may take only a probe: half-open, or open past its cool-down.
    pub fn probing(&self, now_ms: u64) -> bool {
        if self.manual.is_some() {
            return false;
        }
        match self.circuit {
            Circuit::HalfOpen => true,
            Circuit::Open { until_ms } => now_ms >= until_ms,
            Circuit::Closed => false,
        }
    }

    /// A task was assigned: past its cool-down, an open circuit turns half-open.
    pub fn assigned(&mut self, now_ms: u64) {
        if self.probing(now_ms) {
            self.circuit = Circuit::HalfOpen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker {
            policy: BreakerPolicy {
                failures_max: 3,
                cooldown_ms: 1_000,
            },
            ..CircuitBreaker::default()
        }
    }

    #[test]
    fn the_circuit_opens_cools_down_probes_and_closes() {
        let mut b = breaker();
        b.record(false, 10);
        b.record(false, 20);
        b.record(true, 30);
        b.record(false, 40);
        b.record(false, 50);
        assert_eq!(b.circuit, Circuit::Closed, "a success resets the run");
        b.record(false, 60);
        assert_eq!(b.circuit, Circuit::Open { until_ms: 1_060 });
        assert!(b.blocks(1_059) && !b.probing(1_059));
        assert!(!b.blocks(1_060) && b.probing(1_060));
        b.assigned(1_100);
        assert_eq!(b.circuit, Circuit::HalfOpen);
        b.record(false, 1_200);
        assert_eq!(
            b.circuit,
            Circuit::Open { until_ms: 2_200 },
            "a failed probe reopens"
        );
        b.assigned(2_300);
        b.record(true, 2_400);
        assert_eq!((b.circuit, b.failures_in_a_row), (Circuit::Closed, 0));
    }

    #[test]
    fn an_operator_quarantine_holds_until_released_which_closes_the_circuit() {
        let mut b = breaker();
        for t in 0..3 {
            b.record(false, t);
        }
        b.set_manual(Some("disk replaced".into()));
        assert!(b.blocks(u64::MAX) && !b.probing(u64::MAX));
        b.set_manual(None);
        assert!(!b.blocks(0));
        assert_eq!((b.circuit, b.failures_in_a_row), (Circuit::Closed, 0));
    }

    #[test]
    fn failures_max_zero_turns_the_breaker_off() {
        let mut b = CircuitBreaker {
            policy: BreakerPolicy {
                failures_max: 0,
                cooldown_ms: 1_000,
            },
            ..CircuitBreaker::default()
        };
        for t in 0..100 {
            b.record(false, t);
        }
        assert_eq!(b.circuit, Circuit::Closed);
    }
}
