//! [`Quantizer`]: the front door. A preset and options in, a GGUF file and a [`Report`] out.
//!
//! The input is a GGUF file (F32/F16/BF16; an already quantized one only when requantizing is
//! allowed) or an HF folder (streamed through shuku-model's GGUF export with a quantizing
//! [`TensorEncoder`](shuku_model::export::TensorEncoder)). One tensor is in memory at a time;
//! its rows are quantized in parallel.
//!
//! Here: the presets, the builder, and the run's preparation (plan, checks, output metadata).
//! [`job`] checks and encodes one tensor; [`gguf_input`] and [`hf_input`] stream the two kinds
//! of input; [`calibration`] runs the steps that need the model on calibration text (the
//! size-budget search and GPTQ).

mod calibration;
mod gguf_input;
mod hf_input;
mod job;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use regex::Regex;
use shuku_gguf::{GgmlType, GgufFile, LlamaFileType, Metadata, Value};
use shuku_model::Llama;
use shuku_quants::QuantType;

use crate::error::{QuantizeError, Result};
use crate::gptq::GptqOptions;
use crate::imatrix::Imatrix;
use crate::report::Report;
use crate::rules::{self, ModelFacts, TensorShape, TypeOptions};

use gguf_input::{gguf_facts, gguf_tensors};
use job::{Job, Prepared};

/// The presets shuku writes, by name (llama-quantize's names).
pub fn presets() -> Vec<LlamaFileType> {
    (0..64)
        .filter_map(LlamaFileType::from_id)
        .filter(|f| rules::default_type(*f).is_some())
        .collect()
}

