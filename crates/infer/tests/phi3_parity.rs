//! phi3 (Phi-3 / Phi-3.5 / Phi-4 mini) on tiny random models written here with `GgufWriter`.
//!
//! No real phi3 model is available offline, so the models are random: Phi-3's vocabulary (the
//! `tokenizer.*` keys of `../shared/data/vocab/ggml-vocab-phi-3.gguf`, 32 064 SPM tokens) on a
//! 3-layer, 128-wide phi3 with seeded weights scaled so that attention, not only the current
//! token, decides the next one. The ignored tests compare 64 greedy tokens with llama.cpp's
//! `llama-simple` and their logits with llama.cpp's as `llama_cpp_parity.rs` does
//! (`common/parity.rs`); the others run offline on a 64-token vocabulary and check the engine against itself.
//!
//! What the variants cover, per llama.cpp's phi3 graph: Q, K and V fused in `attn_qkv` or separate;
//! gate and up fused in `ffn_up`; NEOX RoPE over `rope.dimension_count` dimensions (partial in the
//! GQA variant, as Phi-4 mini); LongRoPE factors (`rope_factors_long`/`_short`, chosen by the
//! context against `rope.scaling.original_context_length`) and `rope.scaling.attn_factor`; and a
//! `attention.sliding_window` that llama.cpp ignores for phi3. Each is checked as written (F32)
//! and, for three of them, re-quantized to Q8_0 by `llama-quantize`. Q4_0 is left out: on x86
//! llama.cpp repacks Q4_0 matrices into interleaved 8×8 blocks with kernels of their own rounding,
//! and on a model this sensitive to its inputs that parts the texts at a 0.06 logit margin.

mod common;

use common::random_model::{check_parity, load, logits, max_diff, values};

use std::path::{Path, PathBuf};
use std::process::Command;

use shuku_gguf::writer::TensorDesc;
use shuku_gguf::{GgmlType, GgufFile, GgufWriter, Metadata, Value};
use shuku_infer::engine::kernels::quantize_for_tests;
use shuku_infer::{ChatMessage, Engine, EngineError, EngineOptions};

const E: usize = 128;
const HEADS: usize = 4;
const HEAD_DIM: usize = E / HEADS;
const FF: usize = 256;
const LAYERS: usize = 3;

const PROMPT: &str = "The capital of France is";

/// LongRoPE metadata and factor tensors.
#[derive(Clone, Copy)]
struct LongRope {
    /// `rope.scaling.original_context_length`.
    orig_ctx: u32,
    /// `rope.scaling.attn_factor`.
    attn_factor: f32,
}

/// One phi3 model shape.
#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    /// One `attn_qkv` tensor instead of `attn_q`/`attn_k`/`attn_v`.
    fused_qkv: bool,
    n_head_kv: usize,
    /// `rope.dimension_count`.
    n_rot: usize,
    /// `context_length`.
    context: u32,
    longrope: Option<LongRope>,
    sliding_window: Option<u32>,
    /// Type of the matrices (the offline tests quantize here; the parity tests with llama-quantize).
    weight_type: GgmlType,
}

/// Phi-3 mini's layout: fused QKV, full rotation, no GQA, 4k context.
const MINI: Variant = Variant {
    name: "mini",
    fused_qkv: true,
    n_head_kv: HEADS,
    n_rot: HEAD_DIM,
    context: 4096,
    longrope: None,
    sliding_window: None,
    weight_type: GgmlType::F32,
};

/// Phi-3 mini 128k's layout: LongRoPE factors, trained context far beyond the original one.
/// llama-simple's context (256) and the engine's (prompt + 64) are within the original 4096, so
/// both use the short factors.
const MINI_128K: Variant = Variant {
    name: "mini-128k",
    context: 131_072,
    longrope: Some(LongRope {
        orig_ctx: 4096,
        // The converter's sqrt(1 + ln(131072 / 4096) / ln(4096)) = sqrt(17 / 12).
        attn_factor: 1.190_239,
    }),
    ..MINI
};

/// Phi-4 mini's layout: GQA, partial rotation (24 of 32 dimensions), LongRoPE; the original context
/// is set below both runs' contexts so that both use the long factors.
const GQA_LONG: Variant = Variant {
    name: "gqa-long",
    n_head_kv: 2,
    n_rot: 24,
    longrope: Some(LongRope {
        orig_ctx: 32,
        attn_factor: 1.25,
    }),
    ..MINI
};

/// Separate Q/K/V tensors and a sliding window of 8 in the metadata (ignored for phi3).
const SPLIT_SWA: Variant = Variant {
    name: "split-swa",
    fused_qkv: false,
    sliding_window: Some(8),
    ..MINI
};

/// `1 + values`: norm weights near 1.
fn near_one(n: usize, seed: u64) -> Vec<f32> {
    values(n, seed, 0.1).into_iter().map(|v| 1.0 + v).collect()
}

