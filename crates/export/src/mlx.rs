//! The mlx-lm folder: `config.json` with a `quantization` entry, `model.safetensors` with every matrix as
//! packed `uint32` codes plus `scales` and `biases` (MLX's affine layout), and the tokenizer files.
//!
//! Layout facts, as mlx-lm 0.32 reads them: tensors keep their HF names; a quantized `X.weight` is
//! `[out, in · bits / 32]` `uint32` with the first weight in the lowest bits, and `X.scales` / `X.biases`
//! are `[out, in / group]` in the model's float type, the weight being `scale · q + bias`. mlx-lm
//! quantizes every linear layer and the embedding; norms stay in float. A model with uneven layer widths is
//! padded to uniform ones ([`crate::uniform`]), since mlx-lm's model code reads one width per model.

use std::path::Path;
use std::time::Instant;

use half::f16;
use rayon::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;
use shuku_model::{Llama, ModelType, StagedDir};

use crate::error::{ExportError, Result};
use crate::groupwise;
use crate::host::{check_group_size, host_tensors, is_matrix, HostTensor};
use crate::options::{ExportOptions, Format, MlxDtype, WeightBits};
use crate::progress::Progress;
use crate::report::ExportReport;
use crate::uniform::{pad_tensors, UniformWidths};
use crate::Exporter;

/// Writes mlx-lm folders.
#[derive(Debug, Clone, Default)]
pub struct MlxExporter {
    options: ExportOptions,
}

impl MlxExporter {
    /// An exporter with these options.
    pub fn new(options: ExportOptions) -> Self {
        Self { options }
    }
}

