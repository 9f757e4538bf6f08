//! `LlamaConfig`: the one parser of HF `config.json` in shuku, with per-layer widths for pruned models.
//!
//! # Per-layer widths
//! Pruning leaves layers with different numbers of heads and FFN widths. Such a model is stored in the
//! ordinary HF schema plus one extra key, `shuku_layers`: a list with one
//! `{"num_attention_heads", "num_key_value_heads", "intermediate_size"}` object per layer. When it is present
//! it wins over the scalar keys (which then hold layer 0's values so that tools reading only scalars see a
//! plausible model). For compatibility with other pruning tools, `num_attention_heads`,
//! `num_key_value_heads` and `intermediate_size` may also be given as arrays with one entry per layer.
//! A uniform model is written without `shuku_layers`, i.e. as a standard config that `transformers` loads.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{ConfigProblem, ModelError, Result};

/// The architectures this crate implements; they share the llama block and differ in defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// Llama (and SmolLM, which is llama).
    Llama,
    /// Mistral (`sliding_window` is ignored: exact for contexts up to the window).
    Mistral,
    /// Qwen2: always has q/k/v biases.
    Qwen2,
}

impl ModelType {
    /// The HF `model_type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Llama => "llama",
            ModelType::Mistral => "mistral",
            ModelType::Qwen2 => "qwen2",
        }
    }

    /// The HF `architectures` class name.
    pub fn hf_class(self) -> &'static str {
        match self {
            ModelType::Llama => "LlamaForCausalLM",
            ModelType::Mistral => "MistralForCausalLM",
            ModelType::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "llama" => Some(ModelType::Llama),
            "mistral" => Some(ModelType::Mistral),
            "qwen2" => Some(ModelType::Qwen2),
            _ => None,
        }
    }
}

/// Widths of one transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDims {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA groups); divides `n_heads`.
    pub n_kv_heads: usize,
    /// SwiGLU hidden width.
    pub intermediate_size: usize,
}

/// Hyper-parameters of a llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Architecture flavour.
    pub model_type: ModelType,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// Per-head width (explicit in HF `head_dim`, else `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Longest context the model was trained for (the KV cache bound).
    pub max_position_embeddings: usize,
    /// Whether `lm_head` reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections have biases (always for qwen2).
    pub attention_bias: bool,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (HF allows one or several).
    pub eos_token_ids: Vec<u32>,
    /// One entry per transformer block.
    pub layers: Vec<LayerDims>,
}

/// Typed access to the fields of a JSON object, producing errors that name file and field.
struct Fields<'a> {
    file: &'a str,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, problem: ConfigProblem) -> ModelError {
        ModelError::config(self.file, field, problem)
    }

    fn present(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn to_usize(&self, field: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.err(field, ConfigProblem::WrongType("a non-negative integer")))
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        self.present(key).map(|v| self.to_usize(key, v)).transpose()
    }

    fn usize_req(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| self.err(key, ConfigProblem::Missing))
    }

    fn positive(&self, key: &str) -> Result<usize> {
        match self.usize_req(key)? {
            0 => Err(self.err(key, ConfigProblem::Zero)),
            n => Ok(n),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, ConfigProblem::WrongType("a number"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, ConfigProblem::WrongType("a boolean"))),
        }
    }

    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        let as_id = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.err(key, ConfigProblem::WrongType("a token id or list of ids")))
        };
        match self.present(key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items.iter().map(as_id).collect(),
            Some(v) => Ok(vec![as_id(v)?]),
        }
    }

    /// A scalar (repeated for every layer) or a per-layer array; `None` when absent.
    fn per_layer(&self, key: &str, n_layers: usize) -> Result<Option<Vec<usize>>> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Array(items)) => {
                if items.len() != n_layers {
                    return Err(self.err(
                        key,
                        ConfigProblem::LayerCount {
                            expected: n_layers,
                            found: items.len(),
                        },
                    ));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.to_usize(&format!("{key}[{i}]"), v))
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            }
            Some(v) => Ok(Some(vec![self.to_usize(key, v)?; n_layers])),
        }
    }
}

