//! `tokenizer_metadata` against what llama.cpp's converter writes: SmolLM2's byte-level BPE named
//! by llama.cpp's hash, an unknown hash refused with the fix, glassllm's SentencePiece-style
//! `tokenizer.json`, and SentencePiece `tokenizer.model` folders for each family.

use std::path::Path;

use shuku_gguf::{GgufFile, Value};
use shuku_model::{tokenizer_metadata, ModelError};
use shuku_testkit::{asset, shared};

type Meta = Vec<(String, Value)>;

fn get<'a>(m: &'a Meta, k: &str) -> Option<&'a Value> {
    m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v)
}

fn string(m: &Meta, k: &str) -> String {
    match get(m, k) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    }
}

/// Asserts that `ours` has `theirs`' values for `keys` (integer arrays compared by value, since
/// the writers may choose different widths).
fn assert_same(ours: &Meta, theirs: &GgufFile, keys: &[&str]) {
    for k in keys {
        let (a, b) = (get(ours, k), theirs.get(k));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("{k}: ours {:?}, llama.cpp's {:?}", a.is_some(), b.is_some());
        };
        match (a, b) {
            (Value::Array(x), Value::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{k} length");
                match (x.to_i64_vec(), y.to_i64_vec()) {
                    (Some(xs), Some(ys)) => assert_eq!(xs, ys, "{k}"),
                    _ => assert_eq!(x, y, "{k}"),
                }
            }
            _ => match (a.as_i64(), b.as_i64()) {
                (Some(x), Some(y)) => assert_eq!(x, y, "{k}"),
                _ => assert_eq!(a, b, "{k}"),
            },
        }
    }
}

