//! Which confidence signal should the edge → cloud router escalate on? A held-out prompt set with
//! known answers: each prompt is a window of a text and its answer is the text's next words. The
//! edge model and the upstream model both continue every prompt greedily. Then for each signal,
//! the least confident prompts are escalated first, and the table gives the accuracy kept at each
//! fraction of upstream calls.
//!
//! Signals compared: the mean token log-probability (what most routers use), low quantiles of the
//! token log-probabilities (P10, P25, the minimum — not length-biased), a random order (the line
//! any signal must beat) and the oracle (only the prompts the edge gets wrong and the upstream
//! gets right).
//!
//! ```text
//! cargo run --release --example router_signals -- --edge SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --upstream gemma-3-270m-q4_k_m.gguf --text assets/corpus/shakespeare.txt
//! ```

mod common;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use shuku::infer::{Engine, EngineOptions, GeneratedToken, GenerationParams, SamplerConfig};
use shuku::serve::Signal;

/// Compare the router's deferral signals on a held-out prompt set.
#[derive(Parser, Debug)]
struct Args {
    /// The edge model (small).
    #[arg(long)]
    edge: PathBuf,
    /// The upstream model (larger).
    #[arg(long)]
    upstream: PathBuf,
    /// The text the prompts come from (its last 20 % is used, as held-out text).
    #[arg(long, default_value = "assets/corpus/shakespeare.txt")]
    text: PathBuf,
    /// Prompts.
    #[arg(long, default_value_t = 200)]
    prompts: usize,
    /// Words of context per prompt.
    #[arg(long, default_value_t = 48)]
    context_words: usize,
    /// Words of the answer that must match.
    #[arg(long, default_value_t = 2)]
    answer_words: usize,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Worker threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The greedy continuation's tokens and whether its first words are the expected ones.
fn answer(
    engine: &Engine,
    prompt: &str,
    expected: &[String],
    tokens: usize,
) -> Result<(Vec<GeneratedToken>, bool)> {
    let mut session = engine.new_session_with_context(4096);
    let params = GenerationParams {
        max_tokens: tokens,
        sampler: SamplerConfig::greedy(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut stream = engine.generate(&mut session, prompt, params)?;
    for t in &mut stream {
        out.push(t?);
    }
    let text: String = out.iter().map(|t| t.text_piece.as_str()).collect();
    let got = words(&text);
    let ok = got.len() >= expected.len() && got[..expected.len()] == *expected;
    Ok((out, ok))
}

/// Accuracy when the prompts in `order` are escalated first, at `fractions` of upstream calls.
fn curve(order: &[usize], edge_ok: &[bool], up_ok: &[bool], fractions: &[f64]) -> Vec<f64> {
    let n = order.len();
    fractions
        .iter()
        .map(|f| {
            let k = (f * n as f64).round() as usize;
            let mut escalated = vec![false; n];
            for &i in &order[..k] {
                escalated[i] = true;
            }
            (0..n)
                .filter(|&i| if escalated[i] { up_ok[i] } else { edge_ok[i] })
                .count() as f64
                / n as f64
        })
        .collect()
}

fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("--text {}", args.text.display()))?;
    let all: Vec<&str> = text.split_whitespace().collect();
    let held = &all[all.len() * 4 / 5..];
    let window = args.context_words + args.answer_words;
    if held.len() < window * args.prompts.max(1) {
        bail!(
            "--text: the held-out part has {} words, {} prompts of {window} words need more",
            held.len(),
            args.prompts
        );
    }
    let load = |p: &PathBuf| {
        Engine::load(
            p,
            EngineOptions {
                threads: args.threads,
                ..Default::default()
            },
        )
        .with_context(|| format!("cannot load {}", p.display()))
    };
    let (edge, upstream) = (load(&args.edge)?, load(&args.upstream)?);
    let stride = held.len() / args.prompts;
    let bar = common::progress(args.prompts as u64, "prompts");
    let (mut edge_tokens, mut edge_ok, mut up_ok) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.prompts {
        let w = &held[i * stride..i * stride + window];
        let prompt = w[..args.context_words].join(" ");
        let expected = words(&w[args.context_words..].join(" "));
        let expected = &expected[..args.answer_words.min(expected.len())];
        let (t, ok) = answer(&edge, &prompt, expected, args.tokens)?;
        edge_tokens.push(t);
        edge_ok.push(ok);
        up_ok.push(answer(&upstream, &prompt, expected, args.tokens)?.1);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = args.prompts;
    let acc = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / n as f64;
    println!(
        "{n} prompts of {} words from the last 20 % of {}; answer = the next {} words, {} tokens generated greedily",
        args.context_words,
        args.text.display(),
        args.answer_words,
        args.tokens
    );
    println!(
        "edge accuracy {:.3}, upstream accuracy {:.3}\n",
        acc(&edge_ok),
        acc(&up_ok)
    );

    let fractions: Vec<f64> = (0..=10).map(|i| i as f64 / 10.0).collect();
    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    for (name, signal) in [
        ("mean", Signal::MeanLogprob),
        ("p25", Signal::Quantile(0.25)),
        ("p10", Signal::Quantile(0.10)),
        ("min", Signal::Quantile(0.0)),
    ] {
        let mut order: Vec<usize> = (0..n).collect();
        let s: Vec<f32> = edge_tokens
            .iter()
            .map(|t| signal.of(t).unwrap_or(f32::NEG_INFINITY))
            .collect();
        order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
        columns.push((name.into(), curve(&order, &edge_ok, &up_ok, &fractions)));
    }
    // Random order: the mean over 200 seeded shuffles.
    let mut rng = shuku::infer::Rng::new(7);
    let mut random = vec![0.0; fractions.len()];
    for _ in 0..200 {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for (r, c) in random
            .iter_mut()
            .zip(curve(&order, &edge_ok, &up_ok, &fractions))
        {
            *r += c / 200.0;
        }
    }
    columns.push(("random".into(), random));
    let mut oracle: Vec<usize> = (0..n).collect();
    // First the prompts only the upstream gets right (false sorts before true).
    let gains = |i: usize| up_ok[i] && !edge_ok[i];
    oracle.sort_by_key(|&i| !gains(i));
    columns.push((
        "oracle".into(),
        curve(&oracle, &edge_ok, &up_ok, &fractions),
    ));

    print!("| upstream calls |");
    for (name, _) in &columns {
        print!(" {name} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(columns.len()));
    for (i, f) in fractions.iter().enumerate() {
        print!("| {:.0} % |", f * 100.0);
        for (_, c) in &columns {
            print!(" {:.3} |", c[i]);
        }
        println!();
    }
    // Area under each curve: one number per signal (higher keeps more quality per call).
    println!();
    for (name, c) in &columns {
        let area: f64 = c.windows(2).map(|w| (w[0] + w[1]) / 2.0 * 0.1).sum();
        println!("area under the curve, {name}: {area:.4}");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with(run(Args::parse()))
}
