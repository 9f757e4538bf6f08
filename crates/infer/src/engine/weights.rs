//! Locating and validating the model's tensors in the mapped file.
//!
//! Matrices are kept as [`TensorRef`]s (a byte range into the mapping plus type and shape), not as
//! slices: the engine owns the [`GgufFile`] and a struct cannot borrow from its own field. A
//! [`QMatrix`] over the mapped bytes is rebuilt per use, which costs a bounds check. Only the small
//! 1-D tensors (norm weights, biases, RoPE factors) are copied out as f32.
//!
//! Fused matrices (phi3's `attn_qkv` with Q, K and V rows stacked, its `ffn_up` with gate and up
//! rows stacked) become one [`TensorRef`] per part, each a row range of the one tensor. A row of
//! every supported type is a whole number of blocks, so a row range is a byte range: nothing is
//! copied, and each part's output rows are the same dot products the fused product computes.

use std::ops::Range;
use std::sync::Arc;

use shuku_gguf::{GgmlType, GgufFile, TensorType};

use super::config::{Arch, ModelConfig, RopeScaling};
use super::error::{EngineError, Result};
use super::kernels::repack::PackedMatrix;
use super::kernels::{is_supported, KernelError, QMatrix};
use super::rope_factors::RopeFactors;

/// A validated `rows × cols` matrix inside the file.
#[derive(Debug, Clone)]
pub struct TensorRef {
    /// The file's tensor that holds these rows.
    name: Arc<str>,
    range: Range<usize>,
    ttype: GgmlType,
    rows: usize,
    cols: usize,
    /// The rows in their lane layout, when packed at load.
    packed: Option<Arc<PackedMatrix>>,
}

impl TensorRef {
    /// The matrix: the packed copy if there is one, else the rows in `file_bytes` (the whole
    /// mapped file).
    pub fn matrix<'a>(&'a self, file_bytes: &'a [u8]) -> QMatrix<'a> {
        if let Some(m) = self.packed.as_deref().and_then(|p| p.matrix().ok()) {
            return m;
        }
        // Validated at load time against the same bytes, so this cannot fail unless the caller
        // passes another file; fall back to an empty F32 matrix rather than panic.
        file_bytes
            .get(self.range.clone())
            .and_then(|b| QMatrix::new(b, self.ttype, self.rows, self.cols).ok())
            .unwrap_or_else(QMatrix::empty)
    }

    /// Rows `rows` of this matrix: the byte range they occupy (rows are whole blocks).
    fn row_range(&self, rows: Range<usize>) -> TensorRef {
        let row_bytes =
            self.cols / self.ttype.block_size() as usize * self.ttype.type_size() as usize;
        let start = self.range.start + rows.start * row_bytes;
        TensorRef {
            name: self.name.clone(),
            range: start..start + rows.len() * row_bytes,
            ttype: self.ttype,
            rows: rows.len(),
            cols: self.cols,
            packed: None,
        }
    }

    /// Packs these rows for the tiles where the CPU runs them (see [`PackedMatrix`]); returns
    /// whether it did.
    fn pack(&mut self, file_bytes: &[u8]) -> bool {
        if self.packed.is_none() {
            self.packed = PackedMatrix::pack(&self.matrix(file_bytes)).map(Arc::new);
        }
        self.packed.is_some()
    }
}

