//! `shuku distill`: build a smaller student from a teacher (drop layers, or start from a given HF
//! folder), train it on a text file against the teacher's logits, save it as an HF folder with the
//! teacher's tokenizer, and report parameters and held-out perplexity of teacher and student before
//! and after training.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use indicatif::ProgressBar;
use shuku_distill::{drop_layers, Distillation, DivergenceKind, FitReport, LayerSelection};
use shuku_eval::{EvalError, PerplexityProtocol};
use shuku_model::Llama;

use crate::output::Output;
use crate::progress::bar;
use crate::table::{Align, Table};
use crate::text_tokenizer::TextTokenizer;

/// Distil a teacher into a smaller student and write the student as an HF folder.
///
/// The student is the teacher with fewer layers (--layers N keeps N evenly spaced layers: the first,
/// and the last when N > 1; --keep-layers 0,2,3 keeps exactly those), every kept weight copied, or an HF
/// folder of your own (--student, same vocabulary as the teacher). It is trained on --data, tokenized
/// with the teacher's tokenizer, for --steps optimizer steps of --batch sequences of --seq-len tokens
/// (AdamW, warm-up then cosine decay to a tenth of --lr). The loss is
/// alpha · divergence(teacher, student) at --temperature + (1 − alpha) · cross-entropy on the text;
/// --alpha 0 trains on the text alone. The last 5 % of the data's tokens (at least one sequence) are
/// held out of training.
///
/// Perplexity follows llama-perplexity's protocol (windows of -c tokens, the second half of each
/// scored) on --eval, or, without it, on the held-out tail of --data when that holds two windows.
///
/// Example: shuku distill --teacher smollm2 --layers 16 --data train.txt --eval held.txt -o smollm2-16l
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("student_from")
        .required(true)
        .args(["student", "layers", "keep_layers"])
))]
pub struct Args {
    /// The teacher: an HF model folder (config.json, safetensors, tokenizer).
    #[arg(long, value_name = "HF_DIR")]
    teacher: PathBuf,
    /// Start from this HF model folder (it must share the teacher's vocabulary).
    #[arg(long, value_name = "HF_DIR")]
    student: Option<PathBuf>,
    /// Keep N evenly spaced teacher layers (the first, and the last when N > 1).
    #[arg(long, value_name = "N")]
    layers: Option<usize>,
    /// Keep exactly these teacher layers, in this order, e.g. 0,2,3.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    keep_layers: Option<Vec<usize>>,
    /// UTF-8 text to train on.
    #[arg(long, value_name = "TEXT_FILE")]
    data: PathBuf,
    /// Output HF folder for the student.
    #[arg(short, long, value_name = "OUT_DIR")]
    output: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Weight of the divergence from the teacher in [0, 1]; 1 − alpha weighs the text's labels.
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// Softmax temperature of the divergence.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Divergence from the teacher: forward (KL(teacher‖student)), reverse (KL(student‖teacher)) or
    /// jsd (Jensen–Shannon, equal weights).
    #[arg(long, default_value = "forward")]
    divergence: String,
    /// Held-out text for perplexity (default: the held-out tail of --data).
    #[arg(long, value_name = "TEXT_FILE")]
    eval: Option<PathBuf>,
    /// Perplexity window in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 256)]
    ctx: usize,
    /// Perplexity windows (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    /// Seed of the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute each layer's activations in the backward pass instead of keeping them: less memory
    /// (one layer's activations), one more forward pass of the layers.
    #[arg(long)]
    checkpoint_activations: bool,
    /// Replace an existing output folder.
    #[arg(long)]
    overwrite: bool,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
}

/// How the student is made.
#[derive(Debug)]
enum StudentSource {
    /// An HF folder of its own.
    Folder(PathBuf),
    /// The teacher with only some layers.
    Layers(Layers),
}

