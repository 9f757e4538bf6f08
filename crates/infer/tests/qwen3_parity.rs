//! qwen3 (dense Qwen3) on tiny random models written here with `GgufWriter`.
//!
//! No real qwen3 model is available offline, so the models are random: Qwen2's vocabulary (the
//! `tokenizer.*` keys of `../shared/data/vocab/ggml-vocab-qwen2.gguf`, which Qwen3 shares) on a
//! 3-layer, 128-wide qwen3 with seeded weights. The ignored tests compare 64 greedy tokens with
//! llama.cpp's `llama-simple` and their logits with llama.cpp's (`common/parity.rs`); the others run
//! offline on a 64-token vocabulary and check the engine against itself and its typed errors.
//!
//! What the variants cover, per llama.cpp's qwen3 graph: Q, K and V without biases; an RMSNorm of
//! each Q and K head (one `head_dim`-wide weight shared by the heads) after the projections and
//! before NEOX RoPE; heads wider than `n_embd / n_head` (`attention.key_length` and `value_length`
//! 64 for 4 heads of a 128-wide model, as Qwen3-0.6B's 128 for 16 heads of 1024) with GQA; output
//! tied to the embedding or not.

mod common;

use std::path::{Path, PathBuf};

use common::random_model::{
    assert_batch_matches_cache, check_parity, insert_vocab, load, logits, max_diff, norm_weights,
    values, write, Tensor,
};
use shuku_gguf::{GgmlType, Metadata, Value};
use shuku_infer::{Arch, Engine, EngineError, EngineOptions};

const E: usize = 128;
const HEADS: usize = 4;
const FF: usize = 256;
const LAYERS: usize = 3;

const PROMPT: &str = "The capital of France is";

/// One qwen3 model shape.
#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    /// `attention.key_length` and `value_length`; `None`: keys absent, heads of `E / HEADS`.
    head_dim: Option<usize>,
    n_head_kv: usize,
    /// No `output.weight`: the LM head is the embedding.
    tied: bool,
    /// Type of the matrices (the offline tests quantize here; the parity tests with llama-quantize).
    weight_type: GgmlType,
}

impl Variant {
    fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(E / HEADS)
    }
}

/// Qwen3-0.6B's layout: heads twice `n_embd / n_head` wide, GQA, tied output.
const WIDE_HEADS: Variant = Variant {
    name: "wide-heads",
    head_dim: Some(64),
    n_head_kv: 2,
    tied: true,
    weight_type: GgmlType::F32,
};

/// The larger Qwen3s' layout: untied output; here heads of `n_embd / n_head` with no key_length.
const UNTIED: Variant = Variant {
    name: "untied",
    head_dim: None,
    n_head_kv: HEADS,
    tied: false,
    weight_type: GgmlType::F32,
};