/// The preset called `name` (any case: `q4_k_m`, `Q4_K_M`).
pub fn preset(name: &str) -> Result<LlamaFileType> {
    presets()
        .into_iter()
        .find(|f| f.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| QuantizeError::UnknownPreset {
            name: name.to_string(),
            known: presets()
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Whole-model quantization, configured in a few calls.
///
/// ```no_run
/// use shuku_quantize::{preset, Quantizer};
///
/// let report = Quantizer::new(preset("Q4_K_M")?)
///     .imatrix_file("imatrix.gguf")?
///     .run("model-f32.gguf", "model-q4_k_m.gguf")?;
/// println!("{report}");
/// # Ok::<(), shuku_quantize::QuantizeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Quantizer {
    ftype: LlamaFileType,
    options: TypeOptions,
    imatrix: Option<(String, Imatrix)>,
    allow_requantize: bool,
    overwrite: bool,
    measure_error: bool,
    gptq: Option<GptqOptions>,
    target: Option<(f64, Vec<Vec<u32>>)>,
}

impl Quantizer {
    /// A quantizer for `ftype` with llama-quantize's defaults.
    pub fn new(ftype: LlamaFileType) -> Self {
        Quantizer {
            ftype,
            options: TypeOptions::default(),
            imatrix: None,
            allow_requantize: false,
            overwrite: false,
            measure_error: false,
            gptq: None,
            target: None,
        }
    }

    /// `--target-bpw`: chooses each weight's type by measured sensitivity on the calibration
    /// chunks so the whole file has at most `bpw` bits per weight ([`crate::bpw`]). Without an
    /// importance matrix, the calibration's own is used for the search and the rounding.
    pub fn target_bpw(mut self, bpw: f64, chunks: Vec<Vec<u32>>) -> Self {
        self.target = Some((bpw, chunks));
        self
    }

    /// Rounds the linear layers with GPTQ over these calibration chunks instead of to nearest
    /// (`--method gptq`); embeddings and the output head stay round-to-nearest.
    pub fn gptq(mut self, options: GptqOptions) -> Self {
        self.gptq = Some(options);
        self
    }

    /// Weights the rounding by an importance matrix read from `path` (GGUF or legacy `.dat`).
    pub fn imatrix_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let m = Imatrix::load(path)?;
        Ok(self.imatrix(path.display().to_string(), m))
    }

    /// Weights the rounding by `imatrix`; `label` is recorded as `quantize.imatrix.file`.
    pub fn imatrix(mut self, label: impl Into<String>, imatrix: Imatrix) -> Self {
        self.options.has_imatrix = true;
        self.imatrix = Some((label.into(), imatrix));
        self
    }

    /// `--pure`: the preset's type for every quantizable tensor.
    pub fn pure(mut self, yes: bool) -> Self {
        self.options.pure = yes;
        self
    }

    /// `--leave-output-tensor`.
    pub fn leave_output_tensor(mut self, yes: bool) -> Self {
        self.options.leave_output_tensor = yes;
        self
    }

    /// `--output-tensor-type`.
    pub fn output_tensor_type(mut self, ty: QuantType) -> Self {
        self.options.output_tensor_type = Some(ty);
        self
    }

    /// `--token-embedding-type`.
    pub fn token_embedding_type(mut self, ty: QuantType) -> Self {
        self.options.token_embedding_type = Some(ty);
        self
    }

    /// `--tensor-type REGEX=TYPE` (in the order given; the first match wins).
    pub fn tensor_type(mut self, pattern: Regex, ty: QuantType) -> Self {
        self.options.tensor_types.push((pattern, ty));
        self
    }

    /// Parses and adds a `REGEX=TYPE` override.
    pub fn tensor_type_spec(self, spec: &str) -> Result<Self> {
        let bad = |message: String| QuantizeError::BadOverride {
            spec: spec.to_string(),
            message,
        };
        let (pat, ty) = spec
            .rsplit_once('=')
            .ok_or_else(|| bad("expected REGEX=TYPE".into()))?;
        let ty: QuantType = ty.parse().map_err(bad)?;
        let re = Regex::new(pat).map_err(|e| bad(e.to_string()))?;
        Ok(self.tensor_type(re, ty))
    }

    /// Allows converting tensors that are already quantized.
    pub fn allow_requantize(mut self, yes: bool) -> Self {
        self.allow_requantize = yes;
        self
    }

    /// Replaces an existing output file.
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// Measures each tensor's RMSE against its input (for [`Report::table`]).
    pub fn measure_error(mut self, yes: bool) -> Self {
        self.measure_error = yes;
        self
    }

    /// Quantizes `input` (a GGUF file or an HF folder) into `output`.
    pub fn run(&self, input: impl AsRef<Path>, output: impl AsRef<Path>) -> Result<Report> {
        self.run_with_progress(input, output, &mut |_, _, _| {})
    }

    /// [`Quantizer::run`], calling `progress(done, total, tensor)` before each tensor.
    pub fn run_with_progress(
        &self,
        input: impl AsRef<Path>,
        output: impl AsRef<Path>,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<Report> {
        let (input, output) = (input.as_ref(), output.as_ref());
        let start = Instant::now();
        let mut report = if input.is_dir() {
            self.run_hf(input, output, progress)?
        } else {
            self.run_gguf(input, output, progress)?
        };
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The type each tensor of the GGUF `input` would get, without writing anything.
    pub fn plan(&self, input: impl AsRef<Path>) -> Result<Vec<(String, QuantType)>> {
        let input = input.as_ref();
        let file = GgufFile::open(input)?;
        let tensors = gguf_tensors(&file, input)?;
        let facts = gguf_facts(file.metadata(), input)?;
        let plan = rules::plan_types(&tensors, &facts, self.ftype, &self.options)?;
        Ok(tensors
            .into_iter()
            .map(|t| t.name)
            .zip(plan.types)
            .collect())
    }

    /// Plans every tensor's type (after the size-budget search when one is asked for), checks
    /// each conversion, and runs GPTQ when asked. Returns the quantizer as configured for the
    /// run (with the search's overrides and importance matrix), the jobs, the fallback count and
    /// GPTQ's bytes by GGUF name.
    fn prepare(
        &self,
        input: &Path,
        tensors: &[TensorShape],
        facts: &ModelFacts,
        load: &dyn Fn() -> Result<Llama>,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<Prepared> {
        let mut q = self.clone();
        let mut model = None;
        if let Some((bpw, chunks)) = &self.target {
            let m = load()?;
            q = self.with_size_budget(&m, tensors, facts, *bpw, chunks, progress)?;
            model = Some(m);
        }
        let plan = rules::plan_types(tensors, facts, q.ftype, &q.options)?;
        let jobs: Vec<Job> = tensors
            .iter()
            .zip(&plan.types)
            .map(|(t, &to)| q.job(t, to, input))
            .collect::<Result<_>>()?;
        q.check_imatrix_matches(&jobs)?;
        let precomputed = match &q.gptq {
            Some(options) => {
                let m = match model {
                    Some(m) => m,
                    None => load()?,
                };
                q.run_gptq(&m, &jobs, options, progress)?
            }
            None => HashMap::new(),
        };
        Ok(Prepared {
            quantizer: q,
            jobs,
            n_fallback: plan.n_fallback,
            precomputed,
        })
    }

    /// An importance matrix that weights none of the tensors being quantized is for another
    /// model (llama-quantize would silently quantize without it). The token embedding (a lookup)
    /// and the output matrix (llama-imatrix leaves it out unless asked) are in none, so they alone
    /// do not count.
    fn check_imatrix_matches(&self, jobs: &[Job]) -> Result<()> {
        let Some((file, _)) = &self.imatrix else {
            return Ok(());
        };
        let wanted = jobs.iter().any(|j| {
            j.shape.ty != j.to
                && j.to.uses_importance()
                && !is_token_embd(&j.shape.name)
                && j.shape.name != "output.weight"
        });
        if wanted && !jobs.iter().any(|j| j.weights.is_some()) {
            return Err(QuantizeError::ImatrixForAnotherModel {
                file: PathBuf::from(file),
            });
        }
        Ok(())
    }

    /// `tensor_requires_imatrix`: of the types shuku writes, only Q2_K in a Q2_K_S file.
    fn requires_imatrix(&self, name: &str, to: QuantType) -> bool {
        !is_token_embd(name)
            && name != "output.weight"
            && to == QuantType::Q2_K
            && self.ftype == LlamaFileType::MostlyQ2_K_S
    }

    /// llama-quantize's output metadata: the input's keys, then `general.quantization_version`
    /// and `general.file_type` moved to the end (ggml's `gguf_set_val` removes and appends), then
    /// the importance matrix's provenance.
    fn output_metadata(&self, input: &Metadata) -> Metadata {
        let mut meta = input.clone();
        for k in ["split.no", "split.count", "split.tensors.count"] {
            meta.remove(k);
        }
        let mut set = |k: &str, v: Value| {
            meta.remove(k);
            meta.insert(k, v);
        };
        set("general.quantization_version", Value::U32(2));
        set("general.file_type", Value::U32(self.ftype.id()));
        if let Some((file, m)) = &self.imatrix {
            // llama-quantize copies these into 128-byte buffers.
            let truncate = |s: &str| s.chars().take(127).collect::<String>();
            set("quantize.imatrix.file", Value::String(truncate(file)));
            if let Some(ds) = m.datasets.first() {
                set("quantize.imatrix.dataset", Value::String(truncate(ds)));
            }
            set(
                "quantize.imatrix.entries_count",
                Value::U32(m.entries.len() as u32),
            );
            if m.chunk_count > 0 {
                set("quantize.imatrix.chunks_count", Value::U32(m.chunk_count));
            }
        }
        meta
    }
}

fn is_token_embd(name: &str) -> bool {
    name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

/// The shuku-gguf type of a shuku-quants type (same ggml id).
fn ggml(t: QuantType) -> GgmlType {
    GgmlType::from_id(t.ggml_id()).expect("every QuantType is a ggml type")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// shuku-quants and shuku-gguf each carry ggml's type table (neither depends on the other):
    /// they must agree on every type shuku-quants handles.
    #[test]
    fn quant_types_agree_with_the_gguf_type_table() {
        for &t in QuantType::ALL {
            let g = ggml(t);
            assert_eq!(g.id(), t.ggml_id(), "{t}");
            assert_eq!(g.block_size() as usize, t.block_size(), "{t}");
            assert_eq!(g.type_size() as usize, t.type_size(), "{t}");
            assert_eq!(g.name(), t.name(), "{t}");
        }
    }
}
