//! A tiny bigram-style language model used by the integration tests, so the trainer can be
//! exercised without the full llama model.

#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};
use shuku_distill::{SplitMix64, Trainable};

/// Embedding → tanh → linear head.
pub struct TinyLm {
    pub embed: Var,
    pub head: Var,
    pub bias: Var,
    pub vocab: usize,
}

fn init(rng: &mut SplitMix64, shape: (usize, usize), scale: f64) -> Var {
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32)
        .collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

impl TinyLm {
    pub fn new(vocab: usize, hidden: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        Self {
            embed: init(&mut rng, (vocab, hidden), 1.0),
            head: init(&mut rng, (hidden, vocab), 0.5),
            bias: Var::zeros(vocab, DType::F32, &Device::Cpu).unwrap(),
            vocab,
        }
    }

    pub fn snapshot(&self) -> Vec<Vec<u32>> {
        self.parameters()
            .iter()
            .map(|(_, v)| {
                v.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            })
            .collect()
    }
}

impl Trainable for TinyLm {
    fn parameters(&self) -> Vec<(String, Var)> {
        vec![
            ("embed.weight".into(), self.embed.clone()),
            ("head.weight".into(), self.head.clone()),
            ("head.bias".into(), self.bias.clone()),
        ]
    }

    fn forward_logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let h = self.embed.index_select(&tokens.flatten_all()?, 0)?.tanh()?;
        let logits = h.matmul(self.head.as_tensor())?.broadcast_add(&self.bias)?;
        logits.reshape((b, t, self.vocab))
    }
}

/// A learnable periodic token stream with a little noise.
pub fn corpus(vocab: u32, len: usize) -> Vec<u32> {
    let mut rng = SplitMix64::new(99);
    (0..len)
        .map(|i| {
            if rng.below(10) == 0 {
                rng.below(vocab as u64) as u32
            } else {
                (i as u32 * 3) % vocab
            }
        })
        .collect()
}
