//! Byte identity with llama-quantize on whole models: the base model (every width a multiple of
//! 256) with `--pure` for every type, and llama-quantize's presets on the base model and on
//! SmolLM2-135M (576-wide rows: every fallback rule), with and without an importance matrix that
//! llama-imatrix wrote. Ignored in a plain `cargo test` (it needs llama.cpp's tools and the
//! fetched models); `scripts/test.sh` runs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use shuku_gguf::GgufFile;
use shuku_model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};
use shuku_quantize::{preset, Quantizer};
use shuku_testkit::{asset, llamacpp, run, workspace_dir};

/// A folder for this test binary's files, kept for the whole run (models are converted once).
fn work_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn f32_gguf(hf: &Path, name: &str) -> PathBuf {
    let out = work_dir().join(format!("{name}-f32.gguf"));
    if !out.exists() {
        let options = ExportOptions {
            name: Some(name.into()),
            overwrite: false,
            tokenizer_pre: None,
        };
        convert_hf_dir(
            hf,
            &out,
            &PlainEncoder(OutType::F32),
            &options,
            &mut |_, _, _| {},
        )
        .unwrap();
    }
    out
}

fn base_f32() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| f32_gguf(&workspace_dir().join("assets/shuku-base"), "shuku-base"))
        .clone()
}

fn smollm2_f32() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| f32_gguf(&asset("hf/SmolLM2-135M-Instruct-f32"), "smollm2"))
        .clone()
}

/// llama-imatrix over a slice of the KJV, written once per model.
fn llama_imatrix(model: &Path, tag: &str) -> PathBuf {
    let out = work_dir().join(format!("{tag}-imatrix.gguf"));
    if !out.exists() {
        let text = shuku_testkit::shared("data/text/kjv.txt");
        let calib = work_dir().join("calib.txt");
        let bytes = std::fs::read(&text).unwrap();
        std::fs::write(&calib, &bytes[..120_000]).unwrap();
        run(Command::new(llamacpp("llama-imatrix"))
            .args(["-c", "128", "--chunks", "8", "-t", "2", "-o"])
            .arg(&out)
            .arg("-m")
            .arg(model)
            .arg("-f")
            .arg(&calib));
    }
    out
}

fn llama_quantize(input: &Path, out: &Path, ftype: &str, extra: &[&str]) {
    run(Command::new(llamacpp("llama-quantize"))
        .args(extra)
        .arg(input)
        .arg(out)
        .arg(ftype)
        .arg("2"));
}

/// Compares two GGUF files: the same bytes, or the first tensor (or header) that differs.
fn assert_same_file(ours: &Path, theirs: &Path) {
    let (a, b) = (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap());
    if a == b {
        return;
    }
    let (fa, fb) = (
        GgufFile::open(ours).unwrap(),
        GgufFile::open(theirs).unwrap(),
    );
    for (ta, tb) in fa.tensor_infos().iter().zip(fb.tensor_infos()) {
        assert_eq!(
            (&ta.name, ta.ttype),
            (&tb.name, tb.ttype),
            "tensor order or type differs"
        );
        let (va, vb) = (fa.tensor(&ta.name).unwrap(), fb.tensor(&tb.name).unwrap());
        assert!(
            va.bytes == vb.bytes,
            "tensor {} ({}) differs",
            ta.name,
            ta.ttype
        );
    }
    assert_eq!(
        fa.tensor_infos().len(),
        fb.tensor_infos().len(),
        "tensor count"
    );
    assert_eq!(fa.metadata(), fb.metadata(), "metadata differs");
    panic!(
        "{} and {} differ outside tensors and metadata",
        ours.display(),
        theirs.display()
    );
}

fn check(input: &Path, tag: &str, ftype: &str, pure: bool, imatrix: Option<&Path>) {
    let dir = work_dir();
    let theirs = dir.join(format!(
        "{tag}-{ftype}-{pure}-{}-llama.gguf",
        imatrix.is_some()
    ));
    let ours = dir.join(format!(
        "{tag}-{ftype}-{pure}-{}-shuku.gguf",
        imatrix.is_some()
    ));
    let mut extra = Vec::new();
    if pure {
        extra.push("--pure".to_string());
    }
    if let Some(m) = imatrix {
        extra.push("--imatrix".into());
        extra.push(m.display().to_string());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    llama_quantize(input, &theirs, ftype, &extra);
    let mut q = Quantizer::new(preset(ftype).unwrap()).pure(pure);
    if let Some(m) = imatrix {
        q = q.imatrix_file(m).unwrap();
    }
    q.run(input, &ours).unwrap();
    assert_same_file(&ours, &theirs);
    std::fs::remove_file(&theirs).ok();
    std::fs::remove_file(&ours).ok();
}

#[test]
#[ignore = "needs llama.cpp's tools: ../shared/scripts/build-llamacpp.sh"]
fn every_type_pure_on_the_base_model_is_llama_quantize_byte_for_byte() {
    let base = base_f32();
    // Q3_K_S, Q4_K_S and Q5_K_S with --pure are plain Q3_K, Q4_K and Q5_K.
    for ftype in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q4_K_S", "Q5_K_S", "Q6_K",
    ] {
        check(&base, "base", ftype, true, None);
    }
}

#[test]
#[ignore = "needs llama.cpp's tools: ../shared/scripts/build-llamacpp.sh"]
fn presets_on_the_base_model_are_llama_quantize_byte_for_byte() {
    let base = base_f32();
    for ftype in [
        "Q4_K_M", "Q3_K_M", "Q2_K", "Q6_K", "Q5_K_M", "Q3_K_L", "Q4_0",
    ] {
        check(&base, "base", ftype, false, None);
    }
}

#[test]
#[ignore = "needs llama.cpp's tools and the fetched SmolLM2: ../shared/scripts/"]
fn presets_on_smollm2_are_llama_quantize_byte_for_byte() {
    let smol = smollm2_f32();
    for ftype in ["Q4_K_M", "Q3_K_M", "Q2_K", "Q6_K"] {
        check(&smol, "smollm2", ftype, false, None);
    }
}

#[test]
#[ignore = "needs llama.cpp's tools and the fetched SmolLM2: ../shared/scripts/"]
fn presets_with_a_llama_imatrix_file_are_llama_quantize_byte_for_byte() {
    let base = base_f32();
    let m = llama_imatrix(&base, "base");
    for ftype in ["Q4_K_M", "Q3_K_M", "Q2_K", "Q4_0"] {
        check(&base, "base", ftype, false, Some(&m));
    }
    let smol = smollm2_f32();
    let m = llama_imatrix(&smol, "smollm2");
    for ftype in ["Q4_K_M", "Q2_K_S"] {
        check(&smol, "smollm2", ftype, false, Some(&m));
    }
}
