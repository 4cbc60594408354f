//! The built-in federated participant of `synod-agent`: local "training" that moves every
//! weight by a fixed step, for demos, tests and benchmarks where the coordinator, not the
//! trainer, is what is measured.
//!
//! ```toml
//! [[agents]]
//! name = "trainer"
//! capabilities = ["fl"]
//! participant = { step = 0.5, examples = 20, delay_ms = 0 }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use synod_sdk::agent::{FitRequest, FitResult, Participant};

/// `participant = { … }` of an agent.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSection {
    /// Added to every weight by each fit.
    pub step: f32,
    /// Examples reported per fit (> 0).
    #[serde(default = "examples_default")]
    pub examples: u64,
    /// Time each fit takes.
    #[serde(default)]
    pub delay_ms: u64,
}

fn examples_default() -> u64 {
    1
}

/// Moves every weight by `step`, reporting `loss = step`.
#[derive(Debug, Clone, Copy)]
pub struct StepParticipant(pub ParticipantSection);

impl Participant for StepParticipant {
    fn fit(&self, request: &FitRequest) -> Result<FitResult, String> {
        if self.0.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.0.delay_ms));
        }
        Ok(FitResult {
            weights: request.map_weights(|w| w + self.0.step),
            num_examples: self.0.examples.max(1),
            metrics: BTreeMap::from([("loss".to_owned(), f64::from(self.0.step))]),
        })
    }
}

#[cfg(test)]
mod tests {
    use synod_sdk::tensors::{Model, TensorSpec};

    use super::*;

    #[test]
    fn a_fit_moves_every_weight_by_the_step_and_reports_its_examples() {
        let model = Model::new(vec![TensorSpec::f32("w", &[3])], vec![1.0, -2.0, 0.5]).unwrap();
        let request = FitRequest::new("f", 1, model, Default::default(), 0.0);
        let participant = StepParticipant(ParticipantSection {
            step: 0.25,
            examples: 0,
            delay_ms: 0,
        });
        let fit = participant.fit(&request).unwrap();
        assert_eq!(fit.weights, vec![1.25, -1.75, 0.75]);
        assert_eq!(fit.num_examples, 1, "at least one example");
        assert_eq!(fit.metrics["loss"], 0.25);
    }
}
