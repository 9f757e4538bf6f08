//! HF folder → GGUF, streamed tensor by tensor.
//!
//! The header (metadata and every tensor's name, shape and type) is known from `config.json`,
//! `tokenizer.json` and the safetensors headers alone, so the GGUF header is written first and each
//! tensor is then read from the memory-mapped shard, converted, and written before the next one is
//! touched: peak memory is one tensor, whatever the model's size. This mirrors llama.cpp's
//! `convert_hf_to_gguf.py` for every family of [`crate::ModelType`]: 1-D tensors stay F32, the `llama`
//! architecture's Q/K rows are permuted into ggml's rotary layout, Gemma's norm gains are stored as
//! `1 + w`, Phi-3's fused matrices stay fused, the RoPE factor tensors llama.cpp reads (`rope_freqs`,
//! `rope_factors_long/short`) are generated from the config, and a tied `lm_head` is dropped.
//!
//! A [`TensorEncoder`] decides each tensor's GGUF type and bytes, so quantization re-uses this stream
//! with its own encoder instead of re-implementing the conversion.

use std::path::{Path, PathBuf};

use shuku_gguf::{
    names, permute, GeneralMeta, GgmlType, GgufWriter, LlamaFileType, Metadata, TensorDesc,
};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::import::{layer_heads, rotary_permuted};
use crate::layout::TensorRole;
use crate::safetensors_dir::SafetensorsDir;

/// The element type of a plain (unquantized) GGUF export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    /// 32-bit float everywhere.
    F32,
    /// IEEE half for matrices, F32 for 1-D tensors.
    F16,
    /// bfloat16 for matrices, F32 for 1-D tensors.
    BF16,
}

impl OutType {
    fn file_type(self) -> LlamaFileType {
        match self {
            OutType::F32 => LlamaFileType::AllF32,
            OutType::F16 => LlamaFileType::MostlyF16,
            OutType::BF16 => LlamaFileType::MostlyBF16,
        }
    }
}

/// Chooses a GGUF type per tensor and encodes its f32 values (row-major, HF shape) into bytes.
pub trait TensorEncoder {
    /// `general.file_type` of the result.
    fn file_type(&self) -> LlamaFileType;
    /// The type `gguf_name` (with row-major `shape`) is stored as.
    fn tensor_type(&self, gguf_name: &str, shape: &[usize]) -> GgmlType;
    /// Encodes `values` as `ty`.
    fn encode(
        &self,
        gguf_name: &str,
        shape: &[usize],
        ty: GgmlType,
        values: &[f32],
    ) -> Result<Vec<u8>>;
}

/// The F32/F16/BF16 encoder: llama.cpp keeps 1-D tensors (norms, biases) in F32.
#[derive(Debug, Clone, Copy)]
pub struct PlainEncoder(pub OutType);

impl TensorEncoder for PlainEncoder {
    fn file_type(&self) -> LlamaFileType {
        self.0.file_type()
    }

    fn tensor_type(&self, _gguf_name: &str, shape: &[usize]) -> GgmlType {
        match (self.0, shape.len()) {
            (_, 0 | 1) | (OutType::F32, _) => GgmlType::F32,
            (OutType::F16, _) => GgmlType::F16,
            (OutType::BF16, _) => GgmlType::BF16,
        }
    }

    fn encode(
        &self,
        gguf_name: &str,
        _shape: &[usize],
        ty: GgmlType,
        values: &[f32],
    ) -> Result<Vec<u8>> {
        Ok(match ty {
            GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            GgmlType::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            other => {
                return Err(ModelError::Export {
                    tensor: gguf_name.to_string(),
                    message: format!("the plain export cannot encode {}", other.name()),
                })
            }
        })
    }
}

/// The number of heads whose rotary row permutation the GGUF export applies to the HF weight
/// `hf_name` (the `llama` architecture's Q and K), or `None` when its rows are written as they are.
/// Callers that produce a tensor's GGUF bytes row by row themselves (GPTQ) reorder with
/// [`shuku_gguf::permute::permute_qk`] over whole rows.
pub fn rotary_heads(config: &LlamaConfig, hf_name: &str) -> Result<Option<usize>> {
    let arch = config.gguf_arch()?;
    Ok(if rotary_permuted(arch) {
        layer_heads(config, hf_name)
    } else {
        None
    })
}

