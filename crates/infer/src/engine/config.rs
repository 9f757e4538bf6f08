//! Model hyper-parameters read from GGUF metadata, resolved per layer.
//!
//! One struct serves every supported family: the families differ in a handful of switches (RoPE
//! style, biases, Gemma's extra norms and scales), not in the shape of the computation, so the
//! forward pass reads these switches instead of having one copy per family.

use shuku_gguf::{ArchParams, GgufFile};

use super::error::{EngineError, Result};

/// Supported model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama`: Llama 2/3, Mistral, SmolLM, shuku's own models. RoPE on adjacent pairs (the GGUF
    /// converter permuted Q/K rows for it).
    Llama,
    /// `qwen2`: biases on Q, K and V; NEOX (rotate-half) RoPE.
    Qwen2,
    /// `qwen3` (dense): qwen2's layout without the Q/K/V biases, plus an RMSNorm of every Q and K
    /// head (`attn_q_norm`/`attn_k_norm`, one weight of `head_dim` shared by the heads) between the
    /// projections and RoPE. Its head width (`attention.key_length`) need not be
    /// `n_embd / n_head`.
    Qwen3,
    /// `gemma3`: Q/K norms, post-attention and post-FFN norms, GELU FFN, embedding scale,
    /// sliding-window attention on 5 of every 6 layers.
    Gemma3,
    /// `phi3`: Phi-3 / Phi-3.5 / Phi-4 mini. Q, K and V usually fused in one `attn_qkv` matrix, gate
    /// and up fused in `ffn_up` (gate rows first), NEOX RoPE with optional LongRoPE frequency
    /// factors, Q scaled before attention. Its `attention.sliding_window` is ignored: llama.cpp
    /// disables sliding-window attention for phi3 (full causal attention on every layer).
    Phi3,
}

impl Arch {
    fn from_name(name: &str) -> Result<Arch> {
        match name {
            // `deci` is llama's graph with head counts and FFN width per layer: how shuku (and
            // llama.cpp) store structurally pruned llamas. Its attention-free and linear-attention
            // layer kinds (head count or KV head count 0) are refused when the layers are read.
            a if shuku_gguf::is_llama_arch(a) => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "gemma3" => Ok(Arch::Gemma3),
            "phi3" => Ok(Arch::Phi3),
            other => Err(EngineError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
        }
    }

    /// Whether the attention scale multiplies Q before attention rather than the scores. llama.cpp's
    /// graph does so for these families and then attends with scale 1; since Q is rounded to f16
    /// inside attention, scaling before or after that rounding gives different last bits.
    pub fn scales_q(self) -> bool {
        matches!(self, Arch::Gemma3 | Arch::Phi3)
    }

    /// Whether every layer must have per-head RMSNorms of Q and K (llama.cpp requires the
    /// tensors for these families and refuses a file without them).
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Gemma3 | Arch::Qwen3)
    }
}

/// `{arch}.rope.scaling.type`, as llama.cpp reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeScaling {
    /// `none`: no position scaling, whatever `rope.scaling.factor` says.
    None,
    /// `linear`, also what an absent key means (llama.cpp's default): positions divided by
    /// `rope.scaling.factor`.
    Linear,
    /// `longrope`: linear's position scale plus per-pair factors chosen by the context (tensors
    /// `rope_factors_long`/`rope_factors_short`).
    LongRope,
}

/// How RoPE pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)` (ggml mode 0, llama).
    Normal,
    /// Halves `(i, i + d/2)` (ggml NEOX mode: qwen2, gemma).
    Neox,
}

/// Hyper-parameters of one layer (pruned models may differ per layer).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerConfig {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// FFN hidden width.
    pub n_ff: usize,
    /// Sliding-window length for this layer (`None`: full causal attention).
    pub sliding_window: Option<usize>,
    /// RoPE base frequency of this layer.
    pub rope_base: f32,
    /// RoPE position scale of this layer: the model's for full-attention layers, 1 for
    /// sliding-window ones (llama.cpp scales only the global layers, as Gemma 3 4B+ is trained:
    /// linear factor 8 on its global layers only).
    pub rope_freq_scale: f32,
}

