//! Knowledge distillation against hard-label training, same student, data, steps and seed.
//!
//! The student keeps half of the teacher's layers (weights copied), then is trained twice:
//! (a) with `α·T²·KL(teacher_T ‖ student_T) + (1−α)·CE` (forward KL, T = 2, α = 0.7), and
//! (b) with the hard cross-entropy alone. Both held-out perplexity curves are printed side by
//! side and written to CSV.
//!
//! ```sh
//! cargo run --release --example distill -- --threads 1
//! # the SmolLM2 student (15 of 30 layers) on the King James Bible:
//! cargo run --release --example distill -- --teacher ~/.cache/shuku-assets/hf/SmolLM2-135M-Instruct-f32 \
//!     --corpus ../shared/data/text/kjv.txt --steps 40 --eval-every 10 --eval-batches 8
//! ```

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use shuku::candle::Device;
use shuku::distill::corpus::split_tail;
use shuku::distill::{
    drop_layers, evaluate, DataConfig, DistillLoss, DivergenceKind, LayerSelection, LogFormat,
    LrSchedule, TemperatureSchedule, TokenDataset, TrainConfig, Trainable, Trainer,
};
use shuku::model::{Llama, Tokenizer};

#[derive(Debug, Parser)]
#[command(about = "Distil a half-depth student from a teacher, against hard labels alone")]
struct Args {
    /// Teacher HF folder (config.json, safetensors, tokenizer.json).
    #[arg(long, default_value = "assets/shuku-base")]
    teacher: PathBuf,
    /// Text to train and evaluate on; its last --held-out share is held out.
    #[arg(long, default_value = "assets/corpus/shakespeare.txt")]
    corpus: PathBuf,
    /// Use only the first this many bytes of the corpus (cut at a line), 0 for all.
    #[arg(long, default_value_t = 0)]
    max_bytes: usize,
    /// Share of the corpus held out (a contiguous tail).
    #[arg(long, default_value_t = 0.05)]
    held_out: f64,
    /// Teacher layers the student keeps: `every-other`, `first:N` or a list `0,2,5`.
    #[arg(long, default_value = "every-other")]
    keep: String,
    /// Optimizer steps of each run.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Peak learning rate (warmup then cosine to a tenth).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// KD soft-term weight α.
    #[arg(long, default_value_t = 0.7)]
    alpha: f64,
    /// KD temperature T.
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    /// Seed of the batch order (both runs).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Validate every this many steps.
    #[arg(long, default_value_t = 25)]
    eval_every: usize,
    /// Held-out batches per evaluation (default: all of them).
    #[arg(long)]
    eval_batches: Option<usize>,
    /// Where to write the side-by-side curves (and `<stem>-kd.csv`, `<stem>-hard.csv` logs).
    #[arg(long, default_value = "target/distill/curves.csv")]
    csv: PathBuf,
    /// Only the KD run (for large teachers where one run is all the time allows).
    #[arg(long)]
    kd_only: bool,
    /// Compute threads (every pool: `shuku::model::threads::init`).
    #[arg(long)]
    threads: Option<usize>,
    /// Recompute each layer's activations in the backward pass (less memory, one more forward pass).
    #[arg(long)]
    checkpoint_activations: bool,
}

