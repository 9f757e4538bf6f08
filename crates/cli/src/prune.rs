//! `shuku prune`: unstructured, N:M or structured pruning of an HF model folder, with the seed's
//! report (parameters, file size, held-out perplexity before / after pruning / after recovery,
//! decode speed before / after).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use shuku_distill::Distillation;
use shuku_eval::PerplexityProtocol;
use shuku_model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};
use shuku_model::Llama;

use crate::text_tokenizer::TextTokenizer;
use shuku_prune::{
    calibration_samples, GqaPolicy, Importance, Method, NmPattern, Owl, PruneReport, Pruner, Scope,
    StructuredSpec,
};

use crate::output::Output;
use crate::progress::bar;
use crate::table::{human_bytes, Align, Table};

/// Prune an HF model folder and write the result as an HF folder (and, with --gguf, a GGUF file).
///
/// Unstructured: --method magnitude|wanda|sparsegpt --sparsity 0.5 [--pattern 2:4] [--owl].
/// Zeros are stored like any weight, so files do not shrink; the report gives the sparsity.
///
/// Structured: --structured ffn=0.3,heads=0.25,layers=2 [--importance taylor] [--steps K
/// --recover-steps N]. Heads, FFN channels and layers are physically removed; the config records
/// per-layer widths, and the GGUF (arch `deci` when widths differ) loads in llama.cpp.
///
/// Calibration: the first --nsamples windows of --seqlen tokens of --calib. With --eval, held-out
/// perplexity (llama-perplexity's protocol) is measured before, after pruning and after recovery.
///
/// Example: shuku prune --model smollm2 --method wanda --sparsity 0.5 --calib train.txt -o smollm2-wanda
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The HF model folder to prune.
    #[arg(short, long)]
    model: PathBuf,
    /// Output HF folder.
    #[arg(short, long)]
    output: PathBuf,
    /// Unstructured method.
    #[arg(long, value_parser = ["magnitude", "wanda", "sparsegpt"])]
    method: Option<String>,
    /// Fraction of each linear's weights to prune (unstructured).
    #[arg(long, default_value_t = 0.5)]
    sparsity: f64,
    /// N:M pattern instead of a fraction, e.g. 2:4 (unstructured).
    #[arg(long)]
    pattern: Option<String>,
    /// Shape layer sparsities by outlier ratio (OWL; unstructured).
    #[arg(long)]
    owl: bool,
    /// Structured removal: ffn=R,heads=R,layers=N (any subset).
    #[arg(long)]
    structured: Option<String>,
    /// Importance of heads and channels: l1, l2, activation, taylor.
    #[arg(long, default_value = "activation")]
    importance: String,
    /// `uniform` (the same share of every layer) or `global` (layers compete).
    #[arg(long, default_value = "uniform", value_parser = ["uniform", "global"])]
    scope: String,
    /// How heads leave GQA groups: `even` (the same number from every group) or `groups` (whole KV groups).
    #[arg(long, default_value = "even", value_parser = ["even", "groups"])]
    gqa: String,
    /// Round kept FFN widths to a multiple of this (e.g. 256 so K-quants apply).
    #[arg(long, default_value_t = 1)]
    round_to: usize,
    /// Reach the structured target in this many steps, re-scoring (and recovering) after each.
    #[arg(long, default_value_t = 1)]
    steps: usize,
    /// Distillation steps from the unpruned model after each structured step (0: none).
    #[arg(long, default_value_t = 0)]
    recover_steps: usize,
    /// Peak learning rate of recovery.
    #[arg(long, default_value_t = 1e-4)]
    recover_lr: f64,
    /// Sequences per recovery step.
    #[arg(long, default_value_t = 8)]
    recover_batch: usize,
    /// Calibration text (also the recovery text).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Calibration samples.
    #[arg(long, default_value_t = 64)]
    nsamples: usize,
    /// Tokens per calibration sample.
    #[arg(long, default_value_t = 256)]
    seqlen: usize,
    /// Held-out text for perplexity (not the calibration text).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Perplexity window.
    #[arg(long, default_value_t = 256)]
    eval_ctx: usize,
    /// Perplexity windows (default: all).
    #[arg(long)]
    eval_chunks: Option<usize>,
    /// Also write the pruned model as this GGUF file.
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// GGUF tensor type: f32, f16, bf16.
    #[arg(long, default_value = "f16")]
    outtype: String,
    /// Measure decode tokens/s of the unpruned and pruned GGUF (needs --gguf): this many tokens.
    #[arg(long, default_value_t = 0)]
    bench_tokens: usize,
    /// Replace existing outputs.
    #[arg(long)]
    overwrite: bool,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
}

