//! Typed errors on bad models and requests, on tiny GGUF files written with `shuku_gguf::GgufWriter`,
//! plus a self-consistency check on a working tiny model (batched prefill = token-by-token decoding).

mod common;

use std::path::{Path, PathBuf};

use shuku_gguf::writer::TensorDesc;
use shuku_gguf::{GgmlType, GgufWriter, Metadata, TensorType, Value};
use shuku_infer::engine::kernels::quantize_for_tests;
use shuku_infer::{Engine, EngineError, EngineOptions};

const E: u64 = 64;
const FF: u64 = 96;
const VOCAB: u64 = 40;
const LAYERS: usize = 2;

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = shuku_testkit::TestRng(seed);
    (0..n).map(|_| rng.unit() - 0.5).collect()
}

struct Spec {
    arch: &'static str,
    drop_key: Option<&'static str>,
    /// Tensor stored with another type (name, type).
    retype: Option<(&'static str, GgmlType)>,
    weight_type: GgmlType,
    /// `attention.sliding_window` (gemma3: both layers are then sliding-window layers).
    sliding_window: Option<u32>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            arch: "llama",
            drop_key: None,
            retype: None,
            weight_type: GgmlType::Q8_0,
            sliding_window: None,
        }
    }
}

/// Writes a 2-layer llama-shaped model (4 heads of 16, 2 KV heads) with a byte-free SPM vocabulary.
fn write_model(dir: &Path, spec: &Spec) -> PathBuf {
    let a = spec.arch;
    let mut meta = Metadata::new();
    meta.insert("general.architecture", a);
    let mut keys: Vec<(String, Value)> = vec![
        (format!("{a}.context_length"), Value::U32(32)),
        (format!("{a}.embedding_length"), Value::U32(E as u32)),
        (format!("{a}.block_count"), Value::U32(LAYERS as u32)),
        (format!("{a}.feed_forward_length"), Value::U32(FF as u32)),
        (format!("{a}.attention.head_count"), Value::U32(4)),
        (format!("{a}.attention.head_count_kv"), Value::U32(2)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
    ];
    if let Some(w) = spec.sliding_window {
        keys.push((format!("{a}.attention.sliding_window"), Value::U32(w)));
    }
    for (k, v) in keys {
        if spec.drop_key.is_some_and(|d| k.ends_with(d)) {
            continue;
        }
        meta.insert(k, v);
    }
    common::tiny_vocab::insert_spm_vocab(&mut meta, VOCAB as usize);

    let wt = spec.weight_type;
    let mut tensors: Vec<(String, Vec<u64>, GgmlType)> = vec![
        ("token_embd.weight".into(), vec![E, VOCAB], wt),
        ("output_norm.weight".into(), vec![E], GgmlType::F32),
    ];
    for i in 0..LAYERS {
        let n = |s: &str| format!("blk.{i}.{s}");
        tensors.extend([
            (n("attn_norm.weight"), vec![E], GgmlType::F32),
            (n("attn_q.weight"), vec![E, 64], wt),
            (n("attn_k.weight"), vec![E, 32], wt),
            (n("attn_v.weight"), vec![E, 32], wt),
            (n("attn_output.weight"), vec![64, E], wt),
            (n("ffn_norm.weight"), vec![E], GgmlType::F32),
            (n("ffn_gate.weight"), vec![E, FF], wt),
            (n("ffn_up.weight"), vec![E, FF], wt),
            (n("ffn_down.weight"), vec![FF, E], GgmlType::F16),
        ]);
        if a == "gemma3" {
            tensors.extend([
                (n("attn_q_norm.weight"), vec![16], GgmlType::F32),
                (n("attn_k_norm.weight"), vec![16], GgmlType::F32),
                (n("post_attention_norm.weight"), vec![E], GgmlType::F32),
                (n("post_ffw_norm.weight"), vec![E], GgmlType::F32),
            ]);
        }
    }
    if let Some((name, t)) = spec.retype {
        for x in tensors.iter_mut().filter(|x| x.0 == name) {
            x.2 = t;
        }
    }
    let descs = tensors
        .iter()
        .map(|(n, d, t)| TensorDesc::new(n.clone(), d.clone(), *t))
        .collect();
    let path = dir.join(format!("{a}-{}.gguf", spec.drop_key.unwrap_or("full")));
    let mut w = GgufWriter::options()
        .overwrite(true)
        .create(&path, &meta, descs)
        .expect("create");
    for (k, (name, dims, t)) in tensors.iter().enumerate() {
        let n: u64 = dims.iter().product();
        let vals = if dims.len() == 1 {
            vec![1.0; n as usize]
        } else {
            values(n as usize, k as u64 + 1)
        };
        let bytes = quantize_for_tests(*t, &vals)
            .unwrap_or_else(|| vec![0u8; t.bytes_for(n).expect("size") as usize]);
        w.write_tensor(name, &bytes).expect("write");
    }
    w.finish().expect("finish")
}

fn load(path: &Path) -> Result<Engine, EngineError> {
    Engine::load(
        path,
        EngineOptions {
            threads: 1,
            context: 16,
            ..Default::default()
        },
    )
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_model(
        dir.path(),
        &Spec {
            arch: "mamba",
            ..Spec::default()
        },
    );
    match load(&p) {
        Err(EngineError::UnsupportedArchitecture(a)) => assert_eq!(a, "mamba"),
        other => panic!("expected UnsupportedArchitecture, got {other:?}"),
    }
}

#[test]
fn unsupported_tensor_type_names_tensor_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_model(
        dir.path(),
        &Spec {
            retype: Some(("blk.1.ffn_up.weight", GgmlType::IQ4_NL)),
            ..Spec::default()
        },
    );
    match load(&p) {
        Err(EngineError::UnsupportedTensorType { name, ttype }) => {
            assert_eq!(name, "blk.1.ffn_up.weight");
            assert_eq!(ttype, TensorType::Known(GgmlType::IQ4_NL));
        }
        other => panic!("expected UnsupportedTensorType, got {other:?}"),
    }
}