/// Which teacher layers a layer-dropped student keeps.
#[derive(Debug)]
enum Layers {
    /// This many, evenly spaced.
    Count(usize),
    /// Exactly these.
    Listed(Vec<usize>),
}

/// `n` of `total` layer indices, evenly spaced, the first and (for `n > 1`) the last included.
///
/// With `n ≤ total` the spacing is at least one layer, so rounding never repeats an index.
fn evenly_spaced(n: usize, total: usize) -> Vec<usize> {
    if n <= 1 {
        return vec![0; n.min(total)];
    }
    (0..n)
        .map(|i| ((i * (total - 1)) as f64 / (n - 1) as f64).round() as usize)
        .collect()
}

fn parse_divergence(s: &str) -> Result<DivergenceKind> {
    Ok(match s {
        "forward" => DivergenceKind::Forward,
        "reverse" => DivergenceKind::Reverse,
        "jsd" => DivergenceKind::Jsd { beta: 0.5 },
        _ => bail!("--divergence must be forward, reverse or jsd, got `{s}`"),
    })
}

/// Checks every number and the student choice before anything is loaded.
fn check_args(args: &Args) -> Result<StudentSource> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.seq_len < 2 {
        bail!("--seq-len must be at least 2");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", args.lr);
    }
    if !(0.0..=1.0).contains(&args.alpha) {
        bail!(
            "--alpha must be in [0, 1] (0: the text's labels only, 1: the teacher only), got {}",
            args.alpha
        );
    }
    if !(args.temperature.is_finite() && args.temperature > 0.0) {
        bail!(
            "--temperature must be a positive number, got {}",
            args.temperature
        );
    }
    if args.chunks == Some(0) {
        bail!("--chunks must be at least 1");
    }
    if args.ctx < 3 {
        bail!("-c must be at least 3 (the scored half of a window would be empty)");
    }
    parse_divergence(&args.divergence)?;
    Ok(match (&args.student, args.layers, &args.keep_layers) {
        (Some(dir), None, None) => StudentSource::Folder(dir.clone()),
        (None, Some(0), None) => bail!("--layers 0 leaves no layer: a student needs at least one"),
        (None, Some(n), None) => StudentSource::Layers(Layers::Count(n)),
        (None, None, Some(list)) => {
            if list.is_empty() {
                bail!("--keep-layers is empty: list the teacher layers to keep, e.g. 0,2,3");
            }
            let mut seen = list.clone();
            seen.sort_unstable();
            if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
                bail!("--keep-layers lists layer {} twice", w[0]);
            }
            StudentSource::Layers(Layers::Listed(list.clone()))
        }
        // clap's group allows exactly one of the three.
        _ => bail!("give one of --student, --layers or --keep-layers"),
    })
}

/// Refuses an existing non-empty output without --overwrite, and an output that cannot be
/// created (its nearest existing ancestor is not a writable folder), before any work is done.
fn check_output(out: &Path, overwrite: bool) -> Result<()> {
    let non_empty = out.exists()
        && (!out.is_dir() || std::fs::read_dir(out).map_or(true, |mut d| d.next().is_some()));
    if non_empty && !overwrite {
        bail!("{} exists: pass --overwrite to replace it", out.display());
    }
    let mut probe = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    while !probe.exists() {
        probe = match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
    }
    if !probe.is_dir() {
        bail!(
            "cannot write {}: {} is not a folder; choose another -o",
            out.display(),
            probe.display()
        );
    }
    // A throw-away folder where the student will be staged (removed at once).
    tempfile::Builder::new()
        .prefix(".shuku-probe-")
        .tempdir_in(&probe)
        .map_err(|e| {
            anyhow!(
                "cannot write {}: {} is not writable ({e}); choose another -o",
                out.display(),
                probe.display()
            )
        })?;
    Ok(())
}