/// The pruner the arguments ask for, parsed and checked before anything is loaded.
fn parse_plan(args: &Args) -> Result<Pruner<'static>> {
    match (&args.method, &args.structured) {
        (Some(_), Some(_)) => bail!("--method and --structured are different runs: pick one"),
        (None, None) => bail!("say what to prune: --method M --sparsity S, or --structured SPEC"),
        (Some(m), None) => {
            if args.recover_steps > 0 {
                bail!("--recover-steps applies to structured pruning (training would refill the zeros)");
            }
            let method: Method = m.parse()?;
            let mut p = Pruner::unstructured(method, args.sparsity);
            if let Some(pat) = &args.pattern {
                p = p.pattern(pat.parse::<NmPattern>()?);
            }
            if args.owl {
                p = p.owl(Owl::default());
            }
            shuku_prune::UnstructuredConfig::new(method, args.sparsity).validate()?;
            Ok(p)
        }
        (None, Some(spec)) => {
            let spec: StructuredSpec = spec.parse()?;
            let importance: Importance = args.importance.parse()?;
            Ok(Pruner::structured(spec)
                .importance(importance)
                .scope(if args.scope == "global" {
                    Scope::Global
                } else {
                    Scope::Uniform
                })
                .gqa(if args.gqa == "groups" {
                    GqaPolicy::WholeGroups
                } else {
                    GqaPolicy::EvenPerGroup
                })
                .round_to(args.round_to)
                .steps(args.steps))
        }
    }
}

fn out_type(s: &str) -> Result<OutType> {
    Ok(match s {
        "f32" => OutType::F32,
        "f16" => OutType::F16,
        "bf16" => OutType::BF16,
        _ => bail!("--outtype must be f32, f16 or bf16, got {s}"),
    })
}

