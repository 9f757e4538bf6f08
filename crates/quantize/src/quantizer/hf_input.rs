//! HF folder input: the run that streams the folder through shuku-model's GGUF export with a
//! quantizing [`TensorEncoder`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::Device;
use shuku_gguf::{GgmlType, LlamaFileType};
use shuku_model::export::{convert_hf_dir, ExportOptions, TensorEncoder};
use shuku_model::{Llama, LlamaConfig};
use shuku_quants::QuantType;

use super::job::{Job, Prepared};
use super::{ggml, Quantizer};
use crate::error::{QuantizeError, Result};
use crate::report::{Report, TensorReport};
use crate::rules::{ModelFacts, TensorShape};

impl Quantizer {
    pub(super) fn run_hf(
        &self,
        input: &Path,
        output: &Path,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<Report> {
        let config = LlamaConfig::from_file(input.join("config.json"))?;
        let arch = config.gguf_arch()?.to_string();
        let mut tensors = Vec::new();
        for spec in config.file_tensor_specs() {
            let name = shuku_gguf::names::hf_to_gguf_arch(&arch, &spec.name).ok_or_else(|| {
                QuantizeError::BadInput {
                    file: input.to_path_buf(),
                    message: format!("no GGUF name for {} in architecture {arch}", spec.name),
                }
            })?;
            tensors.push(TensorShape {
                name,
                ne: spec.shape.iter().rev().copied().collect(),
                ty: QuantType::F32,
            });
        }
        let l0 = config.layers.first();
        let facts = ModelFacts {
            arch,
            n_layer: config.num_hidden_layers(),
            n_head: l0.map_or(0, |l| l.n_heads),
            n_head_kv: l0.map_or(0, |l| l.n_kv_heads),
            n_expert: 0,
        };
        let load = || Ok(Llama::from_hf_dir(input, &Device::Cpu)?);
        let Prepared {
            quantizer: q,
            jobs,
            n_fallback,
            precomputed,
        } = self.prepare(input, &tensors, &facts, &load, progress)?;
        let encoder = QuantEncoder {
            quantizer: &q,
            precomputed: Mutex::new(precomputed),
            jobs,
            reports: Mutex::new(Vec::new()),
        };
        let options = ExportOptions {
            name: None,
            overwrite: q.overwrite,
            tokenizer_pre: None,
        };
        let exported = convert_hf_dir(input, output, &encoder, &options, progress)?;
        let reports = encoder
            .reports
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Ok(Report {
            input: input.to_path_buf(),
            output: exported.path,
            preset: self.ftype.name().to_string(),
            tensors: reports,
            n_fallback,
            seconds: 0.0,
        })
    }
}

/// The quantizing encoder for the HF folder stream.
struct QuantEncoder<'a> {
    quantizer: &'a Quantizer,
    /// GPTQ's bytes by GGUF name, taken as each tensor is written.
    precomputed: Mutex<HashMap<String, Vec<u8>>>,
    jobs: Vec<Job>,
    reports: Mutex<Vec<TensorReport>>,
}

impl QuantEncoder<'_> {
    fn job(&self, gguf_name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.shape.name == gguf_name)
    }
}

impl TensorEncoder for QuantEncoder<'_> {
    fn file_type(&self) -> LlamaFileType {
        self.quantizer.ftype
    }

    fn tensor_type(&self, gguf_name: &str, _shape: &[usize]) -> GgmlType {
        self.job(gguf_name).map_or(GgmlType::F32, |j| ggml(j.to))
    }

    fn encode(
        &self,
        gguf_name: &str,
        _shape: &[usize],
        _ty: GgmlType,
        values: &[f32],
    ) -> shuku_model::Result<Vec<u8>> {
        let to_model_error = |e: QuantizeError| shuku_model::ModelError::Export {
            tensor: gguf_name.to_string(),
            message: e.to_string(),
        };
        let job = self.job(gguf_name).ok_or_else(|| {
            to_model_error(QuantizeError::BadInput {
                file: PathBuf::from(gguf_name),
                message: "tensor not in the plan".into(),
            })
        })?;
        let precomputed = self
            .precomputed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(gguf_name);
        let (bytes, report) = match precomputed {
            Some(bytes) => self
                .quantizer
                .report_precomputed(job, values, bytes, values.len() * 4),
            None => self.quantizer.encode(job, values, values.len() * 4),
        }
        .map_err(to_model_error)?;
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
        Ok(bytes)
    }
}
