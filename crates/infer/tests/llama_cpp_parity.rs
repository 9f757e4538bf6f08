//! Greedy generation and its logits against llama.cpp on real models (`common/parity.rs` says
//! what is compared and within which bounds).

mod common;

use std::path::Path;

use common::parity::check;

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and ../shared models"]
fn glassllm_f16_matches_llama_simple() {
    check(
        &common::shared("data/models/glassllm-en-f16.gguf"),
        "Alice was beginning to get",
    );
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and ../shared models"]
fn glassllm_q8_0_matches_llama_simple() {
    check(
        &common::shared("data/models/glassllm-en-q8_0.gguf"),
        "Alice was beginning to get",
    );
}

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOL_PROMPT: &str = "The capital of France is";

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and fetch-models.sh assets"]
fn smollm2_q4_1_matches_llama_simple() {
    check(&common::asset_model(SMOL), SMOL_PROMPT);
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and fetch-models.sh assets"]
fn smollm2_requantized_q8_0_matches_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = common::requantize(&common::asset_model(SMOL), dir.path(), "Q8_0");
    check(&q, SMOL_PROMPT);
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and fetch-models.sh assets"]
fn smollm2_requantized_q4_k_m_matches_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = common::requantize(&common::asset_model(SMOL), dir.path(), "Q4_K_M");
    check(&q, SMOL_PROMPT);
}

/// Q4_0: llama.cpp repacks these matrices into interleaved blocks on x86 (kernels of their own
/// summation order); the engine keeps the file's layout.
#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and fetch-models.sh assets"]
fn smollm2_requantized_q4_0_matches_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = common::requantize(&common::asset_model(SMOL), dir.path(), "Q4_0");
    check(&q, SMOL_PROMPT);
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh) and fetch-models.sh assets"]
fn gemma3_q4_k_m_matches_llama_simple() {
    check(
        &common::asset_model("gemma-3-270m-q4_k_m.gguf"),
        "The capital of France is",
    );
}

/// The embedded base model (assets/shuku-base) written as an F32 GGUF by shuku-model's exporter.
fn base_model_f32(dir: &Path) -> std::path::PathBuf {
    use shuku_model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};
    let out = dir.join("shuku-base-f32.gguf");
    let options = ExportOptions {
        name: None,
        overwrite: false,
        tokenizer_pre: None,
    };
    convert_hf_dir(
        shuku_testkit::workspace_dir().join("assets/shuku-base"),
        &out,
        &PlainEncoder(OutType::F32),
        &options,
        &mut |_, _, _| {},
    )
    .expect("convert assets/shuku-base");
    out
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh)"]
fn base_model_f32_and_q8_0_match_llama_simple() {
    let dir = tempfile::tempdir().expect("temp dir");
    let f32_gguf = base_model_f32(dir.path());
    check(&f32_gguf, "ROMEO:");
    let q8 = common::requantize(&f32_gguf, dir.path(), "Q8_0");
    check(&q8, "ROMEO:");
}

/// Every type shuku-quantize writes, on the base model: llama.cpp loads the file and decodes
/// the same greedy text as the engine (pure files put each type on every matrix).
#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh)"]
fn base_model_quantized_by_shuku_to_every_type_matches_llama_simple() {
    use shuku_quantize::{preset, Quantizer};
    let dir = tempfile::tempdir().expect("temp dir");
    let f32_gguf = base_model_f32(dir.path());
    for ftype in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q4_K_S", "Q5_K_S", "Q6_K", "F16", "BF16",
    ] {
        let out = dir.path().join(format!("base-{ftype}.gguf"));
        Quantizer::new(preset(ftype).expect("preset"))
            .pure(true)
            .run(&f32_gguf, &out)
            .expect("shuku quantize");
        check(&out, "ROMEO:");
    }
}
