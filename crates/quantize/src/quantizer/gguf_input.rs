//! GGUF input: the file's tensors and hyper-parameters as the rules see them, and the run that
//! decodes each tensor from the mapped file and writes the quantized GGUF.

use std::borrow::Cow;
use std::path::Path;

use candle_core::Device;
use shuku_gguf::{GgufFile, GgufWriter, Metadata, TensorDesc, Value};
use shuku_model::Llama;
use shuku_quants::QuantType;

use super::job::Prepared;
use super::{ggml, Quantizer};
use crate::error::{QuantizeError, Result};
use crate::report::Report;
use crate::rules::{self, ModelFacts, TensorShape};

impl Quantizer {
    pub(super) fn run_gguf(
        &self,
        input: &Path,
        output: &Path,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<Report> {
        let file = GgufFile::open(input)?;
        let mut tensors = gguf_tensors(&file, input)?;
        tensors.sort_by(|a, b| rules::llama_cpp_order(&a.name, &b.name));
        let facts = gguf_facts(file.metadata(), input)?;
        // Every check that can fail is done before the output file is created.
        let load = || Ok(Llama::from_gguf(input, &Device::Cpu)?);
        let Prepared {
            quantizer: q,
            jobs,
            n_fallback,
            mut precomputed,
        } = self.prepare(input, &tensors, &facts, &load, progress)?;

        let meta = q.output_metadata(file.metadata());
        let descs = jobs
            .iter()
            .map(|j| TensorDesc::new(j.shape.name.clone(), dims(&j.shape.ne), ggml(j.to)))
            .collect();
        let mut writer = GgufWriter::options()
            .overwrite(self.overwrite)
            .create(output, &meta, descs)?;
        let mut reports = Vec::with_capacity(jobs.len());
        // One output buffer for every tensor, as llama-quantize keeps one work buffer: fresh
        // pages for each tensor would cost a page fault per 4 KiB written.
        let mut buffer = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            progress(i, jobs.len(), &job.shape.name);
            let view = file.tensor(&job.shape.name)?;
            let report = if let Some(bytes) = precomputed.remove(&job.shape.name) {
                let values = decode(job.shape.ty, view.bytes, &job.shape.name)?;
                let (bytes, report) =
                    q.report_precomputed(job, &values, bytes, view.bytes.len())?;
                writer.write_tensor(&job.shape.name, &bytes)?;
                report
            } else if job.shape.ty == job.to {
                writer.write_tensor(&job.shape.name, view.bytes)?;
                job.report(view.bytes.len(), Some(0.0))
            } else {
                let values = decode(job.shape.ty, view.bytes, &job.shape.name)?;
                let report = q.encode_into(job, &values, view.bytes.len(), &mut buffer)?;
                writer.write_tensor(&job.shape.name, &buffer)?;
                report
            };
            file.release(&job.shape.name);
            reports.push(report);
        }
        progress(jobs.len(), jobs.len(), "");
        let path = writer.finish()?;
        Ok(Report {
            input: input.to_path_buf(),
            output: path,
            preset: self.ftype.name().to_string(),
            tensors: reports,
            n_fallback,
            seconds: 0.0,
        })
    }
}

fn dims(ne: &[usize]) -> Vec<u64> {
    ne.iter().map(|&d| d as u64).collect()
}

/// The input's tensors as the rules see them; a type shuku cannot read is an error.
pub(super) fn gguf_tensors(file: &GgufFile, input: &Path) -> Result<Vec<TensorShape>> {
    file.tensor_infos()
        .iter()
        .map(|info| {
            let ty = info
                .ttype
                .known()
                .and_then(|t| QuantType::from_ggml_id(t.id()))
                .ok_or_else(|| QuantizeError::UnreadableType {
                    file: input.to_path_buf(),
                    tensor: info.name.clone(),
                    ty: info
                        .ttype
                        .known()
                        .map_or(format!("id {}", info.ttype.id()), |t| t.name().to_string()),
                })?;
            Ok(TensorShape {
                name: info.name.clone(),
                ne: info.dims.iter().map(|&d| d as usize).collect(),
                ty,
            })
        })
        .collect()
}

/// The hyper-parameters the rules read, from GGUF metadata.
pub(super) fn gguf_facts(meta: &Metadata, input: &Path) -> Result<ModelFacts> {
    let bad = |message: String| QuantizeError::BadInput {
        file: input.to_path_buf(),
        message,
    };
    let arch = meta
        .get_str("general.architecture")
        .map_err(|e| bad(e.to_string()))?
        .to_string();
    // Per-layer keys (pruned models) are arrays: the rules read layer 0, as llama.cpp does.
    let first = |key: &str| -> Option<usize> {
        match meta.get(key)? {
            Value::Array(a) => a.get(0)?.as_u64().map(|v| v as usize),
            v => v.as_u64().map(|v| v as usize),
        }
    };
    let n_layer = first(&format!("{arch}.block_count"))
        .ok_or_else(|| bad(format!("missing {arch}.block_count")))?;
    let n_head = first(&format!("{arch}.attention.head_count")).unwrap_or(0);
    let n_head_kv = first(&format!("{arch}.attention.head_count_kv")).unwrap_or(n_head);
    let n_expert = first(&format!("{arch}.expert_count")).unwrap_or(0);
    Ok(ModelFacts {
        arch,
        n_layer,
        n_head,
        n_head_kv,
        n_expert,
    })
}

/// A tensor's values as f32: F32 data is read in place from the mapped file (no copy, as
/// llama-quantize does), other types are decoded.
fn decode<'a>(ty: QuantType, bytes: &'a [u8], name: &str) -> Result<Cow<'a, [f32]>> {
    if ty == QuantType::F32 {
        if let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
            return Ok(Cow::Borrowed(values));
        }
    }
    let n = bytes.len() / ty.type_size() * ty.block_size();
    let mut out = vec![0f32; n];
    ty.dequantize(bytes, &mut out)
        .map_err(|source| QuantizeError::Quant {
            tensor: name.to_string(),
            source,
        })?;
    Ok(Cow::Owned(out))
}