/// The `tokenizer.*` keys: Phi-3's own vocabulary, or a 64-token SPM vocabulary for offline tests.
fn vocab(meta: &mut Metadata, phi3_vocab: Option<&Path>) -> usize {
    if let Some(path) = phi3_vocab {
        let f = GgufFile::open(path).expect("open the Phi-3 vocabulary");
        for (k, v) in f.metadata().iter() {
            if k.starts_with("tokenizer.") {
                meta.insert(k, v.clone());
            }
        }
        return f
            .metadata()
            .get_string_array("tokenizer.ggml.tokens")
            .expect("tokens")
            .len();
    }
    let n = 64;
    common::tiny_vocab::insert_spm_vocab(meta, n);
    n
}

/// The tensors of `v` with their values. Q, K and V are drawn separately and stacked for the fused
/// layout, so the fused and split files of one variant hold the same model.
fn tensors(v: &Variant, n_vocab: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let kv = v.n_head_kv * HEAD_DIM;
    let mut t = vec![
        (
            "token_embd.weight".to_string(),
            vec![E, n_vocab],
            values(E * n_vocab, 1, 1.0),
        ),
        ("output_norm.weight".into(), vec![E], near_one(E, 2)),
        (
            "output.weight".into(),
            vec![E, n_vocab],
            values(E * n_vocab, 3, 0.25),
        ),
    ];
    if v.longrope.is_some() {
        let pairs = v.n_rot / 2;
        // Short factors near 1, long ones growing with the pair index as LongRoPE's do.
        let short = (0..pairs).map(|i| 1.0 + 0.05 * i as f32).collect();
        let long = (0..pairs).map(|i| 1.0 + 3.0 * i as f32).collect();
        t.push(("rope_factors_long.weight".into(), vec![pairs], long));
        t.push(("rope_factors_short.weight".into(), vec![pairs], short));
    }
    for i in 0..LAYERS {
        let n = |s: &str| format!("blk.{i}.{s}");
        let seed = 100 * (i as u64 + 1);
        let q = values(E * E, seed + 1, 0.15);
        let k = values(E * kv, seed + 2, 0.15);
        let vv = values(E * kv, seed + 3, 0.1);
        t.push((n("attn_norm.weight"), vec![E], near_one(E, seed + 4)));
        if v.fused_qkv {
            let qkv = [q, k, vv].concat();
            t.push((n("attn_qkv.weight"), vec![E, E + 2 * kv], qkv));
        } else {
            t.push((n("attn_q.weight"), vec![E, E], q));
            t.push((n("attn_k.weight"), vec![E, kv], k));
            t.push((n("attn_v.weight"), vec![E, kv], vv));
        }
        t.push((
            n("attn_output.weight"),
            vec![E, E],
            values(E * E, seed + 5, 0.1),
        ));
        t.push((n("ffn_norm.weight"), vec![E], near_one(E, seed + 6)));
        t.push((
            n("ffn_up.weight"),
            vec![E, 2 * FF],
            values(E * 2 * FF, seed + 7, 0.1),
        ));
        t.push((
            n("ffn_down.weight"),
            vec![FF, E],
            values(FF * E, seed + 8, 0.1),
        ));
    }
    t
}

