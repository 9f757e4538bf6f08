//! Locating and validating the model's tensors in the mapped file.
//!
//! Matrices are kept as [`TensorRef`]s (a byte range into the mapping plus type and shape), not as
//! slices: the engine owns the [`GgufFile`] and a struct cannot borrow from its own field. A
//! [`QMatrix`] over the mapped bytes is rebuilt per use, which costs a bounds check. Only the small
//! 1-D tensors (norm weights, biases) are copied out as f32.

use std::ops::Range;

use shuku_gguf::{GgmlType, GgufFile, TensorType};

use super::config::{Arch, ModelConfig};
use super::error::{EngineError, Result};
use super::kernels::{is_supported, KernelError, QMatrix};

/// A validated `rows × cols` matrix inside the file.
#[derive(Debug, Clone)]
pub struct TensorRef {
    range: Range<usize>,
    ttype: GgmlType,
    rows: usize,
    cols: usize,
}

impl TensorRef {
    /// The matrix over `file_bytes` (the whole mapped file).
    pub fn matrix<'a>(&self, file_bytes: &'a [u8]) -> QMatrix<'a> {
        // Validated at load time against the same bytes, so this cannot fail unless the caller
        // passes another file; fall back to an empty F32 matrix rather than panic.
        file_bytes
            .get(self.range.clone())
            .and_then(|b| QMatrix::new(b, self.ttype, self.rows, self.cols).ok())
            .unwrap_or_else(QMatrix::empty)
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
    /// Per-head RMSNorm of Q (gemma3).
    pub q_norm: Option<Vec<f32>>,
    /// Per-head RMSNorm of K (gemma3).
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
    /// Per-dimension RoPE frequency divisors (`rope_freqs.weight`, Llama 3.1 style), if present.
    pub rope_freqs: Option<Vec<f32>>,
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
        let range = start..start + view.bytes.len();
        QMatrix::new(view.bytes, t, rows, cols).map_err(|e| EngineError::BadTensorData {
            name: name.to_string(),
            why: match e {
                KernelError::UnsupportedType(t) => format!("no kernel for {t}"),
                KernelError::BadLayout(why) => why,
            },
        })?;
        Ok(TensorRef {
            range,
            ttype: t,
            rows,
            cols,
        })
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
            let gemma_norm = |s: &str, len: usize| -> Result<Option<Vec<f32>>> {
                if gemma {
                    l.vector(&n(s), len).map(Some)
                } else {
                    l.opt_vector(&n(s), len)
                }
            };
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm.weight"), e)?,
                wq: l.matrix(&n("attn_q.weight"), e, q_out)?,
                wk: l.matrix(&n("attn_k.weight"), e, k_out)?,
                wv: l.matrix(&n("attn_v.weight"), e, v_out)?,
                wo: l.matrix(&n("attn_output.weight"), o_in, e)?,
                bq: l.opt_vector(&n("attn_q.bias"), q_out)?,
                bk: l.opt_vector(&n("attn_k.bias"), k_out)?,
                bv: l.opt_vector(&n("attn_v.bias"), v_out)?,
                bo: l.opt_vector(&n("attn_output.bias"), e)?,
                q_norm: gemma_norm("attn_q_norm.weight", cfg.head_dim)?,
                k_norm: gemma_norm("attn_k_norm.weight", cfg.head_dim)?,
                post_attn_norm: gemma_norm("post_attention_norm.weight", e)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), e)?,
                gate: l.matrix(&n("ffn_gate.weight"), e, lc.n_ff)?,
                up: l.matrix(&n("ffn_up.weight"), e, lc.n_ff)?,
                down: l.matrix(&n("ffn_down.weight"), lc.n_ff, e)?,
                post_ffn_norm: gemma_norm("post_ffw_norm.weight", e)?,
            });
        }
        Ok(Weights {
            token_embd,
            output_norm: l.vector("output_norm.weight", e)?,
            output,
            rope_freqs: l.opt_vector("rope_freqs.weight", cfg.n_rot / 2)?,
            layers,
        })
    }
}
