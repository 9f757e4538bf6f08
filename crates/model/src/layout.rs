//! The HF tensor names and shapes a config implies: the single source of truth for loading, saving, random
//! initialisation and shape checking.

use crate::config::LlamaConfig;

/// Kind of a tensor, which decides its random initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// Embedding or linear weight.
    Weight,
    /// Linear bias.
    Bias,
    /// RMSNorm gain.
    Norm,
}

/// One tensor a config requires: HF name, shape, role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// HF name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Expected shape (PyTorch `[out, in]` for linears).
    pub shape: Vec<usize>,
    /// What it is.
    pub role: TensorRole,
}

/// Prefix of layer `i`'s tensors.
pub fn layer_prefix(i: usize) -> String {
    format!("model.layers.{i}.")
}

impl LlamaConfig {
    /// Every tensor this config requires, in HF order.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        let (v, h, hd) = (self.vocab_size, self.hidden_size, self.head_dim);
        let spec = |name: String, shape: Vec<usize>, role| TensorSpec { name, shape, role };
        let mut out = vec![spec(
            "model.embed_tokens.weight".into(),
            vec![v, h],
            TensorRole::Weight,
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = layer_prefix(i);
            let (q, kv, ffn) = (l.n_heads * hd, l.n_kv_heads * hd, l.intermediate_size);
            out.push(spec(
                format!("{p}input_layernorm.weight"),
                vec![h],
                TensorRole::Norm,
            ));
            for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                out.push(spec(
                    format!("{p}self_attn.{proj}.weight"),
                    vec![rows, h],
                    TensorRole::Weight,
                ));
                if self.attention_bias {
                    out.push(spec(
                        format!("{p}self_attn.{proj}.bias"),
                        vec![rows],
                        TensorRole::Bias,
                    ));
                }
            }
            out.push(spec(
                format!("{p}self_attn.o_proj.weight"),
                vec![h, q],
                TensorRole::Weight,
            ));
            out.push(spec(
                format!("{p}post_attention_layernorm.weight"),
                vec![h],
                TensorRole::Norm,
            ));
            out.push(spec(
                format!("{p}mlp.gate_proj.weight"),
                vec![ffn, h],
                TensorRole::Weight,
            ));
            out.push(spec(
                format!("{p}mlp.up_proj.weight"),
                vec![ffn, h],
                TensorRole::Weight,
            ));
            out.push(spec(
                format!("{p}mlp.down_proj.weight"),
                vec![h, ffn],
                TensorRole::Weight,
            ));
        }
        out.push(spec("model.norm.weight".into(), vec![h], TensorRole::Norm));
        if !self.tie_word_embeddings {
            out.push(spec(
                "lm_head.weight".into(),
                vec![v, h],
                TensorRole::Weight,
            ));
        }
        out
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn n_params(&self) -> usize {
        self.tensor_specs()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }
}
