//! The decoder graph, node for node as onnxruntime-genai's model builder lays out llama-family models:
//! `Gather` embedding; per layer `SimplifiedLayerNormalization` (the first) or
//! `SkipSimplifiedLayerNormalization` (the rest, which also add the residual), q/k/v projections,
//! `GroupQueryAttention` with rotary inside (cos/sin caches as initializers, positions from `seqlens_k`),
//! the output projection, and a SwiGLU FFN (`Sigmoid`, `Mul`, `Mul`); a final skip-norm and the LM head.
//! Linear weights are `MatMulNBits` (4/8-bit, blocks along the input width, one scale and one zero point
//! per block) or a `MatMul` against the transposed float matrix. Each layer keeps its own head counts and
//! FFN width, so pruned models export without padding.

use half::f16;
use rayon::prelude::*;
use shuku_model::{Activation, LlamaConfig, ModelType};

use super::graph::{Attr, Dim, GraphWriter};
use super::proto::data_type;
use crate::error::{ExportError, Result};
use crate::groupwise;
use crate::host::HostTensor;
use crate::options::WeightBits;
use crate::progress::Progress;

/// `MatMulNBits`' accuracy level: 4 lets the CPU kernels quantize activations to int8 blockwise, the
/// setting onnxruntime-genai's builder uses for CPU int4 models.
pub const ACCURACY_LEVEL: i64 = 4;

/// Float weights up to this many values (norm gains, biases) are not stored as f16 in quantized exports.
const SMALL_WEIGHT: usize = 16384;

/// The graph's input and output names (the builder's, which `genai_config.json` repeats).
pub mod names {
    /// Token ids.
    pub const INPUT_IDS: &str = "input_ids";
    /// 1 for every real token of past and present.
    pub const ATTENTION_MASK: &str = "attention_mask";
    /// Logits of every new position.
    pub const LOGITS: &str = "logits";
    /// Past keys of a layer (`%d` is the layer).
    pub const PAST_KEY: &str = "past_key_values.%d.key";
    /// Past values of a layer.
    pub const PAST_VALUE: &str = "past_key_values.%d.value";
    /// Present keys of a layer.
    pub const PRESENT_KEY: &str = "present.%d.key";
    /// Present values of a layer.
    pub const PRESENT_VALUE: &str = "present.%d.value";

    /// A per-layer name with its index filled in.
    pub fn layer(pattern: &str, layer: usize) -> String {
        pattern.replace("%d", &layer.to_string())
    }
}

/// The initializers of one `MatMulNBits` weight.
struct PackedWeight {
    codes: String,
    scales: String,
    /// `None` in symmetric exports (the runtime's default zero point, the middle code).
    zero_points: Option<String>,
    n: usize,
    k: usize,
    bits: u32,
    zero_points_per_row: usize,
}

impl PackedWeight {
    /// The inputs of a node reading these codes: `first`, `second`, the scales, the zero points if any.
    fn inputs<'a>(&'a self, first: &'a str, second: &'a str) -> Vec<&'a str> {
        let mut v = vec![first, second, self.scales.as_str()];
        v.extend(self.zero_points.as_deref());
        v
    }
}

/// How the graph holds the embedding matrix.
enum Embedding {
    /// A float initializer (the name the graph reads).
    Float(String),
    /// `MatMulNBits` codes, shared with a tied LM head.
    Packed(PackedWeight),
}

/// Rows of several `[out, in]` weights (or biases) stacked into one.
fn stack_rows(name: String, parts: &[HostTensor]) -> HostTensor {
    let cols = parts.first().map_or(0, |t| t.rows_cols().1);
    let rows: usize = parts.iter().map(|t| t.rows_cols().0).sum();
    let shape = if parts.first().is_some_and(|t| t.shape.len() == 2) {
        vec![rows, cols]
    } else {
        vec![rows * cols]
    };
    HostTensor {
        name,
        shape,
        data: parts.iter().flat_map(|t| t.data.iter().copied()).collect(),
    }
}