/// Options for [`convert_hf_dir`].
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// `general.name`; defaults to the folder name.
    pub name: Option<String>,
    /// Replace an existing output file.
    pub overwrite: bool,
    /// `tokenizer.ggml.pre` to use when it cannot be recognised from `tokenizer.json`.
    pub tokenizer_pre: Option<String>,
}

/// What [`convert_hf_dir`] wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The GGUF file.
    pub path: PathBuf,
    /// Tensors written.
    pub n_tensors: usize,
    /// Parameters written.
    pub n_params: u64,
    /// Bytes of tensor data written.
    pub tensor_bytes: u64,
}

/// One tensor to write: where it comes from and what it becomes.
struct Planned {
    hf_name: String,
    gguf_name: String,
    /// Row-major HF shape.
    shape: Vec<usize>,
    ty: GgmlType,
    /// Rotary permutation to apply (number of heads), for the `llama` architecture's Q and K.
    permute_heads: Option<usize>,
    /// Added to every value (Gemma's norm gains are applied as `1 + w`; llama.cpp stores `1 + w`).
    shift: f32,
}

/// The tensors of `config`, in order, with their GGUF names, types and permutations.
fn plan(config: &LlamaConfig, arch: &str, encoder: &dyn TensorEncoder) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for spec in config.file_tensor_specs() {
        let gguf_name =
            names::hf_to_gguf_arch(arch, &spec.name).ok_or_else(|| ModelError::Export {
                tensor: spec.name.clone(),
                message: format!("no GGUF name for it in architecture {arch}"),
            })?;
        let permute_heads = if rotary_permuted(arch) {
            layer_heads(config, &spec.name)
        } else {
            None
        };
        let ty = encoder.tensor_type(&gguf_name, &spec.shape);
        let plus_one = config.model_type.norm_plus_one() && spec.role == TensorRole::Norm;
        out.push(Planned {
            hf_name: spec.name,
            gguf_name,
            shape: spec.shape,
            ty,
            permute_heads,
            shift: if plus_one { 1.0 } else { 0.0 },
        });
    }
    Ok(out)
}

/// Checks that the folder holds exactly the tensors the config implies, with the implied shapes.
fn check_source(src: &SafetensorsDir, plan: &[Planned], tied: bool) -> Result<()> {
    for p in plan {
        let entry = src
            .entry(&p.hf_name)
            .ok_or_else(|| ModelError::MissingTensor {
                file: src.label(),
                tensor: p.hf_name.clone(),
            })?;
        if entry.shape != p.shape {
            return Err(ModelError::ShapeMismatch {
                tensor: p.hf_name.clone(),
                expected: p.shape.clone(),
                found: entry.shape.clone(),
            });
        }
    }
    for entry in src.entries() {
        let planned = plan.iter().any(|p| p.hf_name == entry.name);
        let tied_head = tied && entry.name == "lm_head.weight";
        if !planned && !tied_head && !names::is_ignored_hf(&entry.name) {
            return Err(ModelError::UnexpectedTensor {
                file: src
                    .file_of(&entry.name)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                tensor: entry.name.clone(),
            });
        }
    }
    Ok(())
}

/// The GGUF metadata of a model: `general.*`, the architecture's hyper-parameters, the tokenizer.
pub fn gguf_metadata(
    config: &LlamaConfig,
    name: &str,
    file_type: LlamaFileType,
    tokenizer: Vec<(String, shuku_gguf::Value)>,
) -> Result<Metadata> {
    let general =
        GeneralMeta::new(config.gguf_arch()?, Some(name.to_string())).with_file_type(file_type);
    let mut meta = Metadata::new();
    for (k, v) in general
        .to_metadata()
        .into_iter()
        .chain(config.gguf_hparams()?)
        .chain(tokenizer)
    {
        meta.push_new(k, v)?;
    }
    Ok(meta)
}

