//! llama.cpp's greedy run with every step's logits, read with shuku-infer's own reader of
//! `shuku-logits-dump` (crates/infer/tests/common/peer.rs, shared by path so there is one parser).

pub use shuku_testkit::llamacpp as llama_bin;

#[path = "../../../infer/tests/common/peer.rs"]
mod dump;

pub use dump::logits_dump;

/// Runs a command: stdout bytes and stderr text (the reader's contract).
pub use shuku_testkit::run_output as run;