/// One transformer block's tensors.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// Pre-attention RMSNorm weight.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: TensorRef,
    /// Key projection.
    pub wk: TensorRef,
    /// Value projection.
    pub wv: TensorRef,
    /// Attention output projection.
    pub wo: TensorRef,
    /// Optional biases (qwen2 has Q/K/V biases).
    pub bq: Option<Vec<f32>>,
    /// Key bias.
    pub bk: Option<Vec<f32>>,
    /// Value bias.
    pub bv: Option<Vec<f32>>,
    /// Output bias.
    pub bo: Option<Vec<f32>>,
    /// Per-head RMSNorm of Q (gemma3, qwen3).
    pub q_norm: Option<Vec<f32>>,
    /// Per-head RMSNorm of K (gemma3, qwen3).
    pub k_norm: Option<Vec<f32>>,
    /// RMSNorm of the attention output before the residual add (gemma3).
    pub post_attn_norm: Option<Vec<f32>>,
    /// Pre-FFN RMSNorm weight.
    pub ffn_norm: Vec<f32>,
    /// FFN gate projection.
    pub gate: TensorRef,
    /// FFN up projection.
    pub up: TensorRef,
    /// FFN down projection.
    pub down: TensorRef,
    /// RMSNorm of the FFN output before the residual add (gemma3).
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// All tensors of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embedding (`n_vocab × n_embd`), rows dequantized on lookup.
    pub token_embd: TensorRef,
    /// Final RMSNorm weight.
    pub output_norm: Vec<f32>,
    /// LM head; `token_embd` itself when the file ties them.
    pub output: TensorRef,
    /// Per-dimension RoPE frequency divisors (`rope_freqs.weight`, Llama 3.1 style; LongRoPE's
    /// long and short sets for phi3), if present.
    pub rope_factors: RopeFactors,
    /// The blocks.
    pub layers: Vec<LayerWeights>,
}

struct Loader<'a> {
    file: &'a GgufFile,
}

impl Loader<'_> {
    fn ttype(&self, name: &str) -> Result<(GgmlType, &shuku_gguf::TensorInfo)> {
        let info = self
            .file
            .tensor_info(name)
            .ok_or_else(|| EngineError::MissingTensor(name.to_string()))?;
        match info.ttype {
            TensorType::Known(t) => Ok((t, info)),
            t @ TensorType::Unknown(_) => Err(EngineError::UnsupportedTensorType {
                name: name.to_string(),
                ttype: t,
            }),
        }
    }

    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<TensorRef> {
        let (t, info) = self.ttype(name)?;
        if !is_supported(t) {
            return Err(EngineError::UnsupportedTensorType {
                name: name.to_string(),
                ttype: TensorType::Known(t),
            });
        }
        if info.dims != [cols as u64, rows as u64] {
            return Err(EngineError::BadShape {
                name: name.to_string(),
                expected: vec![cols as u64, rows as u64],
                found: info.dims.clone(),
            });
        }
        let view = self.file.tensor(name)?;
        let start = view.bytes.as_ptr() as usize - self.file.bytes().as_ptr() as usize;
        let t = TensorRef {
            name: name.into(),
            range: start..start + view.bytes.len(),
            ttype: t,
            rows,
            cols,
            packed: None,
        };
        self.check(name, &t)?;
        Ok(t)
    }

    /// Whether the kernels accept `t`'s bytes (type, size, alignment).
    fn check(&self, name: &str, t: &TensorRef) -> Result<()> {
        let bytes = self.file.bytes().get(t.range.clone()).unwrap_or_default();
        QMatrix::new(bytes, t.ttype, t.rows, t.cols).map_err(|e| EngineError::BadTensorData {
            name: name.to_string(),
            why: match e {
                KernelError::UnsupportedType(t) => format!("no kernel for {t}"),
                KernelError::BadLayout(why) => why,
            },
        })?;
        Ok(())
    }

    /// A fused matrix of `Σparts` rows as one matrix per part (consecutive row ranges).
    fn split_matrix<const N: usize>(
        &self,
        name: &str,
        cols: usize,
        parts: [usize; N],
    ) -> Result<[TensorRef; N]> {
        let whole = self.matrix(name, cols, parts.iter().sum())?;
        let mut first = 0;
        let parts = parts.map(|n| {
            first += n;
            whole.row_range(first - n..first)
        });
        for p in &parts {
            self.check(name, p)?;
        }
        Ok(parts)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (t, info) = self.ttype(name)?;
        if info.n_elements() != len as u64 || !matches!(info.dims.len(), 1 | 2) {
            return Err(EngineError::BadShape {
                name: name.to_string(),
                expected: vec![len as u64],
                found: info.dims.clone(),
            });
        }
        if !is_supported(t) {
            return Err(EngineError::UnsupportedTensorType {
                name: name.to_string(),
                ttype: TensorType::Known(t),
            });
        }
        let view = self.file.tensor(name)?;
        // Plain byte decoding: no alignment assumption for these small tensors.
        let mut out = vec![0f32; len];
        match t {
            GgmlType::F32 => {
                for (o, c) in out.iter_mut().zip(view.bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            _ => {
                let m = QMatrix::new(view.bytes, t, 1, len).map_err(|_| {
                    EngineError::BadTensorData {
                        name: name.to_string(),
                        why: "cannot be read as a vector".into(),
                    }
                })?;
                m.dequantize_row(0, &mut out);
            }
        }
        Ok(out)
    }

    fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        if self.file.tensor_info(name).is_none() {
            return Ok(None);
        }
        self.vector(name, len).map(Some)
    }
}