#[test]
fn missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_model(
        dir.path(),
        &Spec {
            drop_key: Some("embedding_length"),
            ..Spec::default()
        },
    );
    match load(&p) {
        Err(EngineError::MissingKey(k)) => assert_eq!(k, "llama.embedding_length"),
        other => panic!("expected MissingKey, got {other:?}"),
    }
}

#[test]
fn context_overflow_and_bad_tokens_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = load(&write_model(dir.path(), &Spec::default())).expect("load");
    let mut s = engine.new_session();
    assert_eq!(s.context(), 16);
    engine.forward(&mut s, &[1, 5, 6], false).expect("forward");
    match engine.forward(&mut s, &[7; 14], false) {
        Err(EngineError::ContextOverflow { needed, context }) => {
            assert_eq!((needed, context), (17, 16));
        }
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
    assert!(matches!(
        engine.forward(&mut s, &[VOCAB as u32], false),
        Err(EngineError::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        engine.forward(&mut s, &[], false),
        Err(EngineError::InvalidRequest(_))
    ));
    // A failed request leaves the session where it was.
    assert_eq!(s.len(), 3);
}

/// Prefill of a whole prompt as one batch gives the same logits as feeding it token by token.
#[test]
fn batched_prefill_matches_incremental_decoding() {
    for wt in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_1,
        GgmlType::F16,
        GgmlType::Q4_1,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = write_model(
            dir.path(),
            &Spec {
                weight_type: wt,
                ..Spec::default()
            },
        );
        let engine = load(&p).unwrap_or_else(|e| panic!("{wt}: {e}"));
        let prompt = [1u32, 7, 9, 3, 30, 12];
        let mut a = engine.new_session();
        let all = engine.forward(&mut a, &prompt, true).expect("batch");
        let v = engine.vocab_size();
        let mut b = engine.new_session();
        for (i, &t) in prompt.iter().enumerate() {
            let last = engine.forward(&mut b, &[t], false).expect("step");
            let row = &all[i * v..(i + 1) * v];
            let diff = row
                .iter()
                .zip(&last)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(diff < 1e-4, "{wt} position {i}: max |Δlogit| {diff}");
        }
        let g = engine.generate_greedy(&prompt, 5).expect("generate");
        assert!(g.len() <= 5);
    }
}

/// Sliding-window layers keep `window + ubatch − 1` positions in a ring: decoding far past the
/// ring's length gives exactly the logits of a cache holding every position, in a fraction of the
/// memory; truncating to a position whose window has left the ring forgets everything.
#[test]
fn sliding_window_ring_matches_a_full_cache() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_model(
        dir.path(),
        &Spec {
            arch: "gemma3",
            sliding_window: Some(8),
            ..Spec::default()
        },
    );
    let options = |ubatch| EngineOptions {
        threads: 2,
        context: 160,
        ubatch,
        ..Default::default()
    };
    // Rings of 8 + 4 − 1 = 11 positions, against 160 (a window plus 512 exceeds the context).
    let ring = Engine::load(&p, options(4)).expect("load");
    let full = Engine::load(&p, options(512)).expect("load");
    let (mut a, mut b) = (ring.new_session(), full.new_session());
    assert!(
        a.max_cache_bytes() * 10 < b.max_cache_bytes(),
        "{} vs {} bytes",
        a.max_cache_bytes(),
        b.max_cache_bytes()
    );
    assert_eq!(
        a.cache_bytes(),
        0,
        "nothing is allocated before a position is filled"
    );
    let prompt: Vec<u32> = (0..40).map(|i| 3 + (i * 7 % 37)).collect();
    let la = ring
        .forward(&mut a, &prompt, true)
        .expect("prefill in batches of 4");
    let lb = full
        .forward(&mut b, &prompt, true)
        .expect("prefill in one batch");
    assert_eq!(la, lb);
    // The full cache holds the 40 positions filled, not the 160 of its context.
    assert_eq!(b.cache_bytes() * 4, b.max_cache_bytes());
    for step in 0..100u32 {
        let next = 3 + step * 11 % 37;
        let la = ring.forward(&mut a, &[next], false).expect("decode");
        let lb = full.forward(&mut b, &[next], false).expect("decode");
        assert_eq!(la, lb, "step {step}");
    }
    assert_eq!(a.len(), 140);
    a.truncate(138);
    assert_eq!(
        a.len(),
        138,
        "the window of position 138 is still in the ring"
    );
    a.truncate(50);
    assert_eq!(a.len(), 0, "the window of position 50 has left the ring");
    b.truncate(50);
    assert_eq!(b.len(), 50, "a full cache keeps any prefix");
}
