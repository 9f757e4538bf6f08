//! `--target-bpw`: per-tensor types chosen by measured sensitivity to meet a size budget with the
//! least loss.
//!
//! A preset gives every tensor of a kind the same type whatever the model; here each weight gets
//! the type that buys the most quality per byte. The loss of giving tensor `i` type `t` is modelled
//! as `KL_i(t) = KL_i(probe) · E_i(t) / E_i(probe)`:
//!
//! * `KL_i(probe)` is *measured*: the mean KL divergence of the model's next-token distributions
//!   on the calibration text when tensor `i` alone is quantized to a ~4.5-bit probe type, against
//!   the full-precision model. It captures how much the network amplifies that tensor's error
//!   (attn_v and ffn_down matter more than attn_q, the first and last layers more than the middle).
//!   Each probe re-runs only the layers from the tensor's own onwards, from cached layer inputs.
//! * `E_i(t)` is the importance-weighted squared rounding error `Σ_c imp_c Σ_r (W_rc − Q_t(W)_rc)²`
//!   (the diagonal approximation of `‖(W − Q)X‖²`), computed for every candidate type; it scales
//!   the measured sensitivity from the probe type to the others, which is accurate where the KL
//!   is locally quadratic in the error (4 bits and up) and conservative below.
//!
//! Losses are treated as additive across tensors (the usual first-order assumption, as in HAWQ),
//! and the budget is spent greedily: start every tensor at its cheapest candidate and repeatedly
//! take the upgrade with the largest loss reduction per extra byte that still fits.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use shuku_model::Llama;
use shuku_quants::QuantType;

use crate::error::{QuantizeError, Result};
use crate::imatrix::Imatrix;

/// Types a tensor may get, cheapest first; each is used only where its block divides the row.
const LADDER: &[QuantType] = &[
    QuantType::Q2_K,
    QuantType::Q3_K,
    QuantType::Q4_0,
    QuantType::Q4_K,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_K,
    QuantType::Q5_1,
    QuantType::Q6_K,
    QuantType::Q8_0,
];

/// Calibration tokens the sensitivity probes run over: each probe re-runs part of the model, so
/// this bounds the search's time; 1024 tokens give mean KLs stable to a few percent.
const PROBE_TOKENS: usize = 1024;

/// A weight the search may assign a type to.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// GGUF name.
    pub gguf_name: String,
    /// HF name in the model.
    pub hf_name: String,
}

/// What the search decided.
#[derive(Debug, Clone)]
pub struct BpwPlan {
    /// Type per GGUF name.
    pub types: HashMap<String, QuantType>,
    /// Predicted sum of per-tensor KL divergences (the model's estimate, not a measurement).
    pub predicted_kl: f64,
}

/// One tensor's options: (type, bytes, predicted KL), cheapest first.
struct Options {
    gguf_name: String,
    choices: Vec<(QuantType, u64, f64)>,
}