/// Checks that the inputs exist, with one line saying which does not.
fn check_inputs(args: &Args) -> Result<()> {
    let model_dir = |flag: &str, dir: &Path| -> Result<()> {
        if !dir.exists() {
            bail!(
                "{flag} {} does not exist: give an HF model folder (config.json, safetensors, tokenizer)",
                dir.display()
            );
        }
        if !dir.is_dir() {
            bail!(
                "{flag} {} is not a folder: give an HF model folder (config.json, safetensors, tokenizer)",
                dir.display()
            );
        }
        if !dir.join("config.json").is_file() {
            bail!(
                "{flag} {} has no config.json: give an HF model folder",
                dir.display()
            );
        }
        Ok(())
    };
    model_dir("--teacher", &args.teacher)?;
    if let Some(s) = &args.student {
        model_dir("--student", s)?;
    }
    let text_file = |flag: &str, path: &Path| -> Result<()> {
        if !path.exists() {
            bail!(
                "{flag} {} does not exist: give a UTF-8 text file",
                path.display()
            );
        }
        if !path.is_file() {
            bail!(
                "{flag} {} is not a file: give a UTF-8 text file",
                path.display()
            );
        }
        Ok(())
    };
    text_file("--data", &args.data)?;
    if let Some(e) = &args.eval {
        text_file("--eval", e)?;
    }
    // --overwrite must not replace the models the student is made from.
    if let Ok(out) = args.output.canonicalize() {
        for (flag, dir) in [
            ("--teacher", Some(&args.teacher)),
            ("--student", args.student.as_ref()),
        ] {
            if dir.and_then(|d| d.canonicalize().ok()).as_ref() == Some(&out) {
                bail!(
                    "-o {} is the {flag} folder: write the student elsewhere",
                    args.output.display()
                );
            }
        }
    }
    Ok(())
}

fn read_text(flag: &str, path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read {flag} {}: {e}", path.display()))
}

fn load(flag: &str, dir: &Path, device: &Device) -> Result<Llama> {
    Llama::from_hf_dir(dir, device).with_context(|| format!("cannot load {flag} {}", dir.display()))
}

/// Parameters of a model.
fn parameter_count(model: &Llama) -> usize {
    model
        .named_tensors()
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum()
}

/// Where perplexity is measured.
struct Held {
    tokens: Vec<u32>,
    protocol: PerplexityProtocol,
    /// Describes the text for the report.
    what: String,
}

/// What the report says about one model.
struct Row {
    label: &'static str,
    layers: usize,
    params: usize,
    ppl: Option<(f64, f64)>,
}

pub fn run(args: Args) -> Result<()> {
    let source = check_args(&args)?;
    check_output(&args.output, args.overwrite)?;
    check_inputs(&args)?;
    // Candle's own (spinning) pool stays out of the way; everything runs in this one.
    shuku_model::threads::init(None);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    pool.install(|| run_in_pool(&args, source))
}