impl Weights {
    /// Packs every matrix of a type with a lane layout (the layers' projections and the LM head),
    /// in parallel, and lets the file pages of each packed tensor leave memory, so
    /// the weights are held once. The token embedding's rows are still read from the file on
    /// lookup. A no-op on CPUs without the lane kernels.
    pub fn repack(&mut self, file: &GgufFile) {
        let bytes = file.bytes();
        let mut all: Vec<&mut TensorRef> = vec![&mut self.output];
        for l in &mut self.layers {
            all.extend([
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ]);
        }
        // Each tensor's pages go as soon as it is packed, so the peak holds the packed weights
        // plus the tensors in flight, not two copies of the model.
        super::kernels::pool::for_each_chunk(&mut all, 1, |_, t| {
            if t[0].pack(bytes) {
                file.release(&t[0].name);
            }
        });
    }

    /// Finds every tensor `cfg` needs and checks its type and shape.
    pub fn load(file: &GgufFile, cfg: &ModelConfig) -> Result<Weights> {
        let l = Loader { file };
        let e = cfg.n_embd;
        let token_embd = l.matrix("token_embd.weight", e, cfg.n_vocab)?;
        let output = if file.tensor_info("output.weight").is_some() {
            l.matrix("output.weight", e, cfg.n_vocab)?
        } else {
            token_embd.clone()
        };
        let gemma = cfg.arch == Arch::Gemma3;
        let mut layers = Vec::with_capacity(cfg.n_layer());
        for (i, lc) in cfg.layers.iter().enumerate() {
            let n = |s: &str| format!("blk.{i}.{s}");
            let q_out = lc.n_head * cfg.head_dim;
            let k_out = lc.n_head_kv * cfg.head_dim;
            let v_out = lc.n_head_kv * cfg.head_dim_v;
            let o_in = lc.n_head * cfg.head_dim_v;
            let norm = |s: &str, len: usize, required: bool| -> Result<Option<Vec<f32>>> {
                if required {
                    l.vector(&n(s), len).map(Some)
                } else {
                    l.opt_vector(&n(s), len)
                }
            };
            let qk_norm = cfg.arch.has_qk_norm();
            let Qkv {
                w: [wq, wk, wv],
                b: [bq, bk, bv],
            } = load_qkv(&l, &n, e, [q_out, k_out, v_out])?;
            let [gate, up] = load_gate_up(&l, &n, cfg.arch, e, lc.n_ff)?;
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm.weight"), e)?,
                wq,
                wk,
                wv,
                wo: l.matrix(&n("attn_output.weight"), o_in, e)?,
                bq,
                bk,
                bv,
                bo: l.opt_vector(&n("attn_output.bias"), e)?,
                q_norm: norm("attn_q_norm.weight", cfg.head_dim, qk_norm)?,
                k_norm: norm("attn_k_norm.weight", cfg.head_dim, qk_norm)?,
                post_attn_norm: norm("post_attention_norm.weight", e, gemma)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), e)?,
                gate,
                up,
                down: l.matrix(&n("ffn_down.weight"), lc.n_ff, e)?,
                post_ffn_norm: norm("post_ffw_norm.weight", e, gemma)?,
            });
        }
        Ok(Weights {
            token_embd,
            output_norm: l.vector("output_norm.weight", e)?,
            output,
            rope_factors: load_rope_factors(&l, cfg)?,
            layers,
        })
    }
}

/// A layer's Q, K and V projections and their optional biases.
struct Qkv {
    w: [TensorRef; 3],
    b: [Option<Vec<f32>>; 3],
}