/// One tensor as it goes into the safetensors file.
struct Encoded {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn float_bytes(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

impl Exporter for MlxExporter {
    fn format(&self) -> Format {
        Format::Mlx
    }

    fn export(&self, model: &Llama, tokenizer: &Path, out: &Path) -> Result<ExportReport> {
        let start = Instant::now();
        let opts = &self.options;
        let config = model.config();
        if config.model_type == ModelType::Phi3 && !config.is_uniform() {
            return Err(ExportError::Unsupported {
                format: "mlx",
                model_type: config.model_type.as_str().into(),
                what: "uneven layer widths (fused qkv_proj)".into(),
            });
        }
        let quant_bits = opts.bits.quantized();
        let group = match quant_bits {
            Some(_) => Some(opts.group_size_for(Format::Mlx)?),
            None => None,
        };
        let float = match (opts.bits, opts.mlx_dtype) {
            (WeightBits::F32, _) | (_, MlxDtype::F32) => Dtype::F32,
            (_, MlxDtype::Bf16) => Dtype::BF16,
            (_, MlxDtype::F16) => Dtype::F16,
        };
        let mut tensors = host_tensors(model)?;
        let model_parameters: u64 = tensors.iter().map(|t| t.len() as u64).sum();
        let mut report = ExportReport::new(Format::Mlx, out, opts.bits.bits(), group);
        let mut out_config = config.clone();
        if !config.is_uniform() {
            let target = UniformWidths::for_config(config);
            pad_tensors(config, target, &mut tensors);
            out_config = target.apply(config);
            report.notes.push(format!(
                "uneven layer widths padded with zeros to {} heads, {} KV heads, FFN {} (exact; mlx-lm reads one width per model)",
                target.n_heads, target.n_kv_heads, target.intermediate_size
            ));
        }
        if let (ModelType::Mistral, Some(window)) = (config.model_type, config.sliding_window) {
            report.notes.push(format!(
                "mlx-lm runs mistral as llama with full attention: outputs equal this model's for contexts up to its sliding window ({window} tokens)"
            ));
        }
        if let Some(group) = group {
            check_group_size(&tensors, group)?;
        }
        let staged = StagedDir::create(out, opts.overwrite)?;
        let progress = Progress::new(opts.progress, tensors.len() as u64, "mlx");
        let mut encoded = Vec::new();
        for t in &tensors {
            progress.step(&t.name);
            match (quant_bits, group) {
                (Some(bits), Some(group)) if is_matrix(t) => {
                    encoded.extend(quantize(t, bits, group, float));
                }
                _ => encoded.push(Encoded {
                    name: t.name.clone(),
                    dtype: float,
                    shape: t.shape.clone(),
                    bytes: float_bytes(&t.data, float),
                }),
            }
        }
        progress.finish();
        let weights_path = staged.path().join("model.safetensors");
        let views = encoded
            .iter()
            .map(|e| {
                TensorView::new(e.dtype, e.shape.clone(), &e.bytes)
                    .map(|v| (e.name.clone(), v))
                    .map_err(|err| ExportError::Encode {
                        file: weights_path.display().to_string(),
                        message: format!("{}: {err}", e.name),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = Some(std::collections::HashMap::from([(
            "format".to_string(),
            "mlx".to_string(),
        )]));
        safetensors::tensor::serialize_to_file(views, metadata, &weights_path).map_err(|err| {
            ExportError::Encode {
                file: weights_path.display().to_string(),
                message: err.to_string(),
            }
        })?;

        let mut cfg = out_config.to_hf_json();
        cfg["head_dim"] = json!(config.head_dim);
        // Some mlx-lm modules (phi3) read the scaling kind from `type`, transformers 4's key.
        if let Some(kind) = cfg["rope_scaling"].get("rope_type").cloned() {
            cfg["rope_scaling"]["type"] = kind;
        }
        cfg["torch_dtype"] = json!(match float {
            Dtype::F32 => "float32",
            Dtype::BF16 => "bfloat16",
            _ => "float16",
        });
        if let (Some(bits), Some(group)) = (quant_bits, group) {
            let q = json!({ "group_size": group, "bits": bits, "mode": "affine" });
            cfg["quantization"] = q.clone();
            cfg["quantization_config"] = q;
        }
        let config_path = staged.path().join("config.json");
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| ExportError::Encode {
            file: config_path.display().to_string(),
            message: e.to_string(),
        })?;
        std::fs::write(&config_path, text + "\n").map_err(|e| ExportError::io(&config_path, e))?;
        shuku_model::copy_tokenizer(tokenizer, staged.path())?;

        report.files = ExportReport::list_files(staged.path())?;
        report.weight_bytes = report
            .files
            .iter()
            .filter(|(n, _)| n == "model.safetensors")
            .map(|(_, b)| b)
            .sum();
        report.parameters = tensors.iter().map(|t| t.len() as u64).sum();
        report.model_parameters = model_parameters;
        staged.commit()?;
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// `X.weight` as packed codes, `X.scales` and `X.biases`.
fn quantize(t: &HostTensor, bits: u32, group: usize, float: Dtype) -> [Encoded; 3] {
    let (rows, cols) = t.rows_cols();
    let groups_per_row = cols / group;
    let round = |x: f32| match float {
        Dtype::F16 => f16::from_f32(x).to_f32(),
        Dtype::BF16 => half::bf16::from_f32(x).to_f32(),
        _ => x,
    };
    let groups: Vec<groupwise::AffineGroup> = t
        .data
        .par_chunks(group)
        .map(|chunk| groupwise::affine(chunk, bits, round))
        .collect();
    let words: Vec<u32> = groups
        .iter()
        .flat_map(|g| groupwise::pack_u32(&g.codes, bits))
        .collect();
    let scales: Vec<f32> = groups.iter().map(|g| g.scale).collect();
    let biases: Vec<f32> = groups.iter().map(|g| g.bias).collect();
    let base = t.name.strip_suffix(".weight").unwrap_or(&t.name);
    [
        Encoded {
            name: t.name.clone(),
            dtype: Dtype::U32,
            shape: vec![rows, cols * bits as usize / 32],
            bytes: words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        },
        Encoded {
            name: format!("{base}.scales"),
            dtype: float,
            shape: vec![rows, groups_per_row],
            bytes: float_bytes(&scales, float),
        },
        Encoded {
            name: format!("{base}.biases"),
            dtype: float,
            shape: vec![rows, groups_per_row],
            bytes: float_bytes(&biases, float),
        },
    ]
}
