//! Trains shuku's own base model from scratch: a byte-level BPE tokenizer, then a small llama on
//! the Shakespeare slice the repository ships, written as an HF folder (f16 safetensors) with its
//! training log.
//!
//! ```sh
//! cargo run --release --example train_base -- --threads 1
//! cargo run --release --example train_base -- --bench-steps 20   # training tokens/s only
//! ```
//!
//! Every width is a multiple of 256 (hidden 256, FFN 768, 4 heads × 64, 2 KV heads, vocab 4096)
//! so llama.cpp's K-quants apply to every matrix without fallback. Same flags and seed give the
//! same tokenizer, the same batches and the same weights.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use shuku::candle::Device;
use shuku::distill::bpe::{save_tokenizer_files, train_byte_level_bpe, END_OF_TEXT};
use shuku::distill::corpus::split_tail;
use shuku::distill::export::save_hf_dir_f16;
use shuku::distill::{
    evaluate, DataConfig, DistillLoss, LogFormat, LrSchedule, StepRecord, TokenDataset,
    TrainConfig, Trainer,
};
use shuku::model::{Llama, LlamaConfig, Tokenizer};

#[derive(Debug, Parser)]
#[command(about = "Train shuku's base model (tokenizer + llama) on the shipped corpus")]
struct Args {
    /// Training text (UTF-8); its last --held-out share (from a line boundary) is held out.
    #[arg(long, default_value = "assets/corpus/shakespeare.txt")]
    corpus: PathBuf,
    /// Output HF folder.
    #[arg(long, default_value = "assets/shuku-base")]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2400)]
    steps: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Hidden width, a multiple of 128: heads of 64 (half as many KV heads), FFN three times as wide.
    /// The base model is 256; 512 with 12 layers is the 40 M-parameter benchmark shape.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// BPE vocabulary (special token included); keep it a multiple of 256.
    #[arg(long, default_value_t = 4096)]
    vocab: usize,
    /// Peak learning rate (warmup, then cosine to a tenth of it).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 60)]
    warmup: usize,
    /// Seed of the initial weights and of the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of the corpus held out for validation (a contiguous tail).
    #[arg(long, default_value_t = 0.05)]
    held_out: f64,
    /// Validate every this many steps (on --eval-batches batches).
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Validation batches per intermediate evaluation (the final one uses the whole tail).
    #[arg(long, default_value_t = 16)]
    eval_batches: usize,
    /// Compute threads (every pool: `shuku::model::threads::init`); default one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Only measure: train this many steps from scratch, print tokens/s, write nothing.
    #[arg(long)]
    bench_steps: Option<usize>,
    /// Recompute each layer's activations in the backward pass (less memory, one more forward pass).
    #[arg(long)]
    checkpoint_activations: bool,
}

/// Model shape: heads of 64, half as many KV heads, FFN three times the hidden width; with the
/// default hidden width of 256 every matmul dimension is a multiple of 256.
fn model_config(
    vocab: usize,
    layers: usize,
    hidden: usize,
    max_positions: usize,
) -> Result<LlamaConfig> {
    if hidden == 0 || !hidden.is_multiple_of(128) {
        bail!("--hidden {hidden}: must be a positive multiple of 128 (heads of 64, half as many KV heads)");
    }
    let json = serde_json::json!({
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 3 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden / 64,
        "num_key_value_heads": hidden / 128,
        "head_dim": 64,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "bos_token_id": 0,
        "eos_token_id": 0,
    });
    Ok(LlamaConfig::from_json(&json, "<train_base>")?)
}

fn train_config(a: &Args, steps: usize, log: Option<PathBuf>) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        grad_accum: 1,
        lr: LrSchedule::WarmupCosine {
            max_lr: a.lr,
            min_lr: a.lr / 10.0,
            warmup_steps: a.warmup.min(steps / 2),
            total_steps: steps,
        },
        weight_decay: 0.1,
        betas: (0.9, 0.95),
        eps: 1e-8,
        clip_norm: Some(1.0),
        seed: a.seed,
        eval_every: a.eval_every,
        eval_batches: Some(a.eval_batches),
        log_path: log,
        log_format: LogFormat::Jsonl,
        checkpoint_every: 0,
        checkpoint_path: None,
        progress: true,
        checkpoint_activations: a.checkpoint_activations,
    }
}

