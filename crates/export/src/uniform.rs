//! Uneven per-layer widths (pruned models) made uniform by exact zero padding, for runtimes whose model
//! code reads one width per model (mlx-lm's llama, mistral, qwen and gemma modules).
//!
//! The padding changes no output:
//! - FFN: padded gate and up rows are zero, so the padded units compute `act(0) · 0 = 0` and the padded
//!   down-projection columns multiply zeros.
//! - Attention, when every layer has the same query heads per KV head `g`: the layer keeps its heads first
//!   and appends zero heads; a padded query head `i ≥ h` reads KV head `i / g ≥ kv`, which is padded too, so
//!   its values are zero and so is its output.
//! - Attention, when layers group differently: every layer becomes multi-head (`g = 1`): KV head `i` is a
//!   copy of the original KV head `i / g_l`, so each query head still reads the same keys and values, and the
//!   padded heads read zero KV heads as above.
//!
//! Zero groups quantize exactly ([`crate::groupwise`]), so this holds for quantized exports as well.

use shuku_model::{LayerDims, LlamaConfig};

use crate::host::HostTensor;

/// The uniform widths a non-uniform model is padded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniformWidths {
    /// Query heads per layer.
    pub n_heads: usize,
    /// KV heads per layer.
    pub n_kv_heads: usize,
    /// FFN width per layer.
    pub intermediate_size: usize,
}

impl UniformWidths {
    /// The smallest uniform widths every layer of `config` pads into exactly.
    pub fn for_config(config: &LlamaConfig) -> Self {
        let layers = &config.layers;
        let ff = layers
            .iter()
            .map(|l| l.intermediate_size)
            .max()
            .unwrap_or(0);
        let groups: Vec<usize> = layers
            .iter()
            .map(|l| l.n_heads / l.n_kv_heads.max(1))
            .collect();
        let same_group = groups.windows(2).all(|w| w[0] == w[1]);
        let (heads, kv) = if same_group {
            let kv = layers.iter().map(|l| l.n_kv_heads).max().unwrap_or(0);
            (kv * groups.first().copied().unwrap_or(1), kv)
        } else {
            let h = layers.iter().map(|l| l.n_heads).max().unwrap_or(0);
            (h, h)
        };
        Self {
            n_heads: heads,
            n_kv_heads: kv,
            intermediate_size: ff,
        }
    }

    /// The config with every layer at these widths.
    pub fn apply(&self, config: &LlamaConfig) -> LlamaConfig {
        let mut out = config.clone();
        for l in &mut out.layers {
            *l = LayerDims {
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
                intermediate_size: self.intermediate_size,
                sliding: l.sliding,
            };
        }
        out
    }
}

/// Pads every attention and FFN weight of `tensors` to `target` (see the module docs).
pub fn pad_tensors(config: &LlamaConfig, target: UniformWidths, tensors: &mut [HostTensor]) {
    let hd = config.head_dim;
    for t in tensors.iter_mut() {
        let Some((layer, suffix)) = split_layer(&t.name) else {
            continue;
        };
        let Some(dims) = config.layers.get(layer) else {
            continue;
        };
        let group = dims.n_heads / dims.n_kv_heads.max(1);
        let target_group = target.n_heads / target.n_kv_heads.max(1);
        // The source row block (of `hd` rows, or 1 row for FFN units) at each target position.
        let kv_source = |i: usize| -> Option<usize> {
            if target_group == group {
                (i < dims.n_kv_heads).then_some(i)
            } else {
                // Multi-head target: KV head i copies the KV head query head i read.
                (i < dims.n_heads).then_some(i / group)
            }
        };
        match suffix {
            "self_attn.q_proj.weight" | "self_attn.q_proj.bias" => {
                pad_rows(t, target.n_heads, hd, |i| (i < dims.n_heads).then_some(i))
            }
            "self_attn.k_proj.weight"
            | "self_attn.k_proj.bias"
            | "self_attn.v_proj.weight"
            | "self_attn.v_proj.bias" => pad_rows(t, target.n_kv_heads, hd, kv_source),
            "self_attn.o_proj.weight" => pad_cols(t, target.n_heads * hd),
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => {
                pad_rows(t, target.intermediate_size, 1, |i| {
                    (i < dims.intermediate_size).then_some(i)
                })
            }
            "mlp.down_proj.weight" => pad_cols(t, target.intermediate_size),
            _ => {}
        }
    }
}

fn split_layer(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (idx, suffix) = rest.split_once('.')?;
    Some((idx.parse().ok()?, suffix))
}

/// Rebuilds the rows of `t` as `blocks` blocks of `block` rows, block `i` copied from source block
/// `source(i)` or zero.
fn pad_rows(
    t: &mut HostTensor,
    blocks: usize,
    block: usize,
    source: impl Fn(usize) -> Option<usize>,
) {
    let cols = if t.shape.len() == 2 { t.shape[1] } else { 1 };
    let stride = block * cols;
    let mut data = vec![0f32; blocks * stride];
    for i in 0..blocks {
        if let Some(s) = source(i) {
            data[i * stride..(i + 1) * stride]
                .copy_from_slice(&t.data[s * stride..(s + 1) * stride]);
        }
    }
    t.data = data;
    t.shape[0] = blocks * block;
}

/// Appends zero columns to a 2-D `t` up to `cols`.
fn pad_cols(t: &mut HostTensor, cols: usize) {
    let (rows, old) = t.rows_cols();
    let mut data = vec![0f32; rows * cols];
    for r in 0..rows {
        data[r * cols..r * cols + old].copy_from_slice(&t.data[r * old..(r + 1) * old]);
    }
    t.data = data;
    t.shape[1] = cols;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[usize]) -> HostTensor {
        let n = shape.iter().product();
        HostTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data: (1..=n).map(|v| v as f32).collect(),
        }
    }

    #[test]
    fn mixed_groups_become_multi_head_with_copied_kv() {
        let mut cfg = LlamaConfig::from_json_str(
            r#"{"model_type":"llama","vocab_size":8,"hidden_size":4,"num_hidden_layers":2,
                "num_attention_heads":2,"num_key_value_heads":1,"head_dim":2,"intermediate_size":3,
                "rms_norm_eps":1e-5,"max_position_embeddings":16}"#,
            "t",
        )
        .unwrap();
        cfg.layers[1] = LayerDims::new(2, 2, 2);
        let target = UniformWidths::for_config(&cfg);
        assert_eq!(
            target,
            UniformWidths {
                n_heads: 2,
                n_kv_heads: 2,
                intermediate_size: 3
            }
        );
        let mut ts = vec![
            t("model.layers.0.self_attn.k_proj.weight", &[2, 4]),
            t("model.layers.1.mlp.down_proj.weight", &[4, 2]),
        ];
        pad_tensors(&cfg, target, &mut ts);
        // Layer 0's single KV head is copied for both query heads.
        assert_eq!(ts[0].shape, vec![4, 4]);
        assert_eq!(ts[0].data[..8], ts[0].data[8..]);
        // Layer 1's FFN gets one zero column.
        assert_eq!(ts[1].shape, vec![4, 3]);
        assert_eq!(&ts[1].data[..3], &[1.0, 2.0, 0.0]);
    }
}
