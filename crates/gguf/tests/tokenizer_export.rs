//! Tokenizer export compared with GGUFs produced by llama.cpp's converter / gguf-py.

mod common;

use common::*;
use shuku_gguf::tokenizer::{export, export_dir, ExportOptions};
use shuku_gguf::{GgufFile, Value};

fn get<'a>(m: &'a [(String, Value)], k: &str) -> Option<&'a Value> {
    m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v)
}

fn assert_same(ours: &[(String, Value)], f: &GgufFile, keys: &[&str]) {
    for k in keys {
        let a = get(ours, k);
        let b = f.get(k);
        assert!(
            a.is_some() && b.is_some(),
            "{k}: ours {:?} theirs {:?}",
            a.is_some(),
            b.is_some()
        );
        if let (Some(Value::Array(x)), Some(Value::Array(y))) = (a, b) {
            assert_eq!(x.len(), y.len(), "{k} length");
            // Integer arrays may differ in width; compare values.
            if let (Some(xs), Some(ys)) = (x.to_i64_vec(), y.to_i64_vec()) {
                assert_eq!(xs, ys, "{k}");
                continue;
            }
            if let (Some(xs), Some(ys)) = (x.as_strings(), y.as_strings()) {
                for (i, (p, q)) in xs.iter().zip(ys).enumerate() {
                    assert_eq!(p, q, "{k}[{i}]");
                }
                continue;
            }
            assert_eq!(x, y, "{k}");
        } else if let (Some(x), Some(y)) = (a.and_then(Value::as_i64), b.and_then(Value::as_i64)) {
            assert_eq!(x, y, "{k}");
        } else {
            assert_eq!(a, b, "{k}");
        }
    }
}

#[test]
fn smollm2_matches_llama_cpp_conversion() {
    let dir = asset("hf/SmolLM2-135M-Instruct-f32");
    let ours = export_dir(&dir, Some("smollm")).unwrap_or_else(|e| panic!("{e}"));
    let f = GgufFile::open(asset("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    assert_same(
        &ours,
        &f,
        &[
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.chat_template",
        ],
    );
}

#[test]
fn glassllm_matches_its_gguf() {
    let dir = shared("data/models/glassllm-en");
    let ours = export_dir(&dir, None).unwrap_or_else(|e| panic!("{e}"));
    let f = GgufFile::open(shared("data/models/glassllm-en-f16.gguf")).unwrap();
    let keys: Vec<&str> = f
        .metadata()
        .keys()
        .filter(|k| k.starts_with("tokenizer."))
        .collect();
    assert_same(&ours, &f, &keys);
    // Same keys in the same order.
    let our_keys: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(our_keys, keys);
}

#[test]
fn vocab_size_padding_uses_pad_tokens() {
    let dir = shared("data/models/glassllm-en");
    let tj = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
    let m = export(
        &tj,
        None,
        &ExportOptions {
            vocab_size: Some(1030),
            ..Default::default()
        },
    )
    .unwrap();
    let toks = get(&m, "tokenizer.ggml.tokens")
        .and_then(Value::as_string_array)
        .unwrap();
    assert_eq!(toks.len(), 1030);
    assert_eq!(toks[1029], "[PAD1029]");
    let types = get(&m, "tokenizer.ggml.token_type")
        .and_then(Value::as_array)
        .and_then(|a| a.to_i64_vec())
        .unwrap();
    assert_eq!(types[1029], 4);
}
