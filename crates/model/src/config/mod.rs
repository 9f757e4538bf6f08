//! `LlamaConfig`: the one parser of HF `config.json` in shuku, for every family the model implements, with
//! per-layer widths for pruned models.
//!
//! # Families
//! llama (and SmolLM), mistral, qwen2, qwen3, phi3 and gemma3 share one decoder block with switches: q/k/v
//! biases (qwen2), per-head q/k RMSNorm (qwen3, gemma3), Gemma's `(1 + w)` norms, extra post-attention and
//! post-FFN norms, embedding scale and GELU (gemma3), sliding-window attention (mistral, phi3, gemma3's
//! local layers), and the RoPE variants of [`RopeScaling`]. Every key of `config.json` is either read or
//! known not to change the computation (`keys.rs`); any other key is refused with its name.
//!
//! # Per-layer widths
//! Pruning leaves layers with different numbers of heads and FFN widths. Such a model is stored in the
//! ordinary HF schema plus one extra key, `shuku_layers`: a list with one
//! `{"num_attention_heads", "num_key_value_heads", "intermediate_size"}` object per layer. When it is present
//! it wins over the scalar keys (which then hold layer 0's values so that tools reading only scalars see a
//! plausible model). For compatibility with other pruning tools, `num_attention_heads`,
//! `num_key_value_heads` and `intermediate_size` may also be given as arrays with one entry per layer.
//! A uniform model is written without `shuku_layers`, i.e. as a standard config that `transformers` loads.

mod fields;
mod keys;
mod rope;

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{ConfigProblem, ModelError, Result};
use fields::Fields;
pub(crate) use rope::rope_from_gguf;
pub use rope::RopeScaling;
use rope::RopeSettings;

/// The architectures this crate implements; they share one decoder block with per-family switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// Llama 1–3 (and SmolLM, which is llama).
    Llama,
    /// Mistral: llama with an explicit `head_dim` and sliding-window attention.
    Mistral,
    /// Qwen2 / Qwen2.5: q/k/v biases.
    Qwen2,
    /// Qwen3 (dense): per-head q/k RMSNorm, no biases.
    Qwen3,
    /// Phi-3 / Phi-3.5 mini: fused QKV and gate/up matrices in the HF files, LongRoPE.
    Phi3,
    /// Gemma 3 (text): `(1 + w)` norms around both sublayers, q/k norms, GELU, scaled embeddings,
    /// sliding-window layers with their own RoPE base.
    Gemma3,
}

impl ModelType {
    /// The HF `model_type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Llama => "llama",
            ModelType::Mistral => "mistral",
            ModelType::Qwen2 => "qwen2",
            ModelType::Qwen3 => "qwen3",
            ModelType::Phi3 => "phi3",
            ModelType::Gemma3 => "gemma3_text",
        }
    }

    /// The HF `architectures` class name.
    pub fn hf_class(self) -> &'static str {
        match self {
            ModelType::Llama => "LlamaForCausalLM",
            ModelType::Mistral => "MistralForCausalLM",
            ModelType::Qwen2 => "Qwen2ForCausalLM",
            ModelType::Qwen3 => "Qwen3ForCausalLM",
            ModelType::Phi3 => "Phi3ForCausalLM",
            ModelType::Gemma3 => "Gemma3ForCausalLM",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "llama" => Some(ModelType::Llama),
            "mistral" => Some(ModelType::Mistral),
            "qwen2" => Some(ModelType::Qwen2),
            "qwen3" => Some(ModelType::Qwen3),
            "phi3" => Some(ModelType::Phi3),
            "gemma3_text" | "gemma3" => Some(ModelType::Gemma3),
            _ => None,
        }
    }

    /// Whether Q and K get a per-head RMSNorm before RoPE.
    pub fn has_qk_norm(self) -> bool {
        matches!(self, ModelType::Qwen3 | ModelType::Gemma3)
    }

    /// Whether RMSNorm gains are stored as `w` and applied as `1 + w` (Gemma).
    pub fn norm_plus_one(self) -> bool {
        self == ModelType::Gemma3
    }

    /// Whether each sublayer's output is normalised before the residual add (Gemma 3's "sandwich").
    pub fn has_post_norms(self) -> bool {
        self == ModelType::Gemma3
    }

    /// Whether the HF files fuse q/k/v into `qkv_proj` and gate/up into `gate_up_proj` (Phi-3).
    pub fn fused_projections(self) -> bool {
        self == ModelType::Phi3
    }
}

/// The FFN's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (SwiGLU).
    Silu,
    /// GELU with the tanh approximation (GeGLU; HF `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Activation::GeluTanh),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        }
    }
}

