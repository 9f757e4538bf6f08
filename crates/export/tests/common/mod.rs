//! What the export tests share: the embedded base model, options, shuku-model's logits and their
//! comparison.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use shuku_export::{ExportOptions, WeightBits};
use shuku_model::{KeptLayer, Llama, ShrinkPlan};

/// The embedded base model's folder (also the tokenizer of the tiny test models).
pub fn base_dir() -> PathBuf {
    shuku_testkit::workspace_dir().join("assets/shuku-base")
}

/// Default options at `bits`.
pub fn opts(bits: WeightBits) -> ExportOptions {
    ExportOptions {
        bits,
        ..ExportOptions::default()
    }
}

/// shuku-model's logits `[tokens.len(), vocab]`, row-major.
pub fn model_logits(model: &Llama, tokens: &[u32]) -> Vec<f32> {
    let t = Tensor::new(tokens, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward(&t, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The largest element-wise difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `model` (at least 3 layers) with uneven layers, as structured pruning leaves them: layer 1 keeps one KV
/// group and half its FFN, layer 2 one query head per KV head and the last three quarters of its FFN, the
/// others stay whole.
pub fn uneven(model: &Llama) -> Llama {
    let cfg = model.config();
    let layers = cfg
        .layers
        .iter()
        .enumerate()
        .map(|(i, dims)| {
            let group = dims.n_heads / dims.n_kv_heads;
            let ff = dims.intermediate_size;
            match i {
                1 => KeptLayer {
                    source: 1,
                    kv_heads: vec![dims.n_kv_heads - 1],
                    heads: (dims.n_heads - group..dims.n_heads).collect(),
                    channels: (0..ff / 2).collect(),
                },
                2 => KeptLayer {
                    source: 2,
                    kv_heads: (0..dims.n_kv_heads).collect(),
                    heads: (0..dims.n_kv_heads).map(|k| k * group).collect(),
                    channels: (ff / 4..ff).collect(),
                },
                _ => KeptLayer::all(i, dims),
            }
        })
        .collect();
    let pruned = model.shrink(&ShrinkPlan { layers }).unwrap();
    assert!(!pruned.config().is_uniform());
    pruned
}