/// The `tokenizer.*` keys for the folder: from its HF tokenizer files, or, for a folder imported from a
/// GGUF ([`crate::gguf_to_hf_dir`]), copied from its vocabulary file.
fn tokenizer_keys(
    dir: &Path,
    config: &LlamaConfig,
    options: &ExportOptions,
) -> Result<Vec<(String, shuku_gguf::Value)>> {
    let has = |name: &str| dir.join(name).is_file();
    if !has("tokenizer.json") && !has("tokenizer.model") && has(crate::VOCAB_GGUF) {
        let vocab = shuku_gguf::GgufFile::open(dir.join(crate::VOCAB_GGUF))?;
        return Ok(vocab
            .metadata()
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect());
    }
    crate::tokenizer_metadata(
        dir,
        config.gguf_arch()?,
        config.vocab_size,
        options.tokenizer_pre.as_deref(),
    )
}

/// Converts the HF folder `dir` to the GGUF file `out`, one tensor at a time.
///
/// `progress(done, total, tensor)` is called before each tensor. Nothing is left at `out` on failure.
pub fn convert_hf_dir(
    dir: impl AsRef<Path>,
    out: impl AsRef<Path>,
    encoder: &dyn TensorEncoder,
    options: &ExportOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<ExportReport> {
    let (dir, out) = (dir.as_ref(), out.as_ref());
    let config = LlamaConfig::from_file(dir.join("config.json"))?;
    let src = SafetensorsDir::open(dir)?;
    let arch = config.gguf_arch()?;
    let planned = plan(&config, arch, encoder)?;
    check_source(&src, &planned, config.tie_word_embeddings)?;

    let name = options.name.clone().unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into())
    });
    let tokenizer = tokenizer_keys(dir, &config, options)?;
    let meta = gguf_metadata(&config, &name, encoder.file_type(), tokenizer)?;
    // llama.cpp's converter writes the generated RoPE factor tensors first, always as F32.
    let generated = config.gguf_generated_tensors();
    let descs: Vec<TensorDesc> = generated
        .iter()
        .map(|g| TensorDesc::from_shape(g.name.clone(), &[g.values.len()], GgmlType::F32))
        .chain(
            planned
                .iter()
                .map(|p| TensorDesc::from_shape(p.gguf_name.clone(), &p.shape, p.ty)),
        )
        .collect();
    let mut writer = GgufWriter::options()
        .overwrite(options.overwrite)
        .create(out, &meta, descs)?;

    let total = planned.len();
    let (mut n_params, mut tensor_bytes) = (0u64, 0u64);
    for g in &generated {
        let bytes: Vec<u8> = g.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        writer.write_tensor(&g.name, &bytes)?;
        tensor_bytes += bytes.len() as u64;
    }
    for (i, p) in planned.iter().enumerate() {
        progress(i, total, &p.gguf_name);
        let mut values = src.read_f32(&p.hf_name)?;
        if p.shift != 0.0 {
            values.iter_mut().for_each(|v| *v += p.shift);
        }
        if let Some(n_head) = p.permute_heads {
            let rows = p.shape[0];
            let cols: usize = p.shape[1..].iter().product();
            values = permute::permute_qk(&values, rows, cols, n_head).ok_or_else(|| {
                ModelError::ShapeMismatch {
                    tensor: p.hf_name.clone(),
                    expected: vec![n_head * 2, rows / (n_head * 2).max(1), cols],
                    found: p.shape.clone(),
                }
            })?;
        }
        let bytes = encoder.encode(&p.gguf_name, &p.shape, p.ty, &values)?;
        writer.write_tensor(&p.gguf_name, &bytes)?;
        n_params += values.len() as u64;
        tensor_bytes += bytes.len() as u64;
    }
    progress(total, total, "");
    let path = writer.finish()?;
    Ok(ExportReport {
        path,
        n_tensors: total + generated.len(),
        n_params,
        tensor_bytes,
    })
}
