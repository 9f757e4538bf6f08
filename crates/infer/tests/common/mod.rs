//! Locating the conformance assets and running llama.cpp's tools.
//!
//! * models: `$SHUKU_ASSETS/gguf` (default `~/.cache/shuku-assets`), from `../shared/scripts/fetch-models.sh`;
//! * llama.cpp: `$LLAMACPP_HOME/bin` (default `~/.cache/shuku-llamacpp`), from
//!   `../shared/scripts/build-llamacpp.sh`;
//! * shared data (glassllm models, kjv.txt): `$SHUKU_SHARED` (default `../shared` beside the repository).
//!
//! A missing asset fails loudly, naming the script that provides it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
}

fn env_dir(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map_or(default, PathBuf::from)
}

fn require(path: PathBuf, script: &str) -> PathBuf {
    assert!(
        path.exists(),
        "missing test asset {}: run {script} (or set the environment variable pointing to it)",
        path.display()
    );
    path
}

/// A model from `$SHUKU_ASSETS/gguf`.
pub fn asset_model(name: &str) -> PathBuf {
    let dir = env_dir("SHUKU_ASSETS", home().join(".cache/shuku-assets"));
    require(
        dir.join("gguf").join(name),
        "../shared/scripts/fetch-models.sh ($SHUKU_ASSETS)",
    )
}

/// A file under the shared data folder (`$SHUKU_SHARED`, default `../shared`).
pub fn shared(rel: &str) -> PathBuf {
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let dir = env_dir("SHUKU_SHARED", default);
    require(
        dir.join(rel),
        "the project's ../shared folder ($SHUKU_SHARED)",
    )
}

/// A llama.cpp tool from `$LLAMACPP_HOME/bin`.
pub fn llama_bin(name: &str) -> PathBuf {
    let dir = env_dir("LLAMACPP_HOME", home().join(".cache/shuku-llamacpp"));
    require(
        dir.join("bin").join(name),
        "../shared/scripts/build-llamacpp.sh ($LLAMACPP_HOME)",
    )
}

/// Runs a command, failing the test with its stderr on a non-zero exit; returns (stdout, stderr).
pub fn run(cmd: &mut Command) -> (Vec<u8>, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{stderr}");
    (out.stdout, stderr)
}

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
