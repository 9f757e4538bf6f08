//! The GGUF engine end to end, in tokens per second: `decode` (64 tokens generated one at a time,
//! greedily, after a 64-token prompt: what a user waits for per word) and `prompt` (a 128-token
//! prompt evaluated in one batch into an empty session: time to first token), on F16, Q8_0 and
//! Q4_K_M files made from `assets/shuku-base` at bench start. llama.cpp's `llama-bench` reports
//! the same two figures as `tg` and `pp` (see `benches/prune_structured.sh`).
//!
//! Threads: the engine's pool (`EngineOptions::threads` 0: one per core).
//!
//! `cargo bench --bench decode`

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::BaseGguf;
use criterion::{criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use shuku::infer::engine::argmax;
use shuku::infer::{Engine, EngineOptions};

/// Prompt before the generated tokens of `decode`.
const DECODE_PROMPT: usize = 64;
/// Tokens generated per `decode` iteration.
const DECODE_TOKENS: usize = 64;
/// Tokens of the `prompt` batch.
const PROMPT_TOKENS: usize = 128;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let text = common::corpus(20_000);
    // Every file shares the base model's vocabulary, so the text is tokenized once.
    let engines: Vec<(BaseGguf, Engine)> = [BaseGguf::F16, BaseGguf::Q8_0, BaseGguf::Q4KM]
        .into_iter()
        .map(|kind| {
            let path = kind.make(dir.path());
            let engine = Engine::load(&path, EngineOptions::default()).expect("loading the GGUF");
            (kind, engine)
        })
        .collect();
    let tokens = engines[0]
        .1
        .tokenizer()
        .encode(&text, true, false)
        .expect("tokenizing the corpus");

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(DECODE_TOKENS as u64));
    group.sampling_mode(SamplingMode::Flat);
    for (kind, engine) in &engines {
        let context = DECODE_PROMPT + DECODE_TOKENS;
        assert!(
            context <= engine.config().n_ctx_train,
            "fits the trained context"
        );
        let mut session = engine.new_session_with_context(context);
        let mut logits = engine
            .forward(&mut session, &tokens[..DECODE_PROMPT], false)
            .expect("prompt");
        let after_prompt = logits.clone();
        group.bench_function(BenchmarkId::from_parameter(kind.label()), |b| {
            b.iter(|| {
                session.truncate(DECODE_PROMPT);
                logits.clone_from(&after_prompt);
                for _ in 0..DECODE_TOKENS {
                    let next = argmax(&logits);
                    logits = engine
                        .forward(&mut session, &[next], false)
                        .expect("decode step");
                }
                black_box(&logits);
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("prompt");
    group.throughput(Throughput::Elements(PROMPT_TOKENS as u64));
    group.sampling_mode(SamplingMode::Flat);
    for (kind, engine) in &engines {
        let prompt = &tokens[..PROMPT_TOKENS];
        let mut session = engine.new_session_with_context(PROMPT_TOKENS);
        group.bench_function(BenchmarkId::from_parameter(kind.label()), |b| {
            b.iter(|| {
                session.clear();
                black_box(engine.forward(&mut session, prompt, false).expect("prompt"))
            })
        });
    }
    group.finish();
}

/// The group with the benches' common settings (what `criterion_group!` expands to, documented:
/// the workspace denies missing docs).
fn benches() {
    bench(&mut common::criterion(
        Duration::from_millis(500),
        Duration::from_secs(2),
    ));
}
criterion_main!(benches);
