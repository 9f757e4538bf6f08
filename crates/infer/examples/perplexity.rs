//! Perplexity of a GGUF model on a text file with llama-perplexity's protocol.
//!
//! `cargo run --release -p shuku-infer --example perplexity -- MODEL TEXT [CTX] [CHUNKS] [THREADS]`
//! (defaults 256, 8, 2). Prints the estimate in llama.cpp's words ("Final estimate: PPL = ...").

use shuku_eval::{perplexity, PerplexityProtocol};
use shuku_infer::{Engine, EngineOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, text, rest @ ..] = args.as_slice() else {
        return Err("usage: perplexity MODEL TEXT [CTX] [CHUNKS] [THREADS]".into());
    };
    let num = |i: usize, d: usize| rest.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n_ctx, chunks, threads) = (num(0, 256), num(1, 8), num(2, 2));
    let mut engine = Engine::load(
        model,
        EngineOptions {
            threads,
            context: n_ctx,
            ..Default::default()
        },
    )?;
    let text = std::fs::read_to_string(text)?;
    let t0 = std::time::Instant::now();
    let tok = engine.tokenizer();
    let tokens = tok.encode(&text, true, false)?;
    eprintln!(
        "{} tokens in {:.2} s",
        tokens.len(),
        t0.elapsed().as_secs_f64()
    );
    let protocol = PerplexityProtocol {
        n_ctx,
        n_chunks: Some(chunks),
        bos: if tok.add_bos() { tok.bos() } else { None },
    };
    let t0 = std::time::Instant::now();
    let report = perplexity(&mut engine, &tokens, &protocol, None)?;
    eprintln!("evaluated in {:.2} s", t0.elapsed().as_secs_f64());
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        report.ppl, report.ppl_stderr
    );
    Ok(())
}
