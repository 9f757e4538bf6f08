//! llama.cpp's greedy run with every step's logits, read with shuku-infer's own reader of
//! `shuku-logits-dump` (crates/infer/tests/common/peer.rs, shared by path so there is one parser).

use std::process::Command;

pub use shuku_testkit::llamacpp as llama_bin;

#[path = "../../../infer/tests/common/peer.rs"]
mod dump;

pub use dump::logits_dump;

/// Runs `cmd`, panicking with its stderr if it fails; stdout and stderr (the reader's contract).
pub fn run(cmd: &mut Command) -> (Vec<u8>, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{stderr}");
    (out.stdout, stderr)
}
