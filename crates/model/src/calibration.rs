//! Input statistics of every linear layer, gathered from forward passes over calibration text.
//!
//! * `Σx²` per input column and the token count: the importance llama.cpp's imatrix stores (it divides by the
//!   count) and the activation norm Wanda multiplies with |W|.
//! * Optionally the full `XᵀX` `[in, in]` (the GPTQ / SparseGPT Hessian, up to the factor 2/N).
//!
//! Layers that read the same activation share one [`LinearStats`]: q/k/v share the attention input, gate/up
//! share the MLP input. [`Calibration::get`] answers for every weight name; [`Calibration::groups`] lists each
//! shared set once. The statistics are collected through the model's [`LinearObserver`] hook, so there is one
//! forward implementation, not two.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::error::{ModelError, Result};
use crate::model::{LinearObserver, Llama};

/// What to collect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CalibrationOptions {
    /// Also accumulate `XᵀX` (memory `in²` floats per shared input).
    pub hessian: bool,
}

/// Statistics of one linear-layer input.
#[derive(Debug, Clone)]
pub struct LinearStats {
    /// HF names of the weights that read this input.
    pub consumers: Vec<String>,
    /// Σ over tokens of x², per input column (f64 so long runs do not lose small columns).
    pub sum_sq: Vec<f64>,
    /// Tokens seen.
    pub n_tokens: usize,
    /// `XᵀX` `[in, in]`, f32, when asked for.
    pub hessian: Option<Tensor>,
}

impl LinearStats {
    /// Input width.
    pub fn in_features(&self) -> usize {
        self.sum_sq.len()
    }

    /// Mean of x² per column (what llama.cpp's imatrix files hold).
    pub fn mean_sq(&self) -> Vec<f64> {
        let n = self.n_tokens.max(1) as f64;
        self.sum_sq.iter().map(|s| s / n).collect()
    }
}

/// Per-linear-layer input statistics of a model over calibration batches.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    groups: Vec<LinearStats>,
    by_weight: BTreeMap<String, usize>,
}

impl Calibration {
    fn accumulate(&mut self, weights: &[&str], input: &Tensor, want_hessian: bool) -> Result<()> {
        let Some(first) = weights.first() else {
            return Ok(());
        };
        let (n, cols) = input.dims2()?;
        let input = input.to_dtype(DType::F32)?;
        let idx = match self.by_weight.get(*first) {
            Some(&i) => i,
            None => {
                self.groups.push(LinearStats {
                    consumers: weights.iter().map(|w| w.to_string()).collect(),
                    sum_sq: vec![0.0; cols],
                    n_tokens: 0,
                    hessian: None,
                });
                let i = self.groups.len() - 1;
                for w in weights {
                    self.by_weight.insert(w.to_string(), i);
                }
                i
            }
        };
        let g = &mut self.groups[idx];
        if g.sum_sq.len() != cols {
            return Err(ModelError::InvalidInput(format!(
                "{first}: input width changed from {} to {cols}",
                g.sum_sq.len()
            )));
        }
        for (acc, v) in g.sum_sq.iter_mut().zip(column_sum_sq(&input, cols)?) {
            *acc += v;
        }
        g.n_tokens += n;
        if want_hessian {
            let xtx = input.t()?.matmul(&input)?;
            g.hessian = Some(match g.hessian.take() {
                Some(h) => (h + xtx)?,
                None => xtx,
            });
        }
        Ok(())
    }
}

/// Σx² of every column of the row-major `[n, cols]` tensor `x`, in f64, rows spread over the cores
/// (candle's reduction over the first dimension runs on one thread and dominated calibration passes).
fn column_sum_sq(x: &Tensor, cols: usize) -> Result<Vec<f64>> {
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    let rows = data.len() / cols.max(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = rows.div_ceil(threads).max(64);
    let partial = |chunk: &[f32]| {
        let mut acc = vec![0f64; cols];
        for row in chunk.chunks_exact(cols) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += f64::from(v * v);
            }
        }
        acc
    };
    let parts: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = data
            .chunks(per * cols)
            .map(|chunk| s.spawn(move || partial(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("column sum thread"))
            .collect()
    });
    let mut total = vec![0f64; cols];
    for p in parts {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    Ok(total)
}

impl Calibration {
    /// Runs `model` over each batch (one token sequence each, evaluated independently) and collects the
    /// statistics of every linear layer's input.
    pub fn collect(
        model: &Llama,
        batches: &[Vec<u32>],
        options: CalibrationOptions,
    ) -> Result<Self> {
        let mut cal = Calibration::default();
        crate::ops::without_gradients(|| -> Result<()> {
            let mut collector = cal.observer(options);
            for batch in batches {
                let tokens = Tensor::from_vec(batch.clone(), (1, batch.len()), model.device())?;
                model.forward_observed(&tokens, None, Some(&mut collector))?;
            }
            Ok(())
        })?;
        Ok(cal)
    }

    /// An observer that adds every linear input it is shown to `self`, for passes that drive the
    /// model themselves (e.g. one layer at a time with [`Llama::forward_block`]); [`Calibration::collect`]
    /// is this observer over whole-model forwards.
    pub fn observer(&mut self, options: CalibrationOptions) -> impl LinearObserver + '_ {
        Collector {
            cal: self,
            hessian: options.hessian,
        }
    }

    /// Statistics of the input of weight `name` (HF name, e.g. `model.layers.0.self_attn.q_proj.weight`).
    pub fn get(&self, name: &str) -> Option<&LinearStats> {
        self.by_weight.get(name).map(|&i| &self.groups[i])
    }

    /// Every observed weight name, sorted.
    pub fn weights(&self) -> impl Iterator<Item = &str> {
        self.by_weight.keys().map(String::as_str)
    }

    /// Each distinct input once, in forward order.
    pub fn groups(&self) -> &[LinearStats] {
        &self.groups
    }
}

/// Carries the Hessian switch into the observer without storing options in the result.
struct Collector<'a> {
    cal: &'a mut Calibration,
    hessian: bool,
}

impl LinearObserver for Collector<'_> {
    fn observe(&mut self, weights: &[&str], input: &Tensor) -> Result<()> {
        self.cal.accumulate(weights, input, self.hessian)
    }
}
