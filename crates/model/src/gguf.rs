//! `LlamaConfig` ↔ GGUF architecture metadata, for every family, as llama.cpp's converter writes it and
//! llama.cpp's loader reads it.
//!
//! The `{arch}.*` keys differ per family (llama writes `vocab_size` and `rope.dimension_count`, qwen2/qwen3
//! neither, phi3 its own set with `rope.scaling.original_context_length`, gemma3 the sliding window and a
//! second RoPE base), and some facts travel as tensors instead (Llama 3's `rope_freqs.weight`, Phi-3's
//! `rope_factors_long/short.weight`). Where llama.cpp would compute a model other than the config's, export
//! is refused with the field named, never written.

use shuku_gguf::{ArchParams, GgufFile, PerLayer, Value};

use crate::config::{rope_from_gguf, LayerDims, LlamaConfig, ModelType, RopeScaling};
use crate::error::{ConfigProblem, ModelError, Result};

const FILE: &str = "<gguf>";

/// llama.cpp's default gemma3 layer pattern: every sixth layer attends globally.
const GEMMA3_PATTERN: usize = 6;

/// f32 metadata back to the decimal it was written from (1e-5 stays 1e-5, not 9.99999974738e-6).
pub(crate) fn f32_to_f64(v: f32) -> f64 {
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

fn refuse(field: &str, why: String) -> ModelError {
    ModelError::config("<config>", field, ConfigProblem::Unsupported(why))
}

/// An extra f32 tensor llama.cpp's converter writes from the config (RoPE factors).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedTensor {
    /// GGUF name.
    pub name: String,
    /// Values (1-D).
    pub values: Vec<f32>,
}