fn parse_keep(s: &str) -> Result<LayerSelection> {
    Ok(match s {
        "every-other" => LayerSelection::EveryOther,
        _ => match s.strip_prefix("first:") {
            Some(n) => LayerSelection::First(n.parse().context("--keep first:N")?),
            None => LayerSelection::Explicit(
                s.split(',')
                    .map(|x| x.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--keep: every-other, first:N or a comma-separated list")?,
            ),
        },
    })
}

fn train_config(a: &Args, log: PathBuf) -> TrainConfig {
    TrainConfig {
        steps: a.steps,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        grad_accum: 1,
        lr: LrSchedule::WarmupCosine {
            max_lr: a.lr,
            min_lr: a.lr / 10.0,
            warmup_steps: a.warmup.min(a.steps / 2),
            total_steps: a.steps,
        },
        weight_decay: 0.1,
        betas: (0.9, 0.95),
        eps: 1e-8,
        clip_norm: Some(1.0),
        seed: a.seed,
        eval_every: a.eval_every,
        eval_batches: a.eval_batches,
        log_path: Some(log),
        log_format: LogFormat::Csv,
        checkpoint_every: 0,
        checkpoint_path: None,
        progress: true,
        checkpoint_activations: a.checkpoint_activations,
    }
}

/// One training run of a fresh copy of the student; returns `(step, val_ppl)` points.
fn run(
    a: &Args,
    teacher: &Llama,
    keep: &LayerSelection,
    data: &mut TokenDataset,
    kd: bool,
    log: PathBuf,
) -> Result<(Vec<(usize, f64)>, f64)> {
    let _ = fs::remove_file(&log);
    let student = drop_layers(teacher, keep)?;
    let loss = DistillLoss {
        kind: DivergenceKind::Forward,
        alpha: a.alpha,
        temperature: TemperatureSchedule::Constant(a.temperature),
        ignore_index: None,
    };
    let started = Instant::now();
    let mut trainer = Trainer::new(&student, train_config(a, log))?;
    let t: Option<&dyn Trainable> = if kd { Some(teacher) } else { None };
    let report = trainer.fit(&student, t, data, &loss)?;
    let secs = started.elapsed().as_secs_f64();
    let curve = report
        .records
        .iter()
        .filter_map(|r| r.val_ppl.map(|p| (r.step, p)))
        .collect();
    Ok((curve, secs))
}

fn main() -> Result<()> {
    let a = Args::parse();
    shuku::model::threads::init(a.threads);
    let device = Device::Cpu;
    let teacher = Llama::from_hf_dir(&a.teacher, &device)
        .with_context(|| format!("loading teacher {}", a.teacher.display()))?;
    let tok = Tokenizer::from_file(&a.teacher)?;
    let keep = parse_keep(&a.keep)?;
    let kept = keep.indices(teacher.config().num_hidden_layers())?;

    let mut text = fs::read_to_string(&a.corpus)
        .with_context(|| format!("reading corpus {}", a.corpus.display()))?;
    if a.max_bytes > 0 && text.len() > a.max_bytes {
        let cut = text[..a.max_bytes]
            .rfind('\n')
            .map_or(a.max_bytes, |p| p + 1);
        text.truncate(cut);
    }
    let (train_text, held_text) = split_tail(&text, a.held_out)?;
    let train_ids = tok.encode(train_text, false)?;
    let held_ids = tok.encode(held_text, false)?;
    let mut dcfg = DataConfig::new(a.seq_len, teacher.config().vocab_size);
    dcfg.seed = a.seed;
    let mut data = TokenDataset::from_token_split(&train_ids, &held_ids, &dcfg)?;

    let eval_all = |m: &Llama, data: &mut TokenDataset| -> Result<f64> {
        Ok(evaluate(m, data, a.batch_size, a.eval_batches, &device)?
            .context("no held-out sequences")?
            .perplexity)
    };
    let teacher_ppl = eval_all(&teacher, &mut data)?;
    let cut_ppl = eval_all(&drop_layers(&teacher, &keep)?, &mut data)?;
    println!(
        "teacher {} ({} layers): held-out ppl {:.3}; student keeps layers {:?}: ppl {:.3} before training",
        a.teacher.display(),
        teacher.config().num_hidden_layers(),
        teacher_ppl,
        kept,
        cut_ppl
    );
    println!(
        "{} train tokens, {} held-out tokens; {} steps of {}×{} each run",
        train_ids.len(),
        held_ids.len(),
        a.steps,
        a.batch_size,
        a.seq_len
    );

    let dir = a.csv.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        fs::create_dir_all(d)?;
    }
    let stem = a.csv.with_extension("");
    let log = |tag: &str| PathBuf::from(format!("{}-{tag}.csv", stem.display()));
    let (kd, kd_s) = run(&a, &teacher, &keep, &mut data, true, log("kd"))?;
    let (hard, hard_s) = if a.kd_only {
        (Vec::new(), 0.0)
    } else {
        run(&a, &teacher, &keep, &mut data, false, log("hard"))?
    };

    let mut csv = String::from("step,kd_val_ppl,hard_val_ppl\n");
    let mut table = format!(
        "\n| step | KD (T={}, α={}) | hard labels |\n|---:|---:|---:|\n| 0 | {:.3} | {:.3} |\n",
        a.temperature, a.alpha, cut_ppl, cut_ppl
    );
    let _ = writeln!(csv, "0,{cut_ppl},{cut_ppl}");
    for (i, (s, k)) in kd.iter().enumerate() {
        // Empty cells when the hard-label run was skipped (--kd-only).
        let h = hard.get(i).map(|p| p.1);
        let csv_h = h.map(|v| v.to_string()).unwrap_or_default();
        let md_h = h.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"));
        let _ = writeln!(csv, "{s},{k},{csv_h}");
        let _ = writeln!(table, "| {s} | {k:.3} | {md_h} |");
    }
    fs::write(&a.csv, csv).with_context(|| format!("writing {}", a.csv.display()))?;
    println!("{table}");
    let k = kd.last().map_or(f64::NAN, |p| p.1);
    let versus = match hard.last() {
        Some((_, h)) => format!(" vs hard labels {h:.3} ({hard_s:.0} s)"),
        None => String::new(),
    };
    println!(
        "final held-out ppl: KD {k:.3} ({kd_s:.0} s){versus}; \
         teacher {teacher_ppl:.3}, cut student before training {cut_ppl:.3}"
    );
    println!("curves: {}", a.csv.display());
    Ok(())
}
