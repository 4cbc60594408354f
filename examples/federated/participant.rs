//! One participant of the federation: it holds a shard of the digits, trains the global model
//! it is sent on its training part and evaluates received models on its held-out part. Its
//! data never leaves it; only weights go back.
//!
//! ```text
//!   FitRequest{model, config, μ} ─► evaluate(model) on eval part   (rounds that evaluate)
//!                                 ─► fit: SGD on train part ─► FitResult{weights, loss, accuracy}
//! ```

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::SeedableRng;
use synod_sdk::agent::{Evaluation, FitRequest, FitResult, Participant};

use crate::data::Shard;
use crate::mlp::{Mlp, Score, Training};

/// Training settings used when a round leaves them at 0.
const DEFAULT_EPOCHS: u32 = 1;
const DEFAULT_BATCH_SIZE: u32 = 16;
const DEFAULT_LEARNING_RATE: f64 = 0.1;

/// A participant training on its own shard.
pub struct DigitsParticipant {
    index: u64,
    shard: Shard,
    seed: u64,
}

impl DigitsParticipant {
    /// Participant `index` with `shard`; its shuffles are seeded from `seed`, index and round.
    pub fn new(index: usize, shard: Shard, seed: u64) -> Self {
        Self {
            index: index as u64,
            shard,
            seed,
        }
    }
}

impl Participant for DigitsParticipant {
    fn fit(&self, request: &FitRequest) -> Result<FitResult, String> {
        let mut mlp = Mlp::from_model(&request.model)?;
        let settings = training(request);
        let round_seed = self.seed ^ (self.index << 32) ^ u64::from(request.round);
        mlp.train(
            &self.shard.train,
            settings,
            &mut StdRng::seed_from_u64(round_seed),
        );
        Ok(FitResult {
            weights: mlp.to_values(&request.model),
            num_examples: self.shard.train.len() as u64,
            metrics: metrics(mlp.score(&self.shard.train)),
        })
    }

    fn evaluate(&self, request: &FitRequest) -> Option<Evaluation> {
        let mlp = Mlp::from_model(&request.model).ok()?;
        Some(Evaluation {
            metrics: metrics(mlp.score(&self.shard.eval)),
        })
    }
}

/// The round's settings, defaults for those it leaves at 0.
fn training(request: &FitRequest) -> Training {
    let config = &request.config;
    let or = |value: u32, default: u32| if value == 0 { default } else { value };
    let learning_rate = if config.learning_rate > 0.0 {
        config.learning_rate
    } else {
        DEFAULT_LEARNING_RATE
    };
    Training {
        epochs: or(config.local_epochs, DEFAULT_EPOCHS),
        batch_size: or(config.batch_size, DEFAULT_BATCH_SIZE) as usize,
        learning_rate: learning_rate as f32,
        proximal_mu: request.proximal_mu.max(0.0) as f32,
    }
}

fn metrics(score: Score) -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("loss".to_owned(), score.loss),
        ("accuracy".to_owned(), score.accuracy),
    ])
}
