//! `shuku perplexity --model MODEL --file TEXT -c 256 --chunks N`, and KL divergence against saved
//! reference logits.
//!
//! # The reference-logits file (`--kl-divergence-base`)
//!
//! Little-endian, written by `--save-logits`, read by `--kl-divergence`:
//!
//! | bytes | content |
//! | --- | --- |
//! | 8 | magic `SHUKLD01` |
//! | 4 | `n_vocab` (u32) |
//! | 4 | `n_ctx` (u32): window length |
//! | 4 | `n_chunks` (u32): windows stored |
//! | 4 | BOS that replaced each window's first token (u32; `u32::MAX`: none) |
//! | 8 | `n_tokens` (u64) |
//! | 4 × n_tokens | the tokenized text (u32 each) |
//! | 2 × n_vocab per row | for each window, for each scored position (`n_ctx/2 .. n_ctx-1`, llama-perplexity's half): the full row of logits minus the row's maximum, as IEEE f16 |
//!
//! Storing every logit keeps the whole distribution (KL divergence needs it), and subtracting the
//! maximum before rounding puts the likely tokens, where the probability mass is, on f16's finest
//! steps near zero: the row's top logit is exactly 0. A model against its own file gives a KLD of
//! the order of 1e-7 (f16 rounding), and the same top token everywhere.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use half::f16;
use shuku_eval::{perplexity, KlStats, LogitsSource, PerplexityProtocol, SourceError};
use shuku_infer::{Engine, EngineOptions};
use shuku_model::Llama;

use crate::text_tokenizer::TextTokenizer;

use crate::progress::bar;

const MAGIC: &[u8; 8] = b"SHUKLD01";

/// Perplexity of a model on a text file with llama-perplexity's protocol, and KL divergence against a
/// reference model's saved logits.
///
/// MODEL is an HF folder (run in full precision by shuku-model) or a GGUF file (run by shuku's
/// engine). The file is tokenized once and cut into consecutive chunks of -c tokens; each chunk is
/// evaluated in a fresh context (its first token replaced by BOS when the tokenizer adds BOS) and
/// only the second half of each chunk is scored, so every scored token sees at least c/2 tokens of
/// context. The result is directly comparable with `llama-perplexity -c N --chunks M`.
///
/// KL divergence, as `llama-perplexity --kl-divergence`: first run the reference (e.g. the f16
/// model) with `--kl-divergence-base base.kld --save-logits`, which also prints its perplexity; then
/// run the model to compare (e.g. a quantized one) with `--kl-divergence-base base.kld
/// --kl-divergence`, which reads the text's tokens and the reference logits from the file (no
/// --file needed) and prints PPL of both, mean and 99% KLD, RMS Δp and how often both pick the
/// same top token. The file stores every logit of every scored position as f16 (see the module
/// documentation of the format); it takes 2 × vocab bytes per scored token.
///
/// Example: shuku perplexity --model ./SmolLM2-135M --file kjv.txt -c 256 --chunks 16
///
/// Example: shuku perplexity --model base-f16.gguf --file kjv.txt -c 256 --chunks 8 --kl-divergence-base base.kld --save-logits
///
/// Example: shuku perplexity --model base-q4_0.gguf --kl-divergence-base base.kld --kl-divergence
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model folder (config.json, safetensors, tokenizer.json) or GGUF file.
    #[arg(short, long)]
    model: PathBuf,
    /// UTF-8 text file to score (not needed with --kl-divergence: the tokens come from the file).
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Context (chunk) length in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Number of chunks to score (default: every full chunk of the file).
    #[arg(long)]
    chunks: Option<usize>,
    /// Worker threads of the GGUF engine (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// GGUF models: read every weight matrix from the mapped file instead of the lane-layout copy
    /// the engine's kernels read.
    #[arg(long)]
    no_repack: bool,
    /// File of reference logits: written with --save-logits, read with --kl-divergence.
    #[arg(long, value_name = "FILE")]
    kl_divergence_base: Option<PathBuf>,
    /// Save this model's logits to --kl-divergence-base (the reference run).
    #[arg(
        long,
        requires = "kl_divergence_base",
        conflicts_with = "kl_divergence"
    )]
    save_logits: bool,
    /// Compare this model against the logits in --kl-divergence-base.
    #[arg(long, requires = "kl_divergence_base")]
    kl_divergence: bool,
}

/// Text to tokens, with the model's own tokenizer.
type Tokenize = Box<dyn Fn(&str) -> Result<Vec<u32>>>;

