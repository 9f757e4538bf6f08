//! The full-precision llama-family decoder: f32 weights held as candle `Var`s so trainers can differentiate
//! through it, with an incremental KV cache for generation and an observer hook for calibration.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};

use crate::config::{Activation, LlamaConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::layout::{layer_prefix, norm_init, split_layer_name, TensorRole};
use crate::ops;
use crate::rng::Normal;

mod checkpointing;
pub use checkpointing::HeadInputLoss;

/// Receives the input of every linear layer during [`Llama::forward_observed`].
///
/// Layers that read the same activation are reported together: q/k/v share one input, gate/up share one.
/// `input` is `[tokens, in_features]`, detached from the autograd graph.
pub trait LinearObserver {
    /// `weights` are the HF names of the weights that consume `input`.
    fn observe(&mut self, weights: &[&str], input: &Tensor) -> Result<()>;
}

/// Called by [`Llama::forward_block_staged`] before each group of linears that share an input, with the
/// group's HF weight names and its inputs for every batch; it may replace those weights.
pub type BeforeGroup<'a> = dyn FnMut(&[&str], &[Tensor]) -> Result<()> + 'a;

/// A linear layer `y = x Wᵀ + b` with PyTorch-layout weight `[out, in]`.
struct Linear {
    name: String,
    weight: Var,
    bias: Option<Var>,
}

impl Linear {
    /// `x` is `[N, in]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::linear(x, self.weight.as_tensor())?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b.as_tensor())?,
            None => y,
        })
    }
}

/// One decoder layer. Norm gains are named by role; which HF tensor fills each depends on the family
/// (see [`Block::var`]).
struct Block {
    /// Before attention (`input_layernorm`).
    attn_norm: Var,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Per-head RMSNorm of queries and keys before RoPE (qwen3, gemma3).
    q_norm: Option<Var>,
    k_norm: Option<Var>,
    /// On the attention output before the residual add (gemma3's `post_attention_layernorm`).
    post_attn_norm: Option<Var>,
    /// Before the FFN (llama's `post_attention_layernorm`, gemma3's `pre_feedforward_layernorm`).
    ffn_norm: Var,
    /// On the FFN output before the residual add (gemma3).
    post_ffn_norm: Option<Var>,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    sliding: bool,
}

/// RoPE tables `[seq, head_dim]` and the sliding window (if any) for one kind of layer.
struct AttentionTables {
    cos: Tensor,
    sin: Tensor,
    window: Option<usize>,
}

/// What every layer of one forward pass shares.
struct PassContext {
    batch: usize,
    seq: usize,
    head_dim: usize,
    eps: f64,
    /// Norm gains are applied as `1 + w` (Gemma).
    norm_plus_one: bool,
    act: Activation,
    /// Attention score scale.
    scale: f64,
    /// Tables of full-attention layers.
    global: AttentionTables,
    /// Tables of sliding-window layers, when the model has any.
    local: Option<AttentionTables>,
}

impl PassContext {
    /// RMSNorm with the family's gain convention.
    fn norm(&self, x: &Tensor, gain: &Var) -> Result<Tensor> {
        if self.norm_plus_one {
            ops::rms_norm(x, &(gain.as_tensor() + 1.0)?, self.eps)
        } else {
            ops::rms_norm(x, gain.as_tensor(), self.eps)
        }
    }

    fn tables(&self, sliding: bool) -> &AttentionTables {
        match (&self.local, sliding) {
            (Some(local), true) => local,
            _ => &self.global,
        }
    }

    /// The gated FFN's first half `act(gate(hn)) · up(hn)`: one op for the two projections and the
    /// activation when neither has a bias.
    fn gated(&self, hn: &Tensor, gate: &Linear, up: &Linear) -> Result<Tensor> {
        if gate.bias.is_none() && up.bias.is_none() {
            let (wg, wu) = (gate.weight.as_tensor(), up.weight.as_tensor());
            return ops::gated_projection(hn, wg, wu, self.act);
        }
        ops::gated(&gate.forward(hn)?, &up.forward(hn)?, self.act)
    }
}

/// Replaces fused file tensors (Phi-3's `qkv_proj`, `gate_up_proj`) by the model tensors they stack.
fn split_fused(config: &LlamaConfig, tensors: &mut HashMap<String, Tensor>) -> Result<()> {
    for spec in config.file_tensor_specs() {
        let Some(parts) = config.fused_parts(&spec.name) else {
            continue;
        };
        let Some(fused) = tensors.remove(&spec.name) else {
            continue;
        };
        if fused.dims() != spec.shape.as_slice() {
            return Err(ModelError::ShapeMismatch {
                tensor: spec.name,
                expected: spec.shape,
                found: fused.dims().to_vec(),
            });
        }
        let mut start = 0;
        for (name, rows) in parts {
            tensors.insert(name, fused.narrow(0, start, rows)?.contiguous()?);
            start += rows;
        }
    }
    Ok(())
}