/// Chooses types for `candidates` so that their bytes stay within `budget_bytes`.
pub fn choose_types(
    model: &Llama,
    candidates: &[Candidate],
    imatrix: &Imatrix,
    chunks: &[Vec<u32>],
    budget_bytes: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BpwPlan> {
    let mut probe_chunks = Vec::new();
    let mut n = 0;
    for c in chunks {
        if n >= PROBE_TOKENS {
            break;
        }
        let take = c.len().min(PROBE_TOKENS - n);
        probe_chunks.push(c[..take].to_vec());
        n += take;
    }
    let probe = Probe::new(model, &probe_chunks)?;
    // The tensors as the GGUF stores them: Phi-3's fused matrices whole.
    let weights: HashMap<String, Tensor> = model.file_tensors()?.into_iter().collect();
    let mut all = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let w = weights.get(&c.hf_name).ok_or_else(|| {
            QuantizeError::Calibration(format!("no weight {} in the model", c.hf_name))
        })?;
        let (rows, cols) = w.dims2()?;
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        let imp = imatrix
            .weights(&c.gguf_name)
            .filter(|v| v.len() == cols)
            .unwrap_or_else(|| vec![1.0; cols]);
        let ladder: Vec<QuantType> = LADDER
            .iter()
            .copied()
            .filter(|t| cols % t.block_size() == 0)
            .collect();
        if ladder.is_empty() {
            continue;
        }
        let probe_ty = *ladder
            .iter()
            .min_by(|a, b| {
                (a.bits_per_weight() - 4.5)
                    .abs()
                    .total_cmp(&(b.bits_per_weight() - 4.5).abs())
            })
            .expect("non-empty ladder");
        let mut errors = Vec::new();
        let mut probe_deq = Vec::new();
        for &t in &ladder {
            let bytes =
                t.quantize(&values, cols, Some(&imp))
                    .map_err(|source| QuantizeError::Quant {
                        tensor: c.gguf_name.clone(),
                        source,
                    })?;
            let mut back = vec![0f32; values.len()];
            t.dequantize(&bytes, &mut back)
                .map_err(|source| QuantizeError::Quant {
                    tensor: c.gguf_name.clone(),
                    source,
                })?;
            let err: f64 = values
                .chunks_exact(cols)
                .zip(back.chunks_exact(cols))
                .map(|(a, b)| {
                    a.iter()
                        .zip(b)
                        .zip(&imp)
                        .map(|((x, y), w)| f64::from(*w) * f64::from(x - y).powi(2))
                        .sum::<f64>()
                })
                .sum();
            if t == probe_ty {
                probe_deq = back;
            }
            errors.push((t, (rows * t.row_bytes(cols).unwrap_or(0)) as u64, err));
        }
        let kl_probe = probe.kl_with(model, &c.hf_name, &probe_deq, (rows, cols))?;
        let e_probe = errors
            .iter()
            .find(|(t, _, _)| *t == probe_ty)
            .map_or(1.0, |e| e.2)
            .max(f64::MIN_POSITIVE);
        all.push(Options {
            gguf_name: c.gguf_name.clone(),
            choices: errors
                .into_iter()
                .map(|(t, b, e)| (t, b, kl_probe * e / e_probe))
                .collect(),
        });
        progress(i + 1, candidates.len());
    }
    Ok(spend(&all, budget_bytes))
}

/// The greedy allocation: cheapest everywhere, then the best loss-per-byte upgrades that fit.
fn spend(all: &[Options], budget: u64) -> BpwPlan {
    let mut pick: Vec<usize> = all
        .iter()
        .map(|o| {
            (0..o.choices.len())
                .min_by_key(|&k| o.choices[k].1)
                .unwrap_or(0)
        })
        .collect();
    let mut used: u64 = all.iter().zip(&pick).map(|(o, &k)| o.choices[k].1).sum();
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, o) in all.iter().enumerate() {
            let (_, b0, l0) = o.choices[pick[i]];
            for (k, &(_, b, l)) in o.choices.iter().enumerate() {
                if b <= b0 || l >= l0 || used - b0 + b > budget {
                    continue;
                }
                let gain = (l0 - l) / (b - b0) as f64;
                if best.is_none_or(|(g, _, _)| gain > g) {
                    best = Some((gain, i, k));
                }
            }
        }
        let Some((_, i, k)) = best else { break };
        used = used - all[i].choices[pick[i]].1 + all[i].choices[k].1;
        pick[i] = k;
    }
    BpwPlan {
        types: all
            .iter()
            .zip(&pick)
            .map(|(o, &k)| (o.gguf_name.clone(), o.choices[k].0))
            .collect(),
        predicted_kl: all.iter().zip(&pick).map(|(o, &k)| o.choices[k].2).sum(),
    }
}

/// The full-precision model's log-probabilities on the calibration chunks and each layer's input,
/// so one tensor's effect is measured by re-running only the layers from its own.
struct Probe {
    tokens: Vec<Tensor>,
    inputs: Vec<Vec<Tensor>>,
    reference: Vec<Tensor>,
    lens: Vec<usize>,
}

