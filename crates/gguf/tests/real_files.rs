//! Reading real GGUF files (written by gguf-py and llama.cpp), checked against gguf-py itself.

mod common;

use candle_core::{DType, Device};
use common::*;
use shuku_gguf::{GgufFile, TensorType, Value};

/// Opens `path` with us and with gguf-py and compares every key and every tensor byte range.
fn compare_with_gguf_py(path: &std::path::Path) {
    let f = GgufFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let dump: serde_json::Value =
        serde_json::from_str(&run_python(GGUF_PY_DUMP, &[path])).expect("json from python");
    let keys = dump["keys"].as_array().expect("keys");
    let ours: Vec<&str> = f.metadata().keys().collect();
    let theirs: Vec<&str> = keys.iter().map(|k| k[0].as_str().unwrap_or("")).collect();
    assert_eq!(ours, theirs, "key order");
    for k in keys {
        let name = k[0].as_str().unwrap_or("");
        let v = f.get(name).expect("key present");
        let types: Vec<u64> = k[1]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_u64())
            .collect();
        assert_eq!(u64::from(v.value_type().id()), types[0], "{name} type");
        let expected = &k[2];
        match v {
            Value::Array(a) => {
                assert_eq!(Some(a.len() as u64), expected["len"].as_u64(), "{name} len");
                assert_eq!(
                    u64::from(a.element_type().id()),
                    types[1],
                    "{name} elem type"
                );
            }
            Value::String(s) => assert_eq!(Some(s.as_str()), expected.as_str(), "{name}"),
            Value::Bool(b) => assert_eq!(Some(*b), expected.as_bool(), "{name}"),
            Value::F32(x) => assert_eq!(Some(f64::from(*x)), expected.as_f64(), "{name}"),
            Value::F64(x) => assert_eq!(Some(*x), expected.as_f64(), "{name}"),
            other => assert_eq!(other.as_i64(), expected.as_i64(), "{name}"),
        }
    }
    let tensors = dump["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), f.tensor_infos().len());
    for (t, info) in tensors.iter().zip(f.tensor_infos()) {
        assert_eq!(t[0].as_str(), Some(info.name.as_str()));
        assert_eq!(
            t[1].as_u64(),
            Some(u64::from(info.ttype.id())),
            "{}",
            info.name
        );
        let dims: Vec<u64> = t[2]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d.as_u64())
            .collect();
        assert_eq!(dims, info.dims, "{}", info.name);
        let view = f.tensor(&info.name).unwrap_or_else(|e| panic!("{e}"));
        let abs = view.bytes.as_ptr() as usize - f.bytes().as_ptr() as usize;
        assert_eq!(t[3].as_u64(), Some(abs as u64), "{} offset", info.name);
        assert_eq!(
            t[4].as_u64(),
            Some(view.bytes.len() as u64),
            "{} n_bytes",
            info.name
        );
        assert_eq!(
            t[5].as_u64(),
            Some(weighted_sum(view.bytes)),
            "{} bytes",
            info.name
        );
    }
}

#[test]
fn glassllm_f16_matches_gguf_py() {
    let p = shared("data/models/glassllm-en-f16.gguf");
    compare_with_gguf_py(&p);
    let f = GgufFile::open(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.get_str("general.architecture").ok(), Some("llama"));
    let t = f
        .tensor("token_embd.weight")
        .and_then(|v| v.to_tensor(&Device::Cpu));
    let t = t.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(t.dims(), &[1024, 128]);
    let n = f
        .tensor("output_norm.weight")
        .and_then(|v| v.to_tensor(&Device::Cpu));
    assert_eq!(n.map(|t| t.dtype()).ok(), Some(DType::F32));
}

#[test]
fn glassllm_q8_0_matches_gguf_py_and_dequantizes() {
    let p = shared("data/models/glassllm-en-q8_0.gguf");
    compare_with_gguf_py(&p);
    let f = GgufFile::open(&p).unwrap_or_else(|e| panic!("{e}"));
    let q = f
        .tensor_infos()
        .iter()
        .find(|t| t.ttype == TensorType::Known(shuku_gguf::GgmlType::Q8_0))
        .expect("a Q8_0 tensor");
    let t = f.tensor(&q.name).and_then(|v| v.to_tensor(&Device::Cpu));
    let t = t.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.dims(), q.shape().as_slice());
    // Same weights as the f16 file up to Q8_0 error.
    let f16 = GgufFile::open(shared("data/models/glassllm-en-f16.gguf"))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = f16
        .tensor(&q.name)
        .and_then(|v| v.to_tensor(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = r.to_dtype(DType::F32).unwrap();
    let diff = (t - &r)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = r
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        diff <= scale / 100.0,
        "dequantized Q8_0 differs by {diff} (max {scale})"
    );
}

#[test]
fn every_vocab_only_file_opens() {
    let dir = shared("data/vocab");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("gguf") {
            continue;
        }
        let f = GgufFile::open(&p).unwrap_or_else(|e| panic!("{e}"));
        let toks = f.metadata().get_string_array("tokenizer.ggml.tokens");
        assert!(
            toks.map(|t| !t.is_empty()).unwrap_or(false),
            "{}",
            p.display()
        );
        n += 1;
    }
    assert!(n >= 10, "only {n} vocab files in {}", dir.display());
    // One of them fully cross-checked with gguf-py.
    compare_with_gguf_py(&shared("data/vocab/ggml-vocab-llama-bpe.gguf"));
}

#[test]
fn smollm2_q4_1_opens_and_dequantizes() {
    let p = asset("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let f = GgufFile::open(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.tensor_infos().len(), 272);
    let arch = shuku_gguf::ArchParams::from_gguf(&f).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(arch.block_count, 30);
    assert_eq!(arch.head_count_kv, shuku_gguf::PerLayer::Uniform(3));
    for name in [
        "blk.0.attn_q.weight",
        "token_embd.weight",
        "blk.0.attn_norm.weight",
    ] {
        let t = f.tensor(name).and_then(|v| v.to_tensor(&Device::Cpu));
        let t = t.unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = f.tensor_info(name).unwrap();
        assert_eq!(t.dims(), info.shape().as_slice());
        let m = t
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(m.is_finite() && m > 0.0, "{name} mean |w| = {m}");
    }
    compare_with_gguf_py(&p);
}

#[test]
fn gemma3_q4_k_m_opens_and_dequantizes() {
    let p = asset("gguf/gemma-3-270m-q4_k_m.gguf");
    let f = GgufFile::open(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.get_str("general.architecture").ok(), Some("gemma3"));
    let mut done = 0;
    for info in f.tensor_infos() {
        let Some(t) = info.ttype.known() else {
            continue;
        };
        if t.is_quantized() && done < 3 && info.name.starts_with("blk.0.") {
            let x = f.tensor(&info.name).and_then(|v| v.to_tensor(&Device::Cpu));
            let x = x.unwrap_or_else(|e| panic!("{}: {e}", info.name));
            assert_eq!(x.dims(), info.shape().as_slice());
            done += 1;
        }
    }
    assert!(done > 0);
    compare_with_gguf_py(&p);
}