/// The metadata and tensors of `v`; `vocab_file` picks the vocabulary (see [`insert_vocab`]).
fn model(v: &Variant, vocab_file: Option<&Path>) -> (Metadata, Vec<Tensor>) {
    let mut meta = Metadata::new();
    meta.insert("general.architecture", "qwen3");
    meta.insert("general.name", format!("random qwen3 {}", v.name).as_str());
    let mut keys: Vec<(&str, Value)> = vec![
        ("context_length", Value::U32(40_960)),
        ("embedding_length", Value::U32(E as u32)),
        ("feed_forward_length", Value::U32(FF as u32)),
        ("block_count", Value::U32(LAYERS as u32)),
        ("attention.head_count", Value::U32(HEADS as u32)),
        ("attention.head_count_kv", Value::U32(v.n_head_kv as u32)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("rope.freq_base", Value::F32(1_000_000.0)),
    ];
    if let Some(hd) = v.head_dim {
        keys.push(("attention.key_length", Value::U32(hd as u32)));
        keys.push(("attention.value_length", Value::U32(hd as u32)));
    }
    for (k, val) in keys {
        meta.insert(format!("qwen3.{k}"), val);
    }
    let n_vocab = insert_vocab(&mut meta, vocab_file);

    let hd = v.head_dim();
    let (q_out, kv_out) = (HEADS * hd, v.n_head_kv * hd);
    // A tied head scores each token by its embedding's dot product with the final state, which
    // holds the current token's embedding: random embeddings as large as the blocks' outputs make
    // the model repeat its input. Small embeddings (as trained ones are) and a larger final norm
    // keep the logits' spread.
    let (embd_std, out_norm) = if v.tied { (0.05, 8.0) } else { (1.0, 1.0) };
    let mut t = vec![
        Tensor::new(
            "token_embd.weight",
            &[E, n_vocab],
            values(E * n_vocab, 1, embd_std),
        ),
        Tensor::new("output_norm.weight", &[E], norm_weights(E, 2, out_norm)),
    ];
    if !v.tied {
        t.push(Tensor::new(
            "output.weight",
            &[E, n_vocab],
            values(E * n_vocab, 3, 0.25),
        ));
    }
    for i in 0..LAYERS {
        let n = |s: &str| format!("blk.{i}.{s}");
        let seed = 100 * (i as u64 + 1);
        t.extend([
            Tensor::new(n("attn_norm.weight"), &[E], norm_weights(E, seed, 1.0)),
            Tensor::new(
                n("attn_q.weight"),
                &[E, q_out],
                values(E * q_out, seed + 1, 0.15),
            ),
            Tensor::new(
                n("attn_k.weight"),
                &[E, kv_out],
                values(E * kv_out, seed + 2, 0.15),
            ),
            Tensor::new(
                n("attn_v.weight"),
                &[E, kv_out],
                values(E * kv_out, seed + 3, 0.1),
            ),
            // Q and K heads of unit RMS scaled by ~1.5 each: scores of a few units after the
            // 1/sqrt(head_dim) scale, so attention, not only the current token, picks the next.
            Tensor::new(
                n("attn_q_norm.weight"),
                &[hd],
                norm_weights(hd, seed + 4, 1.5),
            ),
            Tensor::new(
                n("attn_k_norm.weight"),
                &[hd],
                norm_weights(hd, seed + 5, 1.5),
            ),
            Tensor::new(
                n("attn_output.weight"),
                &[q_out, E],
                values(q_out * E, seed + 6, 0.1),
            ),
            Tensor::new(n("ffn_norm.weight"), &[E], norm_weights(E, seed + 7, 1.0)),
            Tensor::new(
                n("ffn_gate.weight"),
                &[E, FF],
                values(E * FF, seed + 8, 0.1),
            ),
            Tensor::new(n("ffn_up.weight"), &[E, FF], values(E * FF, seed + 9, 0.1)),
            Tensor::new(
                n("ffn_down.weight"),
                &[FF, E],
                values(FF * E, seed + 10, 0.1),
            ),
        ]);
    }
    (meta, t)
}

/// Writes variant `v` into `dir` as `qwen3-{v.name}{suffix}.gguf`.
fn write_qwen3(dir: &Path, v: &Variant, vocab_file: Option<&Path>) -> PathBuf {
    let (meta, tensors) = model(v, vocab_file);
    let path = dir.join(format!("qwen3-{}-{}.gguf", v.name, v.weight_type));
    write(&path, &meta, &tensors, v.weight_type)
}

// ---- offline --------------------------------------------------------------------------------

const TINY_PROMPT: [u32; 7] = [1, 7, 9, 3, 30, 12, 40];

#[test]
fn qwen3_config_reads_head_widths_and_neox_rope() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(&write_qwen3(dir.path(), &WIDE_HEADS, None));
    let c = e.config();
    assert_eq!(c.arch, Arch::Qwen3);
    assert_eq!((c.head_dim, c.head_dim_v, c.n_rot), (64, 64, 64));
    assert_eq!(c.rope_style, shuku_infer::RopeStyle::Neox);
    assert_eq!(c.attn_scale, 1.0 / 8.0);
    let e = load(&write_qwen3(dir.path(), &UNTIED, None));
    assert_eq!((e.config().head_dim, e.config().head_dim_v), (32, 32));
}

