//! The exports checked in the real runtimes (ONNX Runtime, onnxruntime-genai, mlx-lm from the venv that
//! `scripts/export-venv.sh` makes), against shuku-model and against the runtimes' own converters
//! (`py/convert_anchors.sh`). Ignored by default: they need that venv; `scripts/test.sh` runs them.

mod common;

use common::{base_dir, max_abs_diff, model_logits, opts, uneven};
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use shuku_eval::{kl_divergence, PerplexityProtocol};
use shuku_export::runtime::{generate, runtime_python, GenerateRequest, Runtime, RuntimeLogits};
use shuku_export::{ExportOptions, Exporter, MlxDtype, MlxExporter, OnnxExporter, WeightBits};
use shuku_model::{Llama, ModelType, Tokenizer};
use shuku_testkit::workspace_dir;

/// The export venv's Python: `$SHUKU_EXPORT_PYTHON`, else made (or found) by `scripts/export-venv.sh`.
fn python() -> PathBuf {
    runtime_python(&workspace_dir().join("scripts/export-venv.sh")).unwrap()
}

/// The runtimes' own conversions of `hf` (ort-fp32, ort-int4, mlx-q4), cached under `target/`.
fn anchors(hf: &Path, name: &str) -> PathBuf {
    let out = workspace_dir().join("target/export-anchors").join(name);
    let status = Command::new("bash")
        .arg(workspace_dir().join("crates/export/py/convert_anchors.sh"))
        .arg(hf)
        .arg(&out)
        .env("SHUKU_EXPORT_PYTHON", python())
        .status()
        .expect("bash runs");
    assert!(status.success(), "convert_anchors.sh failed");
    out
}

fn smollm2_dir() -> PathBuf {
    shuku_testkit::asset("hf/SmolLM2-135M-Instruct-f32")
}

fn export(exporter: &dyn Exporter, model: &Llama, tokenizer: &Path, out: &Path) {
    let report = exporter.export(model, tokenizer, out).unwrap();
    println!("{report}");
}

/// MLX options with f32 scales (MLX's x86 CPU backend runs f16 about 30 times slower).
fn mlx_f32(bits: WeightBits) -> ExportOptions {
    ExportOptions {
        mlx_dtype: MlxDtype::F32,
        ..opts(bits)
    }
}

fn prompt(dir: &Path) -> Vec<u32> {
    let tok = Tokenizer::from_file(dir).unwrap();
    tok.encode("The king said to his daughter that", false)
        .unwrap()
}

/// Greedy tokens of the runtime's own loop equal shuku-model's (up to an end-of-sequence token, where the
/// runtime stops), and the runtime's logits over prompt + continuation are within `tol` of shuku-model's
/// at every position.
fn check_against_model(
    model: &Llama,
    dir: &Path,
    generator: Runtime,
    logits_runtime: Runtime,
    n: usize,
    tol: f32,
) {
    let py = python();
    let prompt = prompt(dir);
    let expected = model.generate_greedy(&prompt, n).unwrap();
    let got = generate(
        &py,
        generator,
        dir,
        &GenerateRequest {
            prompt: prompt.clone(),
            new_tokens: n,
            stop_at_eos: true,
            warm_up: false,
        },
    )
    .unwrap();
    let eos = &model.config().eos_token_ids;
    assert!(!got.tokens.is_empty());
    assert_eq!(
        got.tokens,
        expected[..got.tokens.len()],
        "{generator:?} greedy tokens differ"
    );
    assert!(
        got.tokens.len() == n || got.tokens.last().is_some_and(|t| eos.contains(t)),
        "{generator:?} stopped early without end-of-sequence"
    );
    let mut all = prompt;
    all.extend(&expected);
    let mut oracle = RuntimeLogits::spawn(&py, logits_runtime, dir).unwrap();
    let diff = max_abs_diff(&oracle.logits(&all).unwrap(), &model_logits(model, &all));
    println!(
        "{logits_runtime:?} on {}: {n} greedy tokens equal, logits max |diff| {diff:.2e}",
        dir.display()
    );
    assert!(diff < tol, "{logits_runtime:?}: logits differ by {diff}");
}

