//! `shuku run`, `chat`, `bench` and `perplexity` on a GGUF file, against the library they wrap.
//! They use the tiny shared glassllm model, so they are fast and need no network.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use shuku_eval::{perplexity, PerplexityProtocol};
use shuku_infer::{Engine, EngineOptions};
use shuku_testkit::shared;

fn shuku() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shuku"))
}

fn model() -> PathBuf {
    shared("data/models/glassllm-en-q8_0.gguf")
}

/// Runs `cmd`, returns (stdout, stderr), failing on a non-zero exit.
fn output(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().expect("start shuku");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn run_model(prompt: &str, extra: &[&str]) -> (String, String) {
    output(
        shuku()
            .arg("run")
            .arg(model())
            .args(["-p", prompt, "-t", "2", "-c", "128"])
            .args(extra),
    )
}

const PROMPT: &str = "The Professor said";

#[test]
fn run_greedy_prints_what_generate_greedy_gives() {
    let (stdout, stderr) = run_model(PROMPT, &["-n", "24", "--temp", "0"]);
    let engine = Engine::load(
        model(),
        EngineOptions {
            threads: 2,
            context: 128,
            ..Default::default()
        },
    )
    .unwrap();
    let tok = engine.tokenizer();
    let prompt = tok.encode(PROMPT, true, true).unwrap();
    let ids = engine.generate_greedy(&prompt, 24).unwrap();
    assert_eq!(stdout, format!("{}\n", tok.decode(&ids)));
    // One metrics line on stderr.
    let line = stderr.lines().last().unwrap();
    for field in [
        "ttft", "prefill", "decode", "p50", "p95", "peak RSS", "finish",
    ] {
        assert!(line.contains(field), "{field} missing from {line:?}");
    }
}

#[test]
fn run_with_a_seed_is_reproducible() {
    let args = ["-n", "32", "--temp", "1.0", "--seed", "7"];
    let (a, _) = run_model("Once upon a time", &args);
    let (b, _) = run_model("Once upon a time", &args);
    assert_eq!(a, b);
    assert!(a.trim().len() > 10);
}

#[test]
fn run_stops_before_a_stop_string() {
    let (full, _) = run_model(PROMPT, &["-n", "40", "--temp", "0"]);
    let full = full.trim_end_matches('\n').to_string();
    let start = full.char_indices().nth(6).unwrap().0;
    let end = full.char_indices().nth(10).unwrap().0;
    let stop = &full[start..end];
    let cut = full.find(stop).unwrap();
    let (stdout, stderr) = run_model(PROMPT, &["-n", "40", "--temp", "0", "--stop", stop]);
    assert_eq!(stdout, format!("{}\n", &full[..cut]));
    assert!(stderr.contains("finish stop"), "{stderr}");
}

#[test]
fn chat_answers_two_piped_turns_and_reuses_the_prefix() {
    let mut child = shuku()
        .arg("chat")
        .arg(model())
        .args(["--temp", "0", "-n", "12", "-t", "2", "-c", "128"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello there\nWho are you?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no chat template; using ChatML"),
        "{stderr}"
    );
    let turns: Vec<&str> = stderr.lines().filter(|l| l.contains("ttft")).collect();
    assert_eq!(turns.len(), 2, "{stderr}");
    assert!(turns[0].contains("(reused 0)"), "{}", turns[0]);
    assert!(!turns[1].contains("(reused 0)"), "{}", turns[1]);
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

#[test]
fn bench_prints_a_llama_bench_table() {
    let (stdout, _) = output(
        shuku()
            .arg("bench")
            .arg(model())
            .args(["-p", "32", "-n", "8", "-r", "2", "-t", "2"]),
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("| model"), "{stdout}");
    for col in ["size", "params", "backend", "threads", "test", "t/s"] {
        assert!(lines[0].contains(col), "{col} missing: {stdout}");
    }
    assert!(lines[2].contains("| CPU") && lines[2].contains("pp32") && lines[2].contains(" ± "));
    assert!(lines[3].contains("tg8"));
}

fn text_file(dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(shared("data/text/kjv.txt")).unwrap();
    let end = text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= 20_000)
        .unwrap();
    let path = dir.join("text.txt");
    std::fs::write(&path, &text[..end]).unwrap();
    path
}

fn final_ppl(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Final estimate: PPL = "))
        .unwrap_or_else(|| panic!("no final estimate in {stdout}"));
    line["Final estimate: PPL = ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn perplexity_of_a_gguf_equals_the_engine_and_kld_against_itself_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let text = text_file(dir.path());
    let base = dir.path().join("base.kld");
    let (stdout, _) = output(
        shuku()
            .arg("perplexity")
            .arg("--model")
            .arg(model())
            .arg("--file")
            .arg(&text)
            .args(["-c", "64", "--chunks", "4", "-t", "2"])
            .arg("--kl-divergence-base")
            .arg(&base)
            .arg("--save-logits"),
    );
    let mut engine = Engine::load(
        model(),
        EngineOptions {
            threads: 2,
            context: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let tok = engine.tokenizer();
    let tokens = tok
        .encode(&std::fs::read_to_string(&text).unwrap(), true, false)
        .unwrap();
    let protocol = PerplexityProtocol {
        n_ctx: 64,
        n_chunks: Some(4),
        bos: if tok.add_bos() { tok.bos() } else { None },
    };
    let ours = perplexity(&mut engine, &tokens, &protocol, None).unwrap();
    assert_eq!(final_ppl(&stdout), format!("{:.4}", ours.ppl));
    assert!(
        stdout.contains("saved reference logits of 124 positions"),
        "{stdout}"
    );

    let (kld, _) = output(
        shuku()
            .arg("perplexity")
            .arg("--model")
            .arg(model())
            .args(["-c", "64", "-t", "2"])
            .arg("--kl-divergence-base")
            .arg(&base)
            .arg("--kl-divergence"),
    );
    assert!(kld.contains("Mean    KLD: 0.000000"), "{kld}");
    assert!(kld.contains("99.0%   KLD: 0.000000"), "{kld}");
    assert!(kld.contains("Same top p: 100.000"), "{kld}");
    assert!(kld.contains("RMS Δp    : 0.0"), "{kld}");
}

#[test]
fn kld_refuses_a_file_that_is_not_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.kld");
    std::fs::write(&bad, b"not a reference file").unwrap();
    let out = shuku()
        .arg("perplexity")
        .arg("--model")
        .arg(model())
        .arg("--kl-divergence-base")
        .arg(&bad)
        .arg("--kl-divergence")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a shuku reference-logits file"),
        "{stderr}"
    );
}

#[test]
fn run_and_chat_follow_a_json_schema() {
    // glassllm's vocabulary has no `"`: an array of numbers is what it can write.
    let schema = r#"{"type":"array","items":{"type":"integer","minimum":0,"maximum":99},"minItems":1,"maxItems":3}"#;
    let (stdout, _) = run_model("Numbers: ", &["-n", "64", "--temp", "0", "-j", schema]);
    let doc: Vec<u32> = serde_json::from_str(stdout.trim()).expect("a JSON array");
    assert!(
        (1..=3).contains(&doc.len()) && doc.iter().all(|&n| n <= 99),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schema.json");
    std::fs::write(&file, schema).unwrap();
    let mut child = shuku()
        .arg("chat")
        .arg(model())
        .args(["-t", "2", "-c", "256", "--temp", "0", "--quiet", "-j"])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Numbers:\nMore numbers:\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Vec<Vec<u32>> = String::from_utf8_lossy(&out.stdout)
        .split("\n\n")
        .filter(|r| !r.trim().is_empty())
        .map(|r| serde_json::from_str(r.trim()).expect("each reply is a JSON array"))
        .collect();
    assert_eq!(replies.len(), 2);

    let out = shuku()
        .arg("run")
        .arg(model())
        .args(["-p", "x", "-j", r#"{"type":"nope"}"#])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown type `nope`"));
}
