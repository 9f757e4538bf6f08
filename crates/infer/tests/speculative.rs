//! Speculative decoding on the shared glassllm model (tiny, so these run in the default test
//! suite): greedy output equals plain greedy decoding with prompt lookup, with the model as its own
//! draft (every draft token accepted) and with its f16 twin as draft; sampling with the model as
//! its own draft accepts everything and reproduces with a seed; penalties, stop strings and a full
//! context end generation as in [`Engine::generate`]; a draft with another vocabulary is refused.

mod common;

use common::random_model::{insert_vocab, norm_weights, values, write, Tensor};
use shuku_gguf::{GgmlType, Metadata, Value};
use shuku_infer::speculative::MAX_DRAFT_TOKENS;
use shuku_infer::{
    DraftModel, Drafter, Engine, EngineOptions, FinishReason, GenerationParams, PromptLookup,
    SamplerConfig, SpeculativeError, SpeculativeOutput,
};

fn load(name: &str) -> Engine {
    Engine::load(
        common::shared(&format!("data/models/{name}")),
        EngineOptions {
            threads: 2,
            context: 128,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("load {name}: {e}"))
}

fn engine() -> Engine {
    load("glassllm-en-q8_0.gguf")
}

fn greedy(n: usize) -> GenerationParams {
    GenerationParams {
        max_tokens: n,
        sampler: SamplerConfig::greedy(),
        ..GenerationParams::default()
    }
}

/// A prompt whose continuation copies from it.
const REPEATED: &str =
    "The glass was on the table. The glass was on the table. The glass was on the table. The glass";

fn speculate(
    e: &Engine,
    prompt: &[u32],
    params: &GenerationParams,
    drafter: &mut dyn Drafter,
    k: usize,
) -> SpeculativeOutput {
    let mut session = e.new_session();
    e.generate_speculative(&mut session, prompt, params, drafter, k)
        .expect("speculative generation")
}

/// Plain greedy decoding, checked long enough to say something.
fn reference(e: &Engine, prompt: &[u32], n: usize) -> Vec<u32> {
    let expected = e.generate_greedy(prompt, n).unwrap();
    assert!(expected.len() >= 16, "only {} tokens", expected.len());
    expected
}

#[test]
fn greedy_prompt_lookup_equals_generate_greedy() {
    let e = engine();
    let prompt = e.tokenizer().encode(REPEATED, true, true).unwrap();
    let n = 100 - prompt.len();
    let expected = reference(&e, &prompt, n);
    for k in [1, 4, 8, MAX_DRAFT_TOKENS] {
        let out = speculate(&e, &prompt, &greedy(n), &mut PromptLookup::new(3), k);
        assert_eq!(out.tokens, expected, "k = {k}");
        assert_eq!(out.text, e.tokenizer().decode(&expected));
        let s = &out.stats;
        assert_eq!(s.generated_tokens, expected.len());
        assert!(
            s.drafted_tokens > 0 && s.accepted_tokens > 0,
            "k = {k}: {s}"
        );
        // One prefill, then one pass per round; each round yields its accepted tokens plus one.
        assert_eq!(
            s.target_forwards - 1 + s.accepted_tokens,
            expected.len() - usize::from(out.finish_reason == FinishReason::Length),
            "k = {k}: {s}"
        );
        assert_eq!(s.draft_forwards, 0);
    }
}

#[test]
fn greedy_self_draft_accepts_every_token() {
    let e = engine();
    let draft = engine();
    let prompt = e
        .tokenizer()
        .encode("The Professor said", true, true)
        .unwrap();
    let n = 64;
    let expected = reference(&e, &prompt, n);
    let mut drafter = DraftModel::new(&draft, &e).unwrap();
    let out = speculate(&e, &prompt, &greedy(n), &mut drafter, 4);
    assert_eq!(out.tokens, expected);
    let s = &out.stats;
    assert!(s.drafted_tokens > 0);
    assert_eq!(s.accepted_tokens, s.drafted_tokens, "{s}");
    assert_eq!(s.acceptance_rate(), 1.0);
    assert!(s.target_forwards * 4 < expected.len() + 8, "{s}");
    assert!(s.draft_forwards > 0);
}

#[test]
fn greedy_f16_draft_equals_generate_greedy() {
    let e = engine();
    let draft = load("glassllm-en-f16.gguf");
    for text in ["The Professor said", REPEATED] {
        let prompt = e.tokenizer().encode(text, true, true).unwrap();
        let n = 100 - prompt.len();
        let expected = reference(&e, &prompt, n);
        let mut drafter = DraftModel::new(&draft, &e).unwrap();
        // The drafter is reused across calls: its session is rolled back to each new history.
        for k in [2, 5] {
            let out = speculate(&e, &prompt, &greedy(n), &mut drafter, k);
            assert_eq!(out.tokens, expected, "{text:?}, k = {k}");
            assert!(out.stats.accepted_tokens > 0, "{}", out.stats);
        }
    }
}

#[test]
fn sampled_self_draft_accepts_every_token_and_reproduces() {
    let e = engine();
    let draft = engine();
    let prompt = e
        .tokenizer()
        .encode("Once upon a time", true, true)
        .unwrap();
    let params = |seed| GenerationParams {
        max_tokens: 48,
        sampler: SamplerConfig {
            temperature: 1.0,
            ..SamplerConfig::default()
        },
        seed: Some(seed),
        ..GenerationParams::default()
    };
    let run = |seed, k| {
        let mut drafter = DraftModel::new(&draft, &e).unwrap();
        speculate(&e, &prompt, &params(seed), &mut drafter, k)
    };
    let a = run(3, 4);
    // The draft's q is the model's own p, bitwise: min(1, p/q) = 1.
    assert_eq!(
        a.stats.accepted_tokens, a.stats.drafted_tokens,
        "{}",
        a.stats
    );
    assert!(a.stats.drafted_tokens > 0);
    assert_eq!(a.tokens, run(3, 4).tokens);
    assert_ne!(a.tokens, run(4, 4).tokens);
    // Prompt lookup under sampling: q one-hot, a draft token kept with probability p(x).
    let mut lookup = PromptLookup::new(2);
    let b = speculate(&e, &prompt, &params(3), &mut lookup, 6);
    assert!(!b.tokens.is_empty());
    assert!(b.stats.accepted_tokens <= b.stats.drafted_tokens);
}

/// Greedy with penalties, a stop string and a session smaller than the output: the same tokens,
/// text and finish reason as [`Engine::generate`].
#[test]
fn penalties_stop_strings_and_full_context_end_as_generate_does() {
    let e = engine();
    let prompt = e.tokenizer().encode(REPEATED, true, true).unwrap();
    let penalised = GenerationParams {
        sampler: SamplerConfig {
            repeat_penalty: 1.3,
            frequency_penalty: 0.1,
            penalty_last_n: 16,
            ..SamplerConfig::greedy()
        },
        ..greedy(60)
    };
    let plain = {
        let mut s = e.new_session();
        e.generate(&mut s, prompt.as_slice(), penalised.clone())
            .unwrap()
            .finish()
            .unwrap()
    };
    let words: Vec<&str> = plain.text.split_whitespace().collect();
    assert!(words.len() > 12, "{:?}", plain.text);
    let mut cases = vec![
        (penalised.clone(), prompt.len() + 100),
        (penalised.clone(), prompt.len() + 20),
    ];
    // Stop strings met early and late (inside accepted drafts too), some spanning tokens.
    for n in [2, 7, 10, 12] {
        let stop = format!("{} {}", words[n - 1], words[n]);
        cases.push((
            GenerationParams {
                stop: vec![stop],
                ..penalised.clone()
            },
            prompt.len() + 100,
        ));
    }
    for (params, n_ctx) in cases {
        let expected = {
            let mut s = e.new_session_with_context(n_ctx);
            e.generate(&mut s, prompt.as_slice(), params.clone())
                .unwrap()
                .finish()
                .unwrap()
        };
        for k in [3, 8] {
            let mut session = e.new_session_with_context(n_ctx);
            let mut streamed = String::new();
            let out = e
                .generate_speculative_with(
                    &mut session,
                    prompt.as_slice(),
                    &params,
                    &mut PromptLookup::new(3),
                    k,
                    |piece| streamed.push_str(piece),
                )
                .unwrap();
            let what = format!("stop {:?}, context {n_ctx}, k = {k}", params.stop);
            assert_eq!(out.tokens, expected.tokens, "{what}");
            assert_eq!(out.text, expected.text, "{what}");
            assert_eq!(streamed, out.text, "{what}");
            assert_eq!(out.finish_reason, expected.finish_reason, "{what}");
        }
    }
}

#[test]
fn bad_requests_are_typed_errors() {
    let e = engine();
    let mut s = e.new_session();
    let mut lookup = PromptLookup::new(3);
    let err = e
        .generate_speculative(&mut s, "Hi", &greedy(4), &mut lookup, MAX_DRAFT_TOKENS + 1)
        .unwrap_err();
    assert!(
        matches!(err, SpeculativeError::DraftTooLong { .. }),
        "{err}"
    );
    let err = e
        .generate_speculative(&mut s, Vec::<u32>::new(), &greedy(4), &mut lookup, 4)
        .unwrap_err();
    assert!(matches!(err, SpeculativeError::Engine(_)), "{err}");
    let out = e
        .generate_speculative(&mut s, "Hi", &greedy(0), &mut lookup, 4)
        .unwrap();
    assert!(out.tokens.is_empty());
    assert_eq!(out.finish_reason, FinishReason::Length);
}

/// A one-layer random llama model with the 64-token test vocabulary.
fn tiny_llama(path: &std::path::Path) -> Engine {
    const E: usize = 64;
    const FF: usize = 96;
    let mut meta = Metadata::new();
    meta.insert("general.architecture", "llama");
    meta.insert("general.name", "random llama");
    for (k, v) in [
        ("context_length", Value::U32(128)),
        ("embedding_length", Value::U32(E as u32)),
        ("feed_forward_length", Value::U32(FF as u32)),
        ("block_count", Value::U32(1)),
        ("attention.head_count", Value::U32(2)),
        ("attention.head_count_kv", Value::U32(2)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("rope.dimension_count", Value::U32(32)),
    ] {
        meta.insert(format!("llama.{k}"), v);
    }
    let n_vocab = insert_vocab(&mut meta, None);
    let t = vec![
        Tensor::new(
            "token_embd.weight",
            &[E, n_vocab],
            values(E * n_vocab, 1, 1.0),
        ),
        Tensor::new("output_norm.weight", &[E], norm_weights(E, 2, 1.0)),
        Tensor::new("output.weight", &[E, n_vocab], values(E * n_vocab, 3, 0.25)),
        Tensor::new("blk.0.attn_norm.weight", &[E], norm_weights(E, 4, 1.0)),
        Tensor::new("blk.0.attn_q.weight", &[E, E], values(E * E, 5, 0.15)),
        Tensor::new("blk.0.attn_k.weight", &[E, E], values(E * E, 6, 0.15)),
        Tensor::new("blk.0.attn_v.weight", &[E, E], values(E * E, 7, 0.1)),
        Tensor::new("blk.0.attn_output.weight", &[E, E], values(E * E, 8, 0.1)),
        Tensor::new("blk.0.ffn_norm.weight", &[E], norm_weights(E, 9, 1.0)),
        Tensor::new("blk.0.ffn_gate.weight", &[E, FF], values(E * FF, 10, 0.1)),
        Tensor::new("blk.0.ffn_up.weight", &[E, FF], values(E * FF, 11, 0.1)),
        Tensor::new("blk.0.ffn_down.weight", &[FF, E], values(FF * E, 12, 0.1)),
    ];
    let file = write(path, &meta, &t, GgmlType::F32);
    Engine::load(file, EngineOptions::default()).expect("load the tiny llama")
}

#[test]
fn draft_with_another_vocabulary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = tiny_llama(&dir.path().join("tiny.gguf"));
    let e = engine();
    assert_ne!(other.vocab_size(), e.vocab_size());
    match DraftModel::new(&other, &e) {
        Err(SpeculativeError::VocabMismatch { target, draft }) => {
            assert_eq!((target, draft), (e.vocab_size(), other.vocab_size()));
        }
        other => panic!("expected a vocabulary mismatch, got {other:?}"),
    }
}
