//! HF folder → GGUF → `Llama`: the export and import are exact inverses (Q/K permutation included), and
//! a GGUF written by llama.cpp's own converter imports to the same model.

use std::path::PathBuf;

use candle_core::Device;
use shuku_model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};
use shuku_model::{Llama, ModelError};

fn shared() -> PathBuf {
    shuku_testkit::shared_dir()
}

fn max_abs_diff(a: &Llama, b: &Llama) -> f32 {
    let b: std::collections::HashMap<String, candle_core::Tensor> =
        b.named_tensors().into_iter().collect();
    let mut worst = 0f32;
    for (name, ta) in a.named_tensors() {
        let tb = b.get(&name).unwrap_or_else(|| panic!("{name} missing"));
        let d = (ta - tb)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        worst = worst.max(d.to_scalar::<f32>().unwrap());
    }
    worst
}

fn options() -> ExportOptions {
    ExportOptions {
        name: None,
        overwrite: false,
        tokenizer_pre: None,
    }
}

#[test]
fn f32_export_then_import_is_exact() {
    let hf = shared().join("data/models/glassllm-en");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g.gguf");
    let report = convert_hf_dir(
        &hf,
        &out,
        &PlainEncoder(OutType::F32),
        &options(),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(report.n_params, 852_608);
    let original = Llama::from_hf_dir(&hf, &Device::Cpu).unwrap();
    let imported = Llama::from_gguf(&out, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&original, &imported), 0.0);
}

#[test]
fn llama_cpp_written_f16_gguf_imports_to_the_hf_model() {
    // The HF folder is f16, so llama.cpp's F16 file holds the same values: import must be exact.
    let original =
        Llama::from_hf_dir(shared().join("data/models/glassllm-en"), &Device::Cpu).unwrap();
    let imported = Llama::from_gguf(
        shared().join("data/models/glassllm-en-f16.gguf"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(max_abs_diff(&original, &imported), 0.0);
    let q8 = Llama::from_gguf(
        shared().join("data/models/glassllm-en-q8_0.gguf"),
        &Device::Cpu,
    )
    .unwrap();
    let d = max_abs_diff(&original, &q8);
    assert!(d > 0.0 && d < 0.05, "Q8_0 rounding error {d}");
}

#[test]
fn export_refuses_to_overwrite_and_leaves_no_partial_file() {
    let hf = shared().join("data/models/glassllm-en");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g.gguf");
    std::fs::write(&out, b"precious").unwrap();
    let err = convert_hf_dir(
        &hf,
        &out,
        &PlainEncoder(OutType::F16),
        &options(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Gguf(shuku_gguf::Error::OutputExists { .. })
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    // A folder whose weights disagree with its config fails before anything is written.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(hf.join(f), bad.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(hf.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 341", "\"intermediate_size\": 342");
    std::fs::write(bad.join("config.json"), cfg).unwrap();
    let out2 = tmp.path().join("bad.gguf");
    let err = convert_hf_dir(
        &bad,
        &out2,
        &PlainEncoder(OutType::F16),
        &options(),
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{err}");
    assert!(!out2.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}