impl LlamaConfig {
    /// Reads and validates an HF `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses and validates `config.json` text; `file` names the source in errors.
    pub fn from_json_str(text: &str, file: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|source| ModelError::Json {
            file: file.to_string(),
            source,
        })?;
        Self::from_json(&value, file)
    }

    /// Validates an already parsed `config.json`.
    pub fn from_json(value: &Value, file: &str) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| {
            ModelError::config(file, "<root>", ConfigProblem::WrongType("an object"))
        })?;
        let f = Fields { file, obj };

        let model_type = match f.present("model_type") {
            None => return Err(f.err("model_type", ConfigProblem::Missing)),
            Some(Value::String(s)) => ModelType::parse(s)
                .ok_or_else(|| f.err("model_type", ConfigProblem::UnknownModelType(s.clone())))?,
            Some(_) => return Err(f.err("model_type", ConfigProblem::WrongType("a string"))),
        };
        if let Some(act) = f.present("hidden_act") {
            if act.as_str() != Some("silu") {
                return Err(f.err(
                    "hidden_act",
                    ConfigProblem::Unsupported(format!("{act} (only silu)")),
                ));
            }
        }
        if let Some(scaling) = f.present("rope_scaling") {
            return Err(f.err(
                "rope_scaling",
                ConfigProblem::Unsupported(scaling.to_string()),
            ));
        }
        if f.bool_or("mlp_bias", false)? {
            return Err(f.err("mlp_bias", ConfigProblem::Unsupported("true".into())));
        }

        let vocab_size = f.positive("vocab_size")?;
        let hidden_size = f.positive("hidden_size")?;
        let n_layers = f.positive("num_hidden_layers")?;
        let layers = Self::parse_layers(&f, n_layers)?;

        let head_dim = match f.usize_opt("head_dim")? {
            Some(0) => return Err(f.err("head_dim", ConfigProblem::Zero)),
            Some(d) => d,
            None => {
                // HF derives head_dim from the scalar head count; for per-layer lists use layer 0's.
                let heads = layers[0].n_heads;
                if hidden_size % heads != 0 {
                    return Err(f.err(
                        "num_attention_heads",
                        ConfigProblem::NotDivisible {
                            value: heads,
                            into: hidden_size,
                            what: "attention heads must divide hidden_size when head_dim is not given",
                        },
                    ));
                }
                hidden_size / heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(f.err(
                "head_dim",
                ConfigProblem::NotDivisible {
                    value: 2,
                    into: head_dim,
                    what: "RoPE rotates pairs, so head_dim must be even",
                },
            ));
        }
        let rms_norm_eps = f.f64_or("rms_norm_eps", 1e-6)?;
        if rms_norm_eps.is_nan() || rms_norm_eps <= 0.0 {
            return Err(f.err("rms_norm_eps", ConfigProblem::Zero));
        }
        let rope_theta = f.f64_or("rope_theta", 10000.0)?;
        if rope_theta.is_nan() || rope_theta <= 0.0 {
            return Err(f.err("rope_theta", ConfigProblem::Zero));
        }
        let max_position_embeddings = match f.usize_opt("max_position_embeddings")?.unwrap_or(2048)
        {
            0 => return Err(f.err("max_position_embeddings", ConfigProblem::Zero)),
            n => n,
        };
        let attention_bias =
            model_type == ModelType::Qwen2 || f.bool_or("attention_bias", false)?;
        let config = LlamaConfig {
            model_type,
            vocab_size,
            hidden_size,
            head_dim,
            rms_norm_eps,
            rope_theta,
            max_position_embeddings,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            attention_bias,
            bos_token_id: f.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.token_ids("eos_token_id")?,
            layers,
        };
        Ok(config)
    }

    fn parse_layers(f: &Fields<'_>, n_layers: usize) -> Result<Vec<LayerDims>> {
        let layers = if let Some(list) = f.present("shuku_layers") {
            let items = list
                .as_array()
                .ok_or_else(|| f.err("shuku_layers", ConfigProblem::WrongType("an array")))?;
            if items.len() != n_layers {
                return Err(f.err(
                    "shuku_layers",
                    ConfigProblem::LayerCount {
                        expected: n_layers,
                        found: items.len(),
                    },
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let obj = item.as_object().ok_or_else(|| {
                        f.err(
                            &format!("shuku_layers[{i}]"),
                            ConfigProblem::WrongType("an object"),
                        )
                    })?;
                    let label = format!("{} (shuku_layers[{i}])", f.file);
                    let lf = Fields { file: &label, obj };
                    Ok(LayerDims {
                        n_heads: lf.usize_req("num_attention_heads")?,
                        n_kv_heads: lf.usize_req("num_key_value_heads")?,
                        intermediate_size: lf.usize_req("intermediate_size")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            let heads = f
                .per_layer("num_attention_heads", n_layers)?
                .ok_or_else(|| f.err("num_attention_heads", ConfigProblem::Missing))?;
            let kv = f
                .per_layer("num_key_value_heads", n_layers)?
                .unwrap_or_else(|| heads.clone());
            let ffn = f
                .per_layer("intermediate_size", n_layers)?
                .ok_or_else(|| f.err("intermediate_size", ConfigProblem::Missing))?;
            (0..n_layers)
                .map(|i| LayerDims {
                    n_heads: heads[i],
                    n_kv_heads: kv[i],
                    intermediate_size: ffn[i],
                })
                .collect()
        };
        let uniform = layers.windows(2).all(|w| w[0] == w[1]);
        for (i, l) in layers.iter().enumerate() {
            let name = |field: &str| {
                if uniform {
                    field.to_string()
                } else {
                    format!("layer {i}: {field}")
                }
            };
            if l.n_heads == 0 {
                return Err(f.err(&name("num_attention_heads"), ConfigProblem::Zero));
            }
            if l.n_kv_heads == 0 {
                return Err(f.err(&name("num_key_value_heads"), ConfigProblem::Zero));
            }
            if l.intermediate_size == 0 {
                return Err(f.err(&name("intermediate_size"), ConfigProblem::Zero));
            }
            if l.n_heads % l.n_kv_heads != 0 {
                return Err(f.err(
                    &name("num_key_value_heads"),
                    ConfigProblem::NotDivisible {
                        value: l.n_kv_heads,
                        into: l.n_heads,
                        what: "key/value heads must divide attention heads",
                    },
                ));
            }
        }
        Ok(layers)
    }

    /// Number of transformer blocks.
    pub fn num_hidden_layers(&self) -> usize {
        self.layers.len()
    }

    /// Whether every layer has the same widths (then the config is plain HF).
    pub fn is_uniform(&self) -> bool {
        self.layers.windows(2).all(|w| w[0] == w[1])
    }

    /// Re-checks the invariants `from_json` enforces; for configs built or edited in code (e.g. by pruning).
    pub fn validate(&self) -> Result<()> {
        Self::from_json(&self.to_hf_json(), "<memory>").map(|_| ())
    }

    /// The config as HF `config.json`. Uniform models give a standard llama/mistral/qwen2 config that
    /// `transformers` loads; non-uniform ones add `shuku_layers` (see the module docs).
    pub fn to_hf_json(&self) -> Value {
        let l0 = self.layers.first().copied().unwrap_or(LayerDims {
            n_heads: 0,
            n_kv_heads: 0,
            intermediate_size: 0,
        });
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let mut v = json!({
            "architectures": [self.model_type.hf_class()],
            "model_type": self.model_type.as_str(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": l0.intermediate_size,
            "num_hidden_layers": self.layers.len(),
            "num_attention_heads": l0.n_heads,
            "num_key_value_heads": l0.n_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "mlp_bias": false,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        if !self.is_uniform() {
            v["shuku_layers"] = self
                .layers
                .iter()
                .map(|l| {
                    json!({
                        "num_attention_heads": l.n_heads,
                        "num_key_value_heads": l.n_kv_heads,
                        "intermediate_size": l.intermediate_size,
                    })
                })
                .collect();
        }
        v
    }
}