fn run_in_pool(args: &Args, source: StudentSource) -> Result<()> {
    let started = Instant::now();
    let device = Device::Cpu;
    let divergence = parse_divergence(&args.divergence)?;
    let teacher = load("--teacher", &args.teacher, &device)?;
    let n_layers = teacher.config().num_hidden_layers();

    // The student's layers are checked against the teacher before the text is tokenized.
    let (student, kept) = match source {
        StudentSource::Folder(dir) => {
            let student = load("--student", &dir, &device)?;
            let (s, t) = (student.config().vocab_size, teacher.config().vocab_size);
            if s != t {
                bail!(
                    "--student {} has a vocabulary of {s} tokens, the teacher {t}: a student must share the teacher's tokenizer",
                    dir.display()
                );
            }
            (student, None)
        }
        StudentSource::Layers(layers) => {
            let keep = match layers {
                Layers::Count(n) if n > n_layers => bail!(
                    "--layers {n} is more than the teacher's {n_layers} layers: pick 1 to {n_layers}"
                ),
                Layers::Count(n) => evenly_spaced(n, n_layers),
                Layers::Listed(list) => {
                    if let Some(&bad) = list.iter().find(|&&i| i >= n_layers) {
                        bail!(
                            "--keep-layers: the teacher has no layer {bad}, its layers are 0 to {}",
                            n_layers - 1
                        );
                    }
                    list
                }
            };
            let student = drop_layers(&teacher, &LayerSelection::Explicit(keep.clone()))
                .map_err(|e| anyhow!("cannot build the student: {e}"))?;
            (student, Some(keep))
        }
    };

    let tokenizer = TextTokenizer::open(&args.teacher)?;
    let tokens = tokenizer
        .encode(&read_text("--data", &args.data)?)
        .with_context(|| format!("cannot tokenize --data {}", args.data.display()))?;
    let recipe = Distillation::new(args.steps, args.seq_len)
        .batch_size(args.batch)
        .lr(args.lr)
        .alpha(args.alpha)
        .seed(args.seed)
        .checkpoint_activations(args.checkpoint_activations)
        .temperature(args.temperature)
        .divergence(divergence);
    let needed = recipe.min_tokens(tokens.len());
    if tokens.len() < needed {
        bail!(
            "--data {} is too short: {} tokens, and --seq-len {} needs at least {} (a training sequence and a held-out one); use a longer text or a smaller --seq-len",
            args.data.display(),
            tokens.len(),
            args.seq_len,
            needed
        );
    }

    let protocol = PerplexityProtocol {
        n_ctx: args.ctx,
        n_chunks: args.chunks,
        bos: tokenizer.prepended_bos()?,
    };
    let held = match &args.eval {
        Some(path) => {
            let tokens = tokenizer
                .encode(&read_text("--eval", path)?)
                .with_context(|| format!("cannot tokenize --eval {}", path.display()))?;
            let chunks = protocol.n_chunks_for(tokens.len()).map_err(|e| match e {
                EvalError::TooFewTokens { found, needed, .. } => anyhow!(
                    "--eval {} is too short: {found} tokens, -c {} needs at least {needed} (two windows); use a longer text or a smaller -c",
                    path.display(),
                    args.ctx
                ),
                e => anyhow!("--eval {}: {e}", path.display()),
            })?;
            Some(Held {
                tokens,
                protocol,
                what: format!("{} ({chunks} windows of {})", path.display(), args.ctx),
            })
        }
        None => {
            let tail = tokens[tokens.len() - recipe.held_out_len(tokens.len())..].to_vec();
            match protocol.n_chunks_for(tail.len()) {
                Ok(chunks) => Some(Held {
                    what: format!(
                        "the held-out tail of --data ({} tokens, {chunks} windows of {})",
                        tail.len(),
                        args.ctx
                    ),
                    tokens: tail,
                    protocol,
                }),
                Err(_) => None,
            }
        }
    };

    let ppl = |model: &Llama, which: &str, pb: &ProgressBar| -> Result<Option<(f64, f64)>> {
        let Some(h) = &held else { return Ok(None) };
        pb.set_message(which.to_string());
        let r = model
            .perplexity(&h.tokens, &h.protocol)
            .with_context(|| format!("perplexity of the {which}"))?;
        pb.inc(1);
        Ok(Some((r.ppl, r.ppl_stderr)))
    };
    let pb = bar(if held.is_some() { 2 } else { 0 }, "perplexity");
    let teacher_row = Row {
        label: "teacher",
        layers: n_layers,
        params: parameter_count(&teacher),
        ppl: ppl(&teacher, "teacher", &pb)?,
    };
    let before = Row {
        label: "student (before)",
        layers: student.config().num_hidden_layers(),
        params: parameter_count(&student),
        ppl: ppl(&student, "student", &pb)?,
    };
    pb.finish_and_clear();

    let train_started = Instant::now();
    let report = recipe
        // --alpha 0 is the text's labels alone: no teacher forward pass is needed.
        .run(&student, (args.alpha > 0.0).then_some(&teacher), &tokens)
        .map_err(|e| anyhow!("distillation failed: {e}"))?;
    let train_seconds = train_started.elapsed().as_secs_f64();

    let pb = bar(u64::from(held.is_some()), "perplexity");
    let after = Row {
        label: "student (after)",
        layers: before.layers,
        params: before.params,
        ppl: ppl(&student, "student", &pb)?,
    };
    pb.finish_and_clear();

    student
        .save_hf_dir(&args.output, Some(&args.teacher), args.overwrite)
        .map_err(|e| anyhow!("cannot write {}: {e}", args.output.display()))?;

    print_report(
        args,
        &[teacher_row, before, after],
        kept.as_deref(),
        n_layers,
        held.as_ref().map(|h| h.what.as_str()),
        &report,
        train_seconds,
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    args: &Args,
    rows: &[Row],
    kept: Option<&[usize]>,
    n_layers: usize,
    held: Option<&str>,
    report: &FitReport,
    train_seconds: f64,
    total_seconds: f64,
) {
    let mut out = Output::stdout();
    let mut t = Table::new(&[
        ("model", Align::Left),
        ("layers", Align::Right),
        ("parameters", Align::Right),
        ("perplexity", Align::Right),
    ]);
    for row in rows {
        t.row(vec![
            row.label.into(),
            row.layers.to_string(),
            format!("{:.3} M", row.params as f64 / 1e6),
            row.ppl
                .map_or_else(|| "-".into(), |(p, e)| format!("{p:.3} ± {e:.3}")),
        ]);
    }
    out.text(&t.render());
    out.line("");
    if let Some(keep) = kept {
        let list: Vec<String> = keep.iter().map(usize::to_string).collect();
        out.line(format!(
            "student: teacher layers {} of {n_layers}",
            list.join(", ")
        ));
    }
    out.line(match held {
        Some(what) => format!("perplexity on {what}"),
        None => format!(
            "perplexity: not measured (the held-out tail of --data is shorter than two windows of -c {}); pass --eval TEXT_FILE",
            args.ctx
        ),
    });
    let tokens_seen = report.step * args.batch * args.seq_len;
    let mut loss = String::new();
    if let Some(last) = report.records.last() {
        loss = format!("; last step: cross-entropy {:.4}", last.hard);
        if let Some(soft) = last.soft {
            loss.push_str(&format!(", divergence {soft:.4}"));
        }
    }
    if let Some(ev) = &report.last_eval {
        loss.push_str(&format!("; held-out cross-entropy {:.4}", ev.loss));
    }
    out.line(format!(
        "steps: {}; tokens seen: {tokens_seen} ({} × {} per step){loss}",
        report.step, args.batch, args.seq_len
    ));
    out.line(format!(
        "wall time: training {train_seconds:.1} s ({:.0} tokens/s), total {total_seconds:.1} s",
        tokens_seen as f64 / train_seconds.max(1e-9)
    ));
    out.line(format!("wrote {}", args.output.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_layers_keep_the_first_and_the_last() {
        assert_eq!(evenly_spaced(1, 4), vec![0]);
        assert_eq!(evenly_spaced(2, 4), vec![0, 3]);
        assert_eq!(evenly_spaced(3, 4), vec![0, 2, 3]);
        assert_eq!(evenly_spaced(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(evenly_spaced(4, 30), vec![0, 10, 19, 29]);
        for total in 1..40 {
            for n in 1..=total {
                let v = evenly_spaced(n, total);
                assert_eq!(v.len(), n);
                assert!(v.windows(2).all(|w| w[0] < w[1]), "{n} of {total}: {v:?}");
                assert!(*v.last().unwrap() < total);
            }
        }
    }

    #[test]
    fn divergences_parse() {
        assert_eq!(
            parse_divergence("reverse").unwrap(),
            DivergenceKind::Reverse
        );
        assert!(parse_divergence("kl").is_err());
    }
}