impl Probe {
    fn new(model: &Llama, chunks: &[Vec<u32>]) -> Result<Self> {
        if chunks.is_empty() {
            return Err(QuantizeError::Calibration(
                "--target-bpw needs calibration text of at least one chunk".into(),
            ));
        }
        let n_layers = model.config().num_hidden_layers();
        let mut inputs = vec![Vec::new(); n_layers + 1];
        let mut reference = Vec::new();
        let mut lens = Vec::new();
        let mut tokens = Vec::new();
        for c in chunks {
            let t = Tensor::from_vec(c.clone(), (1, c.len()), &Device::Cpu)?;
            let mut x = model.embed(&t)?.detach();
            tokens.push(t);
            for (l, slot) in inputs.iter_mut().enumerate().take(n_layers) {
                slot.push(x.clone());
                x = model.forward_block(l, &x, 1, c.len(), None)?.detach();
            }
            inputs[n_layers].push(x.clone());
            let logits = model.head(&x, 1, c.len(), None)?;
            reference.push(log_softmax(&logits)?.detach());
            lens.push(c.len());
        }
        Ok(Probe {
            tokens,
            inputs,
            reference,
            lens,
        })
    }

    /// Mean KL(full ‖ model with `hf_name` replaced by `values`) per token. `hf_name` is a file tensor:
    /// a fused one (Phi-3's `qkv_proj`) replaces each model tensor it stacks by its rows.
    fn kl_with(
        &self,
        model: &Llama,
        hf_name: &str,
        values: &[f32],
        shape: (usize, usize),
    ) -> Result<f64> {
        let parts = model
            .config()
            .fused_parts(hf_name)
            .unwrap_or_else(|| vec![(hf_name.to_string(), shape.0)]);
        let mut originals = Vec::with_capacity(parts.len());
        let mut row = 0;
        for (name, rows) in &parts {
            originals.push((name.clone(), model.weight(name)?.copy()?));
            let part = values[row * shape.1..(row + rows) * shape.1].to_vec();
            model.set_weight(
                name,
                Tensor::from_vec(part, (*rows, shape.1), &Device::Cpu)?,
            )?;
            row += rows;
        }
        // The first step the weight takes part in: its layer, the head (lm_head), or the embedding
        // lookup (which, tied, is also the head).
        let n_layers = self.inputs.len() - 1;
        let first = match hf_name {
            "model.embed_tokens.weight" => None,
            "lm_head.weight" => Some(n_layers),
            _ => Some(layer_of(hf_name).unwrap_or(0)),
        };
        let kl = self.kl_from(model, first);
        for (name, original) in originals {
            model.set_weight(&name, original)?;
        }
        kl
    }

    fn kl_from(&self, model: &Llama, first: Option<usize>) -> Result<f64> {
        let n_layers = self.inputs.len() - 1;
        let (mut sum, mut n) = (0.0, 0usize);
        for (c, &len) in self.lens.iter().enumerate() {
            let (mut x, first) = match first {
                Some(l) => (self.inputs[l][c].clone(), l),
                None => (model.embed(&self.tokens[c])?, 0),
            };
            for l in first..n_layers {
                x = model.forward_block(l, &x, 1, len, None)?.detach();
            }
            let lp = log_softmax(&model.head(&x, 1, len, None)?)?;
            let p = &self.reference[c];
            let kl = (p.exp()? * (p - &lp)?)?.sum(D::Minus1)?;
            sum += f64::from(kl.sum_all()?.to_scalar::<f32>()?);
            n += len;
        }
        Ok(sum / n.max(1) as f64)
    }
}

fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(shuku_model::ops::log_softmax_last_dim(
        &logits.to_dtype(DType::F32)?,
    )?)
}

/// The layer index of an HF block weight name.
fn layer_of(hf_name: &str) -> Option<usize> {
    hf_name
        .strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}
