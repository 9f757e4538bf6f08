//! `shuku distill` on the embedded base model (4 layers): a short run writes a student folder that
//! loads and prints the report, and bad requests fail with one clear line and write nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use shuku_model::Llama;
use shuku_testkit::run;

fn shuku() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shuku"))
}

fn base_dir() -> PathBuf {
    shuku_testkit::workspace_dir().join("assets/shuku-base")
}

/// `len` bytes of Shakespeare from `start`, written to `dir/name`.
fn text(dir: &Path, name: &str, start: usize, len: usize) -> PathBuf {
    let all = std::fs::read_to_string(shuku_testkit::shared("data/text/shakespeare.txt")).unwrap();
    let mut end = start + len;
    while !all.is_char_boundary(end) {
        end += 1;
    }
    let path = dir.join(name);
    std::fs::write(&path, &all[start..end]).unwrap();
    path
}

/// A few steps of tiny batches: seconds, not minutes.
fn distill(teacher: &Path, data: &Path, out: &Path, args: &[&str]) -> Command {
    let mut cmd = shuku();
    cmd.arg("distill")
        .arg("--teacher")
        .arg(teacher)
        .arg("--data")
        .arg(data)
        .arg("-o")
        .arg(out)
        .args(["--steps", "3", "--seq-len", "16", "--batch", "2"])
        .args(["-c", "32", "--chunks", "2", "-t", "2"])
        .args(args);
    cmd
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start shuku");
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_short_run_writes_a_student_that_loads_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let data = text(tmp.path(), "train.txt", 0, 20_000);
    let held = text(tmp.path(), "held.txt", 100_000, 4_000);
    let out = tmp.path().join("student");

    let mut cmd = distill(&base_dir(), &data, &out, &["--layers", "2"]);
    let stdout = run(cmd.arg("--eval").arg(&held));
    for row in ["| teacher ", "| student (before) ", "| student (after) "] {
        assert!(stdout.contains(row), "no `{row}` row in\n{stdout}");
    }
    assert!(stdout.contains("| parameters |"), "{stdout}");
    assert!(stdout.contains("teacher layers 0, 3 of 4"), "{stdout}");
    assert!(stdout.contains("steps: 3; tokens seen: 96"), "{stdout}");
    assert!(stdout.contains("wall time: training"), "{stdout}");
    let student = Llama::from_hf_dir(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(student.config().num_hidden_layers(), 2);
    assert!(out.join("tokenizer.json").is_file());
    // The table's perplexities are finite numbers.
    let after = stdout
        .lines()
        .find(|l| l.starts_with("| student (after)"))
        .unwrap();
    let ppl: f64 = after
        .split('|')
        .nth(4)
        .unwrap()
        .split('±')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{after}");

    // The same folder again is refused and left as it was; with --overwrite it is replaced
    // (hard labels only, listed layers, perplexity on the held-out tail of --data).
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let err = run_err(&mut distill(&base_dir(), &data, &out, &["--layers", "1"]));
    assert!(err.contains("exists: pass --overwrite"), "{err}");
    assert_eq!(
        before,
        std::fs::read(out.join("model.safetensors")).unwrap()
    );
    let stdout = run(&mut distill(
        &base_dir(),
        &data,
        &out,
        &["--keep-layers", "0,1,3", "--alpha", "0", "--overwrite"],
    ));
    assert!(
        stdout.contains("perplexity on the held-out tail of --data"),
        "{stdout}"
    );
    assert!(!stdout.contains("divergence"), "{stdout}");
    let student = Llama::from_hf_dir(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(student.config().num_hidden_layers(), 3);
}

#[test]
fn bad_requests_fail_with_one_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = text(tmp.path(), "train.txt", 0, 20_000);
    let short = tmp.path().join("short.txt");
    std::fs::write(
        &short,
        "ROMEO:\nBut soft, what light through yonder window breaks?\n",
    )
    .unwrap();
    let short_arg = short.to_str().unwrap();
    let out = tmp.path().join("out");
    let base = base_dir();
    let missing = tmp.path().join("no-such-model");
    let copy = tmp.path().join("teacher");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(&base).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let cases: Vec<(Command, &str)> = vec![
        (
            distill(&missing, &data, &out, &["--layers", "2"]),
            "no-such-model does not exist",
        ),
        (
            distill(
                &base,
                &tmp.path().join("nope.txt"),
                &out,
                &["--layers", "2"],
            ),
            "nope.txt does not exist",
        ),
        (
            distill(&base, &short, &out, &["--layers", "2"]),
            "and --seq-len 16 needs at least 34",
        ),
        (
            distill(&base, &data, &out, &["--layers", "0"]),
            "--layers 0 leaves no layer",
        ),
        (
            distill(&base, &data, &out, &["--layers", "5"]),
            "--layers 5 is more than the teacher's 4 layers",
        ),
        (
            distill(&base, &data, &out, &["--keep-layers", "0,4"]),
            "the teacher has no layer 4",
        ),
        (
            distill(&base, &data, &out, &["--layers", "2", "--divergence", "kl"]),
            "--divergence must be forward, reverse or jsd",
        ),
        (
            distill(&base, &data, &data.join("out"), &["--layers", "2"]),
            "is not a folder; choose another -o",
        ),
        (
            distill(&base, &data, &out, &["--layers", "2", "--eval", short_arg]),
            "-c 32 needs at least 64 (two windows)",
        ),
        (
            // On a copy: were the guard missing, the repository's model would be replaced.
            distill(&copy, &data, &copy, &["--layers", "2", "--overwrite"]),
            "is the --teacher folder",
        ),
    ];
    for (mut cmd, expected) in cases {
        let err = run_err(&mut cmd);
        assert!(
            err.contains(expected),
            "{cmd:?}: expected `{expected}` in\n{err}"
        );
        assert_eq!(
            err.lines().count(),
            1,
            "{cmd:?}: more than one line:\n{err}"
        );
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{cmd:?} wrote {}", out.display());
    }
    // Nothing was staged beside the output either.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".shuku"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
