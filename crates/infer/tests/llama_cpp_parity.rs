//! Greedy generation against llama.cpp's `llama-simple` (64 tokens, add_special and parse_special
//! on, prompt and generated pieces printed with special tokens rendered, stop at end of generation).
//!
//! Exact identity is the goal. Where the texts part, the divergence is accepted only as a near-tie
//! that summation order decides: the texts agree up to it, llama.cpp's next piece is our
//! second-best token, and our top-2 logit margin there is below [`TIE_MARGIN`] (about 0.1 % of the
//! logit scale of these models). Anything else fails with the position, both texts and the margin.

mod common;

use std::path::Path;
use std::process::Command;

use shuku_infer::{Engine, EngineOptions};

const N_PREDICT: usize = 64;
/// Largest top-2 logit gap at which llama.cpp choosing our runner-up counts as a tie.
const TIE_MARGIN: f32 = 0.05;

fn llama_simple(model: &Path, prompt: &str) -> Vec<u8> {
    let (mut stdout, _) = common::run(
        Command::new(common::llama_bin("llama-simple"))
            .arg("-m")
            .arg(model)
            .arg("-n")
            .arg(N_PREDICT.to_string())
            .arg(prompt),
    );
    if stdout.last() == Some(&b'\n') {
        stdout.pop();
    }
    stdout
}

/// Runs both and panics with a diagnosis when the texts differ.
fn check(model: &Path, prompt: &str) {
    let expected = llama_simple(model, prompt);
    let engine = Engine::load(
        model,
        EngineOptions {
            threads: 2,
            context: 512,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let tok = engine.tokenizer();
    let ids = tok.encode(prompt, true, true).expect("tokenize");
    let generated = engine.generate_greedy(&ids, N_PREDICT).expect("generate");
    let mut text: Vec<u8> = ids
        .iter()
        .flat_map(|&i| tok.token_to_piece(i, true).to_vec())
        .collect();
    let mut first_bad = None;
    let mut agreed_len = 0;
    for (k, &g) in generated.iter().enumerate() {
        let before = text.len();
        text.extend_from_slice(tok.token_to_piece(g, true));
        if first_bad.is_none() && !expected.starts_with(&text) {
            first_bad = Some(k);
            agreed_len = before;
        }
    }
    if text == expected {
        eprintln!(
            "{}: {} generated tokens identical to llama-simple",
            model.display(),
            generated.len()
        );
        return;
    }
    let k = first_bad.unwrap_or(generated.len());
    // Margin between our top two logits at the divergence.
    let mut session = engine.new_session_with_context(ids.len() + k + 1);
    let mut ctx = ids.clone();
    ctx.extend_from_slice(&generated[..k]);
    let logits = engine.forward(&mut session, &ctx, false).expect("forward");
    let mut sorted: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let margin = sorted[0].1 - sorted[1].1;
    let runner_up = tok.token_to_piece(sorted[1].0 as u32, true);
    let theirs_is_runner_up = first_bad.is_some()
        && !runner_up.is_empty()
        && expected
            .get(agreed_len..)
            .is_some_and(|rest| rest.starts_with(runner_up));
    if theirs_is_runner_up && margin < TIE_MARGIN {
        eprintln!(
            "{}: identical for {k} generated tokens, then a near-tie: ours {:?}, llama.cpp our \
             runner-up {:?}, top-2 margin {margin:.4} < {TIE_MARGIN}",
            model.display(),
            sorted[0],
            sorted[1],
        );
        return;
    }
    panic!(
        "{}: first divergence at generated token {k} (ours {:?}, top-2 margin {:.4}: {:?} vs {:?})\n\
         ours:      {:?}\nllama.cpp: {:?}",
        model.display(),
        generated.get(k),
        margin,
        sorted[0],
        sorted[1],
        String::from_utf8_lossy(&text),
        String::from_utf8_lossy(&expected),
    );
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and ../shared models"]
fn glassllm_f16_matches_llama_simple() {
    check(
        &common::shared("data/models/glassllm-en-f16.gguf"),
        "Alice was beginning to get",
    );
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and ../shared models"]
fn glassllm_q8_0_matches_llama_simple() {
    check(
        &common::shared("data/models/glassllm-en-q8_0.gguf"),
        "Alice was beginning to get",
    );
}

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOL_PROMPT: &str = "The capital of France is";

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and fetch-models.sh assets"]
fn smollm2_q4_1_matches_llama_simple() {
    check(&common::asset_model(SMOL), SMOL_PROMPT);
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and fetch-models.sh assets"]
fn smollm2_requantized_q8_0_matches_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = common::requantize(&common::asset_model(SMOL), dir.path(), "Q8_0");
    check(&q, SMOL_PROMPT);
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and fetch-models.sh assets"]
fn smollm2_requantized_q4_k_m_matches_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = common::requantize(&common::asset_model(SMOL), dir.path(), "Q4_K_M");
    check(&q, SMOL_PROMPT);
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and fetch-models.sh assets"]
fn gemma3_q4_k_m_matches_llama_simple() {
    check(
        &common::asset_model("gemma-3-270m-q4_k_m.gguf"),
        "The capital of France is",
    );
}