/// Everything the forward pass needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Family.
    pub arch: Arch,
    /// Hidden width.
    pub n_embd: usize,
    /// Vocabulary size (rows of the embedding).
    pub n_vocab: usize,
    /// Per-head width of Q and K.
    pub head_dim: usize,
    /// Per-head width of V.
    pub head_dim_v: usize,
    /// Dimensions rotated by RoPE (≤ `head_dim`).
    pub n_rot: usize,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// How the file scales RoPE; decides which frequency-factor tensors the llama family reads.
    pub rope_scaling: RopeScaling,
    /// RoPE position scale of the full-attention layers (`1 / rope.scaling.factor`, 1 without
    /// scaling). Sliding-window layers keep their own ([`LayerConfig::rope_freq_scale`]).
    pub rope_freq_scale: f32,
    /// Magnitude scale of the rotated dimensions (`rope.scaling.attn_factor`, else 1). LongRoPE
    /// models (Phi-3 128k) are converted with `sqrt(1 + ln(s) / ln(n_ctx_orig))` there, and
    /// llama.cpp multiplies RoPE's cos and sin by it whichever factors the context selects.
    pub rope_attn_factor: f32,
    /// Context the RoPE frequencies were trained for (`rope.scaling.original_context_length`, else
    /// the trained context): sessions longer than this use LongRoPE's long factors.
    pub n_ctx_orig: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    /// Scale applied to attention scores.
    pub attn_scale: f32,
    /// Multiplier applied to the token embeddings (Gemma: `sqrt(n_embd)`).
    pub embd_scale: Option<f32>,
    /// Final logit soft-capping (`c·tanh(x/c)`), when the file asks for it.
    pub final_logit_softcap: Option<f32>,
    /// Per-layer parameters.
    pub layers: Vec<LayerConfig>,
}

fn key_err(key: String, why: impl Into<String>) -> EngineError {
    EngineError::InvalidKey {
        key,
        why: why.into(),
    }
}

fn map_gguf(e: shuku_gguf::Error) -> EngineError {
    match e {
        shuku_gguf::Error::MissingKey { key } => EngineError::MissingKey(key),
        e => EngineError::Gguf(e),
    }
}

impl ModelConfig {
    /// Reads the configuration of `file`, refusing unknown families and inconsistent values.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
        let arch_name = file.get_str("general.architecture").map_err(map_gguf)?;
        let arch = Arch::from_name(arch_name)?;
        let p = ArchParams::from_gguf(file).map_err(map_gguf)?;
        let k = |s: &str| format!("{}.{s}", p.arch);