/// Refuses to start when an output exists and --overwrite was not given.
fn check_outputs(args: &Args) -> Result<()> {
    if args.overwrite {
        return Ok(());
    }
    let non_empty_dir = |p: &Path| {
        p.exists() && (!p.is_dir() || std::fs::read_dir(p).map_or(true, |mut d| d.next().is_some()))
    };
    if non_empty_dir(&args.output) {
        bail!(
            "{} exists: pass --overwrite to replace it",
            args.output.display()
        );
    }
    if let Some(g) = &args.gguf {
        if g.exists() {
            bail!("{} exists: pass --overwrite to replace it", g.display());
        }
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Held-out perplexity of `model` on `tokens`.
fn perplexity(model: &Llama, tokens: &[u32], protocol: &PerplexityProtocol) -> Result<f64> {
    Ok(model.perplexity(tokens, protocol)?.ppl)
}

/// A short distillation of `student` from `teacher` on the calibration text.
fn recover(
    student: &Llama,
    teacher: &Llama,
    tokens: &[u32],
    args: &Args,
) -> std::result::Result<(), String> {
    Distillation::new(args.recover_steps, args.seqlen)
        .batch_size(args.recover_batch)
        .lr(args.recover_lr)
        .run(student, Some(teacher), tokens)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Decode tokens/s of a GGUF file on the inference engine (mean of `reps` runs after a warm-up).
fn decode_speed(path: &Path, n: usize, reps: usize, threads: usize) -> Result<Vec<f64>> {
    let engine = shuku_infer::Engine::load(
        path,
        shuku_infer::EngineOptions {
            threads,
            context: n + 1,
            ..Default::default()
        },
    )
    .with_context(|| format!("cannot load {}", path.display()))?;
    let mut rng = shuku_infer::Rng::new(1234);
    crate::bench::tg(&engine, n, &mut rng)?;
    (0..reps)
        .map(|_| crate::bench::tg(&engine, n, &mut rng))
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

fn write_gguf(dir: &Path, out: &Path, outtype: OutType, overwrite: bool) -> Result<u64> {
    let options = ExportOptions {
        name: None,
        overwrite,
        tokenizer_pre: None,
    };
    convert_hf_dir(
        dir,
        out,
        &PlainEncoder(outtype),
        &options,
        &mut |_, _, _| {},
    )
    .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(std::fs::metadata(out)?.len())
}

pub fn run(args: Args) -> Result<()> {
    let outtype = out_type(&args.outtype)?;
    check_outputs(&args)?;
    if args.bench_tokens > 0 && args.gguf.is_none() {
        bail!("--bench-tokens measures the GGUF files: pass --gguf too");
    }
    // Candle's own (spinning) pool stays out of the way; everything runs in this one.
    shuku_model::threads::init(None);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    pool.install(|| run_in_pool(&args, outtype))
}

fn run_in_pool(args: &Args, outtype: OutType) -> Result<()> {
    let plan = parse_plan(args)?;
    let device = Device::Cpu;
    let load = || {
        Llama::from_hf_dir(&args.model, &device)
            .with_context(|| format!("cannot load {}", args.model.display()))
    };
    let model = load()?;
    let tokenizer = TextTokenizer::open(&args.model)?;
    let calib_tokens = match &args.calib {
        Some(path) => tokenizer.encode(&read_text(path)?)?,
        None => Vec::new(),
    };
    let samples = if calib_tokens.is_empty() {
        Vec::new()
    } else {
        calibration_samples(&calib_tokens, args.nsamples, args.seqlen).with_context(|| {
            format!(
                "calibration text {}",
                args.calib.as_deref().unwrap_or(Path::new("")).display()
            )
        })?
    };
    let eval = match &args.eval {
        Some(path) => {
            let tokens = tokenizer.encode(&read_text(path)?)?;
            let protocol = PerplexityProtocol {
                n_ctx: args.eval_ctx,
                n_chunks: args.eval_chunks,
                bos: tokenizer.prepended_bos()?,
            };
            protocol.n_chunks_for(tokens.len())?;
            Some((tokens, protocol))
        }
        None => None,
    };
    let ppl_before = match &eval {
        Some((t, p)) => Some(perplexity(&model, t, p)?),
        None => None,
    };

    let pb = bar(0, "pruning");
    let progress = {
        let pb = pb.clone();
        move |stage: &str, done: usize, total: usize| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            pb.set_message(stage.to_string());
        }
    };
    // Perplexity right after each structured step, before its recovery.
    let mut ppl_pruned = None;
    let started = Instant::now();
    // Only structured runs recover (unstructured with --recover-steps is refused above).
    let teacher = (args.recover_steps > 0).then(load).transpose()?;
    let mut pruner = plan.calibration(samples).progress(progress);
    if let Some(teacher) = &teacher {
        let (eval_ref, ppl_slot) = (&eval, &mut ppl_pruned);
        pruner = pruner.recover(move |student: &Llama, _step| {
            if let Some((t, pr)) = eval_ref {
                *ppl_slot = Some(student.perplexity(t, pr).map_err(|e| e.to_string())?.ppl);
            }
            recover(student, teacher, &calib_tokens, args)
        });
    }
    let pruned = pruner.run(model)?;
    pb.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let model = pruned.model;
    let report = pruned.report;
    let ppl_after = match &eval {
        Some((t, p)) => Some(perplexity(&model, t, p)?),
        None => None,
    };
    let (ppl_pruned, ppl_recovered) = if args.recover_steps > 0 {
        (ppl_pruned, ppl_after)
    } else {
        (ppl_after, None)
    };

    model
        .save_hf_dir(&args.output, Some(&args.model), args.overwrite)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let mut sizes = None;
    let mut speeds = None;
    if let Some(gguf) = &args.gguf {
        let after = write_gguf(&args.output, gguf, outtype, args.overwrite)?;
        // The unpruned model's GGUF, written aside, for the size and speed columns.
        let tmp = tempfile::tempdir()?;
        let base = tmp.path().join("unpruned.gguf");
        let before = write_gguf(&args.model, &base, outtype, true)?;
        sizes = Some((before, after));
        if args.bench_tokens > 0 {
            let threads = args.threads.unwrap_or(0);
            let (mut b, mut a) = (Vec::new(), Vec::new());
            // Alternate the two files so drift on a shared machine hits both alike.
            for _ in 0..3 {
                b.extend(decode_speed(&base, args.bench_tokens, 1, threads)?);
                a.extend(decode_speed(gguf, args.bench_tokens, 1, threads)?);
            }
            speeds = Some((b, a));
        }
    }
    print_report(
        &report,
        elapsed,
        ppl_before,
        ppl_pruned,
        ppl_recovered,
        sizes,
        speeds,
    );
    Ok(())
}

fn print_report(
    report: &PruneReport,
    elapsed: f64,
    ppl_before: Option<f64>,
    ppl_pruned: Option<f64>,
    ppl_recovered: Option<f64>,
    sizes: Option<(u64, u64)>,
    speeds: Option<(Vec<f64>, Vec<f64>)>,
) {
    let mut out = Output::stdout();
    if let Some(s) = &report.sparsity {
        let mut t = Table::new(&[
            ("tensor", Align::Left),
            ("shape", Align::Right),
            ("zeros", Align::Right),
            ("sparsity", Align::Right),
        ]);
        for ts in &s.tensors {
            t.row(vec![
                ts.name.clone(),
                format!("{}×{}", ts.rows, ts.cols),
                ts.zeros.to_string(),
                format!("{:.2} %", 100.0 * ts.sparsity()),
            ]);
        }
        out.text(&t.render());
        out.line(format!(
            "\npruned linears: {:.2} % zeros ({} of {}); whole model: {:.2} %",
            100.0 * s.overall(),
            s.zeros(),
            s.numel(),
            100.0 * s.zeros() as f64 / report.params_before.max(1) as f64
        ));
    }
    if !report.layers_removed.is_empty() {
        out.line(format!("layers removed: {:?}", report.layers_removed));
    }
    let widths: Vec<String> = report
        .widths
        .iter()
        .map(|d| format!("{}/{}/{}", d.n_heads, d.n_kv_heads, d.intermediate_size))
        .collect();
    out.line(format!(
        "layer widths (heads/kv heads/ffn): {}",
        widths.join(" ")
    ));
    out.line(format!(
        "prune time: {:.2} s; recovery and evaluation between steps: {:.1} s; total {:.1} s\n",
        report.prune_seconds, report.recover_seconds, elapsed
    ));
    let mut t = Table::new(&[
        ("", Align::Left),
        ("before", Align::Right),
        ("after", Align::Right),
        ("change", Align::Right),
    ]);
    let pct = |b: f64, a: f64| format!("{:+.1} %", 100.0 * (a - b) / b);
    let (pb, pa) = (report.params_before as f64, report.params_after as f64);
    t.row(vec![
        "parameters".into(),
        format!("{:.3} M", pb / 1e6),
        format!("{:.3} M", pa / 1e6),
        pct(pb, pa),
    ]);
    if let Some((b, a)) = sizes {
        t.row(vec![
            "GGUF size".into(),
            human_bytes(b),
            human_bytes(a),
            pct(b as f64, a as f64),
        ]);
    }
    if let (Some(b), Some(a)) = (ppl_before, ppl_pruned) {
        t.row(vec![
            "perplexity (pruned)".into(),
            format!("{b:.3}"),
            format!("{a:.3}"),
            pct(b, a),
        ]);
    }
    if let (Some(b), Some(a)) = (ppl_before, ppl_recovered) {
        t.row(vec![
            "perplexity (recovered)".into(),
            format!("{b:.3}"),
            format!("{a:.3}"),
            pct(b, a),
        ]);
    }
    if let Some((b, a)) = speeds {
        let (mb, ma) = (mean(&b), mean(&a));
        t.row(vec![
            "decode tokens/s".into(),
            format!("{mb:.1}"),
            format!("{ma:.1}"),
            format!("{:.2}×", ma / mb),
        ]);
    }
    out.text(&t.render());
}
