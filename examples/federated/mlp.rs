//! The model: a multilayer perceptron with one ReLU hidden layer and a softmax output, in plain
//! f32 Rust, trained by minibatch SGD on cross-entropy (plus FedProx's proximal term when its μ
//! is positive). Pure: no I/O, no clock; randomness comes in as an rng.
//!
//! ```text
//!   x (64) ─► w1·x + b1 ─► ReLU (hidden) ─► w2·h + b2 ─► softmax (10) ─► −log p[label]
//! ```
//!
//! Its weights travel as four tensors of a [`Model`]: `w1` [inputs, hidden], `b1` [hidden],
//! `w2` [hidden, classes], `b2` [classes], all row-major; the shapes give the sizes.

use rand::seq::SliceRandom;
use rand::Rng;
use synod_sdk::tensors::Model;

use crate::data::Examples;

/// Weights (or a gradient of them).
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    inputs: usize,
    hidden: usize,
    classes: usize,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

/// How local training runs.
#[derive(Debug, Clone, Copy)]
pub struct Training {
    /// Passes over the local data.
    pub epochs: u32,
    /// Examples per SGD step.
    pub batch_size: usize,
    /// SGD step size.
    pub learning_rate: f32,
    /// FedProx: weight μ of (μ/2)·‖w − w_global‖²; 0 for plain SGD.
    pub proximal_mu: f32,
}

/// Mean cross-entropy and accuracy over some examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Share classified right.
    pub accuracy: f64,
}

impl Mlp {
    /// Reads the four tensors of `model`, checking their shapes agree.
    pub fn from_model(model: &Model) -> Result<Self, String> {
        let shape = |name: &str| -> Result<Vec<usize>, String> {
            let spec = model.specs.iter().find(|s| s.name == name);
            let spec = spec.ok_or_else(|| format!("the model has no tensor '{name}'"))?;
            Ok(spec.shape.iter().map(|&d| d as usize).collect())
        };
        let (w1, w2) = (shape("w1")?, shape("w2")?);
        let (inputs, hidden, classes) = match (&w1[..], &w2[..]) {
            ([i, h], [h2, c]) if h == h2 => (*i, *h, *c),
            _ => return Err(format!("w1 {w1:?} and w2 {w2:?} do not chain")),
        };
        if shape("b1")? != [hidden] || shape("b2")? != [classes] {
            return Err(format!("b1 must be [{hidden}] and b2 [{classes}]"));
        }
        let values = |name: &str| model.tensor(name).map(<[f32]>::to_vec).unwrap_or_default();
        Ok(Self {
            inputs,
            hidden,
            classes,
            w1: values("w1"),
            b1: values("b1"),
            w2: values("w2"),
            b2: values("b2"),
        })
    }

    /// The weights in `model`'s layout.
    pub fn to_values(&self, model: &Model) -> Vec<f32> {
        let mut values = Vec::with_capacity(model.values.len());
        for spec in &model.specs {
            values.extend_from_slice(self.tensor(&spec.name));
        }
        values
    }

    fn tensor(&self, name: &str) -> &[f32] {
        match name {
            "w1" => &self.w1,
            "b1" => &self.b1,
            "w2" => &self.w2,
            _ => &self.b2,
        }
    }

    /// Zeros of the same shape.
    fn zeros_like(&self) -> Self {
        Self {
            w1: vec![0.0; self.w1.len()],
            b1: vec![0.0; self.b1.len()],
            w2: vec![0.0; self.w2.len()],
            b2: vec![0.0; self.b2.len()],
            ..*self
        }
    }

    fn params_mut(&mut self) -> [&mut Vec<f32>; 4] {
        [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2]
    }

    fn params(&self) -> [&Vec<f32>; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }

    /// Hidden activations and class probabilities of one example.
    fn forward(&self, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut hidden = self.b1.clone();
        for (i, &xi) in x.iter().enumerate().filter(|(_, &v)| v != 0.0) {
            let row = &self.w1[i * self.hidden..(i + 1) * self.hidden];
            hidden.iter_mut().zip(row).for_each(|(h, w)| *h += xi * w);
        }
        hidden.iter_mut().for_each(|h| *h = h.max(0.0));
        let mut logits = self.b2.clone();
        for (j, &hj) in hidden.iter().enumerate().filter(|(_, &v)| v != 0.0) {
            let row = &self.w2[j * self.classes..(j + 1) * self.classes];
            logits.iter_mut().zip(row).for_each(|(l, w)| *l += hj * w);
        }
        (hidden, softmax(&logits))
    }

    /// Mean cross-entropy and accuracy on `data`.
    pub fn score(&self, data: &Examples) -> Score {
        let (mut loss, mut right) = (0.0, 0usize);
        for i in 0..data.len() {
            let (_, p) = self.forward(data.row(i));
            loss += cross_entropy(&p, data.y[i]);
            right += usize::from(argmax(&p) == data.y[i]);
        }
        let n = data.len().max(1) as f64;
        Score {
            loss: loss / n,
            accuracy: right as f64 / n,
        }
    }