/// Shows `input` (detached) to the observer, if any.
fn observe(
    observer: &mut Option<&mut dyn LinearObserver>,
    weights: &[&str],
    input: &Tensor,
) -> Result<()> {
    match observer {
        Some(o) => o.observe(weights, &input.detach()),
        None => Ok(()),
    }
}

/// Lends the observer to one layer without giving it up.
fn reborrow<'a>(
    observer: &'a mut Option<&mut dyn LinearObserver>,
) -> Option<&'a mut dyn LinearObserver> {
    match observer {
        Some(o) => Some(&mut **o),
        None => None,
    }
}

impl Block {
    /// The parameter stored under the HF name `model.layers.N.{suffix}` (see
    /// [`LlamaConfig::tensor_specs`]); `gemma` selects Gemma 3's naming of the norms.
    fn var(&self, suffix: &str, gemma: bool) -> Option<&Var> {
        match suffix {
            "input_layernorm.weight" => Some(&self.attn_norm),
            "post_attention_layernorm.weight" if gemma => self.post_attn_norm.as_ref(),
            "post_attention_layernorm.weight" => Some(&self.ffn_norm),
            "pre_feedforward_layernorm.weight" if gemma => Some(&self.ffn_norm),
            "post_feedforward_layernorm.weight" => self.post_ffn_norm.as_ref(),
            "self_attn.q_norm.weight" => self.q_norm.as_ref(),
            "self_attn.k_norm.weight" => self.k_norm.as_ref(),
            _ => {
                let (proj, kind) = suffix.rsplit_once('.')?;
                let linear = match proj {
                    "self_attn.q_proj" => &self.q_proj,
                    "self_attn.k_proj" => &self.k_proj,
                    "self_attn.v_proj" => &self.v_proj,
                    "self_attn.o_proj" => &self.o_proj,
                    "mlp.gate_proj" => &self.gate_proj,
                    "mlp.up_proj" => &self.up_proj,
                    "mlp.down_proj" => &self.down_proj,
                    _ => return None,
                };
                match kind {
                    "weight" => Some(&linear.weight),
                    "bias" => linear.bias.as_ref(),
                    _ => None,
                }
            }
        }
    }

