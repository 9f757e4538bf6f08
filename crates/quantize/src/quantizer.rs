//! [`Quantizer`]: the front door. A preset and options in, a GGUF file and a [`Report`] out.
//!
//! The input is a GGUF file (F32/F16/BF16; an already quantized one only when requantizing is
//! allowed) or an HF folder (streamed through shuku-model's GGUF export with a quantizing
//! [`TensorEncoder`]). One tensor is in memory at a time; its rows are quantized in parallel.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::Device;
use rayon::prelude::*;
use regex::Regex;
use shuku_gguf::{GgmlType, GgufFile, GgufWriter, LlamaFileType, Metadata, TensorDesc, Value};
use shuku_model::export::{convert_hf_dir, ExportOptions, TensorEncoder};
use shuku_model::{Llama, LlamaConfig};
use shuku_quants::QuantType;

use crate::bpw::{choose_types, Candidate};
use crate::calibrate::collect_imatrix;
use crate::error::{QuantizeError, Result};
use crate::gptq::{gptq, GptqOptions, GptqTarget};
use crate::imatrix::Imatrix;
use crate::report::{Report, TensorReport};
use crate::rules::{self, ModelFacts, TensorShape, TypeOptions};

/// Rows quantized by one rayon task: about 16k values, as llama-quantize's chunks.
const VALUES_PER_TASK: usize = 32 * 512;

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

    fn run_gguf(
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

    fn run_hf(
        &self,
        input: &Path,
        output: &Path,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<Report> {
        let config = LlamaConfig::from_file(input.join("config.json"))?;
        let arch = config.to_arch_params()?.arch;
        let mut tensors = Vec::new();
        for spec in config.tensor_specs() {
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

    /// The quantizer with `--tensor-type` overrides that put the file at `bpw` bits per weight
    /// with the least predicted loss, and an importance matrix (the calibration's own when none
    /// was given).
    fn with_size_budget(
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
        let arch = model.config().to_arch_params()?.arch;
        // The baseline plan says which tensors are quantized at all (norms and the like are not).
        let base = rules::plan_types(tensors, facts, q.ftype, &q.options)?;
        let mut fixed_bytes = 0u64;
        let mut candidates = Vec::new();
        let mut n_elements = 0u64;
        for (t, &ty) in tensors.iter().zip(&base.types) {
            let n: u64 = t.ne.iter().map(|&d| d as u64).product();
            n_elements += n;
            let hf = shuku_gguf::names::gguf_to_hf_arch(&arch, &t.name);
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

    /// Checks one tensor's conversion and finds its importance weights.
    fn job(&self, t: &TensorShape, to: QuantType, input: &Path) -> Result<Job> {
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

    /// GPTQ over the model's linears that the plan quantizes; bytes by GGUF name, in GGUF row
    /// order (the `llama` architecture's Q and K rows permuted as the export permutes them).
    fn run_gptq(
        &self,
        model: &Llama,
        jobs: &[Job],
        options: &GptqOptions,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<HashMap<String, Vec<u8>>> {
        let config = model.config();
        let arch = config.to_arch_params()?.arch;
        let mut targets = Vec::new();
        let mut gguf_of = HashMap::new();
        for job in jobs {
            let linear = job.shape.name.starts_with("blk.") && job.shape.ne.len() == 2;
            if !linear || job.shape.ty == job.to || !job.to.is_quantized() {
                continue;
            }
            let Some(hf) = shuku_gguf::names::gguf_to_hf_arch(&arch, &job.shape.name) else {
                continue;
            };
            gguf_of.insert(hf.clone(), job.shape.name.clone());
            targets.push(GptqTarget {
                hf_name: hf,
                ty: job.to,
                importance: job.weights.clone(),
            });
        }
        let by_hf = gptq(model, &targets, options, &mut |done, total| {
            progress(done, total, "GPTQ")
        })?;
        let mut out = HashMap::new();
        for (hf, bytes) in by_hf {
            let Some(gguf) = gguf_of.remove(&hf) else {
                continue;
            };
            let bytes = match shuku_model::export::rotary_heads(config, &hf)? {
                Some(n_head) => {
                    let rows = model
                        .named_tensors()
                        .into_iter()
                        .find_map(|(n, t)| (n == hf).then(|| t.dims()[0]))
                        .unwrap_or(1);
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

    /// The report of a tensor whose bytes were made elsewhere (GPTQ).
    fn report_precomputed(
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

    /// An importance matrix that weights none of the tensors being quantized is for another
    /// model (llama-quantize would silently quantize without it).
    fn check_imatrix_matches(&self, jobs: &[Job]) -> Result<()> {
        let Some((file, _)) = &self.imatrix else {
            return Ok(());
        };
        let wanted = jobs
            .iter()
            .any(|j| j.shape.ty != j.to && j.to.uses_importance());
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

    /// Quantizes one tensor's values as `job` says into a new buffer.
    fn encode(
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
    fn encode_into(
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

/// A run ready to write: the quantizer as configured for it, its jobs, the fallback count and
/// GPTQ's bytes by GGUF name.
struct Prepared {
    quantizer: Quantizer,
    jobs: Vec<Job>,
    n_fallback: usize,
    precomputed: HashMap<String, Vec<u8>>,
}

/// One tensor's conversion, checked.
#[derive(Debug)]
struct Job {
    input: PathBuf,
    shape: TensorShape,
    to: QuantType,
    weights: Option<Vec<f32>>,
}

impl Job {
    fn report(&self, bytes_in: usize, rmse: Option<f64>) -> TensorReport {
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

fn is_token_embd(name: &str) -> bool {
    name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

fn dims(ne: &[usize]) -> Vec<u64> {
    ne.iter().map(|&d| d as u64).collect()
}

/// The shuku-gguf type of a shuku-quants type (same ggml id).
fn ggml(t: QuantType) -> GgmlType {
    GgmlType::from_id(t.ggml_id()).expect("every QuantType is a ggml type")
}

/// The input's tensors as the rules see them; a type shuku cannot read is an error.
fn gguf_tensors(file: &GgufFile, input: &Path) -> Result<Vec<TensorShape>> {
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
fn gguf_facts(meta: &Metadata, input: &Path) -> Result<ModelFacts> {
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
