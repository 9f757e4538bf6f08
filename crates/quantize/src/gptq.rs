//! GPTQ (Frantar et al., 2023) into GGUF's own block formats.
//!
//! Round-to-nearest rounds every weight on its own; GPTQ rounds the input columns of a weight
//! matrix one after another and spreads each column's rounding error over the columns not yet
//! rounded, weighted by the inverse Hessian `H = XᵀX` of the layer's calibration inputs, so that
//! the layer's *outputs* `WX` move as little as possible. Here the grid is a GGUF block format's:
//! at the first column of each block (32 or 256 columns) the format's own quantizer chooses the
//! block's scales and mins from the current, error-corrected values of that block (weighted by the
//! importance matrix, or by the calibration's own `diag(H)` — the same statistic); then each column
//! is rounded onto those fixed grids ([`shuku_quants::Grid`]) and the codes are written into the
//! blocks with the scales untouched. The result is an ordinary GGUF tensor that llama.cpp reads.
//!
//! The model is processed layer by layer (shuku-model's block forward): each layer's Hessians are
//! collected from the outputs of the layers before it *as already quantized*, its linears are
//! quantized, their dequantized values are written back into the model, and the layer is run again
//! to give the next layer its input. The Cholesky factorisation and the column sweep are
//! shuku-model's ([`shuku_model::linalg`]), shared with SparseGPT.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use shuku_model::linalg::{damped_cholesky_inverse_upper, obs_sweep, zero_dead_columns};
use shuku_model::ops::without_gradients;
use shuku_model::{LinearObserver, Llama};
use shuku_quants::{Grid, QuantType};

use crate::error::{QuantizeError, Result};

/// GPTQ's settings.
#[derive(Debug, Clone)]
pub struct GptqOptions {
    /// Calibration token sequences (each run as one sequence from position 0).
    pub chunks: Vec<Vec<u32>>,
    /// Diagonal damping as a fraction of the mean of `diag(H)` (the paper's 1 %).
    pub percdamp: f64,
    /// Columns per lazy batch of the sweep.
    pub block: usize,
}

impl GptqOptions {
    /// GPTQ over `chunks` with the paper's settings.
    pub fn new(chunks: Vec<Vec<u32>>) -> Self {
        GptqOptions {
            chunks,
            percdamp: 0.01,
            block: 128,
        }
    }
}

/// One linear to quantize: its HF name, GGUF name, target type and importance weights.
#[derive(Debug, Clone)]
pub struct GptqTarget {
    /// The weight's HF name in the model.
    pub hf_name: String,
    /// Its type.
    pub ty: QuantType,
    /// Importance weights per input column for the block scales (an imatrix entry), if any.
    pub importance: Option<Vec<f32>>,
}

/// Sums `XᵀX` (f64) and the token count per shared input, keyed by the first consumer's name.
#[derive(Default)]
struct HessianCollector {
    hessians: HashMap<String, (Vec<f64>, usize)>,
}

impl LinearObserver for HessianCollector {
    fn observe(&mut self, weights: &[&str], input: &Tensor) -> shuku_model::Result<()> {
        let Some(first) = weights.first() else {
            return Ok(());
        };
        let x = input.to_dtype(DType::F32)?;
        let (n, cols) = x.dims2()?;
        let xtx = x.t()?.matmul(&x)?.flatten_all()?.to_vec1::<f32>()?;
        let e = self
            .hessians
            .entry(first.to_string())
            .or_insert_with(|| (vec![0.0; cols * cols], 0));
        for (a, v) in e.0.iter_mut().zip(xtx) {
            *a += f64::from(v);
        }
        e.1 += n;
        Ok(())
    }
}