        let n_layer = p.block_count as usize;
        let n_embd = p.embedding_length as usize;
        if n_layer == 0 || n_embd == 0 {
            return Err(key_err(k("block_count"), "model has no layers or no width"));
        }
        let per_layer = |v: &shuku_gguf::PerLayer<u32>, key: &str| -> Result<Vec<usize>> {
            (0..n_layer)
                .map(|i| {
                    v.get(i).map(|x| x as usize).ok_or_else(|| {
                        key_err(k(key), format!("per-layer array shorter than {n_layer}"))
                    })
                })
                .collect()
        };
        let n_head = per_layer(&p.head_count, "attention.head_count")?;
        let n_head_kv = per_layer(&p.head_count_kv, "attention.head_count_kv")?;
        let n_ff = per_layer(&p.feed_forward_length, "feed_forward_length")?;
        let h0 = n_head[0];
        if h0 == 0 {
            return Err(key_err(k("attention.head_count"), "layer 0 has no heads"));
        }
        // Each width defaults to `n_embd / n_head` on its own, as in llama.cpp: a file giving only
        // `key_length` does not set the value width.
        let head_dim = p.key_length.map_or(n_embd / h0, |v| v as usize);
        let head_dim_v = p.value_length.map_or(n_embd / h0, |v| v as usize);
        for (i, (&h, &hkv)) in n_head.iter().zip(&n_head_kv).enumerate() {
            if h == 0 || hkv == 0 || h % hkv != 0 {
                return Err(key_err(
                    k("attention.head_count_kv"),
                    format!("layer {i}: {h} query heads cannot share {hkv} key/value heads"),
                ));
            }
        }
        let n_rot = p.rope_dimension_count.map_or(head_dim, |v| v as usize);
        if n_rot > head_dim || n_rot % 2 != 0 || head_dim == 0 {
            return Err(key_err(
                k("rope.dimension_count"),
                format!("{n_rot} rotated dimensions for heads of {head_dim}"),
            ));
        }
        check_head_widths(arch, head_dim, head_dim_v, n_rot, &k)?;
        let (rope_scaling, rope_freq_scale) = rope_scaling(file, &k)?;
        let token_embd = file
            .tensor_info("token_embd.weight")
            .ok_or_else(|| EngineError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = match token_embd.dims.as_slice() {
            [_, v] => *v as usize,
            _ => {
                return Err(EngineError::BadShape {
                    name: "token_embd.weight".into(),
                    expected: vec![n_embd as u64, 0],
                    found: token_embd.dims.clone(),
                })
            }
        };

        let rope_base = p.rope_freq_base;
        let (rope_style, embd_scale, attn_scale, swa) = match arch {
            Arch::Llama => (
                RopeStyle::Normal,
                None,
                file.opt_f32(&k("attention.scale"))
                    .map_err(map_gguf)?
                    .unwrap_or(1.0 / (head_dim as f32).sqrt()),
                vec![None; n_layer],
            ),
            // phi3's `attention.sliding_window` is read by llama.cpp and then switched off (its
            // conversions do not record which layers are local), so every layer attends fully.
            Arch::Qwen2 | Arch::Qwen3 | Arch::Phi3 => (
                RopeStyle::Neox,
                None,
                1.0 / (head_dim as f32).sqrt(),
                vec![None; n_layer],
            ),
            Arch::Gemma3 => {
                // llama.cpp: the 27B scales by n_embd/n_head, the others by the key length.
                let attn_scale = if n_layer == 62 {
                    1.0 / ((n_embd / h0) as f32).sqrt()
                } else {
                    1.0 / (head_dim as f32).sqrt()
                };
                (
                    RopeStyle::Neox,
                    Some((n_embd as f32).sqrt()),
                    attn_scale,
                    gemma3_swa(file, n_layer, &k)?,
                )
            }
        };
        // Local (sliding-window) layers of Gemma 3 keep RoPE base 10 000 unless the file says.
        let rope_base_swa = file
            .opt_f32(&k("rope.freq_base_swa"))
            .map_err(map_gguf)?
            .unwrap_or(10_000.0);
        let layers = (0..n_layer)
            .map(|i| LayerConfig {
                n_head: n_head[i],
                n_head_kv: n_head_kv[i],
                n_ff: n_ff[i],
                sliding_window: swa[i],
                rope_base: if swa[i].is_some() {
                    rope_base_swa
                } else {
                    rope_base
                },
                rope_freq_scale: if swa[i].is_some() {
                    1.0
                } else {
                    rope_freq_scale
                },
            })
            .collect();
        let rope_attn_factor = file
            .opt_f32(&k("rope.scaling.attn_factor"))
            .map_err(map_gguf)?
            .unwrap_or(1.0);
        if !(rope_attn_factor.is_finite() && rope_attn_factor > 0.0) {
            return Err(key_err(k("rope.scaling.attn_factor"), "must be positive"));
        }
        let n_ctx_orig = match file
            .opt_u32(&k("rope.scaling.original_context_length"))
            .map_err(map_gguf)?
        {
            Some(n) if n > 0 => n as usize,
            _ => p.context_length as usize,
        };
        let final_logit_softcap = file
            .opt_f32(&k("final_logit_softcapping"))
            .map_err(map_gguf)?
            .filter(|&c| c > 0.0);
        Ok(ModelConfig {
            arch,
            n_embd,
            n_vocab,
            head_dim,
            head_dim_v,
            n_rot,
            rope_style,
            rope_scaling,
            rope_freq_scale,
            rope_attn_factor,
            n_ctx_orig,
            rms_eps: p.rms_norm_eps,
            n_ctx_train: p.context_length as usize,
            attn_scale,
            embd_scale,
            final_logit_softcap,
            layers,
        })
    }

    /// Number of layers.
    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }
}

