//! The steps that run the model on calibration text: the size-budget search behind
//! `--target-bpw` and GPTQ's rounding.

use std::collections::HashMap;
use std::path::PathBuf;

use regex::Regex;
use shuku_model::Llama;
use shuku_quants::QuantType;

use super::job::Job;
use super::Quantizer;
use crate::bpw::{choose_types, Candidate};
use crate::calibrate::collect_imatrix;
use crate::error::{QuantizeError, Result};
use crate::gptq::{gptq, GptqOptions, GptqTarget};
use crate::rules::{self, ModelFacts, TensorShape};

impl Quantizer {
    /// The quantizer with `--tensor-type` overrides that put the file at `bpw` bits per weight
    /// with the least predicted loss, and an importance matrix (the calibration's own when none
    /// was given).
    pub(super) fn with_size_budget(
        &self,
        model: &Llama,
        tensors: &[TensorShape],
        facts: &ModelFacts,
        bpw: f64,
        chunks: &[Vec<u32>],
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<Quantizer> {
        let mut q = self.clone();
        if q.imatrix.is_none() {
            let m = collect_imatrix(model, chunks, "calibration", &mut |d, t| {
                progress(d, t, "imatrix")
            })?;
            q = q.imatrix("calibration text (target-bpw)", m);
        }
        let arch = model.config().gguf_arch()?;
        // The baseline plan says which tensors are quantized at all (norms and the like are not).
        let base = rules::plan_types(tensors, facts, q.ftype, &q.options)?;
        let mut fixed_bytes = 0u64;
        let mut candidates = Vec::new();
        let mut n_elements = 0u64;
        for (t, &ty) in tensors.iter().zip(&base.types) {
            let n: u64 = t.ne.iter().map(|&d| d as u64).product();
            n_elements += n;
            let hf = shuku_gguf::names::gguf_to_hf_arch(arch, &t.name);
            match hf {
                Some(hf_name) if ty.is_quantized() && t.ne.len() == 2 => {
                    candidates.push(Candidate {
                        gguf_name: t.name.clone(),
                        hf_name,
                    })
                }
                _ => {
                    fixed_bytes += (n / ty.block_size() as u64) * ty.type_size() as u64;
                }
            }
        }
        let budget = (bpw * n_elements as f64 / 8.0) as u64;
        let Some(budget) = budget.checked_sub(fixed_bytes) else {
            return Err(QuantizeError::BadInput {
                file: PathBuf::from("--target-bpw"),
                message: format!(
                    "{bpw} bits per weight is below what the unquantized tensors alone take"
                ),
            });
        };
        let (_, imatrix) = q.imatrix.as_ref().expect("set above");
        let plan = choose_types(model, &candidates, imatrix, chunks, budget, &mut |d, t| {
            progress(d, t, "sensitivity")
        })?;
        let mut names: Vec<_> = plan.types.into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut overrides: Vec<(Regex, QuantType)> = names
            .into_iter()
            .map(|(name, ty)| {
                let re = Regex::new(&format!("^{}$", regex::escape(&name))).expect("escaped");
                (re, ty)
            })
            .collect();
        overrides.append(&mut q.options.tensor_types);
        q.options.tensor_types = overrides;
        Ok(q)
    }

    /// GPTQ over the model's linears that the plan quantizes; bytes by GGUF name, in GGUF row
    /// order (the `llama` architecture's Q and K rows permuted as the export permutes them).
    pub(super) fn run_gptq(
        &self,
        model: &Llama,
        jobs: &[Job],
        options: &GptqOptions,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<HashMap<String, Vec<u8>>> {
        let config = model.config();
        let arch = config.gguf_arch()?;
        let mut targets = Vec::new();
        let mut gguf_of = HashMap::new();
        // A fused GGUF matrix (Phi-3's attn_qkv, ffn_up) is the model's separate linears stacked by rows;
        // each part is GPTQ-quantized on its own and the rows' blocks are concatenated.
        let mut fused: Vec<(String, Vec<String>)> = Vec::new();
        for job in jobs {
            let linear = job.shape.name.starts_with("blk.") && job.shape.ne.len() == 2;
            if !linear || job.shape.ty == job.to || !job.to.is_quantized() {
                continue;
            }
            let Some(hf) = shuku_gguf::names::gguf_to_hf_arch(arch, &job.shape.name) else {
                continue;
            };
            let parts = match config.fused_parts(&hf) {
                Some(parts) => {
                    let names: Vec<String> = parts.into_iter().map(|(n, _)| n).collect();
                    fused.push((job.shape.name.clone(), names.clone()));
                    names
                }
                None => {
                    gguf_of.insert(hf.clone(), job.shape.name.clone());
                    vec![hf]
                }
            };
            for hf_name in parts {
                targets.push(GptqTarget {
                    hf_name,
                    ty: job.to,
                    importance: job.weights.clone(),
                });
            }
        }
        let by_hf = gptq(model, &targets, options, &mut |done, total| {
            progress(done, total, "GPTQ")
        })?;
        let mut by_hf = by_hf;
        let mut out = HashMap::new();
        for (gguf, parts) in fused {
            let mut bytes = Vec::new();
            for part in &parts {
                let b = by_hf.remove(part).ok_or_else(|| {
                    QuantizeError::Calibration(format!("{part}: GPTQ returned no rows"))
                })?;
                bytes.extend(b);
            }
            out.insert(gguf, bytes);
        }
        for (hf, bytes) in by_hf {
            let Some(gguf) = gguf_of.remove(&hf) else {
                continue;
            };
            let bytes = match shuku_model::export::rotary_heads(config, &hf)? {
                Some(n_head) => {
                    let rows = model.weight(&hf).map_or(1, |t| t.dims()[0]);
                    shuku_gguf::permute::permute_qk(&bytes, rows, bytes.len() / rows, n_head)
                        .ok_or_else(|| {
                            QuantizeError::Calibration(format!(
                                "{hf}: {rows} rows do not split into {n_head} rotary heads"
                            ))
                        })?
                }
                None => bytes,
            };
            out.insert(gguf, bytes);
        }
        Ok(out)
    }
}