/// Writes variant `v` into `dir`; `phi3_vocab` picks the vocabulary (see [`vocab`]).
fn write_phi3(dir: &Path, v: &Variant, phi3_vocab: Option<&Path>) -> PathBuf {
    let mut meta = Metadata::new();
    meta.insert("general.architecture", "phi3");
    meta.insert("general.name", format!("random phi3 {}", v.name).as_str());
    let mut keys: Vec<(&str, Value)> = vec![
        ("context_length", Value::U32(v.context)),
        ("embedding_length", Value::U32(E as u32)),
        ("feed_forward_length", Value::U32(FF as u32)),
        ("block_count", Value::U32(LAYERS as u32)),
        ("attention.head_count", Value::U32(HEADS as u32)),
        ("attention.head_count_kv", Value::U32(v.n_head_kv as u32)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("rope.dimension_count", Value::U32(v.n_rot as u32)),
        ("rope.freq_base", Value::F32(10_000.0)),
        (
            "rope.scaling.original_context_length",
            Value::U32(v.longrope.map_or(v.context, |l| l.orig_ctx)),
        ),
        (
            "attention.sliding_window",
            Value::U32(v.sliding_window.unwrap_or(0)),
        ),
    ];
    if let Some(lr) = v.longrope {
        keys.push(("rope.scaling.attn_factor", Value::F32(lr.attn_factor)));
    }
    for (k, val) in keys {
        meta.insert(format!("phi3.{k}"), val);
    }
    let n_vocab = vocab(&mut meta, phi3_vocab);
    let tensors = tensors(v, n_vocab);
    let ttype = |dims: &[usize]| {
        if dims.len() == 1 {
            GgmlType::F32
        } else {
            v.weight_type
        }
    };
    let descs = tensors
        .iter()
        .map(|(n, d, _)| {
            TensorDesc::new(n.clone(), d.iter().map(|&x| x as u64).collect(), ttype(d))
        })
        .collect();
    let path = dir.join(format!("phi3-{}.gguf", v.name));
    let mut w = GgufWriter::options()
        .overwrite(true)
        .create(&path, &meta, descs)
        .expect("create");
    for (name, dims, vals) in &tensors {
        let bytes = quantize_for_tests(ttype(dims), vals).expect("encode");
        w.write_tensor(name, &bytes).expect("write");
    }
    w.finish().expect("finish")
}

// ---- offline --------------------------------------------------------------------------------

const TINY_PROMPT: [u32; 7] = [1, 7, 9, 3, 30, 12, 40];

/// Batched prefill gives the logits of token-by-token decoding, for every variant, as F32 and Q8_0.
#[test]
fn phi3_batched_prefill_matches_incremental_decoding() {
    let dir = tempfile::tempdir().unwrap();
    for base in [MINI, MINI_128K, GQA_LONG, SPLIT_SWA] {
        for wt in [GgmlType::F32, GgmlType::Q8_0] {
            let v = Variant {
                weight_type: wt,
                ..base
            };
            let engine = load(&write_phi3(dir.path(), &v, None));
            let all = logits(&engine, &TINY_PROMPT, 64);
            let nv = engine.vocab_size();
            let mut s = engine.new_session_with_context(64);
            for (i, &t) in TINY_PROMPT.iter().enumerate() {
                let last = engine.forward(&mut s, &[t], false).expect("step");
                let d = max_diff(&all[i * nv..(i + 1) * nv], &last);
                assert!(d < 1e-4, "{} {wt} position {i}: max |Δlogit| {d}", v.name);
            }
        }
    }
}

/// The fused matrices read as row ranges give exactly the model of separate Q/K/V tensors, and the
/// sliding window in phi3's metadata changes nothing (llama.cpp ignores it).
#[test]
fn phi3_fused_qkv_equals_separate_and_sliding_window_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    for wt in [GgmlType::F32, GgmlType::Q8_0] {
        let fused = load(&write_phi3(
            dir.path(),
            &Variant {
                weight_type: wt,
                ..MINI
            },
            None,
        ));
        let split = load(&write_phi3(
            dir.path(),
            &Variant {
                weight_type: wt,
                ..SPLIT_SWA
            },
            None,
        ));
        let a = logits(&fused, &TINY_PROMPT, 64);
        let b = logits(&split, &TINY_PROMPT, 64);
        assert_eq!(a, b, "{wt}: fused and split QKV differ");
    }
}

/// LongRoPE: a session longer than the original context rotates with the long factors (other
/// logits), one within it with the short factors; `rope.scaling.attn_factor` scales the rotation.
#[test]
fn phi3_longrope_factors_follow_the_session_context() {
    let dir = tempfile::tempdir().unwrap();
    let engine = load(&write_phi3(dir.path(), &GQA_LONG, None));
    assert_eq!(engine.config().n_ctx_orig, 32);
    assert_eq!(engine.config().rope_attn_factor, 1.25);
    let short_a = logits(&engine, &TINY_PROMPT, 16);
    let short_b = logits(&engine, &TINY_PROMPT, 32);
    let long = logits(&engine, &TINY_PROMPT, 33);
    assert_eq!(short_a, short_b, "same factors within the original context");
    let d = max_diff(&short_a, &long);
    assert!(
        d > 1e-2,
        "long factors should change the logits (max Δ {d})"
    );
    // Without factor tensors or attn_factor the same weights give yet other logits.
    let plain = load(&write_phi3(
        dir.path(),
        &Variant {
            name: "gqa-plain",
            longrope: None,
            ..GQA_LONG
        },
        None,
    ));
    let d = max_diff(&short_a, &logits(&plain, &TINY_PROMPT, 16));
    assert!(d > 1e-2, "LongRoPE should change the logits (max Δ {d})");
}

