//! Tiny random models written with `GgufWriter`, for the families no small real model is available
//! for offline: seeded weights, a real vocabulary's `tokenizer.*` keys (for the comparisons with
//! llama.cpp) or a 64-token one (for the engine-only tests).

use std::path::{Path, PathBuf};

use shuku_gguf::writer::TensorDesc;
use shuku_gguf::{GgmlType, GgufFile, GgufWriter, Metadata};
use shuku_infer::engine::kernels::quantize_for_tests;
use shuku_infer::{Engine, EngineOptions};

use super::parity::N_PREDICT;

/// One tensor to write: name, ggml dimensions (`[cols, rows]` for a matrix), f32 values.
pub struct Tensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(name: impl Into<String>, dims: &[usize], data: Vec<f32>) -> Tensor {
        let name = name.into();
        assert_eq!(
            dims.iter().product::<usize>(),
            data.len(),
            "{name}: dimensions and values disagree"
        );
        Tensor {
            name,
            dims: dims.to_vec(),
            data,
        }
    }
}

/// Seeded uniform values with mean 0 and standard deviation `std`.
pub fn values(n: usize, seed: u64, std: f32) -> Vec<f32> {
    let mut rng = shuku_testkit::TestRng(seed);
    let a = std * 3f32.sqrt();
    (0..n).map(|_| rng.signed() * a).collect()
}

/// `mean + values(std 0.1)`: norm weights.
pub fn norm_weights(n: usize, seed: u64, mean: f32) -> Vec<f32> {
    values(n, seed, 0.1).into_iter().map(|v| mean + v).collect()
}

/// Inserts the `tokenizer.*` keys of `vocab_file` (a real vocabulary), or of a 64-token SPM
/// vocabulary when `None`; returns the number of tokens.
pub fn insert_vocab(meta: &mut Metadata, vocab_file: Option<&Path>) -> usize {
    let Some(path) = vocab_file else {
        let n = 64;
        super::tiny_vocab::insert_spm_vocab(meta, n);
        return n;
    };
    let f = GgufFile::open(path).expect("open the vocabulary");
    for (k, v) in f.metadata().iter() {
        if k.starts_with("tokenizer.") {
            meta.insert(k, v.clone());
        }
    }
    f.metadata()
        .get_string_array("tokenizer.ggml.tokens")
        .expect("tokens")
        .len()
}

/// Writes `tensors` to `path`: vectors as F32, matrices as `weight_type`.
pub fn write(path: &Path, meta: &Metadata, tensors: &[Tensor], weight_type: GgmlType) -> PathBuf {
    let ttype = |t: &Tensor| {
        if t.dims.len() == 1 {
            GgmlType::F32
        } else {
            weight_type
        }
    };
    let descs = tensors
        .iter()
        .map(|t| {
            TensorDesc::new(
                t.name.clone(),
                t.dims.iter().map(|&x| x as u64).collect(),
                ttype(t),
            )
        })
        .collect();
    let mut w = GgufWriter::options()
        .overwrite(true)
        .create(path, meta, descs)
        .expect("create");
    for t in tensors {
        let bytes = quantize_for_tests(ttype(t), &t.data).expect("encode");
        w.write_tensor(&t.name, &bytes).expect("write");
    }
    w.finish().expect("finish")
}

/// The engine as the comparisons run it (2 threads, 512 positions).
pub fn load(path: &Path) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            threads: 2,
            context: 512,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// All-position logits of `prompt` in a fresh session of `n_ctx` positions.
pub fn logits(engine: &Engine, prompt: &[u32], n_ctx: usize) -> Vec<f32> {
    let mut s = engine.new_session_with_context(n_ctx);
    engine.forward(&mut s, prompt, true).expect("forward")
}

/// Largest |a − b|.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Asserts that evaluating `prompt` in one batch gives, at every position, the logits of feeding
/// it token by token through the KV cache (within `tol`).
pub fn assert_batch_matches_cache(engine: &Engine, prompt: &[u32], tol: f32, what: &str) {
    let all = logits(engine, prompt, 64);
    let nv = engine.vocab_size();
    let mut s = engine.new_session_with_context(64);
    for (i, &t) in prompt.iter().enumerate() {
        let last = engine.forward(&mut s, &[t], false).expect("step");
        let d = max_diff(&all[i * nv..(i + 1) * nv], &last);
        assert!(d < tol, "{what} position {i}: max |Δlogit| {d}");
    }
}

/// [`super::parity::check`] on a model that must not be degenerate (too few distinct greedy tokens
/// to test anything).
pub fn check_parity(model: &Path, prompt: &str) {
    let engine = load(model);
    let ids = engine
        .tokenizer()
        .encode(prompt, true, true)
        .expect("tokenize");
    let mut distinct = engine.generate_greedy(&ids, N_PREDICT).expect("generate");
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() >= 8,
        "{}: degenerate model, {} distinct greedy tokens",
        model.display(),
        distinct.len()
    );
    super::parity::check(model, prompt);
}

/// Copies `src` to `dst` with its metadata edited by `edit` and every tensor unchanged.
pub fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut Metadata)) -> PathBuf {
    let file = GgufFile::open(src).expect("open");
    let mut meta = file.metadata().clone();
    // The writer records its own alignment.
    meta.remove("general.alignment");
    edit(&mut meta);
    let mut descs = Vec::new();
    for info in file.tensor_infos() {
        let ttype = match info.ttype {
            shuku_gguf::TensorType::Known(t) => t,
            t => panic!("{}: unknown type {t}", info.name),
        };
        descs.push(TensorDesc::new(info.name.clone(), info.dims.clone(), ttype));
    }
    let mut w = GgufWriter::options()
        .overwrite(true)
        .create(dst, &meta, descs)
        .expect("create");
    for info in file.tensor_infos() {
        let view = file.tensor(&info.name).expect("tensor");
        w.write_tensor(&info.name, view.bytes).expect("write");
    }
    w.finish().expect("finish")
}
