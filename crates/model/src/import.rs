//! GGUF → [`Llama`]: the inverse of [`crate::export`].
//!
//! Reads a GGUF of any supported architecture (llama, deci, qwen2, qwen3, phi3, gemma3; every tensor type
//! shuku-quants decodes, others through candle), maps GGUF names back to HF names, dequantizes to f32 and undoes what llama.cpp's
//! converter did: the rotary Q/K row permutation of the `llama` architecture and Gemma's `1 + w` norm
//! gains. RoPE factor tensors become the config's [`crate::RopeScaling`]. The result is the same full-precision model the
//! compression crates work on, so a GGUF from elsewhere can be pruned, distilled or re-quantized.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use shuku_gguf::{names, permute, GgufFile};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::layout::TensorRole;
use crate::model::Llama;

impl Llama {
    /// Loads a llama-family GGUF file as a full-precision model on `device`.
    pub fn from_gguf(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let file = GgufFile::open(path)?;
        let config = LlamaConfig::from_gguf(&file)?;
        let arch = file.get_str("general.architecture")?.to_string();
        let label = path.display().to_string();
        let plus_one = config.model_type.norm_plus_one();
        let mut tensors = HashMap::new();
        for spec in config.file_tensor_specs() {
            let gguf_name =
                names::hf_to_gguf_arch(&arch, &spec.name).ok_or_else(|| ModelError::Export {
                    tensor: spec.name.clone(),
                    message: format!("no GGUF name for it in architecture {arch}"),
                })?;
            let view = file
                .tensor(&gguf_name)
                .map_err(|_| ModelError::MissingTensor {
                    file: label.clone(),
                    tensor: gguf_name.clone(),
                })?;
            if view.info.shape() != spec.shape {
                return Err(ModelError::ShapeMismatch {
                    tensor: gguf_name,
                    expected: spec.shape,
                    found: view.info.shape(),
                });
            }
            let mut values = dequantized(&view)?;
            let heads = layer_heads(&config, &spec.name);
            if let (true, Some(n_head)) = (rotary_permuted(&arch), heads) {
                let rows = spec.shape[0];
                let cols: usize = spec.shape[1..].iter().product();
                values = permute::unpermute_qk(&values, rows, cols, n_head).ok_or_else(|| {
                    ModelError::ShapeMismatch {
                        tensor: gguf_name.clone(),
                        expected: vec![n_head * 2, rows / (2 * n_head).max(1), cols],
                        found: spec.shape.clone(),
                    }
                })?;
            }
            if plus_one && spec.role == TensorRole::Norm {
                values.iter_mut().for_each(|v| *v -= 1.0);
            }
            tensors.insert(
                spec.name.clone(),
                Tensor::from_vec(values, spec.shape.as_slice(), device)?,
            );
        }
        Self::from_named_tensors(config, tensors)
    }
}

/// A tensor's values as f32, decoded by shuku-quants (llama.cpp's dequantizers, bit for bit) for every
/// type it knows, by candle for the others.
fn dequantized(view: &shuku_gguf::TensorView<'_>) -> Result<Vec<f32>> {
    let n: usize = view.info.shape().iter().product();
    if let Some(ty) = shuku_quants::QuantType::from_ggml_id(view.info.ttype.id()) {
        let mut out = vec![0f32; n];
        ty.dequantize(view.bytes, &mut out)
            .map_err(|e| ModelError::Export {
                tensor: view.info.name.clone(),
                message: format!("cannot dequantize: {e}"),
            })?;
        return Ok(out);
    }
    Ok(view
        .to_tensor(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

/// For a Q or K projection weight, the number of heads its rows are grouped in.
pub(crate) fn layer_heads(config: &LlamaConfig, hf_name: &str) -> Option<usize> {
    let layer = hf_name
        .strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse::<usize>()
        .ok()?;
    let dims = config.layers.get(layer)?;
    if hf_name.ends_with("self_attn.q_proj.weight") {
        Some(dims.n_heads)
    } else if hf_name.ends_with("self_attn.k_proj.weight") {
        Some(dims.n_kv_heads)
    } else {
        None
    }
}

/// Whether llama.cpp's converter permutes this architecture's Q/K rows into ggml's interleaved rotary
/// layout (`llama` and `deci` use "normal" RoPE; `qwen2` uses NeoX RoPE, the HF layout, unpermuted).
pub(crate) fn rotary_permuted(arch: &str) -> bool {
    shuku_gguf::is_llama_arch(arch)
}

/// The file name of a vocabulary-only GGUF in an HF folder: the `tokenizer.*` keys of the GGUF a model
/// was imported from, so that converting the folder back writes the same tokenizer (llama.cpp reads its
/// own vocabulary files the same way: `ggml-vocab-*.gguf`).
pub const VOCAB_GGUF: &str = "tokenizer.gguf";

/// Writes `out` as a GGUF holding only `src`'s `general.architecture` and `tokenizer.*` keys, no tensors.
pub fn write_vocab_gguf(src: &GgufFile, out: &Path, overwrite: bool) -> Result<()> {
    let mut meta = shuku_gguf::Metadata::new();
    for (k, v) in src.metadata().iter() {
        if k == "general.architecture" || k.starts_with("tokenizer.") {
            meta.push_new(k.to_string(), v.clone())?;
        }
    }
    shuku_gguf::GgufWriter::options()
        .overwrite(overwrite)
        .create(out, &meta, vec![])?
        .finish()?;
    Ok(())
}

/// Converts a GGUF file into an HF folder that every shuku tool reads: `config.json`, f32
/// `model.safetensors` and the file's vocabulary as [`VOCAB_GGUF`]. Nothing is left at `out` on failure.
pub fn gguf_to_hf_dir(gguf: &Path, out: &Path, overwrite: bool) -> Result<Llama> {
    let model = Llama::from_gguf(gguf, &Device::Cpu)?;
    let file = GgufFile::open(gguf)?;
    let staging = tempfile::tempdir().map_err(|e| ModelError::io(gguf, e))?;
    write_vocab_gguf(&file, &staging.path().join(VOCAB_GGUF), false)?;
    model.save_hf_dir(out, Some(staging.path()), overwrite)?;
    Ok(model)
}
