//! Locating the conformance assets and running llama.cpp's tools.
//!
//! * models: `$SHUKU_ASSETS/gguf` (default `~/.cache/shuku-assets`), from `../shared/scripts/fetch-models.sh`;
//! * llama.cpp: `$LLAMACPP_HOME/bin` (default `~/.cache/shuku-llamacpp`), from
//!   `../shared/scripts/build-llamacpp.sh`;
//! * shared data (glassllm models, kjv.txt): `$SHUKU_SHARED` (default `../shared` beside the repository).
//!
//! A missing asset fails loudly, naming the script that provides it.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod parity;
pub mod peer;
pub mod random_model;
pub mod tiny_vocab;

/// The shared glassllm model (Q8_0) on 2 threads with a 128-token context: small and fast enough
/// for the default test suite.
pub fn glassllm() -> shuku_infer::Engine {
    shuku_infer::Engine::load(
        shared("data/models/glassllm-en-q8_0.gguf"),
        shuku_infer::EngineOptions {
            threads: 2,
            context: 128,
            ..Default::default()
        },
    )
    .expect("load glassllm")
}

/// A model from `$SHUKU_ASSETS/gguf`.
pub fn asset_model(name: &str) -> PathBuf {
    shuku_testkit::asset(&format!("gguf/{name}"))
}

pub use shuku_testkit::{llamacpp as llama_bin, shared};

/// Runs a command, failing the test with its stderr on a non-zero exit; returns (stdout, stderr).
pub use shuku_testkit::run_output as run;

/// `llama-quantize --allow-requantize IN OUT TYPE` into `dir`.
pub fn requantize(input: &Path, dir: &Path, ttype: &str) -> PathBuf {
    let out = dir.join(format!("requant-{ttype}.gguf"));
    run(Command::new(llama_bin("llama-quantize"))
        .arg("--allow-requantize")
        .arg(input)
        .arg(&out)
        .arg(ttype));
    out
}
