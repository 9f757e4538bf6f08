//! `LlamaConfig` ↔ GGUF architecture metadata (`{arch}.*` keys, via shuku-gguf's `ArchParams`).

use shuku_gguf::{ArchParams, GgufFile, PerLayer, Value};

use crate::config::{LayerDims, LlamaConfig, ModelType};
use crate::error::{ConfigProblem, ModelError, Result};

const FILE: &str = "<gguf>";

/// f32 metadata back to the decimal it was written from (1e-5 stays 1e-5, not 9.99999974738e-6).
fn f32_to_f64(v: f32) -> f64 {
    format!("{v}").parse().unwrap_or(f64::from(v))
}

fn to_u32(field: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        ModelError::config(
            "<config>",
            field,
            ConfigProblem::Unsupported(format!("{v} does not fit GGUF's u32")),
        )
    })
}

fn per_layer(field: &str, values: impl Iterator<Item = usize>) -> Result<PerLayer<u32>> {
    let v = values
        .map(|x| to_u32(field, x))
        .collect::<Result<Vec<_>>>()?;
    Ok(PerLayer::Layers(v).simplified())
}

impl LlamaConfig {
    /// The config a llama-family GGUF file describes. Tied embeddings and q/k/v biases are read from which
    /// tensors the file holds (`output.weight`, `blk.0.attn_q.bias`).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let p = ArchParams::from_gguf(file)?;
        let model_type = match p.arch.as_str() {
            "llama" | "deci" => ModelType::Llama,
            "qwen2" => ModelType::Qwen2,
            "mistral" => ModelType::Mistral,
            other => {
                return Err(ModelError::config(
                    FILE,
                    "general.architecture",
                    ConfigProblem::UnknownModelType(other.to_string()),
                ))
            }
        };
        let key = |k: &str| format!("{}.{k}", p.arch);
        let n_layers = p.block_count as usize;
        let layer = |field: &str, v: &PerLayer<u32>, i: usize| -> Result<usize> {
            v.get(i).map(|x| x as usize).ok_or_else(|| {
                ModelError::config(
                    FILE,
                    key(field),
                    ConfigProblem::LayerCount {
                        expected: n_layers,
                        found: i,
                    },
                )
            })
        };
        let layers = (0..n_layers)
            .map(|i| {
                Ok(LayerDims {
                    n_heads: layer("attention.head_count", &p.head_count, i)?,
                    n_kv_heads: layer("attention.head_count_kv", &p.head_count_kv, i)?,
                    intermediate_size: layer("feed_forward_length", &p.feed_forward_length, i)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab_size = match p.vocab_size {
            Some(v) => v as usize,
            None => match file.get("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => a.len(),
                _ => {
                    return Err(ModelError::config(
                        FILE,
                        key("vocab_size"),
                        ConfigProblem::Missing,
                    ))
                }
            },
        };
        let hidden_size = p.embedding_length as usize;
        let heads0 = layers.first().map_or(0, |l| l.n_heads);
        let head_dim = match p.key_length {
            Some(k) => k as usize,
            None if heads0 > 0 => hidden_size / heads0,
            None => {
                return Err(ModelError::config(
                    FILE,
                    key("attention.head_count"),
                    ConfigProblem::Zero,
                ))
            }
        };
        let has = |name: &str| file.tensor_infos().iter().any(|t| t.name == name);
        let token = |k: &str| file.get_u32(k).ok();
        let config = LlamaConfig {
            model_type,
            vocab_size,
            hidden_size,
            head_dim,
            rms_norm_eps: f32_to_f64(p.rms_norm_eps),
            rope_theta: f32_to_f64(p.rope_freq_base),
            max_position_embeddings: p.context_length as usize,
            tie_word_embeddings: !has("output.weight"),
            attention_bias: model_type == ModelType::Qwen2 || has("blk.0.attn_q.bias"),
            bos_token_id: token("tokenizer.ggml.bos_token_id"),
            eos_token_ids: token("tokenizer.ggml.eos_token_id").into_iter().collect(),
            layers,
        };
        config.validate()?;
        Ok(config)
    }

    /// The `{arch}.*` hyper-parameters llama.cpp reads. Mistral is written as `llama`, as llama.cpp's own
    /// converter does; `key_length`/`value_length` only when `head_dim` is not `hidden / heads`.
    ///
    /// A llama whose layers differ in width (a structurally pruned model) is written as `deci`: llama.cpp's
    /// `llama` architecture sizes every layer from layer 0's hyper-parameters, while `deci` (the same
    /// tensors, rotary layout and graph) reads head counts and FFN width per layer. llama.cpp's `qwen2`
    /// has no per-layer form, so a non-uniform qwen2 is refused.
    pub fn to_arch_params(&self) -> Result<ArchParams> {
        let arch = match (self.model_type, self.is_uniform()) {
            (ModelType::Llama | ModelType::Mistral, true) => "llama",
            (ModelType::Llama | ModelType::Mistral, false) => "deci",
            (ModelType::Qwen2, true) => "qwen2",
            (ModelType::Qwen2, false) => {
                return Err(ModelError::config(
                    "<config>",
                    "layers",
                    ConfigProblem::Unsupported(
                        "llama.cpp's qwen2 architecture cannot hold per-layer widths".into(),
                    ),
                ))
            }
        };
        let heads0 = self.layers.first().map_or(0, |l| l.n_heads);
        let implicit = heads0 > 0
            && self.hidden_size % heads0 == 0
            && self.hidden_size / heads0 == self.head_dim;
        let head_dim = to_u32("head_dim", self.head_dim)?;
        Ok(ArchParams {
            arch: arch.to_string(),
            context_length: to_u32("max_position_embeddings", self.max_position_embeddings)?,
            embedding_length: to_u32("hidden_size", self.hidden_size)?,
            block_count: to_u32("num_hidden_layers", self.layers.len())?,
            feed_forward_length: per_layer(
                "intermediate_size",
                self.layers.iter().map(|l| l.intermediate_size),
            )?,
            head_count: per_layer("num_attention_heads", self.layers.iter().map(|l| l.n_heads))?,
            head_count_kv: per_layer(
                "num_key_value_heads",
                self.layers.iter().map(|l| l.n_kv_heads),
            )?,
            rms_norm_eps: self.rms_norm_eps as f32,
            rope_freq_base: self.rope_theta as f32,
            key_length: (!implicit).then_some(head_dim),
            value_length: (!implicit).then_some(head_dim),
            vocab_size: Some(to_u32("vocab_size", self.vocab_size)?),
            rope_dimension_count: Some(head_dim),
            sliding_window: None,
        })
    }
}