/// Refuses head widths that llama.cpp's graph for `arch` does not accept (it asserts or throws on
/// them, so there is no llama.cpp behaviour to match): llama, deci, qwen2 and qwen3 need V heads as
/// wide as Q/K heads and RoPE over the whole head; phi3 needs the equal widths only (it rotates
/// part of the head).
fn check_head_widths(
    arch: Arch,
    head_dim: usize,
    head_dim_v: usize,
    n_rot: usize,
    k: &dyn Fn(&str) -> String,
) -> Result<()> {
    let (equal_widths, full_rotation) = match arch {
        Arch::Llama | Arch::Qwen2 | Arch::Qwen3 => (true, true),
        Arch::Phi3 => (true, false),
        Arch::Gemma3 => (false, false),
    };
    let name = arch.name();
    if equal_widths && head_dim_v != head_dim {
        return Err(key_err(
            k("attention.value_length"),
            format!("{name} needs value heads as wide as key heads ({head_dim}), not {head_dim_v}"),
        ));
    }
    if full_rotation && n_rot != head_dim {
        return Err(key_err(
            k("rope.dimension_count"),
            format!("{name} rotates whole heads of {head_dim}, not {n_rot} dimensions"),
        ));
    }
    Ok(())
}

/// `rope.scaling.type` and the position scale it implies, read as llama.cpp reads them: an absent
/// type means `linear`; the factor is `rope.scaling.factor`, else the older `rope.scale_linear`,
/// and 0 or absent means no scaling; `none` never scales. Types the engine does not implement
/// (YaRN, or anything llama.cpp would not recognise) are refused rather than run unscaled.
fn rope_scaling(file: &GgufFile, k: &dyn Fn(&str) -> String) -> Result<(RopeScaling, f32)> {
    let kind = match file.opt_str(&k("rope.scaling.type")).map_err(map_gguf)? {
        None | Some("linear") => RopeScaling::Linear,
        Some("none") => RopeScaling::None,
        Some("longrope") => RopeScaling::LongRope,
        Some(other) => {
            return Err(key_err(
                k("rope.scaling.type"),
                format!("RoPE scaling `{other}` is not supported"),
            ))
        }
    };
    let mut factor_key = k("rope.scaling.factor");
    let mut factor = file.opt_f32(&factor_key).map_err(map_gguf)?;
    if factor.is_none() {
        factor_key = k("rope.scale_linear");
        factor = file.opt_f32(&factor_key).map_err(map_gguf)?;
    }
    let scale = match factor {
        _ if kind == RopeScaling::None => 1.0,
        None | Some(0.0) => 1.0,
        Some(f) if f.is_finite() && f > 0.0 => 1.0 / f,
        Some(f) => return Err(key_err(factor_key, format!("{f} is not a positive factor"))),
    };
    Ok((kind, scale))
}

/// Gemma 3's sliding-window layers: `attention.sliding_window` sets the window; the pattern is
/// `attention.sliding_window_pattern` when given (a per-layer bool array, or a period), else every
/// 6th layer is global (llama.cpp's default: layer `i` is local when `i % 6 < 5`).
fn gemma3_swa(
    file: &GgufFile,
    n_layer: usize,
    k: &dyn Fn(&str) -> String,
) -> Result<Vec<Option<usize>>> {
    let window = match file
        .opt_u32(&k("attention.sliding_window"))
        .map_err(map_gguf)?
    {
        Some(w) if w > 0 => w as usize,
        _ => return Ok(vec![None; n_layer]),
    };
    let key = k("attention.sliding_window_pattern");
    let local: Vec<bool> = match file.get(&key) {
        None => (0..n_layer).map(|i| i % 6 < 5).collect(),
        Some(shuku_gguf::Value::Array(a)) => {
            let v: Option<Vec<bool>> = (0..a.len())
                .map(|i| a.get(i).and_then(|v| v.as_bool()))
                .collect();
            match v {
                Some(v) if v.len() >= n_layer => v[..n_layer].to_vec(),
                _ => return Err(key_err(key, "expected one bool per layer")),
            }
        }
        Some(v) => match v.as_u32() {
            Some(0) => vec![true; n_layer],
            Some(n) => (0..n_layer)
                .map(|i| i % n as usize + 1 < n as usize)
                .collect(),
            None => return Err(key_err(key, "expected an integer or a bool array")),
        },
    };
    Ok(local.into_iter().map(|l| l.then_some(window)).collect())
}
