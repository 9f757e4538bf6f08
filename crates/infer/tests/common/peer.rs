//! Reading the output of `shuku-logits-dump` (tests/peer/logits_dump.cpp): llama.cpp's greedy run
//! with the full logits vector recorded at every step.

use std::path::Path;
use std::process::Command;

/// One greedy run of llama.cpp's library.
pub struct PeerRun {
    /// The prompt as llama.cpp tokenized it (add_special and parse_special on).
    pub prompt: Vec<u32>,
    /// One entry per decoding step: the logits it computed and the token it chose from them.
    pub steps: Vec<PeerStep>,
}

pub struct PeerStep {
    pub logits: Vec<f32>,
    pub token: u32,
}

/// Runs `shuku-logits-dump MODEL PROMPT N` (built by tests/peer/build.sh) and reads its file.
pub fn logits_dump(model: &Path, prompt: &str, n_predict: usize) -> PeerRun {
    let tool = Path::new(&super::llama_bin("llama-simple")).with_file_name("shuku-logits-dump");
    assert!(
        tool.exists(),
        "missing {}: run crates/infer/tests/peer/build.sh (after build-llamacpp.sh)",
        tool.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("logits.bin");
    super::run(
        Command::new(&tool)
            .arg(model)
            .arg(prompt)
            .arg(n_predict.to_string())
            .arg(&out),
    );
    let bytes = std::fs::read(&out).expect("read the logits dump");
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> PeerRun {
    let mut at = 0;
    let i32_at = |at: &mut usize| {
        let v = i32::from_le_bytes(bytes[*at..*at + 4].try_into().expect("4 bytes"));
        *at += 4;
        v
    };
    let n_vocab = i32_at(&mut at) as usize;
    let n_prompt = i32_at(&mut at) as usize;
    let prompt = (0..n_prompt).map(|_| i32_at(&mut at) as u32).collect();
    let n_steps = i32_at(&mut at) as usize;
    let mut steps = Vec::with_capacity(n_steps);
    for _ in 0..n_steps {
        let logits = bytes[at..at + 4 * n_vocab]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        at += 4 * n_vocab;
        let token = i32_at(&mut at) as u32;
        steps.push(PeerStep { logits, token });
    }
    assert_eq!(at, bytes.len(), "trailing bytes in the logits dump");
    PeerRun { prompt, steps }
}