#[test]
fn smollm2_is_named_smollm_and_matches_llama_cpps_conversion() {
    let dir = asset("hf/SmolLM2-135M-Instruct-f32");
    let ours = tokenizer_metadata(&dir, "llama", 49152, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(string(&ours, "tokenizer.ggml.model"), "gpt2");
    assert_eq!(string(&ours, "tokenizer.ggml.pre"), "smollm");
    let theirs = GgufFile::open(asset("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    assert_same(
        &ours,
        &theirs,
        &[
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.chat_template",
        ],
    );
}

#[test]
fn an_unknown_hash_names_itself_the_file_and_the_flag() {
    // glassllm's tokenizer is not byte-level BPE, so as a Qwen2 (no `tokenizer.model`) llama.cpp
    // hashes it, and its hash is in no table.
    let dir = shared("data/models/glassllm-en");
    let err = tokenizer_metadata(&dir, "qwen2", 1024, None).unwrap_err();
    match &err {
        ModelError::UnknownPreTokenizer { file, hash } => {
            assert_eq!(file, &dir.join("tokenizer.json"));
            // What `sha256(str(AutoTokenizer.from_pretrained(dir).encode(chktxt)))` gives.
            assert_eq!(
                hash,
                "add5a9b9d865ef36e44720b4eca93a52cf1257d7cbd86e04dfbe81c2e0f8824c"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("--tokenizer-pre") && message.contains("tokenizer.json"),
        "{message}"
    );
    // The explicit name skips the detection.
    let m = tokenizer_metadata(&dir, "qwen2", 1024, Some("default")).unwrap();
    assert_eq!(string(&m, "tokenizer.ggml.pre"), "default");
}

#[test]
fn glassllm_as_llama_matches_its_gguf_py_file() {
    let dir = shared("data/models/glassllm-en");
    let ours = tokenizer_metadata(&dir, "llama", 1024, None).unwrap();
    let theirs = GgufFile::open(shared("data/models/glassllm-en-f16.gguf")).unwrap();
    let keys: Vec<&str> = theirs
        .metadata()
        .keys()
        .filter(|k| k.starts_with("tokenizer."))
        .collect();
    assert_same(&ours, &theirs, &keys);
}

/// Protobuf bytes of a SentencePiece `ModelProto` holding `pieces` (text, score, type).
fn sentencepiece_model(pieces: &[(&str, f32, u8)]) -> Vec<u8> {
    fn varint(mut v: usize, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut model = Vec::new();
    for (text, score, kind) in pieces {
        let mut p = vec![0x0a];
        varint(text.len(), &mut p);
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        p.extend_from_slice(&[0x18, *kind]);
        model.push(0x0a);
        varint(p.len(), &mut model);
        model.extend(p);
    }
    // A normalizer spec (field 3), which the reader skips.
    model.extend_from_slice(&[0x1a, 0x02, 0x18, 0x01]);
    model
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A SentencePiece folder: 7 pieces, an added token, a model vocabulary of 10.
fn sentencepiece_folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let pieces = [
        ("<unk>", 0.0, 2),
        ("<s>", 0.0, 3),
        ("</s>", 0.0, 3),
        ("<0x0A>", 0.0, 6),
        ("\u{2581}the", -1.25, 1),
        ("<mark>", 0.0, 4),
        ("e", -3.5, 1),
    ];
    std::fs::write(
        tmp.path().join("tokenizer.model"),
        sentencepiece_model(&pieces),
    )
    .unwrap();
    write(
        tmp.path(),
        "tokenizer_config.json",
        r#"{"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>",
            "eos_token": {"content": "</s>"}, "unk_token": "<unk>",
            "chat_template": "{{ messages }}",
            "added_tokens_decoder": {
              "0": {"content": "<unk>", "special": true},
              "7": {"content": "<|tool|>", "special": false},
              "8": {"content": "\u2581x", "special": false}}}"#,
    );
    write(
        tmp.path(),
        "config.json",
        r#"{"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}"#,
    );
    tmp
}

#[test]
fn sentencepiece_model_is_read_as_llama_cpp_reads_it() {
    let tmp = sentencepiece_folder();
    let m = tokenizer_metadata(tmp.path(), "llama", 10, None).unwrap();
    let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token",
            "tokenizer.chat_template",
        ]
    );
    assert_eq!(string(&m, "tokenizer.ggml.model"), "llama");
    assert_eq!(string(&m, "tokenizer.ggml.pre"), "default");
    let tokens = get(&m, "tokenizer.ggml.tokens")
        .and_then(Value::as_string_array)
        .unwrap();
    assert_eq!(
        tokens,
        [
            "<unk>",
            "<s>",
            "</s>",
            "<0x0A>",
            "\u{2581}the",
            "<mark>",
            "e",
            "<|tool|>",
            " x",
            "[PAD9]"
        ]
    );
    let types = get(&m, "tokenizer.ggml.token_type")
        .and_then(Value::as_array)
        .and_then(|a| a.to_i64_vec());
    // The user-defined piece `<mark>` is normal, as llama.cpp lists it.
    assert_eq!(types, Some(vec![3, 3, 3, 6, 1, 1, 1, 3, 4, 5]));
    assert_eq!(
        get(&m, "tokenizer.ggml.scores"),
        Some(&Value::Array(shuku_gguf::Array::F32(vec![
            -1000.0, 0.0, 0.0, 0.0, -1.25, 0.0, -3.5, -1000.0, -1000.0, -10000.0
        ])))
    );
    // Ids come from tokenizer_config.json's names only when tokenizer.json lists them; here
    // config.json supplies them.
    assert_eq!(get(&m, "tokenizer.ggml.bos_token_id"), Some(&Value::U32(1)));
    assert_eq!(
        get(&m, "tokenizer.ggml.padding_token_id"),
        Some(&Value::U32(0))
    );
    assert_eq!(
        get(&m, "tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(true))
    );
}

#[test]
fn families_differ_as_in_llama_cpp() {
    let tmp = sentencepiece_folder();
    // Gemma 3 turns the space prefix off after the vocabulary.
    let m = tokenizer_metadata(tmp.path(), "gemma3", 10, None).unwrap();
    assert_eq!(
        m.last(),
        Some(&(
            "tokenizer.ggml.add_space_prefix".to_string(),
            Value::Bool(false)
        ))
    );
    // Qwen2 reads the same model without that key.
    let m = tokenizer_metadata(tmp.path(), "qwen2", 10, None).unwrap();
    assert!(get(&m, "tokenizer.ggml.add_space_prefix").is_none());
    // Phi-3 keeps `▁` in user-defined tokens and does not promote `<|tool|>` to control.
    let m = tokenizer_metadata(tmp.path(), "phi3", 10, None).unwrap();
    let tokens = get(&m, "tokenizer.ggml.tokens")
        .and_then(Value::as_string_array)
        .unwrap();
    assert_eq!(tokens[8], "\u{2581}x");
    let types = get(&m, "tokenizer.ggml.token_type")
        .and_then(Value::as_array)
        .and_then(|a| a.to_i64_vec());
    assert_eq!(types.map(|t| t[7]), Some(4));
    // A truncated `tokenizer.model` is an error naming the file.
    let bytes = std::fs::read(tmp.path().join("tokenizer.model")).unwrap();
    std::fs::write(
        tmp.path().join("tokenizer.model"),
        &bytes[..bytes.len() - 7],
    )
    .unwrap();
    let err = tokenizer_metadata(tmp.path(), "llama", 10, None).unwrap_err();
    assert!(err.to_string().contains("tokenizer.model"), "{err}");
}

#[test]
#[ignore = "conformance: needs scripts/hf-reference.sh's family cases; run by scripts/test.sh"]
fn every_family_case_matches_llama_cpps_converter_key_for_key() {
    let root = shuku_testkit::families_dir();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("llamacpp-f32.gguf").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", root.display());
    let mut failures = Vec::new();
    for case in &cases {
        let theirs = GgufFile::open(case.join("llamacpp-f32.gguf")).unwrap();
        let arch = theirs.get_str("general.architecture").unwrap().to_string();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("hf/config.json")).unwrap())
                .unwrap();
        let n_vocab = config
            .get("vocab_size")
            .or_else(|| config.get("text_config").and_then(|t| t.get("vocab_size")))
            .and_then(serde_json::Value::as_u64)
            .unwrap() as usize;
        let ours = match tokenizer_metadata(&case.join("hf"), &arch, n_vocab, None) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: {e}", case.display()));
                continue;
            }
        };
        let theirs: Meta = theirs
            .metadata()
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let keys = |m: &Meta| m.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        if keys(&ours) != keys(&theirs) {
            failures.push(format!(
                "{}: keys\n  shuku     {:?}\n  llama.cpp {:?}",
                case.display(),
                keys(&ours),
                keys(&theirs)
            ));
        }
        for (k, v) in &theirs {
            if get(&ours, k) != Some(v) {
                failures.push(format!("{}: {k} differs", case.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