impl LlamaConfig {
    /// The GGUF architecture llama.cpp runs this model as. Mistral is written as `llama`, as llama.cpp's
    /// converter does. A llama whose layers differ in width (a structurally pruned model) is written as
    /// `deci`: llama.cpp's `llama` architecture sizes every layer from layer 0's hyper-parameters, while
    /// `deci` (the same tensors, rotary layout and graph) reads head counts and FFN width per layer. No
    /// other family has a per-layer form in llama.cpp, so those are refused when non-uniform.
    pub fn gguf_arch(&self) -> Result<&'static str> {
        let uniform = self.is_uniform();
        Ok(match self.model_type {
            ModelType::Llama | ModelType::Mistral if uniform => "llama",
            ModelType::Llama | ModelType::Mistral => "deci",
            t if !uniform => {
                return Err(refuse(
                    "layers",
                    format!(
                    "llama.cpp's {} architecture cannot hold per-layer widths; prune {} uniformly \
                         (the same heads and FFN width in every layer)",
                    t.gguf_name(),
                    t.as_str()
                ),
                ))
            }
            t => t.gguf_name(),
        })
    }

    /// The core `{arch}.*` hyper-parameters (shuku-gguf's typed view).
    pub fn to_arch_params(&self) -> Result<ArchParams> {
        let arch = self.gguf_arch()?;
        let head_dim = to_u32("head_dim", self.head_dim)?;
        let llama = shuku_gguf::is_llama_arch(arch);
        // llama.cpp's converter writes key/value_length when config.json states head_dim (gemma3's
        // always; phi3's never).
        let explicit_kv = self.states_head_dim() || self.model_type == ModelType::Gemma3;
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
            key_length: (explicit_kv && self.model_type != ModelType::Phi3).then_some(head_dim),
            value_length: (explicit_kv && self.model_type != ModelType::Phi3).then_some(head_dim),
            vocab_size: llama
                .then(|| to_u32("vocab_size", self.vocab_size))
                .transpose()?,
            rope_dimension_count: (llama || self.model_type == ModelType::Phi3).then_some(head_dim),
            sliding_window: None,
        })
    }

    /// Every `{arch}.*` key llama.cpp's converter writes for this config.
    pub fn gguf_hparams(&self) -> Result<Vec<(String, Value)>> {
        self.check_llama_cpp_semantics()?;
        let p = self.to_arch_params()?;
        let key = |k: &str| format!("{}.{k}", p.arch);
        let mut out = p.to_metadata();
        if let RopeScaling::Linear { factor } = self.rope_scaling {
            out.push((key("rope.scaling.type"), Value::String("linear".into())));
            out.push((key("rope.scaling.factor"), Value::F32(factor as f32)));
        }
        match self.model_type {
            ModelType::Gemma3 => {
                if let Some(theta) = self.rope_local_theta {
                    out.push((key("rope.freq_base_swa"), Value::F32(theta as f32)));
                }
                if let Some(w) = self.sliding_window {
                    out.push((
                        key("attention.sliding_window"),
                        Value::U32(to_u32("sliding_window", w)?),
                    ));
                }
                let default: Vec<bool> = (0..self.layers.len())
                    .map(|i| (i + 1) % GEMMA3_PATTERN != 0)
                    .collect();
                let pattern: Vec<bool> = self.layers.iter().map(|l| l.sliding).collect();
                if pattern != default {
                    // llama.cpp reads a per-layer bool array here; its converter never needs one because
                    // unpruned Gemma 3 models follow the default pattern.
                    out.push((
                        key("attention.sliding_window_pattern"),
                        Value::Array(shuku_gguf::value::Array::Bool(pattern)),
                    ));
                }
            }
            ModelType::Phi3 => {
                let original = match &self.rope_scaling {
                    RopeScaling::LongRope {
                        original_max_position_embeddings,
                        ..
                    } => *original_max_position_embeddings,
                    _ => self.max_position_embeddings,
                };
                out.push((
                    key("rope.scaling.original_context_length"),
                    Value::U32(to_u32("original_max_position_embeddings", original)?),
                ));
                let window = self.sliding_window.unwrap_or(0);
                out.push((
                    key("attention.sliding_window"),
                    Value::U32(to_u32("sliding_window", window)?),
                ));
                if let RopeScaling::LongRope {
                    attention_factor, ..
                } = self.rope_scaling
                {
                    out.push((
                        key("rope.scaling.attn_factor"),
                        Value::F32(attention_factor as f32),
                    ));
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Tensors llama.cpp's converter generates from the config: Llama 3's `rope_freqs.weight`, Phi-3's
    /// `rope_factors_long.weight` and `rope_factors_short.weight`.
    pub fn gguf_generated_tensors(&self) -> Vec<GeneratedTensor> {
        let f32s = |v: &[f64]| v.iter().map(|x| *x as f32).collect();
        match &self.rope_scaling {
            RopeScaling::Llama3 { .. } => self
                .rope_scaling
                .llama3_divisors(self.head_dim, self.rope_theta)
                .map(|d| GeneratedTensor {
                    name: "rope_freqs.weight".into(),
                    values: f32s(&d),
                })
                .into_iter()
                .collect(),
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            } => vec![
                GeneratedTensor {
                    name: "rope_factors_long.weight".into(),
                    values: f32s(long_factor),
                },
                GeneratedTensor {
                    name: "rope_factors_short.weight".into(),
                    values: f32s(short_factor),
                },
            ],
            _ => vec![],
        }
    }

    /// Refuses configs llama.cpp would run as a different model than `transformers` does.
    fn check_llama_cpp_semantics(&self) -> Result<()> {
        if let Some(s) = self.query_pre_attn_scalar {
            // llama.cpp's gemma3 scales scores by 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the
            // 62-layer (27B) model.
            let heads0 = self.layers.first().map_or(1, |l| l.n_heads);
            let llama_cpp = if self.layers.len() == 62 {
                (self.hidden_size / heads0) as f64
            } else {
                self.head_dim as f64
            };
            if s != llama_cpp {
                return Err(refuse(
                    "query_pre_attn_scalar",
                    format!(
                        "{s}: llama.cpp's gemma3 scales attention by 1/sqrt({llama_cpp}), so the GGUF \
                         would compute a different model"
                    ),
                ));
            }
        }
        if self.model_type == ModelType::Gemma3 && self.rope_local_theta.is_none() {
            return Err(refuse("rope_local_base_freq", "missing for gemma3".into()));
        }
        Ok(())
    }

    /// The config a GGUF file of a supported architecture describes. Tied embeddings and q/k/v biases are
    /// read from which tensors the file holds (`output.weight`, `blk.0.attn_q.bias`); RoPE scaling from
    /// the `rope.scaling.*` keys and the factor tensors.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let p = ArchParams::from_gguf(file)?;
        let model_type = match p.arch.as_str() {
            a if shuku_gguf::is_llama_arch(a) => ModelType::Llama,
            "qwen2" => ModelType::Qwen2,
            "qwen3" => ModelType::Qwen3,
            "phi3" => ModelType::Phi3,
            "gemma3" => ModelType::Gemma3,
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
        let mut layers = (0..n_layers)
            .map(|i| {
                Ok(LayerDims::new(
                    layer("attention.head_count", &p.head_count, i)?,
                    layer("attention.head_count_kv", &p.head_count_kv, i)?,
                    layer("feed_forward_length", &p.feed_forward_length, i)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab_size = match p.vocab_size {
            Some(v) => v as usize,
            None => match file.get("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => a.len(),
                _ => match file.tensor("token_embd.weight") {
                    Ok(t) => t.info.shape()[0],
                    Err(_) => {
                        return Err(ModelError::config(
                            FILE,
                            key("vocab_size"),
                            ConfigProblem::Missing,
                        ))
                    }
                },
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
        if let Some(rot) = p.rope_dimension_count {
            if rot as usize != head_dim {
                return Err(ModelError::config(
                    FILE,
                    key("rope.dimension_count"),
                    ConfigProblem::Unsupported(format!(
                        "{rot} (partial rotation; head_dim {head_dim})"
                    )),
                ));
            }
        }
        let window = file
            .opt_u32(&key("attention.sliding_window"))?
            .filter(|&w| w > 0)
            .map(|w| w as usize);
        let sliding_window = match model_type {
            ModelType::Gemma3 | ModelType::Phi3 => window,
            _ => None,
        };
        if model_type == ModelType::Gemma3 && sliding_window.is_some() {
            let pattern_key = key("attention.sliding_window_pattern");
            let pattern: Vec<bool> = match file.get(&pattern_key) {
                None => (0..n_layers)
                    .map(|i| (i + 1) % GEMMA3_PATTERN != 0)
                    .collect(),
                Some(Value::Array(shuku_gguf::value::Array::Bool(v))) if v.len() >= n_layers => {
                    v[..n_layers].to_vec()
                }
                Some(v) => match v.as_u32() {
                    Some(0) => vec![true; n_layers],
                    Some(n) => (0..n_layers).map(|i| (i + 1) % n as usize != 0).collect(),
                    None => {
                        return Err(ModelError::config(
                            FILE,
                            pattern_key,
                            ConfigProblem::WrongType("an integer or one bool per layer"),
                        ))
                    }
                },
            };
            for (l, s) in layers.iter_mut().zip(pattern) {
                l.sliding = s;
            }
        } else if model_type == ModelType::Phi3 && sliding_window.is_some() {
            layers.iter_mut().for_each(|l| l.sliding = true);
        }
        let has = |name: &str| file.tensor_infos().iter().any(|t| t.name == name);
        let token = |k: &str| file.get_u32(k).ok();
        let rope_scaling = rope_from_gguf(file, &p.arch, head_dim, p.rope_freq_base)?;
        let gemma = model_type == ModelType::Gemma3;
        let config = LlamaConfig {
            model_type,
            vocab_size,
            hidden_size,
            head_dim,
            explicit_head_dim: p.key_length.is_some(),
            rms_norm_eps: f32_to_f64(p.rms_norm_eps),
            rope_theta: f32_to_f64(p.rope_freq_base),
            rope_local_theta: gemma
                .then(|| file.opt_f32(&key("rope.freq_base_swa")))
                .transpose()?
                .map(|t| t.map_or(10_000.0, f32_to_f64)),
            rope_scaling,
            max_position_embeddings: p.context_length as usize,
            tie_word_embeddings: !has("output.weight"),
            attention_bias: model_type == ModelType::Qwen2 || has("blk.0.attn_q.bias"),
            hidden_act: if gemma {
                crate::config::Activation::GeluTanh
            } else {
                crate::config::Activation::Silu
            },
            sliding_window,
            query_pre_attn_scalar: gemma.then(|| {
                if n_layers == 62 {
                    (hidden_size / heads0.max(1)) as f64
                } else {
                    head_dim as f64
                }
            }),
            bos_token_id: token("tokenizer.ggml.bos_token_id"),
            eos_token_ids: token("tokenizer.ggml.eos_token_id").into_iter().collect(),
            layers,
        };
        config.validate()?;
        Ok(config)
    }
}

impl ModelType {
    /// llama.cpp's architecture name for a uniform model of this family.
    pub fn gguf_name(self) -> &'static str {
        match self {
            ModelType::Llama | ModelType::Mistral => "llama",
            ModelType::Qwen2 => "qwen2",
            ModelType::Qwen3 => "qwen3",
            ModelType::Phi3 => "phi3",
            ModelType::Gemma3 => "gemma3",
        }
    }
}
