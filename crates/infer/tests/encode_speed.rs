//! Encoding throughput on 5 MB of mixed text. Ignored by default (timings need a release build):
//! `cargo test -p shuku-infer --release --test encode_speed -- --ignored --nocapture`.

use std::path::PathBuf;
use std::time::Instant;

use shuku_gguf::GgufFile;
use shuku_infer::Tokenizer;

fn shared() -> PathBuf {
    shuku_testkit::shared_dir()
}

#[test]
#[ignore = "timing: run in release by hand (see the module doc)"]
fn encode_5mb() {
    let dir = shared().join("data/vocab");
    let seed =
        std::fs::read_to_string(dir.join("ggml-vocab-llama-bpe.gguf.inp")).expect("seed text");
    let mut text = String::with_capacity(5 << 20);
    while text.len() < 5 << 20 {
        text.push_str(&seed);
    }
    for name in [
        "llama-bpe",
        "gpt-2",
        "qwen2",
        "starcoder",
        "deepseek-llm",
        "llama-spm",
        "gemma-4",
    ] {
        let gguf = GgufFile::open(dir.join(format!("ggml-vocab-{name}.gguf"))).expect("vocab");
        let t0 = Instant::now();
        let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
        let load = t0.elapsed();
        let t0 = Instant::now();
        let ids = tok.encode(&text, false, false).expect("encode");
        let enc = t0.elapsed();
        println!(
            "{name:14} load {:7.1} ms  encode {:7.1} ms  ({} tokens, {:.1} MB/s)",
            load.as_secs_f64() * 1e3,
            enc.as_secs_f64() * 1e3,
            ids.len(),
            text.len() as f64 / enc.as_secs_f64() / 1e6
        );
    }
}