/// The model and how it tokenizes.
struct Loaded {
    source: Box<dyn LogitsSource>,
    tokenize: Tokenize,
    bos: Option<u32>,
}

fn is_gguf(path: &Path) -> bool {
    path.is_file()
}

fn load(args: &Args) -> Result<Loaded> {
    if is_gguf(&args.model) {
        let engine = Engine::load(
            &args.model,
            EngineOptions {
                threads: args.threads,
                context: args.ctx,
                repack: !args.no_repack,
                ..Default::default()
            },
        )
        .with_context(|| format!("cannot load {}", args.model.display()))?;
        let tok = engine.tokenizer();
        let bos = if tok.add_bos() { tok.bos() } else { None };
        // The tokenizer lives inside the engine; tokenize with a second one built from the file.
        let tokenizer = shuku_infer::Tokenizer::from_gguf(engine.file())?;
        Ok(Loaded {
            source: Box::new(engine),
            tokenize: Box::new(move |text| Ok(tokenizer.encode(text, true, false)?)),
            bos,
        })
    } else {
        let tokenizer = TextTokenizer::open(&args.model)?;
        let model = Llama::from_hf_dir(&args.model, &Device::Cpu)?;
        let bos = tokenizer.prepended_bos()?;
        Ok(Loaded {
            source: Box::new(model),
            tokenize: Box::new(move |text| tokenizer.encode(text)),
            bos,
        })
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.ctx < 4 {
        bail!("--ctx-size must be at least 4, got {}", args.ctx);
    }
    if args.kl_divergence_base.is_some() && !args.save_logits && !args.kl_divergence {
        bail!("--kl-divergence-base needs --save-logits (write it) or --kl-divergence (compare)");
    }
    let mut loaded = load(&args)?;
    if args.kl_divergence {
        let path = args.kl_divergence_base.as_deref().unwrap_or(Path::new(""));
        return compare(&args, path, loaded.source.as_mut());
    }
    let file = args
        .file
        .as_ref()
        .context("--file is required (except with --kl-divergence)")?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let tokens = (loaded.tokenize)(&text)?;
    let protocol = PerplexityProtocol {
        n_ctx: args.ctx,
        n_chunks: args.chunks,
        bos: loaded.bos,
    };
    let n_chunks = protocol.n_chunks_for(tokens.len())?;
    println!(
        "perplexity: {} tokens in {}, {} chunks of {} tokens, positions {}..{} of each chunk scored{}",
        tokens.len(),
        file.display(),
        n_chunks,
        args.ctx,
        protocol.first_scored(),
        args.ctx - 1,
        if protocol.bos.is_some() { ", first token of each chunk replaced by BOS" } else { "" },
    );
    let mut recorder = match (&args.kl_divergence_base, args.save_logits) {
        (Some(path), true) => Some(Recorder::create(
            path,
            loaded.source.vocab_size(),
            &protocol,
            n_chunks,
            &tokens,
        )?),
        _ => None,
    };
    let pb = bar(n_chunks as u64, "perplexity");
    let mut progress = |done: usize, _total: usize, running: f64| {
        pb.set_position(done as u64);
        pb.set_message(format!("running PPL {running:.4}"));
    };
    let report = match recorder.as_mut() {
        Some(rec) => {
            let mut tee = Tee {
                inner: loaded.source.as_mut(),
                rec,
            };
            perplexity(&mut tee, &tokens, &protocol, Some(&mut progress))?
        }
        None => perplexity(
            loaded.source.as_mut(),
            &tokens,
            &protocol,
            Some(&mut progress),
        )?,
    };
    pb.finish_and_clear();
    for (i, p) in report.per_chunk_ppl.iter().enumerate() {
        print!("[{}]{:.4},", i + 1, p);
    }
    println!();
    println!("{report}");
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        report.ppl, report.ppl_stderr
    );
    if let (Some(rec), Some(path)) = (recorder, &args.kl_divergence_base) {
        let rows = rec.finish()?;
        println!(
            "saved reference logits of {rows} positions to {} ({})",
            path.display(),
            crate::table::human_bytes(std::fs::metadata(path).map_or(0, |m| m.len()))
        );
    }
    Ok(())
}

/// Writes the reference file while perplexity runs.
struct Recorder {
    out: BufWriter<File>,
    first_scored: usize,
    n_ctx: usize,
    vocab: usize,
    rows: usize,
    error: Option<std::io::Error>,
}