    /// HF names of the linears, grouped by the activation they read, in forward order.
    fn input_groups(&self) -> [Vec<&str>; 4] {
        fn names<'a>(ls: &[&'a Linear]) -> Vec<&'a str> {
            ls.iter().map(|l| l.name.as_str()).collect()
        }
        [
            names(&[&self.q_proj, &self.k_proj, &self.v_proj]),
            names(&[&self.o_proj]),
            names(&[&self.gate_proj, &self.up_proj]),
            names(&[&self.down_proj]),
        ]
    }

    /// Adds a sublayer's output projection `proj(input)` to the residual stream `x`, through the
    /// post-norm where the family has one; one op ([`ops::linear_residual`]) without a post-norm or a
    /// bias.
    fn residual(
        &self,
        x: &Tensor,
        (proj, input): (&Linear, &Tensor),
        post: &Option<Var>,
        ctx: &PassContext,
    ) -> Result<Tensor> {
        Ok(match post {
            Some(n) => (x + ctx.norm(&proj.forward(input)?, n)?)?,
            None if proj.bias.is_none() => ops::linear_residual(input, proj.weight.as_tensor(), x)?,
            None => (x + proj.forward(input)?)?,
        })
    }

    /// One pre-norm decoder layer on `x` `[B*T, H]`: attention then the gated MLP, each with a residual.
    /// With `cache`, this layer's keys and values are appended to (and attend over) the cached ones.
    fn forward(
        &self,
        x: &Tensor,
        ctx: &PassContext,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        mut observer: Option<&mut dyn LinearObserver>,
    ) -> Result<Tensor> {
        let [attn_in, o_in, mlp_in, down_in] = self.input_groups();
        let hn = ctx.norm(x, &self.attn_norm)?;
        observe(&mut observer, &attn_in, &hn)?;
        let o = self.attention(&hn, ctx, cache)?;
        observe(&mut observer, &o_in, &o)?;
        let x = self.residual(x, (&self.o_proj, &o), &self.post_attn_norm, ctx)?;

        let hn = ctx.norm(&x, &self.ffn_norm)?;
        observe(&mut observer, &mlp_in, &hn)?;
        let act = ctx.gated(&hn, &self.gate_proj, &self.up_proj)?;
        observe(&mut observer, &down_in, &act)?;
        self.residual(&x, (&self.down_proj, &act), &self.post_ffn_norm, ctx)
    }

    /// The layer over several batches at once, one stage (group of linears sharing an input) at a time:
    /// each group's inputs for *every* batch are computed and handed to `before_group` before the group's
    /// linears are applied to any of them. `xs[i]` is `[B_i*T_i, H]` with context `ctxs[i]`.
    fn forward_staged(
        &self,
        xs: &[Tensor],
        ctxs: &[PassContext],
        before_group: &mut BeforeGroup<'_>,
    ) -> Result<Vec<Tensor>> {
        let [attn_in, o_in, mlp_in, down_in] = self.input_groups();
        let hn = xs
            .iter()
            .zip(ctxs)
            .map(|(x, ctx)| ctx.norm(x, &self.attn_norm))
            .collect::<Result<Vec<_>>>()?;
        before_group(&attn_in, &hn)?;
        let o = hn
            .iter()
            .zip(ctxs)
            .map(|(h, ctx)| self.attention(h, ctx, None))
            .collect::<Result<Vec<_>>>()?;
        drop(hn);
        before_group(&o_in, &o)?;
        let mid = xs
            .iter()
            .zip(&o)
            .zip(ctxs)
            .map(|((x, o), ctx)| self.residual(x, (&self.o_proj, o), &self.post_attn_norm, ctx))
            .collect::<Result<Vec<_>>>()?;
        drop(o);
        let hn = mid
            .iter()
            .zip(ctxs)
            .map(|(x, ctx)| ctx.norm(x, &self.ffn_norm))
            .collect::<Result<Vec<_>>>()?;
        before_group(&mlp_in, &hn)?;
        let act = hn
            .iter()
            .zip(ctxs)
            .map(|(h, ctx)| ctx.gated(h, &self.gate_proj, &self.up_proj))
            .collect::<Result<Vec<_>>>()?;
        drop(hn);
        before_group(&down_in, &act)?;
        mid.iter()
            .zip(&act)
            .zip(ctxs)
            .map(|((x, a), ctx)| self.residual(x, (&self.down_proj, a), &self.post_ffn_norm, ctx))
            .collect()
    }

    /// Queries and keys (rotated by RoPE) and values of normalised input `hn` `[B*T, H]`, token-major
    /// heads `[B, T, heads, D]` as the projections lay them out. Without biases or per-head norms each
    /// is one op ([`ops::head_projection`]).
    fn rotated_heads(
        &self,
        hn: &Tensor,
        (b, t, hd): (usize, usize, usize),
        tables: &AttentionTables,
        ctx: &PassContext,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let rope = Some((&tables.cos, &tables.sin));
        let projections = [&self.q_proj, &self.k_proj, &self.v_proj];
        let plain = self.q_norm.is_none() && self.k_norm.is_none();
        if plain && projections.iter().all(|p| p.bias.is_none()) {
            let heads = |p: &Linear, n: usize, rope| {
                ops::head_projection(hn, p.weight.as_tensor(), (b, t, n, hd), rope)
            };
            return Ok((
                heads(&self.q_proj, self.n_heads, rope)?,
                heads(&self.k_proj, self.n_kv_heads, rope)?,
                heads(&self.v_proj, self.n_kv_heads, None)?,
            ));
        }
        let heads = |y: Tensor, n: usize| -> Result<Tensor> { Ok(y.reshape((b, t, n, hd))?) };
        let mut q = heads(self.q_proj.forward(hn)?, self.n_heads)?;
        let mut k = heads(self.k_proj.forward(hn)?, self.n_kv_heads)?;
        let v = heads(self.v_proj.forward(hn)?, self.n_kv_heads)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = ctx.norm(&q, qn)?;
            k = ctx.norm(&k, kn)?;
        }
        let q = ops::rope(&q, &tables.cos, &tables.sin)?;
        let k = ops::rope(&k, &tables.cos, &tables.sin)?;
        Ok((q, k, v))
    }

    /// Causal grouped-query attention with RoPE on normalised input `hn` `[B*T, H]`; returns the heads'
    /// concatenated outputs `[B*T, n_heads*head_dim]` (the input of `o_proj`).
    fn attention(
        &self,
        hn: &Tensor,
        ctx: &PassContext,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, t, hd) = (ctx.batch, ctx.seq, ctx.head_dim);
        let tables = ctx.tables(self.sliding);
        let (q, mut k, mut v) = self.rotated_heads(hn, (b, t, hd), tables, ctx)?;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 1)?;
                v = Tensor::cat(&[pv, &v], 1)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let o = ops::attention(&q, &k, &v, ctx.scale, tables.window)?;
        Ok(o.reshape((b * t, self.n_heads * hd))?)
    }
}

