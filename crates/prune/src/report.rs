//! What a pruning run reached: zeros per tensor and overall, parameters before and after.

use shuku_model::Llama;

use crate::error::Result;
use crate::weights::read_weight;

/// The zeros of one weight after pruning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSparsity {
    /// HF name.
    pub name: String,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Entries equal to zero.
    pub zeros: usize,
}

impl TensorSparsity {
    /// Entries.
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }

    /// Fraction of entries that are zero.
    pub fn sparsity(&self) -> f64 {
        self.zeros as f64 / self.numel().max(1) as f64
    }
}

/// The sparsity of every pruned weight.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparsityReport {
    /// One entry per pruned weight, in model order.
    pub tensors: Vec<TensorSparsity>,
}

impl SparsityReport {
    /// Counts the zeros of `name` in `model` now.
    pub fn push(&mut self, name: &str, model: &Llama) -> Result<()> {
        let (w, rows, cols) = read_weight(model, name)?;
        self.tensors.push(TensorSparsity {
            name: name.to_string(),
            rows,
            cols,
            zeros: w.iter().filter(|v| **v == 0.0).count(),
        });
        Ok(())
    }

    /// Zeros over all pruned weights.
    pub fn zeros(&self) -> usize {
        self.tensors.iter().map(|t| t.zeros).sum()
    }

    /// Entries of all pruned weights.
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(TensorSparsity::numel).sum()
    }

    /// Fraction of the pruned weights' entries that are zero.
    pub fn overall(&self) -> f64 {
        self.zeros() as f64 / self.numel().max(1) as f64
    }

    /// The fraction of the model's parameters that are zero in pruned weights.
    pub fn of_model(&self, model: &Llama) -> f64 {
        self.zeros() as f64 / parameter_count(model).max(1) as f64
    }
}

/// Parameters of `model` (a tied head counted once).
pub fn parameter_count(model: &Llama) -> usize {
    model
        .named_tensors()
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum()
}