/// Builds a decoder graph from HF-named host tensors.
pub(crate) struct DecoderBuilder<'a> {
    pub(crate) g: GraphWriter,
    pub(crate) config: &'a LlamaConfig,
    pub(crate) bits: WeightBits,
    pub(crate) group: usize,
    /// Quantize with the zero point fixed at the middle code (no zero-point tensors).
    pub(crate) symmetric: bool,
}

/// The families the graph covers: llama's block, with q/k/v biases (qwen2) and a sliding window (mistral).
pub fn check_supported(config: &LlamaConfig) -> Result<()> {
    let unsupported = |what: &str| ExportError::Unsupported {
        format: "onnx",
        model_type: config.model_type.as_str().into(),
        what: what.into(),
    };
    match config.model_type {
        ModelType::Llama | ModelType::Mistral | ModelType::Qwen2 => {}
        ModelType::Qwen3 => return Err(unsupported("per-head q/k norms")),
        ModelType::Phi3 => return Err(unsupported("fused qkv/gate_up projections and LongRoPE")),
        ModelType::Gemma3 => return Err(unsupported("(1 + w) norms, post-norms and GELU")),
    }
    if config.hidden_act != Activation::Silu {
        return Err(unsupported("a GELU FFN"));
    }
    Ok(())
}

