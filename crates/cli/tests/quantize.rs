//! `shuku quantize` and `shuku imatrix` on the embedded base model: the command writes what the
//! library writes, prints llama-quantize's summary and the per-tensor table, and refuses bad
//! input with one clear line and no output file.

use std::path::{Path, PathBuf};
use std::process::Command;

use shuku_gguf::GgufFile;

fn shuku() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shuku"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start shuku");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start shuku");
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn base_dir() -> PathBuf {
    shuku_testkit::workspace_dir().join("assets/shuku-base")
}

fn base_f32(dir: &Path) -> PathBuf {
    let out = dir.join("base-f32.gguf");
    run_ok(
        shuku()
            .arg("convert")
            .arg(base_dir())
            .arg("-o")
            .arg(&out)
            .args(["--outtype", "f32"]),
    );
    out
}

#[test]
fn quantize_writes_the_library_s_file_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let input = base_f32(dir.path());
    let out = dir.path().join("q4km.gguf");
    let stdout = run_ok(
        shuku()
            .arg("quantize")
            .arg(&input)
            .arg(&out)
            .args(["Q4_K_M", "--report", "-t", "2"]),
    );
    assert!(stdout.contains("quant size ="), "{stdout}");
    assert!(stdout.contains("blk.0.attn_v.weight"), "{stdout}");
    let lib = dir.path().join("lib.gguf");
    shuku_quantize::Quantizer::new(shuku_quantize::preset("Q4_K_M").unwrap())
        .run(&input, &lib)
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&lib).unwrap());

    // The HF folder streams through the same rules.
    let from_hf = dir.path().join("from-hf.gguf");
    run_ok(
        shuku()
            .arg("quantize")
            .arg(base_dir())
            .arg(&from_hf)
            .arg("Q4_K_M"),
    );
    let (a, b) = (
        GgufFile::open(&out).unwrap(),
        GgufFile::open(&from_hf).unwrap(),
    );
    for t in a.tensor_infos() {
        let u = b.tensor_info(&t.name).expect("same tensors");
        assert_eq!(t.ttype, u.ttype, "{}", t.name);
    }
}

#[test]
fn imatrix_then_quantize_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = base_f32(dir.path());
    let calib = dir.path().join("calib.txt");
    let text = std::fs::read_to_string(
        shuku_testkit::workspace_dir().join("assets/corpus/shakespeare.txt"),
    )
    .unwrap();
    std::fs::write(&calib, &text[..40_000]).unwrap();
    let imatrix = dir.path().join("imatrix.gguf");
    let stdout = run_ok(
        shuku()
            .arg("imatrix")
            .arg("-m")
            .arg(&input)
            .arg("-f")
            .arg(&calib)
            .args(["-c", "128", "--chunks", "4", "-o"])
            .arg(&imatrix),
    );
    assert!(
        stdout.contains("28 entries from 4 chunks of 128 tokens"),
        "{stdout}"
    );
    let out = dir.path().join("q.gguf");
    run_ok(
        shuku()
            .arg("quantize")
            .arg(&input)
            .arg(&out)
            .arg("Q3_K_M")
            .arg("--imatrix")
            .arg(&imatrix),
    );
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_u32("quantize.imatrix.entries_count").unwrap(), 28);
    assert_eq!(f.get_u32("quantize.imatrix.chunks_count").unwrap(), 4);
}

#[test]
fn bad_input_is_one_clear_line_and_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = base_f32(dir.path());
    let out = dir.path().join("out.gguf");
    let err = run_err(shuku().arg("quantize").arg(&input).arg(&out).arg("Q4_K_X"));
    assert!(err.contains("unknown preset `Q4_K_X`"), "{err}");
    let err = run_err(
        shuku()
            .arg("quantize")
            .arg(&input)
            .arg(&out)
            .args(["Q4_K_M", "--method", "gptq"]),
    );
    assert!(err.contains("--calib"), "{err}");
    let err = run_err(
        shuku()
            .arg("quantize")
            .arg(dir.path().join("missing.gguf"))
            .arg(&out)
            .arg("Q8_0"),
    );
    assert!(err.contains("missing.gguf"), "{err}");
    assert!(!out.exists());
}