/// Per-layer keys and values of the positions seen so far, so generation evaluates one new token at a time.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    seq_len: usize,
    /// The tokens cached so far `[B, seq_len]`, for models whose cached keys go stale (LongRoPE).
    tokens: Option<Tensor>,
}

impl KvCache {
    /// An empty cache for a model with `config`'s layer count.
    pub fn new(config: &LlamaConfig) -> Self {
        Self {
            layers: vec![None; config.num_hidden_layers()],
            seq_len: 0,
            tokens: None,
        }
    }

    /// Positions already cached (the position of the next token).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.seq_len = 0;
        self.tokens = None;
    }
}

/// A decoder of any [`crate::ModelType`] family with f32 `Var` weights.
pub struct Llama {
    config: LlamaConfig,
    device: Device,
    embed_tokens: Var,
    blocks: Vec<Block>,
    norm: Var,
    lm_head: Option<Var>,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Llama {
    /// A model with deterministic random weights (normal, std 0.02; norm gains 1) for tests and
    /// experiments.
    pub fn random(config: LlamaConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = Normal::new(seed);
        let mut tensors = HashMap::new();
        for spec in config.tensor_specs() {
            let n = spec.shape.iter().product();
            let data = match spec.role {
                TensorRole::Norm => vec![norm_init(config.model_type); n],
                TensorRole::Weight | TensorRole::Bias => rng.vec(n, 0.02),
            };
            tensors.insert(spec.name, Tensor::from_vec(data, spec.shape, device)?);
        }
        Self::from_tensor_map(config, tensors, "<random>", device)
    }

    /// Builds a model from HF-named tensors (any float dtype, converted to f32 on the embedding's device),
    /// checking every shape against `config`.
    pub fn from_named_tensors(
        config: LlamaConfig,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self> {
        let device = tensors
            .get("model.embed_tokens.weight")
            .map(|t| t.device().clone())
            .ok_or_else(|| ModelError::MissingTensor {
                file: "<tensors>".into(),
                tensor: "model.embed_tokens.weight".into(),
            })?;
        Self::from_tensor_map(config, tensors, "<tensors>", &device)
    }

    /// Shared by every constructor: shape checks, unknown-tensor checks, `Var` creation.
    pub(crate) fn from_tensor_map(
        config: LlamaConfig,
        mut tensors: HashMap<String, Tensor>,
        file: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        split_fused(&config, &mut tensors)?;
        let mut vars: HashMap<String, Var> = HashMap::new();
        for spec in config.tensor_specs() {
            let t = tensors
                .remove(&spec.name)
                .ok_or_else(|| ModelError::MissingTensor {
                    file: file.to_string(),
                    tensor: spec.name.clone(),
                })?;
            if t.dims() != spec.shape.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    tensor: spec.name,
                    expected: spec.shape,
                    found: t.dims().to_vec(),
                });
            }
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            vars.insert(spec.name, Var::from_tensor(&t)?);
        }
        // Tensors HF checkpoints may carry that this model recomputes or shares.
        tensors.retain(|name, _| {
            !(name.ends_with(".rotary_emb.inv_freq")
                || (config.tie_word_embeddings && name == "lm_head.weight"))
        });
        if let Some(name) = tensors.keys().min() {
            return Err(ModelError::UnexpectedTensor {
                file: file.to_string(),
                tensor: name.clone(),
            });
        }
        let mut take = |name: String| vars.remove(&name).expect("tensor_specs listed it");
        let linear = |take: &mut dyn FnMut(String) -> Var, name: &str, bias: bool| Linear {
            weight: take(format!("{name}.weight")),
            bias: bias.then(|| take(format!("{name}.bias"))),
            name: format!("{name}.weight"),
        };
        let embed_tokens = take("model.embed_tokens.weight".into());
        let gemma = config.model_type.has_post_norms();
        let qk_norm = config.model_type.has_qk_norm();
        let mut blocks = Vec::with_capacity(config.layers.len());
        for (i, dims) in config.layers.iter().enumerate() {
            let p = layer_prefix(i);
            let b = config.attention_bias;
            let mut opt =
                |present: bool, suffix: &str| present.then(|| take(format!("{p}{suffix}")));
            let attn_norm = opt(true, "input_layernorm.weight").expect("always present");
            let post_attention =
                opt(true, "post_attention_layernorm.weight").expect("always present");
            let (post_attn_norm, ffn_norm, post_ffn_norm) = if gemma {
                (
                    Some(post_attention),
                    opt(true, "pre_feedforward_layernorm.weight").expect("gemma3 has it"),
                    opt(true, "post_feedforward_layernorm.weight"),
                )
            } else {
                (None, post_attention, None)
            };
            let q_norm = opt(qk_norm, "self_attn.q_norm.weight");
            let k_norm = opt(qk_norm, "self_attn.k_norm.weight");
            blocks.push(Block {
                attn_norm,
                q_proj: linear(&mut take, &format!("{p}self_attn.q_proj"), b),
                k_proj: linear(&mut take, &format!("{p}self_attn.k_proj"), b),
                v_proj: linear(&mut take, &format!("{p}self_attn.v_proj"), b),
                o_proj: linear(&mut take, &format!("{p}self_attn.o_proj"), false),
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm,
                post_ffn_norm,
                gate_proj: linear(&mut take, &format!("{p}mlp.gate_proj"), false),
                up_proj: linear(&mut take, &format!("{p}mlp.up_proj"), false),
                down_proj: linear(&mut take, &format!("{p}mlp.down_proj"), false),
                n_heads: dims.n_heads,
                n_kv_heads: dims.n_kv_heads,
                sliding: dims.sliding,
            });
        }
        let norm = take("model.norm.weight".into());
        let lm_head = (!config.tie_word_embeddings).then(|| take("lm_head.weight".into()));
        Ok(Self {
            config,
            device: device.clone(),
            embed_tokens,
            blocks,
            norm,
            lm_head,
        })
    }

    /// The configuration (current widths).
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Where the weights live.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every trainable parameter under its HF name, in HF order (tied models have no `lm_head.weight`).
    /// The names and order are [`LlamaConfig::tensor_specs`]'s.
    pub fn parameters(&self) -> Vec<(String, Var)> {
        let gemma = self.config.model_type.has_post_norms();
        self.config
            .tensor_specs()
            .into_iter()
            .map(|spec| {
                let var = match spec.name.as_str() {
                    "model.embed_tokens.weight" => Some(&self.embed_tokens),
                    "model.norm.weight" => Some(&self.norm),
                    "lm_head.weight" => self.lm_head.as_ref(),
                    name => split_layer_name(name).and_then(|(layer, suffix)| {
                        self.blocks.get(layer).and_then(|b| b.var(suffix, gemma))
                    }),
                };
                let var = var.expect("every tensor_specs entry is held by the model");
                (spec.name, var.clone())
            })
            .collect()
    }

    /// Every weight as stored in HF files ([`LlamaConfig::file_tensor_specs`]): [`Llama::named_tensors`]
    /// with Phi-3's q/k/v and gate/up stacked into `qkv_proj` and `gate_up_proj`.
    pub fn file_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let tensors: HashMap<String, Tensor> = self.named_tensors().into_iter().collect();
        self.config
            .file_tensor_specs()
            .into_iter()
            .map(|spec| {
                let t = match self.config.fused_parts(&spec.name) {
                    Some(parts) => {
                        let parts: Vec<&Tensor> =
                            parts.iter().filter_map(|(n, _)| tensors.get(n)).collect();
                        Tensor::cat(&parts, 0)?
                    }
                    None => tensors
                        .get(&spec.name)
                        .cloned()
                        .expect("file specs name model tensors"),
                };
                Ok((spec.name, t))
            })
            .collect()
    }

    /// Every weight as a plain tensor under its HF name, for export and saving.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.parameters()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect()
    }

    /// Logits `[B, T, V]` for tokens `[B, T]` (u32). With a cache, the tokens continue the cached sequence
    /// and are appended to it.
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.forward_observed(tokens, cache, None)
    }

    /// [`Llama::forward`] that also shows every linear layer's input to `observer` (calibration).
    ///
    /// Built from the same pieces as the layer-wise entry points: [`Llama::embed`], then
    /// [`Llama::forward_block`] for every layer (here with the KV cache), then [`Llama::head`]. Inside
    /// [`ops::without_gradients`] each layer's output is detached from the autograd graph (the pass of
    /// [`Llama::forward_inference`] and [`crate::Calibration::collect`]).
    pub fn forward_observed(
        &self,
        tokens: &Tensor,
        mut cache: Option<&mut KvCache>,
        mut observer: Option<&mut dyn LinearObserver>,
    ) -> Result<Tensor> {
        let (b, t) = self.check_tokens(tokens)?;
        let offset = match cache.as_deref() {
            Some(c) if c.layers.len() != self.blocks.len() => {
                return Err(ModelError::InvalidInput(format!(
                    "KV cache has {} layers, model has {}",
                    c.layers.len(),
                    self.blocks.len()
                )))
            }
            Some(c) => c.seq_len,
            None => 0,
        };
        if let (
            Some(c),
            RopeScaling::LongRope {
                original_max_position_embeddings: original,
                ..
            },
        ) = (cache.as_deref_mut(), &self.config.rope_scaling)
        {
            let all = match &c.tokens {
                Some(prev) => Tensor::cat(&[prev, tokens], 1)?,
                None => tokens.clone(),
            };
            if offset > 0 && offset <= *original && offset + t > *original {
                // The cached keys were rotated with the short factors; past the original context every
                // position uses the long ones. transformers' generate drops its cache at this step and
                // recomputes; so does this.
                c.clear();
                let logits = self.forward_observed(&all, Some(&mut *c), observer)?;
                return Ok(logits.narrow(1, offset, t)?);
            }
            c.tokens = Some(all);
        }
        let ctx = self.pass_context(b, t, offset)?;
        // Inside `ops::without_gradients` no backward pass follows: each layer's output is detached
        // from the autograd graph, so one layer's activations are alive at a time, not every layer's.
        let graph_free = ops::no_gradients();
        let detached = |x: Tensor| if graph_free { x.detach() } else { x };
        let mut x = detached(self.embed_checked(tokens)?);
        for (li, blk) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[li]);
            x = detached(blk.forward(&x, &ctx, layer_cache, reborrow(&mut observer))?);
        }
        if let Some(c) = cache {
            c.seq_len += t;
        }
        Ok(detached(self.head_checked(&x, b, t, observer)?))
    }

    /// Token embeddings `[B*T, H]` for tokens `[B, T]` (u32): the input of layer 0 for
    /// [`Llama::forward_block`].
    pub fn embed(&self, tokens: &Tensor) -> Result<Tensor> {
        self.check_tokens(tokens)?;
        self.embed_checked(tokens)
    }

    /// Runs decoder layer `layer` on hidden states `x` `[batch*seq, H]` (rows ordered batch-major, as
    /// [`Llama::embed`] returns them), each of the `batch` sequences starting at position 0, and returns the
    /// layer's output, the same shape.
    ///
    /// This is the step a sequential layer-wise compressor (GPTQ, SparseGPT) needs: collect the layer's
    /// linear inputs with `observer` (reported exactly as [`Llama::forward_observed`] reports them, grouped as
    /// in [`Llama::block_linear_names`]), replace its weights with [`Llama::set_weight`], and run it again to
    /// produce the next layer's input from the compressed layer. Chaining `embed`, every `forward_block` and
    /// [`Llama::head`] gives exactly [`Llama::forward`] without a cache.
    pub fn forward_block(
        &self,
        layer: usize,
        x: &Tensor,
        batch: usize,
        seq: usize,
        mut observer: Option<&mut dyn LinearObserver>,
    ) -> Result<Tensor> {
        let blk = self.block(layer)?;
        self.check_hidden(x, batch, seq)?;
        let ctx = self.pass_context(batch, seq, 0)?;
        blk.forward(x, &ctx, None, reborrow(&mut observer))
    }

    /// Runs decoder layer `layer` on several batches of hidden states at once, stopping before each group of
    /// linears that share an input (`[q, k, v]`, `[o]`, `[gate, up]`, `[down]`, as in
    /// [`Llama::block_linear_names`]) to call `before_group(names, inputs)` with that group's inputs for every
    /// batch. The group's linears are applied only after the call returns, so a compressor that replaces
    /// their weights there ([`Llama::set_weight`]) gets the rest of the layer computed from the compressed
    /// weights: every linear is compressed on inputs that already reflect the compressed linears before it
    /// ("true sequential" compression) in a single pass, where [`Llama::forward_block`] needs one pass to
    /// observe and another to recompute. The pass runs [`ops::without_gradients`] (fused kernels; the
    /// outputs carry no gradient). `batches[i]` is `(hidden [batch*seq, H], batch, seq)` as for
    /// `forward_block`; the hidden states are replaced by the layer's outputs. Intermediate activations of
    /// all batches are held at once (one group's at a time).
    pub fn forward_block_staged(
        &self,
        layer: usize,
        batches: &mut [(Tensor, usize, usize)],
        before_group: &mut BeforeGroup<'_>,
    ) -> Result<()> {
        let blk = self.block(layer)?;
        let mut ctxs = Vec::with_capacity(batches.len());
        for (x, b, t) in batches.iter() {
            self.check_hidden(x, *b, *t)?;
            ctxs.push(self.pass_context(*b, *t, 0)?);
        }
        let xs: Vec<Tensor> = batches.iter().map(|(x, _, _)| x.clone()).collect();
        let out = ops::without_gradients(|| blk.forward_staged(&xs, &ctxs, before_group))?;
        for ((x, _, _), y) in batches.iter_mut().zip(out) {
            *x = y;
        }
        Ok(())
    }

    /// Logits `[batch, seq, V]` from the last layer's hidden states `x` `[batch*seq, H]`: final RMSNorm, then
    /// `lm_head` (or the tied embeddings). An untied `lm_head.weight` is shown to `observer` like any linear.
    pub fn head(
        &self,
        x: &Tensor,
        batch: usize,
        seq: usize,
        observer: Option<&mut dyn LinearObserver>,
    ) -> Result<Tensor> {
        self.check_hidden(x, batch, seq)?;
        self.head_checked(x, batch, seq, observer)
    }

    /// HF names of layer `layer`'s linear weights, grouped by shared input and in forward order:
    /// `[[q, k, v], [o], [gate, up], [down]]`. These are the groups [`LinearObserver::observe`] receives.
    pub fn block_linear_names(&self, layer: usize) -> Result<Vec<Vec<String>>> {
        Ok(self
            .block(layer)?
            .input_groups()
            .iter()
            .map(|g| g.iter().map(|n| n.to_string()).collect())
            .collect())
    }

    /// The parameter `hf_name` (as listed by [`Llama::parameters`]) as a tensor sharing the model's
    /// storage; an unknown name is [`ModelError::MissingTensor`].
    pub fn weight(&self, hf_name: &str) -> Result<Tensor> {
        Ok(self.parameter(hf_name)?.as_tensor().clone())
    }

    fn parameter(&self, hf_name: &str) -> Result<Var> {
        self.parameters()
            .into_iter()
            .find_map(|(name, var)| (name == hf_name).then_some(var))
            .ok_or_else(|| ModelError::MissingTensor {
                file: "<model>".into(),
                tensor: hf_name.to_string(),
            })
    }

    /// Overwrites the parameter `hf_name` (as listed by [`Llama::parameters`]) in place with `values`,
    /// converted to f32 on the model's device; e.g. to swap in a quantized-then-dequantized weight before
    /// the next layer's inputs are computed. The shape must match ([`ModelError::ShapeMismatch`]); an
    /// unknown name (including `lm_head.weight` of a tied model) is [`ModelError::MissingTensor`].
    ///
    /// The parameter's storage is written, not replaced: tensors previously obtained from
    /// [`Llama::named_tensors`] or [`Llama::parameters`] share it and see the new values (take a
    /// `Tensor::copy` first to keep the old ones).
    pub fn set_weight(&self, hf_name: &str, values: Tensor) -> Result<()> {
        let var = self.parameter(hf_name)?;
        if values.dims() != var.dims() {
            return Err(ModelError::ShapeMismatch {
                tensor: hf_name.to_string(),
                expected: var.dims().to_vec(),
                found: values.dims().to_vec(),
            });
        }
        let values = values.to_dtype(DType::F32)?.to_device(&self.device)?;
        var.set(&values)?;
        Ok(())
    }

    /// Embedding lookup for tokens already checked.
    fn embed_checked(&self, tokens: &Tensor) -> Result<Tensor> {
        let x = self
            .embed_tokens
            .as_tensor()
            .embedding(&tokens.flatten_all()?)?;
        Ok(match self.config.embedding_scale() {
            // In f32, as HF multiplies by the scale cast to the weights' dtype.
            Some(scale) => (x * f64::from(scale as f32))?,
            None => x,
        })
    }

    /// [`Llama::head`] for hidden states already checked.
    fn head_checked(
        &self,
        x: &Tensor,
        batch: usize,
        seq: usize,
        mut observer: Option<&mut dyn LinearObserver>,
    ) -> Result<Tensor> {
        let x = self.final_norm(x)?;
        if self.lm_head.is_some() {
            observe(&mut observer, &["lm_head.weight"], &x)?;
        }
        let logits = ops::linear(&x, self.head_weight())?;
        Ok(logits.reshape((batch, seq, self.config.vocab_size))?)
    }

    /// The output head's weight `[V, H]`: its own, or the token embeddings when tied.
    fn head_weight(&self) -> &Tensor {
        match &self.lm_head {
            Some(w) => w.as_tensor(),
            None => self.embed_tokens.as_tensor(),
        }
    }

    /// What the output head multiplies, for tokens `[B, T]` (u32) without a cache: the final hidden
    /// states `[B·T, H]` (after the final norm, rows batch-major) and the head's weight `[V, H]`.
    /// [`Llama::forward`]'s logits are exactly `hidden · weightᵀ`, reshaped; a trainer hands both to a
    /// loss that fuses the head's product ([`crate::fused::head_loss`]) so the `[B·T, V]` logits are
    /// never built.
    pub fn forward_head_input(&self, tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = self.check_tokens(tokens)?;
        let ctx = self.pass_context(b, t, 0)?;
        let mut x = self.embed_checked(tokens)?;
        for blk in &self.blocks {
            x = blk.forward(&x, &ctx, None, None)?;
        }
        Ok((self.final_norm(&x)?, self.head_weight().clone()))
    }

    /// Logits `[B, T, V]` for tokens `[B, T]` (u32) without a cache, for passes that never call
    /// `backward` (evaluation, a teacher's targets): each layer's output is detached from the autograd
    /// graph, so one layer's activations are alive at a time where [`Llama::forward`] keeps every
    /// layer's for a backward pass. Runs inside [`ops::without_gradients`]; on the CPU the values are
    /// [`Llama::forward`]'s.
    pub fn forward_inference(&self, tokens: &Tensor) -> Result<Tensor> {
        ops::without_gradients(|| self.forward_observed(tokens, None, None))
    }

    /// The final RMSNorm, with the family's gain convention.
    fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        if self.config.model_type.norm_plus_one() {
            ops::rms_norm(x, &(self.norm.as_tensor() + 1.0)?, eps)
        } else {
            ops::rms_norm(x, self.norm.as_tensor(), eps)
        }
    }

    /// RoPE tables, masks and shapes shared by every layer of one pass over `seq` new positions starting
    /// at `offset`.
    fn pass_context(&self, batch: usize, seq: usize, offset: usize) -> Result<PassContext> {
        let cfg = &self.config;
        let hd = cfg.head_dim;
        let end = offset + seq;
        let tables = |scaling: &RopeScaling, theta: f64, window: Option<usize>| -> Result<_> {
            let (freqs, scale) = scaling.frequencies(hd, theta, end);
            let (cos, sin) = ops::rope_tables(&freqs, scale, offset, seq, &self.device)?;
            Ok(AttentionTables { cos, sin, window })
        };
        let global = tables(&cfg.rope_scaling, cfg.rope_theta, None)?;
        let local = if cfg.layers.iter().any(|l| l.sliding) {
            // Sliding-window layers use their own base where the family has one, and no scaling then.
            Some(match cfg.rope_local_theta {
                Some(theta) => tables(&RopeScaling::None, theta, cfg.sliding_window)?,
                None => tables(&cfg.rope_scaling, cfg.rope_theta, cfg.sliding_window)?,
            })
        } else {
            None
        };
        Ok(PassContext {
            batch,
            seq,
            head_dim: hd,
            eps: cfg.rms_norm_eps,
            norm_plus_one: cfg.model_type.norm_plus_one(),
            act: cfg.hidden_act,
            scale: cfg.attention_scale(),
            global,
            local,
        })
    }

    /// Layer `layer`, or an input error naming the layer count.
    fn block(&self, layer: usize) -> Result<&Block> {
        self.blocks.get(layer).ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "layer {layer} does not exist (the model has {})",
                self.blocks.len()
            ))
        })
    }

    /// Checks that hidden states are `[batch*seq, H]` f32 with `batch, seq > 0`.
    fn check_hidden(&self, x: &Tensor, batch: usize, seq: usize) -> Result<()> {
        let expected = [batch * seq, self.config.hidden_size];
        if batch == 0 || seq == 0 || x.dims() != expected {
            return Err(ModelError::InvalidInput(format!(
                "hidden states must be [batch*seq, hidden] = {expected:?} (batch {batch}, seq {seq}), \
                 got {:?}",
                x.dims()
            )));
        }
        if x.dtype() != DType::F32 {
            return Err(ModelError::InvalidInput(format!(
                "hidden states must be f32, got {:?}",
                x.dtype()
            )));
        }
        Ok(())
    }

    /// Checks dtype, rank and token ids; returns `(B, T)`.
    fn check_tokens(&self, tokens: &Tensor) -> Result<(usize, usize)> {
        if tokens.dtype() != DType::U32 {
            return Err(ModelError::InvalidInput(format!(
                "token tensor must be u32, got {:?}",
                tokens.dtype()
            )));
        }
        let (b, t) = tokens.dims2().map_err(|_| {
            ModelError::InvalidInput(format!("tokens must be [B, T], got {:?}", tokens.dims()))
        })?;
        if b == 0 || t == 0 {
            return Err(ModelError::InvalidInput("empty token batch".into()));
        }
        let max = tokens.flatten_all()?.max(D::Minus1)?.to_scalar::<u32>()?;
        if max as usize >= self.config.vocab_size {
            return Err(ModelError::InvalidInput(format!(
                "token id {max} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok((b, t))
    }

    /// Greedy continuation of `prompt` by `n` tokens using the KV cache; returns only the new tokens.
    pub fn generate_greedy(&self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(ModelError::InvalidInput("empty prompt".into()));
        }
        let mut cache = KvCache::new(&self.config);
        let mut input = prompt.to_vec();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let tokens = Tensor::from_vec(input.clone(), (1, input.len()), &self.device)?;
            let logits = self.forward(&tokens, Some(&mut cache))?;
            let last = logits.squeeze(0)?.get(input.len() - 1)?;
            let next = last.argmax(D::Minus1)?.to_scalar::<u32>()?;
            out.push(next);
            input = vec![next];
        }
        Ok(out)
    }
}