#[test]
#[ignore = "needs the export venv (scripts/export-venv.sh); run by scripts/test.sh"]
fn fp32_onnx_matches_the_model_in_ort_and_genai() {
    let root = tempfile::tempdir().unwrap();
    for (name, dir) in [("base", base_dir()), ("smollm2", smollm2_dir())] {
        let model = Llama::from_hf_dir(&dir, &Device::Cpu).unwrap();
        let out = root.path().join(name);
        export(
            &OnnxExporter::new(opts(WeightBits::F32)),
            &model,
            &dir,
            &out,
        );
        check_against_model(&model, &out, Runtime::Genai, Runtime::OnnxRuntime, 32, 1e-3);
    }
}

#[test]
#[ignore = "needs the export venv (scripts/export-venv.sh); run by scripts/test.sh"]
fn fp32_mlx_matches_the_model() {
    let root = tempfile::tempdir().unwrap();
    let dir = base_dir();
    let model = Llama::from_hf_dir(&dir, &Device::Cpu).unwrap();
    let out = root.path().join("mlx");
    export(&MlxExporter::new(opts(WeightBits::F32)), &model, &dir, &out);
    check_against_model(&model, &out, Runtime::Mlx, Runtime::Mlx, 32, 1e-3);
}

#[test]
#[ignore = "needs the export venv (scripts/export-venv.sh); run by scripts/test.sh"]
fn a_pruned_model_with_uneven_widths_runs_in_both_runtimes() {
    let root = tempfile::tempdir().unwrap();
    let dir = base_dir();
    let model = uneven(&Llama::from_hf_dir(&dir, &Device::Cpu).unwrap());
    assert!(!model.config().is_uniform());
    let onnx = root.path().join("onnx");
    export(
        &OnnxExporter::new(opts(WeightBits::F32)),
        &model,
        &dir,
        &onnx,
    );
    check_against_model(&model, &onnx, Runtime::Genai, Runtime::Genai, 32, 1e-3);
    let mlx = root.path().join("mlx");
    export(&MlxExporter::new(opts(WeightBits::F32)), &model, &dir, &mlx);
    check_against_model(&model, &mlx, Runtime::Mlx, Runtime::Mlx, 32, 1e-3);
    // The 4-bit exports of the same model load and generate too.
    for (exporter, runtime) in [
        (
            Box::new(OnnxExporter::new(opts(WeightBits::Q4))) as Box<dyn Exporter>,
            Runtime::Genai,
        ),
        (
            Box::new(MlxExporter::new(mlx_f32(WeightBits::Q4))),
            Runtime::Mlx,
        ),
    ] {
        let out = root.path().join(format!("{runtime:?}-q4"));
        export(exporter.as_ref(), &model, &dir, &out);
        let g = generate(
            &python(),
            runtime,
            &out,
            &GenerateRequest {
                prompt: prompt(&dir),
                new_tokens: 16,
                ..GenerateRequest::default()
            },
        )
        .unwrap();
        assert_eq!(g.tokens.len(), 16);
    }
}