impl DecoderBuilder<'_> {
    fn constant_i64(&mut self, name: &str, dims: &[usize], values: &[i64]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.g.initializer(name, data_type::INT64, dims, &bytes)
    }

    fn float_initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.g.initializer(name, data_type::FLOAT, dims, &bytes)
    }

    /// A float weight as the graph reads it: f32 as is, or stored as f16 and cast at load (constant
    /// folding makes the cast free at run time) for every export but f32 — except small vectors (norm
    /// gains, biases), which stay f32 in quantized exports.
    fn weight(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<String> {
        let small = values.len() <= SMALL_WEIGHT;
        if self.bits == WeightBits::F32 || (small && self.bits != WeightBits::F16) {
            self.float_initializer(name, dims, values)?;
            return Ok(name.into());
        }
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        let stored = format!("{name}.fp16");
        self.g
            .initializer(&stored, data_type::FLOAT16, dims, &bytes)?;
        self.g.node(
            "Cast",
            "",
            &format!("{name}/Cast"),
            &[&stored],
            &[name],
            &[("to", Attr::Int(data_type::FLOAT as i64))],
        );
        Ok(name.into())
    }

    /// Quantizes an HF `[out, in]` weight into `MatMulNBits`' initializers named after `base`: codes
    /// `[N, blocks, group · bits / 8]`, f32 scales `[N · blocks]`, zero points packed per row like the codes.
    fn pack_weight(&mut self, base: &str, w: &HostTensor) -> Result<PackedWeight> {
        let (n, k) = w.rows_cols();
        let bits = self.bits.quantized().unwrap_or(4);
        let group = self.group;
        // The exporter checked every width (`check_group_size`) before building.
        debug_assert_eq!(k % group, 0, "{}", w.name);
        let blocks = k / group;
        // Rows are whole blocks (k is a multiple of the group), so chunks of the data are blocks in
        // row-major order.
        let symmetric = self.symmetric;
        let groups: Vec<groupwise::ZeroPointGroup> = w
            .data
            .par_chunks(group)
            .map(|chunk| {
                if symmetric {
                    groupwise::symmetric(chunk, bits)
                } else {
                    groupwise::zero_point(chunk, bits, |x| x)
                }
            })
            .collect();
        let codes: Vec<u8> = groups
            .iter()
            .flat_map(|q| groupwise::pack_u8(&q.codes, bits))
            .collect();
        let scales: Vec<f32> = groups.iter().map(|q| q.scale).collect();
        let zero_codes: Vec<u8> = groups.iter().map(|q| q.zero_point).collect();
        let zero_points: Vec<u8> = zero_codes
            .chunks(blocks)
            .flat_map(|row| groupwise::pack_u8(row, bits))
            .collect();
        let packed = PackedWeight {
            codes: format!("{base}_Q{bits}"),
            scales: format!("{base}_scales"),
            zero_points: (!symmetric).then(|| format!("{base}_zero_points")),
            n,
            k,
            bits,
            zero_points_per_row: zero_points.len() / n.max(1),
        };
        let blob = group * bits as usize / 8;
        self.g
            .initializer(&packed.codes, data_type::UINT8, &[n, blocks, blob], &codes)?;
        self.float_initializer(&packed.scales, &[n, blocks], &scales)?;
        if let Some(name) = &packed.zero_points {
            self.g.initializer(
                name,
                data_type::UINT8,
                &[n, packed.zero_points_per_row],
                &zero_points,
            )?;
        }
        Ok(packed)
    }

    fn matmul_nbits(&mut self, name: &str, input: &str, w: &PackedWeight, out: &str) {
        self.g.node(
            "MatMulNBits",
            "com.microsoft",
            name,
            &w.inputs(input, &w.codes),
            &[out],
            &[
                ("K", Attr::Int(w.k as i64)),
                ("N", Attr::Int(w.n as i64)),
                ("bits", Attr::Int(w.bits as i64)),
                ("block_size", Attr::Int(self.group as i64)),
                ("accuracy_level", Attr::Int(ACCURACY_LEVEL)),
            ],
        );
    }

    /// `x · Wᵀ (+ b)` for an HF `[out, in]` weight; returns the output name.
    fn linear(
        &mut self,
        name: &str,
        input: &str,
        w: &HostTensor,
        bias: Option<&HostTensor>,
    ) -> Result<String> {
        let (n, k) = w.rows_cols();
        let out = format!("{name}/output_0");
        match self.bits.quantized() {
            Some(_) => {
                let packed = self.pack_weight(&format!("{name}.weight"), w)?;
                self.matmul_nbits(name, input, &packed, &out);
            }
            None => {
                let mut t = vec![0f32; n * k];
                for r in 0..n {
                    for (c, v) in w.row(r).iter().enumerate() {
                        t[c * n + r] = *v;
                    }
                }
                let wn = self.weight(&format!("{name}.weight"), &[k, n], &t)?;
                self.g.node("MatMul", "", name, &[input, &wn], &[&out], &[]);
            }
        }
        match bias {
            Some(b) => {
                let bn = self.weight(&format!("{name}.bias"), &[b.len()], &b.data)?;
                let added = format!("{name}/Add/output_0");
                self.g.node(
                    "Add",
                    "",
                    &format!("{name}/Add"),
                    &[&out, &bn],
                    &[&added],
                    &[],
                );
                Ok(added)
            }
            None => Ok(out),
        }
    }

    /// The whole graph. `take` hands over each HF tensor by name (each is asked for once).
    pub(crate) fn build(
        mut self,
        mut take: impl FnMut(&str) -> Result<HostTensor>,
        progress: &Progress,
    ) -> Result<super::proto::GraphProto> {
        let cfg = self.config;
        let hd = cfg.head_dim;
        let hidden = cfg.hidden_size;
        let eps = cfg.rms_norm_eps as f32;
        let float = data_type::FLOAT;

        self.g.input(
            names::INPUT_IDS,
            data_type::INT64,
            &[Dim::Named("batch_size"), Dim::Named("sequence_length")],
        );
        self.g.input(
            names::ATTENTION_MASK,
            data_type::INT64,
            &[
                Dim::Named("batch_size"),
                Dim::Named("total_sequence_length"),
            ],
        );
        for (i, l) in cfg.layers.iter().enumerate() {
            for pattern in [names::PAST_KEY, names::PAST_VALUE] {
                self.g.input(
                    &names::layer(pattern, i),
                    float,
                    &[
                        Dim::Named("batch_size"),
                        Dim::Fixed(l.n_kv_heads),
                        Dim::Named("past_sequence_length"),
                        Dim::Fixed(hd),
                    ],
                );
            }
        }
        self.g.output(
            names::LOGITS,
            float,
            &[
                Dim::Named("batch_size"),
                Dim::Named("sequence_length"),
                Dim::Fixed(cfg.vocab_size),
            ],
        );
        for (i, l) in cfg.layers.iter().enumerate() {
            for pattern in [names::PRESENT_KEY, names::PRESENT_VALUE] {
                self.g.output(
                    &names::layer(pattern, i),
                    float,
                    &[
                        Dim::Named("batch_size"),
                        Dim::Fixed(l.n_kv_heads),
                        Dim::Named("total_sequence_length"),
                        Dim::Fixed(hd),
                    ],
                );
            }
        }

        // Attention-mask reformatting: seqlens_k = sum(mask) - 1 and total_seq_len = mask.shape[1], as int32.
        let one_1d = "/model/constants/INT64/[1]";
        let one = "/model/constants/INT64/1";
        self.constant_i64(one_1d, &[1], &[1])?;
        self.constant_i64(one, &[], &[1])?;
        let base = "/model/attn_mask_reformat/attn_mask_subgraph";
        let (rs, sub, cast1) = (
            format!("{base}/ReduceSum"),
            format!("{base}/Sub"),
            format!("{base}/Sub/Cast"),
        );
        self.g.node(
            "ReduceSum",
            "",
            &rs,
            &[names::ATTENTION_MASK, one_1d],
            &[&format!("{rs}/output_0")],
            &[("keepdims", Attr::Int(0))],
        );
        self.g.node(
            "Sub",
            "",
            &sub,
            &[&format!("{rs}/output_0"), one_1d],
            &[&format!("{sub}/output_0")],
            &[],
        );
        let seqlens_k = format!("{cast1}/output_0");
        self.g.node(
            "Cast",
            "",
            &cast1,
            &[&format!("{sub}/output_0")],
            &[&seqlens_k],
            &[("to", Attr::Int(data_type::INT32 as i64))],
        );
        let (shape, gather, cast2) = (
            format!("{base}/Shape"),
            format!("{base}/Gather"),
            format!("{base}/Gather/Cast"),
        );
        self.g.node(
            "Shape",
            "",
            &shape,
            &[names::ATTENTION_MASK],
            &[&format!("{shape}/output_0")],
            &[],
        );
        self.g.node(
            "Gather",
            "",
            &gather,
            &[&format!("{shape}/output_0"), one],
            &[&format!("{gather}/output_0")],
            &[("axis", Attr::Int(0))],
        );
        let total_seq_len = format!("{cast2}/output_0");
        self.g.node(
            "Cast",
            "",
            &cast2,
            &[&format!("{gather}/output_0")],
            &[&total_seq_len],
            &[("to", Attr::Int(data_type::INT32 as i64))],
        );

        // RoPE caches [max_positions, head_dim / 2]; GroupQueryAttention rotates with them.
        let max_pos = cfg.max_position_embeddings;
        let (freqs, mscale) = cfg.rope_scaling.frequencies(hd, cfg.rope_theta, max_pos);
        let mut cos = Vec::with_capacity(max_pos * hd / 2);
        let mut sin = Vec::with_capacity(max_pos * hd / 2);
        for p in 0..max_pos {
            for f in &freqs {
                let a = p as f64 * f;
                cos.push((a.cos() * mscale) as f32);
                sin.push((a.sin() * mscale) as f32);
            }
        }
        self.float_initializer("cos_cache", &[max_pos, hd / 2], &cos)?;
        self.float_initializer("sin_cache", &[max_pos, hd / 2], &sin)?;

        // Embedding: a float Gather, or in quantized exports GatherBlockQuantized over the same 4/8-bit
        // codes a tied LM head multiplies with (one copy of the matrix in the file).
        let embed = take("model.embed_tokens.weight")?;
        progress.step(&embed.name);
        let mut residual: String;
        let embedding = if self.bits.quantized().is_some() {
            let packed = self.pack_weight("model.embed_tokens.weight", &embed)?;
            let row_bytes = packed.k * packed.bits as usize / 8;
            let shape = "/model/constants/INT64/embed_shape";
            self.constant_i64(shape, &[2], &[packed.n as i64, row_bytes as i64])?;
            let reshaped = "/model/embed_tokens/Reshape/output_0";
            self.g.node(
                "Reshape",
                "",
                "/model/embed_tokens/Reshape",
                &[&packed.codes, shape],
                &[reshaped],
                &[],
            );
            residual = "/model/embed_tokens/GatherBlockQuantized/output_0".into();
            self.g.node(
                "GatherBlockQuantized",
                "com.microsoft",
                "/model/embed_tokens/GatherBlockQuantized",
                &packed.inputs(reshaped, names::INPUT_IDS),
                &[&residual],
                &[
                    ("bits", Attr::Int(packed.bits as i64)),
                    ("block_size", Attr::Int(self.group as i64)),
                    ("gather_axis", Attr::Int(0)),
                    ("quantize_axis", Attr::Int(1)),
                ],
            );
            Embedding::Packed(packed)
        } else {
            let ew = self.weight(
                "model.embed_tokens.weight",
                &[cfg.vocab_size, hidden],
                &embed.data,
            )?;
            residual = "/model/embed_tokens/Gather/output_0".into();
            self.g.node(
                "Gather",
                "",
                "/model/embed_tokens/Gather",
                &[&ew, names::INPUT_IDS],
                &[&residual],
                &[],
            );
            Embedding::Float(ew)
        };
        drop(embed);

        let mut pending: Option<String> = None; // sublayer output not yet added to the residual
        for (i, dims) in cfg.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let node = |s: &str| format!("/model/layers.{i}/{s}");
            let norm_in = self.norm(
                &node("input_layernorm/LayerNorm"),
                &format!("{p}.input_layernorm.weight"),
                &mut take,
                &mut residual,
                pending.take(),
                eps,
            )?;
            progress.step(&format!("{p}.self_attn"));
            // q, k and v in one matrix product (the layout the builder writes); GroupQueryAttention
            // splits the packed result.
            let mut qkv_w = Vec::with_capacity(3);
            let mut qkv_b = Vec::with_capacity(3);
            for which in ["q_proj", "k_proj", "v_proj"] {
                qkv_w.push(take(&format!("{p}.self_attn.{which}.weight"))?);
                if cfg.attention_bias {
                    qkv_b.push(take(&format!("{p}.self_attn.{which}.bias"))?);
                }
            }
            let qkv_w = stack_rows(format!("{p}.self_attn.qkv_proj.weight"), &qkv_w);
            let qkv_b = (!qkv_b.is_empty())
                .then(|| stack_rows(format!("{p}.self_attn.qkv_proj.bias"), &qkv_b));
            let qkv = self.linear(
                &node("attn/qkv_proj/MatMul"),
                &norm_in,
                &qkv_w,
                qkv_b.as_ref(),
            )?;
            drop(qkv_w);
            let attn = node("attn/GroupQueryAttention");
            let attn_out = format!("{attn}/output_0");
            let (pk, pv) = (
                names::layer(names::PAST_KEY, i),
                names::layer(names::PAST_VALUE, i),
            );
            let (ck, cv) = (
                names::layer(names::PRESENT_KEY, i),
                names::layer(names::PRESENT_VALUE, i),
            );
            let window = match (
                cfg.sliding_window,
                dims.sliding || cfg.model_type == ModelType::Mistral,
            ) {
                (Some(w), true) => w as i64,
                _ => -1,
            };
            self.g.node(
                "GroupQueryAttention",
                "com.microsoft",
                &attn,
                &[
                    &qkv,
                    "",
                    "",
                    &pk,
                    &pv,
                    &seqlens_k,
                    &total_seq_len,
                    "cos_cache",
                    "sin_cache",
                ],
                &[&attn_out, &ck, &cv],
                &[
                    ("num_heads", Attr::Int(dims.n_heads as i64)),
                    ("kv_num_heads", Attr::Int(dims.n_kv_heads as i64)),
                    ("scale", Attr::Float(cfg.attention_scale() as f32)),
                    ("local_window_size", Attr::Int(window)),
                    ("softcap", Attr::Float(0.0)),
                    ("do_rotary", Attr::Int(1)),
                    ("rotary_interleaved", Attr::Int(0)),
                ],
            );
            let o = take(&format!("{p}.self_attn.o_proj.weight"))?;
            let attn_proj = self.linear(&node("attn/o_proj/MatMul"), &attn_out, &o, None)?;

            let norm_mlp = self.norm(
                &node("post_attention_layernorm/SkipLayerNorm"),
                &format!("{p}.post_attention_layernorm.weight"),
                &mut take,
                &mut residual,
                Some(attn_proj),
                eps,
            )?;
            progress.step(&format!("{p}.mlp"));
            let gate_w = take(&format!("{p}.mlp.gate_proj.weight"))?;
            let gate = self.linear(&node("mlp/gate_proj/MatMul"), &norm_mlp, &gate_w, None)?;
            let up_w = take(&format!("{p}.mlp.up_proj.weight"))?;
            let up = self.linear(&node("mlp/up_proj/MatMul"), &norm_mlp, &up_w, None)?;
            let (sig, act, mul) = (
                node("mlp/act_fn/Sigmoid"),
                node("mlp/act_fn/Mul"),
                node("mlp/Mul"),
            );
            self.g.node(
                "Sigmoid",
                "",
                &sig,
                &[&gate],
                &[&format!("{sig}/output_0")],
                &[],
            );
            self.g.node(
                "Mul",
                "",
                &act,
                &[&gate, &format!("{sig}/output_0")],
                &[&format!("{act}/output_0")],
                &[],
            );
            self.g.node(
                "Mul",
                "",
                &mul,
                &[&format!("{act}/output_0"), &up],
                &[&format!("{mul}/output_0")],
                &[],
            );
            let down_w = take(&format!("{p}.mlp.down_proj.weight"))?;
            pending = Some(self.linear(
                &node("mlp/down_proj/MatMul"),
                &format!("{mul}/output_0"),
                &down_w,
                None,
            )?);
        }
        let final_norm = self.norm(
            "/model/layers.final_norm_layernorm/SkipLayerNorm",
            "model.norm.weight",
            &mut take,
            &mut residual,
            pending.take(),
            eps,
        )?;
        progress.step("lm_head.weight");
        let logits = "/lm_head/MatMul/output_0";
        match (cfg.tie_word_embeddings, embedding) {
            (true, Embedding::Packed(packed)) => {
                self.matmul_nbits("/lm_head/MatMul", &final_norm, &packed, logits)
            }
            // A tied float head reads the embedding through a Transpose (folded at load) instead of a
            // second copy in the file.
            (true, Embedding::Float(ew)) => {
                let t = "/lm_head/Transpose/output_0";
                self.g.node(
                    "Transpose",
                    "",
                    "/lm_head/Transpose",
                    &[&ew],
                    &[t],
                    &[("perm", Attr::Ints(vec![1, 0]))],
                );
                self.g.node(
                    "MatMul",
                    "",
                    "/lm_head/MatMul",
                    &[&final_norm, t],
                    &[logits],
                    &[],
                );
            }
            (false, _) => {
                let head = take("lm_head.weight")?;
                let out = self.linear("/lm_head/MatMul", &final_norm, &head, None)?;
                debug_assert_eq!(out, logits);
            }
        }
        self.g.node(
            "Identity",
            "",
            "/lm_head/Identity",
            &[logits],
            &[names::LOGITS],
            &[],
        );
        self.g.finish()
    }

    /// RMSNorm of the residual stream; with `pending`, first adds it to the residual (the skip form).
    /// Returns the normalised value and updates `residual`.
    fn norm(
        &mut self,
        name: &str,
        weight: &str,
        take: &mut impl FnMut(&str) -> Result<HostTensor>,
        residual: &mut String,
        pending: Option<String>,
        eps: f32,
    ) -> Result<String> {
        let w = take(weight)?;
        let wn = self.weight(weight, &[w.len()], &w.data)?;
        let out = format!("{name}/output_0");
        match pending {
            None => {
                self.g.node(
                    "SimplifiedLayerNormalization",
                    "",
                    name,
                    &[residual.as_str(), &wn],
                    &[&out],
                    &[
                        ("axis", Attr::Int(-1)),
                        ("epsilon", Attr::Float(eps)),
                        ("stash_type", Attr::Int(1)),
                    ],
                );
            }
            Some(sub) => {
                let sum = format!("{name}/output_3");
                self.g.node(
                    "SkipSimplifiedLayerNormalization",
                    "com.microsoft",
                    name,
                    &[&sub, residual.as_str(), &wn],
                    &[&out, "", "", &sum],
                    &[("epsilon", Attr::Float(eps))],
                );
                *residual = sum;
            }
        }
        Ok(out)
    }
}