/// Quantizes `targets` of `model` with GPTQ, layer by layer. Returns each target's bytes (HF row
/// order, `rows × row_bytes`) by HF name; the model's weights are left quantized-dequantized.
/// `progress(layer, n_layers)` is called after each layer.
pub fn gptq(
    model: &Llama,
    targets: &[GptqTarget],
    options: &GptqOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<HashMap<String, Vec<u8>>> {
    if options.chunks.is_empty() || options.chunks.iter().any(Vec::is_empty) {
        return Err(QuantizeError::Calibration(
            "GPTQ needs calibration text of at least one chunk".into(),
        ));
    }
    let by_name: HashMap<&str, &GptqTarget> =
        targets.iter().map(|t| (t.hf_name.as_str(), t)).collect();
    let mut xs = options
        .chunks
        .iter()
        .map(|c| {
            let tokens = Tensor::from_vec(c.clone(), (1, c.len()), model.device())?;
            Ok(model.embed(&tokens)?.detach())
        })
        .collect::<Result<Vec<Tensor>>>()?;
    let n_layers = model.config().num_hidden_layers();
    let mut out = HashMap::new();
    for layer in 0..n_layers {
        let mut collector = HessianCollector::default();
        for (x, c) in xs.iter().zip(&options.chunks) {
            without_gradients(|| model.forward_block(layer, x, 1, c.len(), Some(&mut collector)))?;
        }
        for group in model.block_linear_names(layer)? {
            let Some((h, _n)) = group.first().and_then(|g| collector.hessians.get(g)) else {
                continue;
            };
            for name in &group {
                let Some(target) = by_name.get(name.as_str()) else {
                    continue;
                };
                let bytes = quantize_linear(model, target, h, options)?;
                out.insert(name.clone(), bytes);
            }
        }
        for (x, c) in xs.iter_mut().zip(&options.chunks) {
            // Detached: the model's weights are autograd variables, and a kept graph would hold
            // every layer's activations.
            *x = without_gradients(|| model.forward_block(layer, x, 1, c.len(), None))?.detach();
        }
        progress(layer + 1, n_layers);
    }
    Ok(out)
}

/// GPTQ on one weight: returns its bytes and writes its dequantized values back into the model.
fn quantize_linear(
    model: &Llama,
    target: &GptqTarget,
    h: &[f64],
    options: &GptqOptions,
) -> Result<Vec<u8>> {
    let name = &target.hf_name;
    let weight = model.weight(name)?;
    let (rows, cols) = weight.dims2()?;
    let mut w = weight.flatten_all()?.to_vec1::<f32>()?;
    let ty = target.ty;
    let bs = ty.block_size();
    let row_bytes = ty
        .row_bytes(cols)
        .ok_or_else(|| QuantizeError::NoFallback {
            tensor: name.clone(),
            ty,
            row_length: cols,
        })?;
    let (u, dead) = damped_cholesky_inverse_upper(h, options.percdamp)?;
    zero_dead_columns(&mut w, cols, &dead);
    // Importance of each input column for the block scales: the imatrix entry, or diag(H).
    let importance: Vec<f32> = match &target.importance {
        Some(v) => v.clone(),
        None => (0..cols).map(|i| h[i * cols + i] as f32).collect(),
    };
    let mut bytes = vec![0u8; rows * row_bytes];
    let ts = ty.type_size();
    // The current block column: its bytes per row, its grids and chosen codes.
    let mut group = vec![0f32; rows * bs];
    let mut grids = vec![Grid::default(); rows * bs];
    let mut codes = vec![0i32; rows * bs];
    let mut failure = None;
    obs_sweep(&mut w, rows, cols, &u, options.block, |j, view, chosen| {
        let (g, k) = (j / bs, j % bs);
        if k == 0 {
            view.read_columns(j..j + bs, &mut group);
            for r in 0..rows {
                let block = &mut bytes[r * row_bytes + g * ts..r * row_bytes + (g + 1) * ts];
                let qw = &importance[j..j + bs];
                if let Err(e) = ty.quantize_into(&group[r * bs..(r + 1) * bs], bs, Some(qw), block)
                {
                    failure.get_or_insert(e);
                }
                ty.element_grids(block, &mut grids[r * bs..(r + 1) * bs]);
            }
        }
        for (r, (c, &x)) in chosen.iter_mut().zip(view.current()).enumerate() {
            let grid = &grids[r * bs + k];
            let q = grid.nearest(x);
            codes[r * bs + k] = q;
            *c = grid.value(q);
        }
        if k == bs - 1 {
            for r in 0..rows {
                let block = &mut bytes[r * row_bytes + g * ts..r * row_bytes + (g + 1) * ts];
                ty.set_codes(block, &codes[r * bs..(r + 1) * bs]);
            }
        }
    })?;
    if let Some(source) = failure {
        return Err(QuantizeError::Quant {
            tensor: name.clone(),
            source,
        });
    }
    // `w` now holds the grid values; they are what the bytes decode to.
    let q = Tensor::from_vec(w, (rows, cols), model.device())?;
    model.set_weight(name, q)?;
    Ok(bytes)
}