/// Held-out perplexity (llama-perplexity's protocol) of shuku's 4-bit exports and of the runtimes' own
/// converters' 4-bit output of the same model, each computed from its runtime's logits.
#[test]
#[ignore = "needs the export venv (scripts/export-venv.sh); run by scripts/test.sh"]
fn four_bit_exports_are_no_worse_than_the_runtimes_own_converters() {
    let py = python();
    let dir = base_dir();
    let model = Llama::from_hf_dir(&dir, &Device::Cpu).unwrap();
    let anchors = anchors(&dir, "shuku-base");
    let root = tempfile::tempdir().unwrap();
    let (onnx, mlx) = (root.path().join("onnx"), root.path().join("mlx"));
    let onnx_sym = root.path().join("onnx-symmetric");
    let symmetric = ExportOptions {
        symmetric: true,
        ..opts(WeightBits::Q4)
    };
    export(&OnnxExporter::new(symmetric), &model, &dir, &onnx_sym);
    export(
        &OnnxExporter::new(opts(WeightBits::Q4)),
        &model,
        &dir,
        &onnx,
    );
    // f32 scales like the anchor's (convert_anchors.sh): MLX's x86 CPU backend runs f16 very slowly.
    export(
        &MlxExporter::new(mlx_f32(WeightBits::Q4)),
        &model,
        &dir,
        &mlx,
    );

    let text =
        std::fs::read_to_string(workspace_dir().join("assets/corpus/shakespeare.txt")).unwrap();
    let held_out = &text[text.len() - text.len() / 20..];
    let tokens = Tokenizer::from_file(&dir)
        .unwrap()
        .encode(held_out, false)
        .unwrap();
    let protocol = PerplexityProtocol {
        n_chunks: Some(16),
        ..PerplexityProtocol::new(128)
    };
    // (perplexity, mean KL divergence from the original model)
    let ppl = |runtime: Runtime, folder: &Path| -> (f64, f64) {
        let mut source = RuntimeLogits::spawn(&py, runtime, folder).unwrap();
        let mut reference = &model;
        let kl = kl_divergence(&mut reference, &mut source, &tokens, &protocol, None).unwrap();
        (kl.ppl_test, kl.mean_kld)
    };
    let rows = [
        ("ONNX int4, shuku", ppl(Runtime::OnnxRuntime, &onnx)),
        (
            "ONNX int4, onnxruntime-genai builder",
            ppl(Runtime::OnnxRuntime, &anchors.join("ort-int4")),
        ),
        (
            "ONNX int4 symmetric (the builder's layout and size), shuku",
            ppl(Runtime::OnnxRuntime, &onnx_sym),
        ),
        ("MLX 4-bit, shuku", ppl(Runtime::Mlx, &mlx)),
        (
            "MLX 4-bit, mlx_lm.convert",
            ppl(Runtime::Mlx, &anchors.join("mlx-q4")),
        ),
    ];
    for (label, (p, k)) in &rows {
        println!("{label}: ppl {p:.4}, KLD {k:.5}");
    }
    // shuku's default layouts: lower perplexity and lower KL divergence than the converters' output.
    for (ours, theirs) in [(0, 1), (3, 4)] {
        let ((p_ours, k_ours), (p_theirs, k_theirs)) = (rows[ours].1, rows[theirs].1);
        assert!(
            p_ours <= p_theirs,
            "{}: ppl {p_ours} vs {p_theirs}",
            rows[ours].0
        );
        assert!(
            k_ours <= k_theirs,
            "{}: KLD {k_ours} vs {k_theirs}",
            rows[ours].0
        );
    }
    // At the builder's exact layout and size, the searched scales still lose less.
    assert!(
        rows[2].1 .1 <= rows[1].1 .1,
        "symmetric KLD {} vs builder {}",
        rows[2].1 .1,
        rows[1].1 .1
    );
}