/// A phi3 file whose `ffn_up` holds only the up rows (gate in a separate `ffn_gate`, llama's
/// layout) is refused with the shape phi3 needs.
#[test]
fn phi3_without_fused_gate_up_is_a_shape_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_phi3(dir.path(), &MINI, None);
    let file = GgufFile::open(&good).expect("open");
    let mut meta = file.metadata().clone();
    meta.remove("general.alignment");
    let mut descs = Vec::new();
    let mut data = Vec::new();
    for info in file.tensor_infos() {
        let view = file.tensor(&info.name).expect("tensor");
        let ttype = match info.ttype {
            shuku_gguf::TensorType::Known(t) => t,
            t => panic!("{t}"),
        };
        if info.name == "blk.1.ffn_up.weight" {
            // Keep the first half of the rows only: [E, FF].
            let half = view.bytes.len() / 2;
            descs.push(TensorDesc::new(
                info.name.clone(),
                vec![E as u64, FF as u64],
                ttype,
            ));
            data.push((info.name.clone(), view.bytes[..half].to_vec()));
        } else {
            descs.push(TensorDesc::new(info.name.clone(), info.dims.clone(), ttype));
            data.push((info.name.clone(), view.bytes.to_vec()));
        }
    }
    let bad = dir.path().join("phi3-unfused-ffn.gguf");
    let mut w = GgufWriter::options()
        .overwrite(true)
        .create(&bad, &meta, descs)
        .expect("create");
    for (name, bytes) in &data {
        w.write_tensor(name, bytes).expect("write");
    }
    w.finish().expect("finish");
    match Engine::load(&bad, EngineOptions::default()) {
        Err(EngineError::BadShape {
            name,
            expected,
            found,
        }) => {
            assert_eq!(name, "blk.1.ffn_up.weight");
            assert_eq!(expected, [E as u64, 2 * FF as u64]);
            assert_eq!(found, [E as u64, FF as u64]);
        }
        other => panic!("expected BadShape, got {other:?}"),
    }
}

// ---- against llama.cpp ----------------------------------------------------------------------

fn phi3_vocab() -> PathBuf {
    common::shared("data/vocab/ggml-vocab-phi-3.gguf")
}

/// `llama-quantize IN OUT TYPE` into `dir`; checks that the fused matrices got that type.
fn quantize(input: &Path, dir: &Path, ttype: GgmlType) -> PathBuf {
    let out = dir.join(format!(
        "{}-{ttype}.gguf",
        input.file_stem().unwrap().to_string_lossy()
    ));
    common::run(
        Command::new(common::llama_bin("llama-quantize"))
            .arg(input)
            .arg(&out)
            .arg(ttype.to_string()),
    );
    let f = GgufFile::open(&out).expect("open the quantized file");
    for name in ["blk.0.attn_qkv.weight", "blk.0.ffn_up.weight"] {
        let t = f.tensor_info(name).expect("fused tensor").ttype;
        assert_eq!(t, shuku_gguf::TensorType::Known(ttype), "{name}");
    }
    out
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh)"]
fn phi3_fused_qkv_f32_and_q8_0_match_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let f32 = write_phi3(dir.path(), &MINI, Some(&phi3_vocab()));
    check_parity(&f32, PROMPT);
    check_parity(&quantize(&f32, dir.path(), GgmlType::Q8_0), PROMPT);
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh)"]
fn phi3_separate_qkv_with_sliding_window_matches_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    check_parity(
        &write_phi3(dir.path(), &SPLIT_SWA, Some(&phi3_vocab())),
        PROMPT,
    );
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh)"]
fn phi3_longrope_short_factors_match_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let m = write_phi3(dir.path(), &MINI_128K, Some(&phi3_vocab()));
    check_parity(&m, PROMPT);
    check_parity(&quantize(&m, dir.path(), GgmlType::Q8_0), PROMPT);
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh)"]
fn phi3_longrope_long_factors_gqa_partial_rope_match_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let m = write_phi3(dir.path(), &GQA_LONG, Some(&phi3_vocab()));
    check_parity(&m, PROMPT);
    check_parity(&quantize(&m, dir.path(), GgmlType::Q8_0), PROMPT);
}

/// The chat template of Phi-3's vocabulary renders through minijinja, and its special tokens reach
/// llama.cpp and the engine as single tokens: the rendered conversation is a prompt like any other.
#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh)"]
fn phi3_chat_prompt_matches_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let m = write_phi3(dir.path(), &MINI, Some(&phi3_vocab()));
    let engine = load(&m);
    let rendered = engine
        .render_chat(
            &[ChatMessage::new("user", "What is the capital of France?")],
            true,
        )
        .expect("render");
    assert_eq!(
        rendered,
        "<s><|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n"
    );
    // llama-simple adds BOS itself: hand it the conversation without the template's.
    let prompt = rendered.strip_prefix("<s>").expect("BOS first");
    let ids = engine
        .tokenizer()
        .encode(prompt, true, true)
        .expect("tokenize");
    for special in ["<|user|>", "<|end|>", "<|assistant|>"] {
        let id = engine
            .tokenizer()
            .encode(special, false, true)
            .expect("tokenize");
        assert_eq!(id.len(), 1, "{special} is one token");
        assert!(ids.contains(&id[0]), "{special} in the prompt");
    }
    check_parity(&m, prompt);
}