/// Shape of one transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDims {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA groups); divides `n_heads`.
    pub n_kv_heads: usize,
    /// Gated FFN hidden width.
    pub intermediate_size: usize,
    /// Whether attention is limited to the last [`LlamaConfig::sliding_window`] positions.
    pub sliding: bool,
}

impl LayerDims {
    /// The widths alone (heads, KV heads, FFN), which pruning changes.
    pub fn widths(&self) -> (usize, usize, usize) {
        (self.n_heads, self.n_kv_heads, self.intermediate_size)
    }

    /// A full-attention layer of these widths.
    pub fn new(n_heads: usize, n_kv_heads: usize, intermediate_size: usize) -> Self {
        Self {
            n_heads,
            n_kv_heads,
            intermediate_size,
            sliding: false,
        }
    }
}

/// Hyper-parameters of a decoder of one of the [`ModelType`] families.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Architecture family.
    pub model_type: ModelType,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// Per-head width (explicit in HF `head_dim`, else `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// Whether `config.json` states `head_dim` (then it is written back, and llama.cpp's converter writes
    /// `attention.key_length`); always so when it differs from `hidden_size / num_attention_heads`.
    pub explicit_head_dim: bool,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency (of the full-attention layers).
    pub rope_theta: f64,
    /// RoPE base of sliding-window layers where the family gives them their own (Gemma 3).
    pub rope_local_theta: Option<f64>,
    /// RoPE scaling of the full-attention layers.
    pub rope_scaling: RopeScaling,
    /// Longest context the model was trained for (the KV cache bound).
    pub max_position_embeddings: usize,
    /// Whether `lm_head` reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections have biases (always for qwen2).
    pub attention_bias: bool,
    /// The FFN gate's activation.
    pub hidden_act: Activation,
    /// Positions a sliding-window layer attends to (itself and the `window - 1` before it).
    pub sliding_window: Option<usize>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2` (Gemma).
    pub query_pre_attn_scalar: Option<f64>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (HF allows one or several).
    pub eos_token_ids: Vec<u32>,
    /// One entry per transformer block.
    pub layers: Vec<LayerDims>,
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
        if let Some(key) = obj.keys().filter(|k| !keys::is_known(k)).min() {
            return Err(f.err(key, ConfigProblem::NotUnderstood));
        }

        let model_type = match f.present("model_type") {
            None => return Err(f.err("model_type", ConfigProblem::Missing)),
            Some(Value::String(s)) => ModelType::parse(s)
                .ok_or_else(|| f.err("model_type", ConfigProblem::UnknownModelType(s.clone())))?,
            Some(_) => return Err(f.err("model_type", ConfigProblem::WrongType("a string"))),
        };
        let hidden_act = Self::parse_activation(&f, model_type)?;
        Self::refuse_unimplemented(&f, model_type)?;

        let vocab_size = f.positive("vocab_size")?;
        let hidden_size = f.positive("hidden_size")?;
        let n_layers = f.positive("num_hidden_layers")?;
        let mut layers = Self::parse_layers(&f, n_layers)?;

        let explicit_head_dim = f.present("head_dim").is_some();
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
        let max_position_embeddings = match f.usize_opt("max_position_embeddings")?.unwrap_or(2048)
        {
            0 => return Err(f.err("max_position_embeddings", ConfigProblem::Zero)),
            n => n,
        };
        let rope = RopeSettings::parse(&f, model_type, head_dim, max_position_embeddings)?;
        let sliding_window = Self::parse_sliding(&f, model_type, &mut layers)?;
        let query_pre_attn_scalar = match f.present("query_pre_attn_scalar") {
            None => None,
            Some(_) if model_type != ModelType::Gemma3 => {
                return Err(f.err(
                    "query_pre_attn_scalar",
                    ConfigProblem::Unsupported(format!("for model_type {:?}", model_type.as_str())),
                ))
            }
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Some(x),
                Some(_) => return Err(f.err("query_pre_attn_scalar", ConfigProblem::Zero)),
                None => {
                    return Err(f.err(
                        "query_pre_attn_scalar",
                        ConfigProblem::WrongType("a number"),
                    ))
                }
            },
        };
        let attention_bias =
            model_type == ModelType::Qwen2 || f.bool_or("attention_bias", false)?;
        let tie_default = matches!(model_type, ModelType::Gemma3);
        let config = LlamaConfig {
            model_type,
            vocab_size,
            hidden_size,
            head_dim,
            explicit_head_dim,
            rms_norm_eps,
            rope_theta: rope.theta,
            rope_local_theta: rope.local_theta,
            rope_scaling: rope.scaling,
            max_position_embeddings,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", tie_default)?,
            attention_bias,
            hidden_act,
            sliding_window,
            query_pre_attn_scalar,
            bos_token_id: f.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.token_ids("eos_token_id")?,
            layers,
        };
        Ok(config)
    }

    /// `hidden_act` (or Gemma's `hidden_activation`); the family's default when absent.
    fn parse_activation(f: &Fields<'_>, model_type: ModelType) -> Result<Activation> {
        let default = match model_type {
            ModelType::Gemma3 => Activation::GeluTanh,
            _ => Activation::Silu,
        };
        let mut act = default;
        for key in ["hidden_act", "hidden_activation"] {
            match f.present(key) {
                None => {}
                Some(Value::String(s)) => {
                    act = Activation::parse(s).ok_or_else(|| {
                        f.err(
                            key,
                            ConfigProblem::Unsupported(format!(
                                "{s:?} (supported: silu, gelu_pytorch_tanh)"
                            )),
                        )
                    })?;
                }
                Some(_) => return Err(f.err(key, ConfigProblem::WrongType("a string"))),
            }
        }
        Ok(act)
    }

    /// Keys whose every value but one changes the computation in a way this model does not implement.
    fn refuse_unimplemented(f: &Fields<'_>, model_type: ModelType) -> Result<()> {
        let unsupported =
            |key: &str, v: &Value| Err(f.err(key, ConfigProblem::Unsupported(v.to_string())));
        for key in [
            "mlp_bias",
            "rope_interleaved",
            "use_bidirectional_attention",
        ] {
            if f.bool_or(key, false)? {
                return unsupported(key, &Value::Bool(true));
            }
        }
        for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
            if let Some(v) = f.present(key) {
                return unsupported(key, v);
            }
        }
        if let Some(v) = f.present("partial_rotary_factor") {
            if v.as_f64() != Some(1.0) {
                return unsupported("partial_rotary_factor", v);
            }
        }
        if model_type != ModelType::Gemma3 && f.present("rope_local_base_freq").is_some() {
            return Err(f.err(
                "rope_local_base_freq",
                ConfigProblem::Unsupported(format!("for model_type {:?}", model_type.as_str())),
            ));
        }
        Ok(())
    }

    /// The sliding window and which layers use it. Mistral and Phi-3 apply it to every layer; Gemma 3 to
    /// the layers `layer_types` (or the pattern "every `sliding_window_pattern`-th layer is global")
    /// marks; Qwen applies it only with `use_sliding_window`, which is refused.
    fn parse_sliding(
        f: &Fields<'_>,
        model_type: ModelType,
        layers: &mut [LayerDims],
    ) -> Result<Option<usize>> {
        if f.bool_or("use_sliding_window", false)? {
            return Err(f.err(
                "use_sliding_window",
                ConfigProblem::Unsupported("true (Qwen's sliding-window layers)".into()),
            ));
        }
        let window = match f.usize_opt("sliding_window")? {
            Some(0) => return Err(f.err("sliding_window", ConfigProblem::Zero)),
            w => w,
        };
        let types = f.present("layer_types");
        let pattern_key = ["sliding_window_pattern", "_sliding_window_pattern"]
            .into_iter()
            .find(|k| f.present(k).is_some());
        let window = match model_type {
            ModelType::Qwen2 | ModelType::Qwen3 => None,
            ModelType::Llama if window.is_some() => {
                return Err(f.err(
                    "sliding_window",
                    ConfigProblem::Unsupported("for model_type \"llama\"".into()),
                ))
            }
            _ => window,
        };
        let gemma = model_type == ModelType::Gemma3;
        if !gemma {
            if let Some(key) = pattern_key.filter(|_| types.is_none()) {
                return Err(f.err(
                    key,
                    ConfigProblem::Unsupported(format!("for model_type {:?}", model_type.as_str())),
                ));
            }
        }
        let sliding: Vec<bool> = if let Some(types) = types {
            let items = types
                .as_array()
                .ok_or_else(|| f.err("layer_types", ConfigProblem::WrongType("an array")))?;
            if items.len() != layers.len() {
                return Err(f.err(
                    "layer_types",
                    ConfigProblem::LayerCount {
                        expected: layers.len(),
                        found: items.len(),
                    },
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, t)| match t.as_str() {
                    Some("full_attention") => Ok(false),
                    Some("sliding_attention") => Ok(true),
                    _ => Err(f.err(
                        &format!("layer_types[{i}]"),
                        ConfigProblem::Unsupported(format!(
                            "{t} (supported: full_attention, sliding_attention)"
                        )),
                    )),
                })
                .collect::<Result<_>>()?
        } else if gemma {
            let pattern = match pattern_key {
                Some(k) => match f.usize_req(k)? {
                    0 => return Err(f.err(k, ConfigProblem::Zero)),
                    n => n,
                },
                None => 6,
            };
            (0..layers.len()).map(|i| (i + 1) % pattern != 0).collect()
        } else {
            vec![window.is_some(); layers.len()]
        };
        if sliding.iter().any(|&s| s) && window.is_none() {
            let field = if gemma {
                "sliding_window"
            } else {
                "layer_types"
            };
            return Err(f.err(field, ConfigProblem::Missing));
        }
        for (l, s) in layers.iter_mut().zip(sliding) {
            l.sliding = s;
        }
        Ok(window)
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
                    Ok(LayerDims::new(
                        lf.usize_req("num_attention_heads")?,
                        lf.usize_req("num_key_value_heads")?,
                        lf.usize_req("intermediate_size")?,
                    ))
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
                .map(|i| LayerDims::new(heads[i], kv[i], ffn[i]))
                .collect()
        };
        let uniform = layers.windows(2).all(|w| w[0].widths() == w[1].widths());
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
        self.layers
            .windows(2)
            .all(|w| w[0].widths() == w[1].widths())
    }

    /// Whether `head_dim` must be written: stated in the source, or not `hidden_size / heads`.
    pub(crate) fn states_head_dim(&self) -> bool {
        let heads0 = self.layers.first().map_or(0, |l| l.n_heads);
        self.explicit_head_dim
            || heads0 == 0
            || !self.hidden_size.is_multiple_of(heads0)
            || self.hidden_size / heads0 != self.head_dim
    }

    /// The attention score scale: `query_pre_attn_scalar^-1/2` where given (Gemma), else `head_dim^-1/2`.
    pub fn attention_scale(&self) -> f64 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f64)
            .sqrt()
    }

    /// The factor token embeddings are multiplied by (`sqrt(hidden_size)` for Gemma, else 1).
    pub fn embedding_scale(&self) -> Option<f64> {
        (self.model_type == ModelType::Gemma3).then(|| (self.hidden_size as f64).sqrt())
    }

    /// Re-checks the invariants `from_json` enforces; for configs built or edited in code (e.g. by pruning).
    pub fn validate(&self) -> Result<()> {
        Self::from_json(&self.to_hf_json(), "<memory>").map(|_| ())
    }

    /// The config as HF `config.json` in the layout `transformers` 4 and 5 both read (top-level
    /// `rope_theta`, `rope_scaling`). Uniform models give a standard config of their family; non-uniform
    /// ones add `shuku_layers` (see the module docs).
    pub fn to_hf_json(&self) -> Value {
        let l0 = self
            .layers
            .first()
            .copied()
            .unwrap_or(LayerDims::new(0, 0, 0));
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let act_key = match self.model_type {
            ModelType::Gemma3 => "hidden_activation",
            _ => "hidden_act",
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
            act_key: self.hidden_act.as_str(),
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling_json(),
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        if !matches!(self.model_type, ModelType::Gemma3 | ModelType::Phi3) {
            v["mlp_bias"] = json!(false);
        }
        if !self.states_head_dim() {
            if let Some(o) = v.as_object_mut() {
                o.remove("head_dim");
            }
        }
        if let RopeScaling::LongRope {
            original_max_position_embeddings,
            ..
        } = self.rope_scaling
        {
            v["original_max_position_embeddings"] = json!(original_max_position_embeddings);
        }
        match self.model_type {
            ModelType::Mistral | ModelType::Phi3 => {
                v["sliding_window"] = json!(self.sliding_window);
            }
            ModelType::Gemma3 => {
                v["sliding_window"] = json!(self.sliding_window);
                v["rope_local_base_freq"] = json!(self.rope_local_theta);
                // transformers 5 types this field as an integer and refuses 256.0.
                let scalar = self.query_pre_attn_scalar.unwrap_or(self.head_dim as f64);
                v["query_pre_attn_scalar"] = if scalar.fract() == 0.0 {
                    json!(scalar as i64)
                } else {
                    json!(scalar)
                };
                v["layer_types"] = self
                    .layers
                    .iter()
                    .map(|l| {
                        json!(if l.sliding {
                            "sliding_attention"
                        } else {
                            "full_attention"
                        })
                    })
                    .collect();
            }
            _ => {}
        }
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

    fn rope_scaling_json(&self) -> Value {
        match &self.rope_scaling {
            RopeScaling::None => Value::Null,
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                let mut o = json!({
                    "rope_type": "longrope",
                    "short_factor": short_factor,
                    "long_factor": long_factor,
                });
                let default = rope::longrope_attention_factor(
                    self.max_position_embeddings,
                    *original_max_position_embeddings,
                );
                if (attention_factor - default).abs() > 1e-12 {
                    o["attention_factor"] = json!(attention_factor);
                }
                o
            }
        }
    }
}
