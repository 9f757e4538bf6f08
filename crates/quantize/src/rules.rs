//! Which type each tensor gets: llama-quantize's per-tensor rules (`llama-quant.cpp`:
//! `tensor_allows_quantization`, `llama_tensor_get_type_impl`, `tensor_type_fallback`), so that a
//! preset here names the same mixture of types as there.
//!
//! The rules count tensors as they go (the `i`-th `attn_v`, the `i`-th `ffn_down`), so
//! [`plan_types`] walks the tensors in llama.cpp's order ([`llama_cpp_order`]: by layer, then by
//! name), whatever order the source holds them in.

use regex::Regex;
use shuku_gguf::LlamaFileType;
use shuku_quants::QuantType;

use crate::error::{QuantizeError, Result};

/// What the rules need to know about the model (from its GGUF hyper-parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFacts {
    /// `general.architecture`.
    pub arch: String,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Query heads of layer 0.
    pub n_head: usize,
    /// Key/value heads of layer 0.
    pub n_head_kv: usize,
    /// Experts per MoE layer (0 for a dense model).
    pub n_expert: usize,
}

impl ModelFacts {
    /// `hparams.n_gqa()`: query heads per key/value head (0 without key/value heads).
    fn n_gqa(&self) -> usize {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// llama.cpp's `LLM_TYPE_70B` (the only model size its rules look at).
    fn is_70b(&self) -> bool {
        match self.arch.as_str() {
            "llama" => self.n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

/// The user's choices that change the per-tensor types.
#[derive(Debug, Clone, Default)]
pub struct TypeOptions {
    /// `--pure`: every quantizable tensor gets the preset's default type (fallbacks still apply).
    pub pure: bool,
    /// `--leave-output-tensor`: `output.weight` keeps its type.
    pub leave_output_tensor: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<QuantType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<QuantType>,
    /// `--tensor-type REGEX=TYPE`, first match wins.
    pub tensor_types: Vec<(Regex, QuantType)>,
    /// Whether an importance matrix is given (some rules depend on it).
    pub has_imatrix: bool,
}

/// A tensor as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorShape {
    /// GGUF name.
    pub name: String,
    /// ggml dimensions (`ne[0]` first: the row length).
    pub ne: Vec<usize>,
    /// Its type in the source.
    pub ty: QuantType,
}

/// The type chosen for each tensor (in the order given) and how many needed a fallback type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePlan {
    /// One type per tensor, in the order of the input slice.
    pub types: Vec<QuantType>,
    /// Tensors whose row length forced a fallback type.
    pub n_fallback: usize,
}

/// The tensor type a preset stands for (`llama_ftype_get_default_type`), for the presets shuku
/// writes.
pub fn default_type(ftype: LlamaFileType) -> Option<QuantType> {
    use LlamaFileType as F;
    Some(match ftype {
        F::AllF32 => QuantType::F32,
        F::MostlyF16 => QuantType::F16,
        F::MostlyBF16 => QuantType::BF16,
        F::MostlyQ4_0 => QuantType::Q4_0,
        F::MostlyQ4_1 => QuantType::Q4_1,
        F::MostlyQ5_0 => QuantType::Q5_0,
        F::MostlyQ5_1 => QuantType::Q5_1,
        F::MostlyQ8_0 => QuantType::Q8_0,
        F::MostlyQ2_K | F::MostlyQ2_K_S => QuantType::Q2_K,
        F::MostlyQ3_K_S | F::MostlyQ3_K_M | F::MostlyQ3_K_L => QuantType::Q3_K,
        F::MostlyQ4_K_S | F::MostlyQ4_K_M => QuantType::Q4_K,
        F::MostlyQ5_K_S | F::MostlyQ5_K_M => QuantType::Q5_K,
        F::MostlyQ6_K => QuantType::Q6_K,
        _ => return None,
    })
}

/// llama.cpp's tensor order (`weight_name_comparer`): by block number (tensors outside blocks
/// first), then by name.
pub fn llama_cpp_order(a: &str, b: &str) -> std::cmp::Ordering {
    layer_of(a).cmp(&layer_of(b)).then_with(|| a.cmp(b))
}

/// `sscanf(name, "blk.%d.")`, or -1.
fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            rest[digits.len()..].starts_with('.').then_some(digits)
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(-1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl Category {
    fn of(name: &str) -> Category {
        if name == "output.weight" {
            Category::Output
        } else if is_token_embd(name) {
            Category::TokenEmbd
        } else if name.contains("attn_qkv.weight") {
            Category::AttnQkv
        } else if name.contains("attn_kv_b.weight") {
            Category::AttnKvB
        } else if name.contains("attn_v.weight") {
            Category::AttnV
        } else if name.contains("attn_k.weight") {
            Category::AttnK
        } else if name.contains("attn_q.weight") {
            Category::AttnQ
        } else if name.contains("attn_output.weight") {
            Category::AttnOutput
        } else if name.contains("ffn_up") {
            Category::FfnUp
        } else if name.contains("ffn_gate") {
            Category::FfnGate
        } else if name.contains("ffn_down") {
            Category::FfnDown
        } else {
            Category::Other
        }
    }

    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

fn is_token_embd(name: &str) -> bool {
    name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

/// `tensor_allows_quantization`, for the tensor families of the architectures shuku handles and
/// the small special tensors llama.cpp keeps at full precision everywhere.
pub fn allows_quantization(name: &str, n_dims: usize, options: &TypeOptions) -> bool {
    const KEEP: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    n_dims >= 2
        && name.ends_with("weight")
        && !(options.leave_output_tensor && name == "output.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !KEEP.iter().any(|k| name.contains(k))
}

/// `use_more_bits`: the first and last eighth of the layers, and every third one between.
fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

struct Counters {
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
    has_tied_embeddings: bool,
}

/// Chooses every tensor's type as `llama-quantize` does for `ftype`; `tensors` in any order.
pub fn plan_types(
    tensors: &[TensorShape],
    facts: &ModelFacts,
    ftype: LlamaFileType,
    options: &TypeOptions,
) -> Result<TypePlan> {
    let default = default_type(ftype).ok_or_else(|| QuantizeError::UnsupportedPreset {
        preset: ftype.name().to_string(),
    })?;
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| llama_cpp_order(&tensors[a].name, &tensors[b].name));
    let mut c = Counters {
        n_attention_wv: tensors
            .iter()
            .filter(|t| Category::of(&t.name).is_attn_v())
            .count(),
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        has_tied_embeddings: !tensors.iter().any(|t| t.name == "output.weight"),
    };
    let mut types = vec![QuantType::F32; tensors.len()];
    let mut n_fallback = 0;
    for i in order {
        let t = &tensors[i];
        types[i] = tensor_type(t, facts, ftype, default, options, &mut c, &mut n_fallback)?;
    }
    Ok(TypePlan { types, n_fallback })
}

/// `llama_tensor_get_type`.
fn tensor_type(
    t: &TensorShape,
    facts: &ModelFacts,
    ftype: LlamaFileType,
    default: QuantType,
    options: &TypeOptions,
    c: &mut Counters,
    n_fallback: &mut usize,
) -> Result<QuantType> {
    if !allows_quantization(&t.name, t.ne.len(), options) {
        return Ok(t.ty);
    }
    let category = Category::of(&t.name);
    if let (Some(ty), Category::TokenEmbd) = (options.token_embedding_type, category) {
        let named = t.name == "per_layer_token_embd.weight"
            && options
                .tensor_types
                .iter()
                .any(|(re, _)| re.is_match(&t.name));
        if !named {
            return Ok(ty);
        }
    }
    if let (Some(ty), Category::Output) = (options.output_tensor_type, category) {
        return Ok(ty);
    }
    if !default.is_quantized() {
        return Ok(default);
    }
    let manual = options
        .tensor_types
        .iter()
        .find(|(re, _)| re.is_match(&t.name))
        .map(|(_, ty)| *ty);
    let mut new_type = manual.unwrap_or(default);
    if manual.is_none() && !options.pure {
        new_type = preset_rules(t, facts, ftype, new_type, category, options, c)?;
    }
    fallback(t, new_type, n_fallback)
}

/// `tensor_type_fallback`: a type whose block does not divide the row length falls back to a
/// 32-block type of similar size, and to F16 when even that does not fit.
fn fallback(t: &TensorShape, target: QuantType, n_fallback: &mut usize) -> Result<QuantType> {
    let ncols = t.ne[0];
    if ncols.is_multiple_of(target.block_size()) {
        return Ok(target);
    }
    *n_fallback += 1;
    let to = match target {
        QuantType::Q2_K | QuantType::Q3_K => QuantType::Q4_0,
        QuantType::Q4_K => QuantType::Q5_0,
        QuantType::Q5_K => QuantType::Q5_1,
        QuantType::Q6_K => QuantType::Q8_0,
        other if other.block_size() <= 32 => other,
        other => {
            return Err(QuantizeError::NoFallback {
                tensor: t.name.clone(),
                ty: other,
                row_length: ncols,
            })
        }
    };
    Ok(if !ncols.is_multiple_of(to.block_size()) {
        QuantType::F16
    } else {
        to
    })
}

/// `llama_tensor_get_type_impl` for the presets shuku writes (the IQ and MoE-only presets have
/// no entry here: [`default_type`] refuses them first).
fn preset_rules(
    t: &TensorShape,
    facts: &ModelFacts,
    ftype: LlamaFileType,
    mut new_type: QuantType,
    category: Category,
    options: &TypeOptions,
    c: &mut Counters,
) -> Result<QuantType> {
    use LlamaFileType as F;
    use QuantType as Q;
    let layer = |i: usize, n: usize| -> Result<(usize, usize)> {
        if facts.n_expert > 1 {
            let l = layer_of(&t.name);
            if l < 0 || l as usize >= n {
                return Err(QuantizeError::BadLayer {
                    tensor: t.name.clone(),
                    n_layer: n,
                });
            }
            return Ok((l as usize, n));
        }
        Ok((i, n))
    };
    let n_layer = facts.n_layer;
    if category == Category::Output || (c.has_tied_embeddings && category == Category::TokenEmbd) {
        if let Some(ty) = options.output_tensor_type {
            new_type = ty;
        } else if facts.is_falcon() || !t.ne[0].is_multiple_of(new_type.block_size()) {
            new_type = Q::Q8_0;
        } else if new_type != Q::Q8_0 {
            new_type = Q::Q6_K;
        }
    } else if category == Category::TokenEmbd {
        if let Some(ty) = options.token_embedding_type {
            new_type = ty;
        }
    } else if category.is_attn_v() {
        let gqa4 = facts.n_gqa() >= 4;
        match ftype {
            F::MostlyQ2_K => new_type = if gqa4 { Q::Q4_K } else { Q::Q3_K },
            F::MostlyQ2_K_S if gqa4 => new_type = Q::Q4_K,
            F::MostlyQ3_K_M => {
                new_type = if c.i_attention_wv < 2 {
                    Q::Q5_K
                } else {
                    Q::Q4_K
                }
            }
            F::MostlyQ3_K_L => new_type = Q::Q5_K,
            F::MostlyQ4_K_M | F::MostlyQ5_K_M
                if use_more_bits(c.i_attention_wv, c.n_attention_wv) =>
            {
                new_type = Q::Q6_K
            }
            F::MostlyQ4_K_S if c.i_attention_wv < 4 => new_type = Q::Q5_K,
            _ => {}
        }
        if facts.is_70b() && matches!(new_type, Q::Q3_K | Q::Q4_K) {
            new_type = Q::Q5_K;
        }
        if facts.n_expert == 8 {
            new_type = Q::Q8_0;
        }
        c.i_attention_wv += 1;
    } else if category == Category::AttnK {
        if facts.n_expert == 8 {
            new_type = Q::Q8_0;
        }
    } else if category == Category::FfnDown {
        let (i_layer, n) = layer(c.i_ffn_down, n_layer)?;
        let more = use_more_bits(i_layer, n);
        match ftype {
            F::MostlyQ2_K => new_type = Q::Q3_K,
            F::MostlyQ2_K_S if i_layer < n / 8 => new_type = Q::Q4_K,
            F::MostlyQ3_K_M => {
                new_type = if i_layer < n / 16 {
                    Q::Q5_K
                } else if !facts.is_falcon() || more {
                    Q::Q4_K
                } else {
                    Q::Q3_K
                }
            }
            F::MostlyQ3_K_L => new_type = if facts.is_falcon() { Q::Q4_K } else { Q::Q5_K },
            F::MostlyQ4_K_M => {
                if facts.is_falcon() {
                    new_type = if i_layer < n / 16 {
                        Q::Q6_K
                    } else if more {
                        Q::Q5_K
                    } else {
                        Q::Q4_K
                    };
                } else if more {
                    new_type = Q::Q6_K;
                }
            }
            F::MostlyQ5_K_M if more => new_type = Q::Q6_K,
            F::MostlyQ4_K_S if !facts.is_falcon() && i_layer < n / 8 => new_type = Q::Q5_K,
            F::MostlyQ4_0 | F::MostlyQ5_0 if options.has_imatrix && i_layer < n / 8 => {
                new_type = if ftype == F::MostlyQ4_0 {
                    Q::Q4_1
                } else {
                    Q::Q5_1
                };
            }
            _ => {}
        }
        c.i_ffn_down += 1;
    } else if category == Category::AttnOutput {
        if !facts.is_falcon() {
            if facts.n_expert == 8 {
                if matches!(
                    ftype,
                    F::MostlyQ2_K
                        | F::MostlyQ3_K_S
                        | F::MostlyQ3_K_M
                        | F::MostlyQ4_K_S
                        | F::MostlyQ4_K_M
                ) {
                    new_type = Q::Q5_K;
                }
            } else {
                match ftype {
                    F::MostlyQ2_K => new_type = Q::Q3_K,
                    F::MostlyQ3_K_M => new_type = Q::Q4_K,
                    F::MostlyQ3_K_L => new_type = Q::Q5_K,
                    _ => {}
                }
            }
        } else if ftype == F::MostlyQ3_K_L {
            new_type = Q::Q4_K;
        }
    } else if category == Category::AttnQkv {
        match ftype {
            F::MostlyQ3_K_M | F::MostlyQ3_K_L => new_type = Q::Q4_K,
            F::MostlyQ4_K_M => new_type = Q::Q5_K,
            F::MostlyQ5_K_M => new_type = Q::Q6_K,
            _ => {}
        }
    } else if category == Category::FfnGate {
        layer(c.i_ffn_gate, n_layer)?;
        c.i_ffn_gate += 1;
    } else if category == Category::FfnUp {
        layer(c.i_ffn_up, n_layer)?;
        c.i_ffn_up += 1;
    }
    Ok(new_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_by_layer_then_name() {
        let mut names = vec![
            "blk.10.attn_q.weight",
            "output.weight",
            "blk.2.ffn_up.weight",
            "blk.2.attn_k.weight",
            "token_embd.weight",
            "blk.x.weird",
        ];
        names.sort_by(|a, b| llama_cpp_order(a, b));
        assert_eq!(
            names,
            vec![
                "blk.x.weird",
                "output.weight",
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_q.weight",
            ]
        );
    }

    #[test]
    fn more_bits_layers_of_a_32_layer_model() {
        let more: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    fn shapes(n_layer: usize) -> Vec<TensorShape> {
        let mut v = vec![TensorShape {
            name: "token_embd.weight".into(),
            ne: vec![512, 1000],
            ty: QuantType::F32,
        }];
        for l in 0..n_layer {
            for (t, ne0) in [("attn_v", 512), ("ffn_down", 1536), ("attn_norm", 512)] {
                v.push(TensorShape {
                    name: format!("blk.{l}.{t}.weight"),
                    ne: if t == "attn_norm" {
                        vec![ne0]
                    } else {
                        vec![ne0, 512]
                    },
                    ty: QuantType::F32,
                });
            }
        }
        v
    }

    #[test]
    fn q4_k_m_promotes_attn_v_and_ffn_down_in_the_more_bits_layers() {
        let facts = ModelFacts {
            arch: "llama".into(),
            n_layer: 8,
            n_head: 8,
            n_head_kv: 8,
            n_expert: 0,
        };
        let t = shapes(8);
        let plan = plan_types(
            &t,
            &facts,
            LlamaFileType::MostlyQ4_K_M,
            &TypeOptions::default(),
        )
        .unwrap();
        let of = |name: &str| plan.types[t.iter().position(|s| s.name == name).unwrap()];
        // Tied embeddings take the output's type.
        assert_eq!(of("token_embd.weight"), QuantType::Q6_K);
        assert_eq!(of("blk.0.attn_norm.weight"), QuantType::F32);
        for l in 0..8 {
            let want = if use_more_bits(l, 8) {
                QuantType::Q6_K
            } else {
                QuantType::Q4_K
            };
            assert_eq!(of(&format!("blk.{l}.attn_v.weight")), want, "layer {l}");
            assert_eq!(of(&format!("blk.{l}.ffn_down.weight")), want, "layer {l}");
        }
        let pure = plan_types(
            &t,
            &facts,
            LlamaFileType::MostlyQ4_K_M,
            &TypeOptions {
                pure: true,
                ..TypeOptions::default()
            },
        )
        .unwrap();
        assert!(pure
            .types
            .iter()
            .zip(&t)
            .all(|(ty, s)| s.ne.len() == 1 || *ty == QuantType::Q4_K));
    }
}
