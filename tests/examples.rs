//! The top-level examples as a user runs them: `compress_and_deploy` end to end on the embedded
//! base model (a short configuration), and the one-line errors every example gives for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shuku::pipeline::StageTable;

/// An example binary, beside this test (`target/<profile>/examples/NAME`). `cargo test --workspace`
/// builds the examples before running this test; when one is missing (`--test examples` alone),
/// they are built once. The build is skipped otherwise because a narrower cargo call resolves the
/// dependencies' features differently and would rebuild half the tree.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join("examples").join(name);
    static BUILT: std::sync::Once = std::sync::Once::new();
    if !path.is_file() {
        BUILT.call_once(|| {
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "--workspace", "--examples"]);
            if !cfg!(debug_assertions) {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("cargo runs");
            assert!(status.success(), "building the examples failed");
        });
    }
    assert!(
        path.is_file(),
        "{} is missing: run through `cargo test --workspace`, which builds the examples",
        path.display()
    );
    path
}

/// Runs an example from the repository root (its default paths are relative to it).
fn run(name: &str, args: &[&str]) -> Output {
    Command::new(example(name))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the example starts")
}

/// Asserts a failed run printed exactly one error line mentioning `needle` and no backtrace.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn compress_and_deploy_measures_every_stage_on_the_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let o = run(
        "compress_and_deploy",
        &[
            "--recover-steps",
            "2",
            "--recover-batch",
            "2",
            "--calib-chunks",
            "4",
            "--eval-chunks",
            "4",
            "--decode-tokens",
            "8",
            "-c",
            "64",
            "--preset",
            "Q4_K_M",
            "--out",
            out_s,
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let table = StageTable::read_json(out.join("stages.json")).unwrap();
    let stages: Vec<&str> = table.rows.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(
        stages,
        [
            "original",
            "pruned ffn=0.25",
            "recovered (2 steps)",
            "Q4_K_M",
            "pruned + Q4_K_M"
        ]
    );
    let original = &table.rows[0];
    assert!(original.quality.mean_kld.is_none());
    for row in &table.rows[1..] {
        let kld = row
            .quality
            .mean_kld
            .expect("every later stage is compared with the original");
        assert!(kld.is_finite() && kld >= 0.0, "{row:?}");
        assert!(
            row.quality.ppl.is_finite() && row.quality.ppl > 1.0,
            "{row:?}"
        );
        let speed = row.speed.expect("every stage is timed");
        assert!(speed.tokens_per_s > 0.0 && speed.latency_p95_ms >= speed.latency_p50_ms);
        if cfg!(target_os = "linux") {
            assert!(speed.peak_rss_bytes.unwrap() > 0);
        }
    }
    // Pruning removes parameters; quantization shrinks the file and costs less than pruning.
    assert!(table.rows[1].parameters < original.parameters);
    let by_stage = |s: &str| table.rows.iter().find(|r| r.stage == s).unwrap();
    // The base model ships as f16: Q4_K_M (5.5 bits per weight with its f16 embedding) is about a third.
    assert!(by_stage("Q4_K_M").file_bytes * 2 < original.file_bytes);
    assert!(by_stage("pruned + Q4_K_M").file_bytes < by_stage("Q4_K_M").file_bytes);
    assert!(by_stage("Q4_K_M").quality.mean_kld < by_stage("pruned + Q4_K_M").quality.mean_kld);
    // The deployed file generates, the table is printed, the plot is written.
    assert!(stdout.contains("generates:"), "{stdout}");
    assert!(stdout.contains("| pruned + Q4_K_M "), "{stdout}");
    let svg = std::fs::read_to_string(out.join("size_vs_kld.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("prune + recover + quantize"));
    assert!(out.join("compressed-Q4_K_M.gguf").is_file());
}

#[test]
fn bad_input_gets_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    for name in ["compress_and_deploy", "quantize_sweep", "prune_model"] {
        let o = run(name, &["--model", "no/such/model/here", "--out", out_s]);
        assert_one_line_error(&o, "no/such/model/here");
        assert!(!out.exists(), "{name} created {out_s} for a missing model");
    }
    let o = run("compress_and_deploy", &["--preset", "Q9_K", "--out", out_s]);
    assert_one_line_error(&o, "Q9_K");
    let o = run(
        "quantize_sweep",
        &["--presets", "Q4_K_M,Q9_K", "--out", out_s],
    );
    assert_one_line_error(&o, "Q9_K");
    let o = run(
        "compress_and_deploy",
        &["--prune", "ffn=1.0", "--out", out_s],
    );
    assert_one_line_error(&o, "ffn");
    let o = run("prune_model", &["--spec", "heads=1", "--out", out_s]);
    assert_one_line_error(&o, "heads");
    assert!(!out.exists());

    // An output folder under a file cannot be created.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("out");
    let o = run(
        "compress_and_deploy",
        &["--out", under_file.to_str().unwrap()],
    );
    assert_one_line_error(&o, "--out");

    // A user's non-empty folder is not reused without --overwrite, and is left as it was.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("mine.txt"), "keep").unwrap();
    for name in ["compress_and_deploy", "quantize_sweep", "prune_model"] {
        let o = run(name, &["--out", out_s]);
        assert_one_line_error(&o, "--overwrite");
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);

    let o = run("run_gguf", &["no-such-file.gguf"]);
    assert_one_line_error(&o, "no-such-file.gguf");
    let o = run("edge_use_cases", &["--model", "no-such-file.gguf"]);
    assert_one_line_error(&o, "no-such-file.gguf");
    let glass = shuku_testkit::shared("data/models/glassllm-en-q8_0.gguf");
    let o = run(
        "edge_use_cases",
        &["--model", glass.to_str().unwrap(), "--case", "poetry"],
    );
    assert_one_line_error(&o, "poetry");
    let o = run(
        "router_signals",
        &["--edge", "no-such-file.gguf", "--upstream", "x.gguf"],
    );
    assert_one_line_error(&o, "no-such-file.gguf");
    let o = run(
        "hybrid_workload",
        &[
            "--edge",
            glass.to_str().unwrap(),
            "--upstream",
            "no-such-file.gguf",
        ],
    );
    assert_one_line_error(&o, "no-such-file.gguf");
    // Port 9 (discard) on loopback: nothing listens there.
    let o = run("serve_load", &["--url", "http://127.0.0.1:9"]);
    assert_one_line_error(&o, "no server at http://127.0.0.1:9");
}

#[test]
#[ignore = "needs the export venv (scripts/export-venv.sh); run by scripts/test.sh"]
fn export_compare_tables_every_engine_on_the_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = run(
        "export_compare",
        &[
            "--chunks",
            "2",
            "-c",
            "128",
            "--decode-tokens",
            "8",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("export_compare.json")).unwrap())
            .unwrap();
    let rows = json["rows"].as_array().unwrap();
    let made_by: Vec<&str> = rows
        .iter()
        .map(|r| r["made_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        made_by,
        [
            "shuku export",
            "shuku export --symmetric",
            "onnxruntime-genai builder",
            "shuku export",
            "mlx_lm.convert",
            "shuku quantize"
        ]
    );
    for r in rows {
        let (ppl, kld, tok_s) = (
            r["ppl"].as_f64().unwrap(),
            r["mean_kld"].as_f64().unwrap(),
            r["decode_tok_s"].as_f64().unwrap(),
        );
        assert!(
            ppl > 1.0 && ppl.is_finite() && kld > 0.0 && tok_s > 0.0,
            "{r}"
        );
    }
    assert!(
        stdout.contains("| MLX 4-bit | mlx_lm.convert |"),
        "{stdout}"
    );
}
