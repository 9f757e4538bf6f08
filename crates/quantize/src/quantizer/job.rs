//! One tensor's conversion: the checked [`Job`], and its rounding into bytes with a report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use shuku_quants::QuantType;

use super::{is_token_embd, Quantizer};
use crate::error::{QuantizeError, Result};
use crate::report::TensorReport;
use crate::rules::TensorShape;

/// Rows quantized by one rayon task: about 16k values, as llama-quantize's chunks.
const VALUES_PER_TASK: usize = 32 * 512;

/// A run ready to write: the quantizer as configured for it, its jobs, the fallback count and
/// GPTQ's bytes by GGUF name.
pub(super) struct Prepared {
    pub(super) quantizer: Quantizer,
    pub(super) jobs: Vec<Job>,
    pub(super) n_fallback: usize,
    pub(super) precomputed: HashMap<String, Vec<u8>>,
}

/// One tensor's conversion, checked.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) input: PathBuf,
    pub(super) shape: TensorShape,
    pub(super) to: QuantType,
    pub(super) weights: Option<Vec<f32>>,
}

impl Job {
    pub(super) fn report(&self, bytes_in: usize, rmse: Option<f64>) -> TensorReport {
        TensorReport {
            name: self.shape.name.clone(),
            ne: self.shape.ne.clone(),
            from: self.shape.ty.name().to_string(),
            to: self.to.name().to_string(),
            bytes_in: bytes_in as u64,
            bytes_out: bytes_in as u64,
            rmse,
            imatrix: self.weights.is_some(),
        }
    }
}

impl Quantizer {
    /// Checks one tensor's conversion and finds its importance weights.
    pub(super) fn job(&self, t: &TensorShape, to: QuantType, input: &Path) -> Result<Job> {
        if t.ty != to && t.ty.is_quantized() && !self.allow_requantize {
            return Err(QuantizeError::Requantize {
                file: input.to_path_buf(),
                tensor: t.name.clone(),
                ty: t.ty,
            });
        }
        let ne0 = t.ne[0];
        if to.row_bytes(ne0).is_none() {
            return Err(QuantizeError::NoFallback {
                tensor: t.name.clone(),
                ty: to,
                row_length: ne0,
            });
        }
        let n_mat: usize = t.ne.get(2..).map_or(1, |d| d.iter().product());
        let mut weights = None;
        if let (Some((file, m)), true) = (&self.imatrix, t.ty != to && to.uses_importance()) {
            if let Some(w) = m.weights(&t.name) {
                if w.len() == ne0 * n_mat {
                    weights = Some(w);
                } else if !is_token_embd(&t.name) {
                    return Err(QuantizeError::ImatrixMismatch {
                        file: PathBuf::from(file),
                        tensor: t.name.clone(),
                        expected: ne0 * n_mat,
                        found: w.len(),
                    });
                }
            }
        }
        if weights.is_none() && t.ty != to && self.requires_imatrix(&t.name, to) {
            return Err(QuantizeError::MissingImatrix {
                tensor: t.name.clone(),
                ty: to,
            });
        }
        Ok(Job {
            input: input.to_path_buf(),
            shape: t.clone(),
            to,
            weights,
        })
    }

    /// The report of a tensor whose bytes were made elsewhere (GPTQ).
    pub(super) fn report_precomputed(
        &self,
        job: &Job,
        values: &[f32],
        bytes: Vec<u8>,
        bytes_in: usize,
    ) -> Result<(Vec<u8>, TensorReport)> {
        let rmse = if self.measure_error {
            Some(rmse_of(job, values, &bytes)?)
        } else {
            None
        };
        let report = TensorReport {
            bytes_out: bytes.len() as u64,
            ..job.report(bytes_in, rmse)
        };
        Ok((bytes, report))
    }

    /// Quantizes one tensor's values as `job` says into a new buffer.
    pub(super) fn encode(
        &self,
        job: &Job,
        values: &[f32],
        bytes_in: usize,
    ) -> Result<(Vec<u8>, TensorReport)> {
        let mut out = Vec::new();
        let report = self.encode_into(job, values, bytes_in, &mut out)?;
        Ok((out, report))
    }

    /// Quantizes one tensor's values as `job` says into `out` (resized to fit).
    pub(super) fn encode_into(
        &self,
        job: &Job,
        values: &[f32],
        bytes_in: usize,
        out: &mut Vec<u8>,
    ) -> Result<TensorReport> {
        let name = &job.shape.name;
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(QuantizeError::NonFinite {
                file: job.input.clone(),
                tensor: name.clone(),
                index,
            });
        }
        let ne0 = job.shape.ne[0];
        let rows_per_mat = job.shape.ne.get(1).copied().unwrap_or(1).max(1);
        let row_bytes = job.to.row_bytes(ne0).unwrap_or(0);
        out.resize(values.len() / ne0 * row_bytes, 0);
        let rows_per_task = (VALUES_PER_TASK / ne0).max(1);
        out.par_chunks_mut(rows_per_task * row_bytes)
            .zip(values.par_chunks(rows_per_task * ne0))
            .enumerate()
            .try_for_each(|(task, (dst, src))| {
                // A task may cross an expert boundary: quantize each expert's rows with its weights.
                let first_row = task * rows_per_task;
                let n_rows = src.len() / ne0;
                let mut r = 0;
                while r < n_rows {
                    let row = first_row + r;
                    let mat = row / rows_per_mat;
                    let take = (rows_per_mat - row % rows_per_mat).min(n_rows - r);
                    let qw = job
                        .weights
                        .as_deref()
                        .map(|w| &w[mat * ne0..(mat + 1) * ne0]);
                    job.to
                        .quantize_into(
                            &src[r * ne0..(r + take) * ne0],
                            ne0,
                            qw,
                            &mut dst[r * row_bytes..(r + take) * row_bytes],
                        )
                        .map_err(|source| QuantizeError::Quant {
                            tensor: name.clone(),
                            source,
                        })?;
                    r += take;
                }
                Ok::<(), QuantizeError>(())
            })?;
        let rmse = if self.measure_error {
            Some(rmse_of(job, values, out)?)
        } else {
            None
        };
        Ok(TensorReport {
            bytes_out: out.len() as u64,
            ..job.report(bytes_in, rmse)
        })
    }
}

/// Root-mean-square error of `bytes` (the job's type) against the original `values`.
fn rmse_of(job: &Job, values: &[f32], bytes: &[u8]) -> Result<f64> {
    let mut back = vec![0f32; values.len()];
    job.to
        .dequantize(bytes, &mut back)
        .map_err(|source| QuantizeError::Quant {
            tensor: job.shape.name.clone(),
            source,
        })?;
    let se: f64 = values
        .iter()
        .zip(&back)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    Ok((se / values.len().max(1) as f64).sqrt())
}