/// Every family's tiny reference model (`scripts/hf-reference.sh`) exported in f32: ONNX Runtime's logits
/// (for the families the ONNX graph covers) and mlx-lm's (for all) equal shuku-model's over 24 positions,
/// past the sliding windows of mistral and gemma3.
#[test]
#[ignore = "needs the export venv (scripts/export-venv.sh) and the family models (scripts/hf-reference.sh)"]
fn every_family_exports_to_the_same_logits() {
    let py = python();
    let families = shuku_testkit::families_dir();
    let root = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for case in [
        "llama",
        "llama3",
        "llama3-legacy-config",
        "mistral",
        "mistral-nowindow",
        "qwen2",
        "qwen3",
        "phi3",
        "phi3-plain",
        "gemma3",
        "gemma3-headdim-scale",
    ] {
        let dir = families.join(case).join("hf");
        let model = Llama::from_hf_dir(&dir, &Device::Cpu).unwrap();
        let vocab = model.config().vocab_size as u32;
        let tokens: Vec<u32> = (0..24u32).map(|i| (i * 7919 + 13) % vocab).collect();
        let expected = model_logits(&model, &tokens);
        let onnx = OnnxExporter::new(opts(WeightBits::F32));
        let targets: [(&dyn Exporter, Runtime); 2] = [
            (&onnx, Runtime::OnnxRuntime),
            (&MlxExporter::new(opts(WeightBits::F32)), Runtime::Mlx),
        ];
        for (exporter, runtime) in targets {
            let out = root.path().join(format!("{case}-{runtime:?}"));
            match exporter.export(&model, &dir, &out) {
                Ok(_) => {}
                Err(shuku_export::ExportError::Unsupported { .. })
                    if runtime == Runtime::OnnxRuntime =>
                {
                    continue
                }
                Err(e) => panic!("{case}: {e}"),
            }
            let mut oracle = RuntimeLogits::spawn(&py, runtime, &out).unwrap();
            let mut got = oracle.logits(&tokens).unwrap();
            let mut expected = expected.clone();
            // mlx-lm runs mistral as llama, without the sliding window (the export says so): compare
            // the positions inside the window.
            if let (ModelType::Mistral, Some(window), Runtime::Mlx) = (
                model.config().model_type,
                model.config().sliding_window,
                runtime,
            ) {
                got.truncate(window * vocab as usize);
                expected.truncate(window * vocab as usize);
            }
            let diff = max_abs_diff(&got, &expected);
            println!("{case} in {runtime:?}: max |diff| {diff:.2e}");
            assert!(
                diff < 1e-3,
                "{case} in {runtime:?}: logits differ by {diff}"
            );
            checked.push(format!("{case}/{runtime:?}"));
        }
    }
    assert!(checked.len() >= 17, "{checked:?}");
}

/// The other precisions in their runtimes: f16 ONNX (the base model's weights are f16, so it is exact) and
/// 8-bit ONNX and MLX (close to the original: mean KL divergence under 1e-3).
#[test]
#[ignore = "needs the export venv (scripts/export-venv.sh); run by scripts/test.sh"]
fn f16_and_8_bit_exports_stay_close_to_the_model() {
    let py = python();
    let dir = base_dir();
    let model = Llama::from_hf_dir(&dir, &Device::Cpu).unwrap();
    let root = tempfile::tempdir().unwrap();
    let f16 = root.path().join("onnx-f16");
    export(
        &OnnxExporter::new(opts(WeightBits::F16)),
        &model,
        &dir,
        &f16,
    );
    let tokens = prompt(&dir);
    let mut oracle = RuntimeLogits::spawn(&py, Runtime::OnnxRuntime, &f16).unwrap();
    let diff = max_abs_diff(
        &oracle.logits(&tokens).unwrap(),
        &model_logits(&model, &tokens),
    );
    assert!(diff < 1e-3, "f16 ONNX: logits differ by {diff}");

    let text =
        std::fs::read_to_string(workspace_dir().join("assets/corpus/shakespeare.txt")).unwrap();
    let held_out = Tokenizer::from_file(&dir)
        .unwrap()
        .encode(&text[text.len() - 20_000..], false)
        .unwrap();
    let protocol = PerplexityProtocol {
        n_chunks: Some(4),
        ..PerplexityProtocol::new(128)
    };
    let (onnx, mlx) = (root.path().join("onnx-q8"), root.path().join("mlx-q8"));
    export(
        &OnnxExporter::new(opts(WeightBits::Q8)),
        &model,
        &dir,
        &onnx,
    );
    export(
        &MlxExporter::new(mlx_f32(WeightBits::Q8)),
        &model,
        &dir,
        &mlx,
    );
    for (runtime, folder) in [(Runtime::OnnxRuntime, &onnx), (Runtime::Mlx, &mlx)] {
        let mut source = RuntimeLogits::spawn(&py, runtime, folder).unwrap();
        let mut reference = &model;
        let kl = kl_divergence(&mut reference, &mut source, &held_out, &protocol, None).unwrap();
        println!(
            "8-bit in {runtime:?}: KLD {:.6}, ppl {:.3} vs {:.3}",
            kl.mean_kld, kl.ppl_test, kl.ppl_ref
        );
        assert!(
            kl.mean_kld < 1e-3,
            "8-bit in {runtime:?}: KLD {}",
            kl.mean_kld
        );
    }
}