/// Q, K and V from one fused `attn_qkv` matrix (Q rows, then K, then V) when the file has one, as
/// llama.cpp accepts for every family, else from `attn_q`/`attn_k`/`attn_v`. A fused bias is split
/// the same way; separate biases next to fused weights count only when all three are there
/// (llama.cpp adds them only then).
fn load_qkv(l: &Loader, n: &dyn Fn(&str) -> String, e: usize, outs: [usize; 3]) -> Result<Qkv> {
    let sep = |s: &str, len: usize| l.opt_vector(&n(&format!("attn_{s}.bias")), len);
    let fused = n("attn_qkv.weight");
    if l.file.tensor_info(&fused).is_none() {
        return Ok(Qkv {
            w: [
                l.matrix(&n("attn_q.weight"), e, outs[0])?,
                l.matrix(&n("attn_k.weight"), e, outs[1])?,
                l.matrix(&n("attn_v.weight"), e, outs[2])?,
            ],
            b: [sep("q", outs[0])?, sep("k", outs[1])?, sep("v", outs[2])?],
        });
    }
    let w = l.split_matrix(&fused, e, outs)?;
    let b = match l.opt_vector(&n("attn_qkv.bias"), outs.iter().sum())? {
        Some(all) => {
            let (q, kv) = all.split_at(outs[0]);
            let (k, v) = kv.split_at(outs[1]);
            [Some(q.to_vec()), Some(k.to_vec()), Some(v.to_vec())]
        }
        None => match (sep("q", outs[0])?, sep("k", outs[1])?, sep("v", outs[2])?) {
            (Some(q), Some(k), Some(v)) => [Some(q), Some(k), Some(v)],
            _ => [None, None, None],
        },
    };
    Ok(Qkv { w, b })
}

/// The FFN's gate and up projections. phi3 stores both in `ffn_up` (`2·n_ff` rows: the gate's
/// first, then up's; llama.cpp's fused SwiGLU applies SiLU to the first half), the other families
/// in `ffn_gate` and `ffn_up`.
fn load_gate_up(
    l: &Loader,
    n: &dyn Fn(&str) -> String,
    arch: Arch,
    e: usize,
    n_ff: usize,
) -> Result<[TensorRef; 2]> {
    if arch == Arch::Phi3 {
        return l.split_matrix(&n("ffn_up.weight"), e, [n_ff, n_ff]);
    }
    Ok([
        l.matrix(&n("ffn_gate.weight"), e, n_ff)?,
        l.matrix(&n("ffn_up.weight"), e, n_ff)?,
    ])
}

/// The RoPE frequency factors llama.cpp's graph for the family rotates with, each set one factor
/// per rotated pair:
/// * llama and deci: `rope_freqs.weight` (Llama 3.1's divisors, used whatever the context), or,
///   when `rope.scaling.type` is `longrope`, the long and short sets instead;
/// * phi3: the long and short sets;
/// * qwen2, qwen3, gemma3: none.
///
/// A factor tensor the family does not read is refused: llama.cpp refuses such a file (it counts
/// every tensor it does not load), and rotating without factors the file carries would give
/// another model.
fn load_rope_factors(l: &Loader, cfg: &ModelConfig) -> Result<RopeFactors> {
    const FREQS: &str = "rope_freqs.weight";
    const LONG: &str = "rope_factors_long.weight";
    const SHORT: &str = "rope_factors_short.weight";
    let read: &[&str] = match cfg.arch {
        Arch::Llama if cfg.rope_scaling == RopeScaling::LongRope => &[LONG, SHORT],
        Arch::Llama => &[FREQS],
        Arch::Phi3 => &[LONG, SHORT],
        Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 => &[],
    };
    for name in [FREQS, LONG, SHORT] {
        if !read.contains(&name) && l.file.tensor_info(name).is_some() {
            return Err(EngineError::UnusedTensor {
                name: name.to_string(),
                why: format!(
                    "`{}` RoPE with scaling {:?} takes no such factors",
                    cfg.arch.name(),
                    cfg.rope_scaling
                ),
            });
        }
    }
    let pairs = cfg.n_rot / 2;
    let get = |name: &str| -> Result<Option<Vec<f32>>> {
        if read.contains(&name) {
            l.opt_vector(name, pairs)
        } else {
            Ok(None)
        }
    };
    Ok(RopeFactors {
        freqs: get(FREQS)?,
        long: get(LONG)?,
        short: get(SHORT)?,
    })
}