/// Batched prefill gives the logits of token-by-token decoding (the KV cache), for both variants,
/// as F32 and Q8_0.
#[test]
fn qwen3_batched_prefill_matches_incremental_decoding() {
    let dir = tempfile::tempdir().unwrap();
    for base in [WIDE_HEADS, UNTIED] {
        for wt in [GgmlType::F32, GgmlType::Q8_0] {
            let v = Variant {
                weight_type: wt,
                ..base
            };
            let engine = load(&write_qwen3(dir.path(), &v, None));
            assert_batch_matches_cache(&engine, &TINY_PROMPT, 1e-4, &format!("{} {wt}", v.name));
        }
    }
}

/// An untied file whose `output.weight` equals the embedding computes exactly the tied model.
#[test]
fn qwen3_tied_output_is_the_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let tied = load(&write_qwen3(dir.path(), &WIDE_HEADS, None));
    let (meta, mut tensors) = model(&WIDE_HEADS, None);
    let embd = tensors[0].data.clone();
    let dims = tensors[0].dims.clone();
    tensors.push(Tensor::new("output.weight", &dims, embd));
    let untied = load(&write(
        &dir.path().join("qwen3-explicit-output.gguf"),
        &meta,
        &tensors,
        GgmlType::F32,
    ));
    assert_eq!(
        logits(&tied, &TINY_PROMPT, 16),
        logits(&untied, &TINY_PROMPT, 16)
    );
}

/// The Q and K norms are per head and come before attention: scaling one head's rows of `attn_q`
/// and another's of `attn_k` leaves the logits unchanged up to rounding (the f16 cache and Q; about
/// 2e-3 here), while the same scaling of `attn_v` moves them by units.
#[test]
fn qwen3_qk_norms_make_each_head_scale_free() {
    let dir = tempfile::tempdir().unwrap();
    let v = WIDE_HEADS;
    let hd = v.head_dim();
    let base = load(&write_qwen3(dir.path(), &v, None));
    let reference = logits(&base, &TINY_PROMPT, 16);
    // ggml order: a matrix [E, rows] is stored row after row, each E wide.
    let scale_rows = |t: &mut Tensor, rows: std::ops::Range<usize>, s: f32| {
        t.data[rows.start * E..rows.end * E]
            .iter_mut()
            .for_each(|x| *x *= s);
    };
    let (meta, mut tensors) = model(&v, None);
    for t in &mut tensors {
        match t.name.as_str() {
            "blk.1.attn_q.weight" => scale_rows(t, hd..2 * hd, 4.0),
            "blk.2.attn_k.weight" => scale_rows(t, 0..hd, 0.25),
            _ => {}
        }
    }
    let scaled = load(&write(
        &dir.path().join("qwen3-scaled-qk.gguf"),
        &meta,
        &tensors,
        GgmlType::F32,
    ));
    let d = max_diff(&reference, &logits(&scaled, &TINY_PROMPT, 16));
    assert!(d < 1e-2, "per-head Q/K scaling changed the logits by {d}");
    for t in &mut tensors {
        if t.name == "blk.1.attn_v.weight" {
            scale_rows(t, 0..hd, 4.0);
        }
    }
    let v_scaled = load(&write(
        &dir.path().join("qwen3-scaled-v.gguf"),
        &meta,
        &tensors,
        GgmlType::F32,
    ));
    let d = max_diff(&reference, &logits(&v_scaled, &TINY_PROMPT, 16));
    assert!(d > 0.1, "scaling V should change the logits (max Δ {d})");
}

/// Writes `WIDE_HEADS` edited by `edit` and loads it.
fn load_edited(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Metadata, &mut Vec<Tensor>),
) -> Result<Engine, EngineError> {
    let (mut meta, mut tensors) = model(&WIDE_HEADS, None);
    edit(&mut meta, &mut tensors);
    let path = write(
        &dir.join(format!("qwen3-{name}.gguf")),
        &meta,
        &tensors,
        GgmlType::F32,
    );
    Engine::load(&path, EngineOptions::default())
}

