//! `shuku prune` on the embedded base model and on glassllm (FFN 341, hidden 128): the pruned folder
//! loads and has what the report says, and bad requests fail with one clear line and write nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use shuku_model::{Llama, LlamaConfig};
use shuku_testkit::run;

fn shuku() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shuku"))
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start shuku");
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn base_dir() -> PathBuf {
    shuku_testkit::workspace_dir().join("assets/shuku-base")
}

fn text() -> PathBuf {
    shuku_testkit::shared("data/text/shakespeare.txt")
}

fn prune(model: &Path, out: &Path, args: &[&str]) -> Command {
    let mut cmd = shuku();
    cmd.arg("prune")
        .arg("-m")
        .arg(model)
        .arg("-o")
        .arg(out)
        .arg("--calib")
        .arg(text())
        .args(["--nsamples", "8", "--seqlen", "64"])
        .args(args);
    cmd
}

#[test]
fn sparsegpt_2_4_writes_a_model_with_the_pattern() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sparse");
    let stdout = run(&mut prune(
        &base_dir(),
        &out,
        &["--method", "sparsegpt", "--pattern", "2:4"],
    ));
    assert!(stdout.contains("pruned linears: 50.00 % zeros"), "{stdout}");
    let model = Llama::from_hf_dir(&out, &candle_core::Device::Cpu).unwrap();
    for (name, t) in model.named_tensors() {
        if name.ends_with("proj.weight") {
            let w = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                w.chunks(4)
                    .all(|g| g.iter().filter(|v| **v == 0.0).count() == 2),
                "{name}"
            );
        }
    }
    // The same folder again without --overwrite is refused and left as it was.
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let err = run_err(&mut prune(&base_dir(), &out, &["--method", "magnitude"]));
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(
        before,
        std::fs::read(out.join("model.safetensors")).unwrap()
    );
}

#[test]
fn structured_pruning_writes_a_smaller_standard_model_and_its_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("small");
    let gguf = tmp.path().join("small.gguf");
    let stdout = run(prune(
        &base_dir(),
        &out,
        &["--structured", "ffn=0.5", "--round-to", "64"],
    )
    .arg("--gguf")
    .arg(&gguf));
    assert!(stdout.contains("| parameters"), "{stdout}");
    assert!(stdout.contains("| GGUF size"), "{stdout}");
    let config = LlamaConfig::from_file(out.join("config.json")).unwrap();
    assert!(config.layers.iter().all(|d| d.intermediate_size == 384));
    // Uniform widths: a config `transformers` reads, without shuku's per-layer key.
    let json = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(!json.contains("shuku_layers") && json.contains("\"intermediate_size\": 384"));
    assert!(gguf.is_file());
}

/// A family whose llama.cpp architecture has one width for every layer (qwen3 here) gets a typed error
/// for uneven widths instead of a GGUF llama.cpp would misread; the pruned folder is still written.
#[test]
fn uneven_widths_in_a_family_llama_cpp_cannot_hold_are_refused_for_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base_dir().join("config.json")).unwrap())
            .unwrap();
    json["model_type"] = "qwen3".into();
    json["architectures"] = serde_json::json!(["Qwen3ForCausalLM"]);
    json.as_object_mut().unwrap().remove("mlp_bias");
    let config = LlamaConfig::from_json(&json, "qwen3/config.json").unwrap();
    let model = Llama::random(config, 3, &candle_core::Device::Cpu).unwrap();
    let src = tmp.path().join("qwen3");
    model.save_hf_dir(&src, Some(&base_dir()), false).unwrap();

    let (out, gguf) = (tmp.path().join("pruned"), tmp.path().join("pruned.gguf"));
    let err = run_err(
        prune(&src, &out, &["--structured", "heads=0.25"])
            .arg("--gguf")
            .arg(&gguf),
    );
    assert!(
        err.contains("per-layer widths") && err.contains("qwen3"),
        "{err}"
    );
    assert!(!gguf.exists());
    let pruned = LlamaConfig::from_file(out.join("config.json")).unwrap();
    assert!(!pruned.is_uniform());
}

/// Wanda asked for more calibration samples than a short text holds.
fn short_calibration(out: &Path) -> Command {
    let short = out.with_file_name("short.txt");
    std::fs::write(
        &short,
        "ROMEO:\nBut soft, what light through yonder window breaks?\n",
    )
    .unwrap();
    let mut cmd = shuku();
    cmd.arg("prune")
        .arg("-m")
        .arg(base_dir())
        .arg("-o")
        .arg(out)
        .arg("--calib")
        .arg(short)
        .args(["--method", "wanda", "--nsamples", "4", "--seqlen", "64"]);
    cmd
}

#[test]
fn bad_requests_fail_with_one_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let glass = shuku_testkit::shared("data/models/glassllm-en");
    let cases: Vec<(Command, &str)> = vec![
        (
            prune(
                &base_dir(),
                &out,
                &["--method", "wanda", "--sparsity", "1.0"],
            ),
            "sparsity must be in [0, 1)",
        ),
        (
            prune(&base_dir(), &out, &["--structured", "heads=0.9"]),
            "would leave none",
        ),
        (
            prune(&base_dir(), &out, &["--structured", "ffn=1.2"]),
            "ffn ratio must be in [0, 1)",
        ),
        (
            prune(&base_dir(), &out, &["--structured", "layers=4"]),
            "cannot remove 4 of the model's 4 layers",
        ),
        (
            prune(&base_dir(), &out, &["--structured", "mlp=0.2"]),
            "unknown key `mlp`",
        ),
        (
            prune(
                &base_dir(),
                &out,
                &["--method", "wanda", "--pattern", "4:4"],
            ),
            "0 < N < M",
        ),
        // glassllm's FFN width 341 is not a multiple of 4: down_proj cannot take 2:4.
        (
            prune(&glass, &out, &["--method", "magnitude", "--pattern", "2:4"]),
            "needs an input width divisible by 4, it is 341",
        ),
        (short_calibration(&out), "fewer than the"),
    ];
    for (mut cmd, expected) in cases {
        let err = run_err(&mut cmd);
        assert!(
            err.contains(expected),
            "{cmd:?}: expected `{expected}` in\n{err}"
        );
        assert!(!out.exists(), "{cmd:?} wrote {}", out.display());
    }
}
