//! `shuku bench MODEL.gguf -p 128 -n 64 -r 5`: prompt-processing and generation speed, in
//! llama-bench's table.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use shuku_gguf::TensorType;
use shuku_infer::{Engine, EngineOptions, Rng};

use crate::output::Output;
use crate::table::{human_bytes, Align, Table};

/// Measure a GGUF model's speed the way llama-bench does, and print its markdown table.
///
/// Two tests, each run once to warm up and then -r times: `ppN` evaluates N prompt tokens as one
/// batch in a fresh context (prefill speed); `tgN` generates N tokens one at a time from BOS
/// (decode speed). Tokens are drawn at random from the vocabulary with a fixed seed, as llama-bench
/// draws them, so the numbers do not depend on a text. t/s is the mean ± sample standard deviation
/// over the repetitions. -p 0 or -n 0 skips that test.
///
/// Example: shuku bench smollm2.gguf -p 128 -n 64 -r 5 -t 2
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF model.
    model: PathBuf,
    /// Prompt tokens of the prefill test (0: skip it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens of the generation test (0: skip it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    repetitions: usize,
    /// Worker threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Read every weight matrix from the mapped file instead of the lane-layout copy the engine's
    /// kernels read (llama-bench's --repack 0).
    #[arg(long)]
    no_repack: bool,
}

/// Mean and sample standard deviation.
fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 {
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

/// A parameter count as llama-bench prints it (`135.00 M`, `1.24 B`).
fn human_count(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else {
        format!("{:.2} K", n / 1e3)
    }
}

/// Random tokens starting with BOS (when the model has one).
fn tokens(engine: &Engine, n: usize, rng: &mut Rng) -> Vec<u32> {
    let vocab = engine.vocab_size() as u64;
    let mut t: Vec<u32> = (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect();
    if let (Some(bos), Some(first)) = (engine.tokenizer().bos(), t.first_mut()) {
        *first = bos;
    }
    t
}

/// Tokens per second of one prefill of `n` tokens.
fn pp(engine: &Engine, n: usize, rng: &mut Rng) -> Result<f64> {
    let t = tokens(engine, n, rng);
    let mut session = engine.new_session_with_context(n);
    let start = Instant::now();
    engine.forward(&mut session, &t, false)?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Tokens per second of `n` single-token steps.
pub fn tg(engine: &Engine, n: usize, rng: &mut Rng) -> Result<f64> {
    let t = tokens(engine, n, rng);
    let mut session = engine.new_session_with_context(n);
    let start = Instant::now();
    for tok in &t {
        engine.forward(&mut session, std::slice::from_ref(tok), false)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub fn run(args: Args) -> Result<()> {
    if args.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    if args.n_prompt == 0 && args.n_gen == 0 {
        bail!("nothing to measure: both -p and -n are 0");
    }
    let engine = Engine::load(
        &args.model,
        EngineOptions {
            threads: args.threads,
            context: args.n_prompt.max(args.n_gen).max(1),
            repack: !args.no_repack,
            ..Default::default()
        },
    )
    .with_context(|| format!("cannot load {}", args.model.display()))?;
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let infos = engine.file().tensor_infos();
    let size: u64 = infos.iter().filter_map(|t| t.n_bytes()).sum();
    let params: u64 = infos.iter().map(|t| t.n_elements()).sum();
    // The type holding most of the weights names the quantization, as llama-bench's model column.
    let mut by_type: Vec<(String, u64)> = Vec::new();
    for t in infos.iter().filter(|t| t.dims.len() >= 2) {
        let name = match t.ttype {
            TensorType::Known(k) => k.name().to_string(),
            TensorType::Unknown(id) => format!("type{id}"),
        };
        let bytes = t.n_bytes().unwrap_or(0);
        match by_type.iter_mut().find(|(n, _)| *n == name) {
            Some((_, b)) => *b += bytes,
            None => by_type.push((name, bytes)),
        }
    }
    let qtype = by_type
        .iter()
        .max_by_key(|(_, b)| *b)
        .map(|(n, _)| n.clone())
        .unwrap_or_default();
    let model = format!("{} {}", engine.config().arch.name(), qtype);

    let mut table = Table::new(&[
        ("model", Align::Left),
        ("size", Align::Right),
        ("params", Align::Right),
        ("backend", Align::Left),
        ("threads", Align::Right),
        ("test", Align::Right),
        ("t/s", Align::Right),
    ]);
    let mut rng = Rng::new(1234);
    type Test = fn(&Engine, usize, &mut Rng) -> Result<f64>;
    let tests: [(&str, usize, Test); 2] = [("pp", args.n_prompt, pp), ("tg", args.n_gen, tg)];
    for (name, n, f) in tests {
        if n == 0 {
            continue;
        }
        f(&engine, n, &mut rng)?; // warm-up
        let runs = (0..args.repetitions)
            .map(|_| f(&engine, n, &mut rng))
            .collect::<Result<Vec<f64>>>()?;
        let (mean, sd) = mean_sd(&runs);
        table.row(vec![
            model.clone(),
            human_bytes(size),
            human_count(params),
            "CPU".into(),
            threads.to_string(),
            format!("{name}{n}"),
            format!("{mean:.2} ± {sd:.2}"),
        ]);
    }
    Output::stdout().text(&table.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_sd(&[5.0]), (5.0, 0.0));
        assert_eq!(human_count(1_240_000_000), "1.24 B");
        assert_eq!(human_count(134_515_008), "134.52 M");
    }
}