fn expect_invalid_key(r: Result<Engine, EngineError>, key: &str) {
    match r {
        Err(EngineError::InvalidKey { key: k, why }) => {
            assert_eq!(k, key, "{why}");
        }
        other => panic!("expected InvalidKey {key}, got {other:?}"),
    }
}

/// Head widths llama.cpp's qwen3 graph cannot run (it asserts V heads as wide as K heads and RoPE
/// over whole heads) are typed errors, as is a `key_length` without `value_length` when the value
/// width it then defaults to (`n_embd / n_head`, as in llama.cpp) differs.
#[test]
fn qwen3_bad_head_widths_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    expect_invalid_key(
        load_edited(d, "v-width", |m, _| {
            m.insert("qwen3.attention.value_length", 32u32);
        }),
        "qwen3.attention.value_length",
    );
    expect_invalid_key(
        load_edited(d, "no-v-width", |m, _| {
            m.remove("qwen3.attention.value_length");
        }),
        "qwen3.attention.value_length",
    );
    expect_invalid_key(
        load_edited(d, "partial-rope", |m, _| {
            m.insert("qwen3.rope.dimension_count", 32u32);
        }),
        "qwen3.rope.dimension_count",
    );
}

/// Missing or misshapen Q/K norms, a RoPE scaling the engine does not implement, and RoPE factors
/// qwen3 does not rotate with are typed errors naming the tensor or key.
#[test]
fn qwen3_bad_norms_scaling_and_factors_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    match load_edited(d, "no-k-norm", |_, t| {
        t.retain(|t| t.name != "blk.1.attn_k_norm.weight")
    }) {
        Err(EngineError::MissingTensor(name)) => assert_eq!(name, "blk.1.attn_k_norm.weight"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    match load_edited(d, "narrow-q-norm", |_, t| {
        for t in t
            .iter_mut()
            .filter(|t| t.name == "blk.0.attn_q_norm.weight")
        {
            *t = Tensor::new(t.name.clone(), &[E / HEADS], vec![1.0; E / HEADS]);
        }
    }) {
        Err(EngineError::BadShape { name, expected, .. }) => {
            assert_eq!(name, "blk.0.attn_q_norm.weight");
            assert_eq!(expected, [64]);
        }
        other => panic!("expected BadShape, got {other:?}"),
    }
    expect_invalid_key(
        load_edited(d, "yarn", |m, _| {
            m.insert("qwen3.rope.scaling.type", "yarn");
            m.insert("qwen3.rope.scaling.factor", 4.0f32);
            m.insert("qwen3.rope.scaling.original_context_length", 32_768u32);
        }),
        "qwen3.rope.scaling.type",
    );
    match load_edited(d, "rope-freqs", |_, t| {
        t.push(Tensor::new("rope_freqs.weight", &[32], vec![1.0; 32]))
    }) {
        Err(EngineError::UnusedTensor { name, .. }) => assert_eq!(name, "rope_freqs.weight"),
        other => panic!("expected UnusedTensor, got {other:?}"),
    }
}

// ---- against llama.cpp ----------------------------------------------------------------------

fn qwen2_vocab() -> PathBuf {
    common::shared("data/vocab/ggml-vocab-qwen2.gguf")
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh)"]
fn qwen3_wide_heads_gqa_tied_f32_and_q8_0_match_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let f32 = write_qwen3(dir.path(), &WIDE_HEADS, Some(&qwen2_vocab()));
    check_parity(&f32, PROMPT);
    check_parity(&common::requantize(&f32, dir.path(), "Q8_0"), PROMPT);
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh)"]
fn qwen3_untied_f32_and_q8_0_match_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let f32 = write_qwen3(dir.path(), &UNTIED, Some(&qwen2_vocab()));
    check_parity(&f32, PROMPT);
    check_parity(&common::requantize(&f32, dir.path(), "Q8_0"), PROMPT);
}