impl Recorder {
    fn create(
        path: &Path,
        vocab: usize,
        protocol: &PerplexityProtocol,
        n_chunks: usize,
        tokens: &[u32],
    ) -> Result<Recorder> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let mut header = Vec::with_capacity(32 + 4 * tokens.len());
        header.extend_from_slice(MAGIC);
        for v in [
            vocab as u32,
            protocol.n_ctx as u32,
            n_chunks as u32,
            protocol.bos.unwrap_or(u32::MAX),
        ] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        header.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
        for t in tokens {
            header.extend_from_slice(&t.to_le_bytes());
        }
        out.write_all(&header)?;
        Ok(Recorder {
            out,
            first_scored: protocol.first_scored(),
            n_ctx: protocol.n_ctx,
            vocab,
            rows: 0,
            error: None,
        })
    }

    fn record(&mut self, logits: &[f32]) {
        let mut buf = Vec::with_capacity(2 * self.vocab);
        for row in logits
            .chunks_exact(self.vocab)
            .take(self.n_ctx - 1)
            .skip(self.first_scored)
        {
            buf.clear();
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for &v in row {
                buf.extend_from_slice(&f16::from_f32(v - max).to_le_bytes());
            }
            if let Err(e) = self.out.write_all(&buf) {
                self.error.get_or_insert(e);
            }
            self.rows += 1;
        }
    }

    fn finish(mut self) -> Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e).context("cannot write the reference logits");
        }
        self.out
            .flush()
            .context("cannot write the reference logits")?;
        Ok(self.rows)
    }
}

/// A logits source that records what it returns.
struct Tee<'a> {
    inner: &'a mut dyn LogitsSource,
    rec: &'a mut Recorder,
}

impl LogitsSource for Tee<'_> {
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SourceError> {
        let logits = self.inner.logits(tokens)?;
        self.rec.record(&logits);
        Ok(logits)
    }
}

fn read_u32(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Compares `source` against the reference file.
fn compare(args: &Args, path: &Path, source: &mut dyn LogitsSource) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .with_context(|| format!("{} is too short", path.display()))?;
    ensure!(
        &magic == MAGIC,
        "{} is not a shuku reference-logits file (written by --save-logits)",
        path.display()
    );
    let vocab = read_u32(&mut r)? as usize;
    let n_ctx = read_u32(&mut r)? as usize;
    let n_chunks = read_u32(&mut r)? as usize;
    let bos = read_u32(&mut r)?;
    let mut n = [0u8; 8];
    r.read_exact(&mut n)?;
    let n_tokens = u64::from_le_bytes(n) as usize;
    ensure!(
        vocab == source.vocab_size(),
        "the reference has {vocab} logits per position, this model {}",
        source.vocab_size()
    );
    ensure!(
        n_tokens >= n_chunks * n_ctx && n_ctx >= 4,
        "{} is inconsistent: {n_chunks} chunks of {n_ctx} tokens from {n_tokens} tokens",
        path.display()
    );
    let mut raw = vec![0u8; 4 * n_tokens];
    r.read_exact(&mut raw).context("truncated reference file")?;
    let tokens: Vec<u32> = raw
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let protocol = PerplexityProtocol {
        n_ctx,
        n_chunks: Some(n_chunks),
        bos: (bos != u32::MAX).then_some(bos),
    };
    if args.ctx != n_ctx {
        eprintln!(
            "note: using the reference's context of {n_ctx} tokens (not -c {})",
            args.ctx
        );
    }
    println!(
        "kl-divergence: {} chunks of {n_ctx} tokens from {}, positions {}..{} scored",
        n_chunks,
        path.display(),
        protocol.first_scored(),
        n_ctx - 1
    );
    let pb = bar(n_chunks as u64, "kl-divergence");
    let mut stats = KlStats::new();
    let mut row_bytes = vec![0u8; 2 * vocab];
    let mut ref_row = vec![0f32; vocab];
    for chunk in 0..n_chunks {
        let (input, original) = protocol.window(&tokens, chunk);
        let logits = source.logits(&input).map_err(|e| anyhow::anyhow!(e))?;
        ensure!(logits.len() == input.len() * vocab, "bad logits length");
        for (j, target) in protocol.scored_positions(original) {
            r.read_exact(&mut row_bytes)
                .context("truncated reference file")?;
            for (v, b) in ref_row.iter_mut().zip(row_bytes.chunks_exact(2)) {
                *v = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
            stats.add(&ref_row, &logits[j * vocab..(j + 1) * vocab], target)?;
        }
        pb.set_position(chunk as u64 + 1);
        pb.set_message(format!("mean KLD {:.6}", stats.mean_kld()));
    }
    pb.finish_and_clear();
    let report = stats.report()?;
    println!("{report}");
    Ok(())
}