    /// Adds the cross-entropy gradient of one example to `grad`.
    fn backprop(&self, x: &[f32], label: usize, grad: &mut Self) {
        let (hidden, mut delta_out) = self.forward(x);
        delta_out[label] -= 1.0;
        let mut delta_hidden = vec![0.0f32; self.hidden];
        for (j, &hj) in hidden.iter().enumerate() {
            let w_row = &self.w2[j * self.classes..(j + 1) * self.classes];
            let g_row = &mut grad.w2[j * self.classes..(j + 1) * self.classes];
            for ((g, w), d) in g_row.iter_mut().zip(w_row).zip(&delta_out) {
                *g += hj * d;
                delta_hidden[j] += w * d;
            }
            if hj <= 0.0 {
                delta_hidden[j] = 0.0;
            }
        }
        grad.b2
            .iter_mut()
            .zip(&delta_out)
            .for_each(|(g, d)| *g += d);
        for (i, &xi) in x.iter().enumerate().filter(|(_, &v)| v != 0.0) {
            let g_row = &mut grad.w1[i * self.hidden..(i + 1) * self.hidden];
            g_row
                .iter_mut()
                .zip(&delta_hidden)
                .for_each(|(g, d)| *g += xi * d);
        }
        grad.b1
            .iter_mut()
            .zip(&delta_hidden)
            .for_each(|(g, d)| *g += d);
    }

    /// Trains on `data` from these weights; `anchor` is the global model FedProx pulls toward.
    pub fn train(&mut self, data: &Examples, settings: Training, rng: &mut impl Rng) {
        let anchor = self.clone();
        let mut order: Vec<usize> = (0..data.len()).collect();
        for _ in 0..settings.epochs {
            order.shuffle(rng);
            for batch in order.chunks(settings.batch_size.max(1)) {
                let mut grad = self.zeros_like();
                for &i in batch {
                    self.backprop(data.row(i), data.y[i], &mut grad);
                }
                self.step(&grad, &anchor, batch.len(), settings);
            }
        }
    }

    /// One SGD step on the batch mean of `grad`, plus μ·(w − anchor).
    fn step(&mut self, grad: &Self, anchor: &Self, batch: usize, settings: Training) {
        let scale = 1.0 / batch as f32;
        let (lr, mu) = (settings.learning_rate, settings.proximal_mu);
        let params = self.params_mut().into_iter();
        for ((w, g), a) in params.zip(grad.params()).zip(anchor.params()) {
            for ((w, g), a) in w.iter_mut().zip(g).zip(a) {
                *w -= lr * (g * scale + mu * (*w - a));
            }
        }
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn cross_entropy(p: &[f32], label: usize) -> f64 {
    -f64::from(p[label].max(1e-7)).ln()
}

/// The first index of the largest value.
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use synod_sdk::tensors::TensorSpec;

    use super::*;

    fn model(inputs: u64, hidden: u64, classes: u64, rng: &mut StdRng) -> Model {
        let specs = vec![
            TensorSpec::f32("w1", &[inputs, hidden]),
            TensorSpec::f32("b1", &[hidden]),
            TensorSpec::f32("w2", &[hidden, classes]),
            TensorSpec::f32("b2", &[classes]),
        ];
        let count = (inputs * hidden + hidden + hidden * classes + classes) as usize;
        let values = (0..count).map(|_| rng.random_range(-0.5..0.5)).collect();
        Model::new(specs, values).unwrap()
    }

    #[test]
    fn backprop_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(1);
        let mlp = Mlp::from_model(&model(3, 4, 2, &mut rng)).unwrap();
        let x = [0.3, 0.9, 0.5];
        let mut grad = mlp.zeros_like();
        mlp.backprop(&x, 1, &mut grad);
        let loss = |m: &Mlp| cross_entropy(&m.forward(&x).1, 1);
        for (tensor, index) in [(0, 5), (1, 2), (2, 3), (3, 1)] {
            let mut plus = mlp.clone();
            let mut minus = mlp.clone();
            plus.params_mut()[tensor][index] += 1e-3;
            minus.params_mut()[tensor][index] -= 1e-3;
            let numeric = (loss(&plus) - loss(&minus)) / 2e-3;
            let analytic = f64::from(grad.params()[tensor][index]);
            assert!((numeric - analytic).abs() < 1e-3, "{numeric} vs {analytic}");
        }
    }

    #[test]
    fn weights_round_trip_through_the_model_layout() {
        let mut rng = StdRng::seed_from_u64(2);
        let model = model(5, 3, 4, &mut rng);
        assert_eq!(
            Mlp::from_model(&model).unwrap().to_values(&model),
            model.values
        );
    }

    #[test]
    fn training_fits_a_separable_set() {
        let mut rng = StdRng::seed_from_u64(3);
        let data = Examples {
            features: 2,
            x: vec![1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9],
            y: vec![0, 0, 1, 1],
        };
        let mut mlp = Mlp::from_model(&model(2, 8, 2, &mut rng)).unwrap();
        let settings = Training {
            epochs: 200,
            batch_size: 2,
            learning_rate: 0.5,
            proximal_mu: 0.0,
        };
        mlp.train(&data, settings, &mut rng);
        assert_eq!(mlp.score(&data).accuracy, 1.0);
    }
}
