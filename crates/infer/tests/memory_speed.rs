//! Peak memory and decode speed of greedy generation on SmolLM2-135M Q4_1, next to `llama-simple`
//! at the same context (prompt + 64 tokens) and the same thread count as its default.
//!
//! Peak RSS is this process's `VmHWM` after load and decoding (the test binary holds only this test,
//! so nothing else inflates it) against `/usr/bin/time -v`'s "Maximum resident set size" of
//! llama-simple. The ratio must stay ≤ 1.2; speeds are reported, not asserted (the machine is shared).

mod common;

use std::process::Command;
use std::time::Instant;

use shuku_infer::{Engine, EngineOptions};

const PROMPT: &str = "The capital of France is";
const N: usize = 64;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM line")
}

#[test]
#[ignore = "conformance: needs llama.cpp (build-llamacpp.sh), fetch-models.sh assets and /usr/bin/time"]
fn smollm2_peak_rss_within_1_2x_of_llama_cpp() {
    let model = common::asset_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let (_, stderr) = common::run(
        Command::new("/usr/bin/time")
            .arg("-v")
            .arg(common::llama_bin("llama-simple"))
            .arg("-m")
            .arg(&model)
            .arg("-n")
            .arg(N.to_string())
            .arg(PROMPT),
    );
    let theirs_kib: u64 = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maximum RSS in:\n{stderr}"));
    let their_speed = stderr
        .lines()
        .find_map(|l| l.split("speed:").nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();

    let engine = Engine::load(
        &model,
        EngineOptions {
            threads,
            context: 0,
            ..Default::default()
        },
    )
    .expect("load");
    let ids = engine
        .tokenizer()
        .encode(PROMPT, true, true)
        .expect("tokenize");
    let mut session = engine.new_session_with_context(ids.len() + N - 1);
    let t0 = Instant::now();
    let mut logits = engine.forward(&mut session, &ids, false).expect("prefill");
    let prefill = t0.elapsed();
    let t1 = Instant::now();
    let mut decoded = 0;
    for _ in 1..N {
        let next = shuku_infer::engine::argmax(&logits);
        if engine.tokenizer().is_eog(next) {
            break;
        }
        logits = engine
            .forward(&mut session, &[next], false)
            .expect("decode");
        decoded += 1;
    }
    let decode = t1.elapsed();
    let ours_kib = vm_hwm_kib();
    let ratio = ours_kib as f64 / theirs_kib as f64;
    eprintln!(
        "peak RSS: shuku {:.1} MiB, llama-simple {:.1} MiB, ratio {ratio:.3}\n\
         shuku: prefill {} tokens in {:.1} ms, decode {decoded} tokens at {:.1} t/s ({threads} threads); \
         llama-simple: {their_speed}",
        ours_kib as f64 / 1024.0,
        theirs_kib as f64 / 1024.0,
        ids.len(),
        prefill.as_secs_f64() * 1e3,
        decoded as f64 / decode.as_secs_f64(),
    );
    assert!(ratio <= 1.2, "peak RSS ratio {ratio:.3} > 1.2");
}