fn encode(tok: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tok
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing the corpus: {e}"))?;
    Ok(enc.get_ids().to_vec())
}

fn median_tokens_per_s(records: &[StepRecord]) -> f64 {
    // Skip the first step (allocations, page faults).
    let mut v: Vec<f64> = records.iter().skip(1).map(|r| r.tokens_per_s).collect();
    if v.is_empty() {
        v = records.iter().map(|r| r.tokens_per_s).collect();
    }
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Greedy continuation of `prompt`, decoded with the prompt, as `shuku generate` prints it.
fn sample(model: &Llama, tok: &Tokenizer, prompt: &str, n: usize) -> Result<String> {
    let ids = tok.encode(prompt, true)?;
    let mut all = ids.clone();
    all.extend(model.generate_greedy(&ids, n)?);
    Ok(tok.decode(&all, false)?)
}

fn check_output(out: &Path, overwrite: bool) -> Result<()> {
    let non_empty = out.exists()
        && (!out.is_dir()
            || fs::read_dir(out)
                .with_context(|| format!("reading {}", out.display()))?
                .next()
                .is_some());
    if non_empty && !overwrite {
        bail!(
            "{} exists; pass --overwrite to replace it (nothing was trained)",
            out.display()
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn training_md(
    a: &Args,
    cfg: &LlamaConfig,
    data: &TokenDataset,
    val_tokens: usize,
    wall_s: f64,
    tokens_seen: usize,
    tok_s: f64,
    ppl: f64,
    loss: f64,
    sample_text: &str,
) -> String {
    let cmd: Vec<String> = std::env::args().skip(1).collect();
    let mut s = String::new();
    let _ = writeln!(s, "# shuku-base: training record\n");
    let _ = writeln!(
        s,
        "Command (from the repository root):\n\n```sh\ncargo run --release --example train_base -- {}\n```\n",
        cmd.join(" ")
    );
    let _ = writeln!(
        s,
        "* Model: llama, {} layers, hidden 256, FFN 768, 4 heads × 64 (2 KV heads), vocab {}, tied \
         embeddings, {} parameters; weights shipped as f16.",
        cfg.num_hidden_layers(),
        cfg.vocab_size,
        cfg.n_params()
    );
    let _ = writeln!(
        s,
        "* Tokenizer: byte-level BPE (GPT-2 pre-tokenizer, llama.cpp pre `gpt-2`), {} ids, `{}` \
         as BOS/EOS, trained on the training part only.",
        a.vocab, END_OF_TEXT
    );
    let _ = writeln!(
        s,
        "* Corpus: `{}`; the last {:.0}% (from a line boundary) held out: {} training sequences \
         of {} tokens, {} held-out tokens.",
        a.corpus.display(),
        a.held_out * 100.0,
        data.train_len(),
        a.seq_len,
        val_tokens
    );
    let _ = writeln!(
        s,
        "* Optimisation: AdamW (β 0.9/0.95, weight decay 0.1 on matrices), peak lr {} with {} \
         warmup steps then cosine to {}, clip 1.0, batch {} × {}, {} steps, seed {}.",
        a.lr,
        a.warmup,
        a.lr / 10.0,
        a.batch_size,
        a.seq_len,
        a.steps,
        a.seed
    );
    let _ = writeln!(
        s,
        "* Wall time {:.0} s (tokenizer, packing, training, saving); {} training tokens seen; \
         median {:.0} training tokens/s.",
        wall_s, tokens_seen, tok_s
    );
    let _ = writeln!(
        s,
        "* Held-out perplexity of the shipped (f16) weights: **{:.2}** (cross-entropy {:.4} \
         nats/token, windows of {} tokens).",
        ppl, loss, a.seq_len
    );
    let _ = writeln!(
        s,
        "\nThe curve is `training_log.jsonl` (one JSON object per step; `val_ppl` every {} \
         steps on {} held-out batches).\n",
        a.eval_every, a.eval_batches
    );
    let _ = writeln!(
        s,
        "Greedy sample (`shuku generate --model {} -p \"ROMEO:\" -n 64`):\n\n```text\n{}\n```",
        a.out.display(),
        sample_text
    );
    s
}

fn main() -> Result<()> {
    let a = Args::parse();
    shuku::model::threads::init(a.threads);
    let started = Instant::now();
    if a.bench_steps.is_none() {
        check_output(&a.out, a.overwrite)?;
    }
    let text = fs::read_to_string(&a.corpus)
        .with_context(|| format!("reading corpus {}", a.corpus.display()))?;
    let (train_text, held_text) = split_tail(&text, a.held_out)?;
    eprintln!(
        "corpus {}: {} bytes train, {} bytes held out",
        a.corpus.display(),
        train_text.len(),
        held_text.len()
    );

    let t0 = Instant::now();
    let bpe = train_byte_level_bpe(&[train_text], a.vocab)?;
    let train_ids = encode(&bpe, train_text)?;
    let held_ids = encode(&bpe, held_text)?;
    eprintln!(
        "tokenizer: {} ids in {:.1} s; {} train tokens ({:.2} bytes/token), {} held-out tokens",
        a.vocab,
        t0.elapsed().as_secs_f64(),
        train_ids.len(),
        train_text.len() as f64 / train_ids.len() as f64,
        held_ids.len()
    );
    let mut dcfg = DataConfig::new(a.seq_len, a.vocab);
    dcfg.seed = a.seed;
    let mut data = TokenDataset::from_token_split(&train_ids, &held_ids, &dcfg)?;

    let device = Device::Cpu;
    let cfg = model_config(a.vocab, a.layers, a.hidden, a.seq_len.max(256))?;
    let model = Llama::random(cfg.clone(), a.seed, &device)?;
    eprintln!(
        "model: {} layers, {} parameters; {} training sequences, {} held-out",
        a.layers,
        cfg.n_params(),
        data.train_len(),
        data.validation_len()
    );

    if let Some(n) = a.bench_steps {
        let mut tc = train_config(&a, n, None);
        tc.eval_every = 0;
        tc.eval_batches = Some(1);
        let mut trainer = Trainer::new(&model, tc)?;
        let report = trainer.fit(&model, None, &mut data, &DistillLoss::default())?;
        let last = report.records.last().map(|r| r.loss).unwrap_or(f64::NAN);
        println!(
            "bench: {} steps of {}×{} tokens, median {:.0} training tokens/s, final loss {:.6}",
            n,
            a.batch_size,
            a.seq_len,
            median_tokens_per_s(&report.records),
            last
        );
        return Ok(());
    }

    // Stage the log beside the output; it is moved in once the model is saved.
    let stage = tempfile::Builder::new().prefix(".train-base-").tempdir_in(
        a.out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    let log_path = stage.path().join("training_log.jsonl");
    let mut trainer = Trainer::new(&model, train_config(&a, a.steps, Some(log_path.clone())))?;
    let report = trainer.fit(&model, None, &mut data, &DistillLoss::default())?;
    let tok_s = median_tokens_per_s(&report.records);

    save_hf_dir_f16(&model, &a.out, a.overwrite)?;
    save_tokenizer_files(&bpe, &a.out, cfg.max_position_embeddings)?;
    fs::copy(&log_path, a.out.join("training_log.jsonl"))?;

    // Report on what is shipped: reload the f16 folder.
    let shipped = Llama::from_hf_dir(&a.out, &device)?;
    let tok = Tokenizer::from_file(&a.out)?;
    let eval = evaluate(&shipped, &mut data, a.batch_size, None, &device)?
        .context("no held-out sequences")?;
    let sample_text = sample(&shipped, &tok, "ROMEO:", 64)?;
    let wall = started.elapsed().as_secs_f64();
    let tokens_seen = a.steps * a.batch_size * a.seq_len;
    let md = training_md(
        &a,
        &cfg,
        &data,
        eval.tokens,
        wall,
        tokens_seen,
        tok_s,
        eval.perplexity,
        eval.loss,
        &sample_text,
    );
    fs::write(a.out.join("TRAINING.md"), &md)?;
    println!("{md}");
    Ok(())
}
