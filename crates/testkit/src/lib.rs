//! Where shuku's tests find what they compare against, in one place.
//!
//! * `../shared` beside the workspace (override: `SHUKU_SHARED`): texts, the small real models,
//!   llama.cpp's tokenizer vectors and the Python tools.
//! * The assets of `../shared/scripts/fetch-models.sh` (override: `SHUKU_ASSETS`, default
//!   `~/.cache/shuku-assets`): real GGUF models and a Python venv with gguf-py and numpy.
//! * llama.cpp's tools from `../shared/scripts/build-llamacpp.sh` (override: `LLAMACPP_HOME`, default
//!   `~/.cache/shuku-llamacpp`).
//!
//! A missing asset panics with the command that provides it: a test never passes because what it
//! needs is absent.
//!
//! What a test reaches for: the shared texts, a downloaded model, and llama.cpp's own tools for
//! the reference output.
//!
//! ```no_run
//! use std::process::Command;
//!
//! let text = std::fs::read_to_string(shuku_testkit::shared("data/text/shakespeare.txt")).unwrap();
//! assert!(!text.is_empty());
//! let model = shuku_testkit::asset("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
//! let reference = std::env::temp_dir().join("reference-q8_0.gguf");
//! shuku_testkit::run(
//!     Command::new(shuku_testkit::llamacpp("llama-quantize"))
//!         .arg("--allow-requantize")
//!         .arg(&model)
//!         .arg(&reference)
//!         .arg("Q8_0"),
//! );
//! ```
//!
//! Test data that is the same on every machine, with no asset at all:
//!
//! ```
//! use shuku_testkit::TestRng;
//!
//! let mut rng = TestRng(7);
//! let weights: Vec<f32> = (0..256).map(|_| rng.normal()).collect();
//! let mut again = TestRng(7);
//! assert!(weights.iter().all(|&w| w == again.normal()));
//! let die = rng.int(1, 6);
//! assert!((1..=6).contains(&die));
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn canonical(dir: PathBuf, what: &str, fix: &str) -> PathBuf {
    std::fs::canonicalize(&dir)
        .unwrap_or_else(|e| panic!("{what} not found at {} ({e}): {fix}", dir.display()))
}

fn home_cache(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME is not set");
        PathBuf::from(home).join(".cache").join(default)
    })
}

/// `../shared` (or `$SHUKU_SHARED`), canonicalised so that Python's lexical path handling agrees.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("SHUKU_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("../shared"));
    canonical(
        dir,
        "the shared folder",
        "put shared/ beside the workspace or set SHUKU_SHARED",
    )
}

/// A path under `../shared` that must exist.
pub fn shared(rel: &str) -> PathBuf {
    let p = shared_dir().join(rel);
    assert!(
        p.exists(),
        "missing {}: the shared folder is incomplete",
        p.display()
    );
    p
}

/// The assets folder of `fetch-models.sh` (it may not exist yet).
pub fn assets_dir() -> PathBuf {
    home_cache("SHUKU_ASSETS", "shuku-assets")
}

/// The tiny random models of every family that `scripts/hf-reference.sh` makes; fails loudly when it
/// has not run.
pub fn families_dir() -> PathBuf {
    let dir = assets_dir().join("families");
    assert!(
        dir.join(".stamp").is_file(),
        "{} is missing: run scripts/hf-reference.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// A path under the assets folder that must exist.
pub fn asset(rel: &str) -> PathBuf {
    let p = assets_dir().join(rel);
    assert!(
        p.exists(),
        "missing test asset {}: run ../shared/scripts/fetch-models.sh (or set SHUKU_ASSETS)",
        p.display()
    );
    p
}

/// The assets venv's Python (has gguf-py, numpy, safetensors, tokenizers).
pub fn python() -> PathBuf {
    asset("venv/bin/python")
}

/// Runs `script` (Python source) with the venv's Python and `../shared/tools` importable; returns
/// standard output, panicking with standard error on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    run(Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", shared_dir().join("tools")))
}

/// One of llama.cpp's tools (`llama-simple`, `llama-perplexity`, `llama-quantize`, …).
pub fn llamacpp(tool: &str) -> PathBuf {
    let p = home_cache("LLAMACPP_HOME", "shuku-llamacpp")
        .join("bin")
        .join(tool);
    assert!(
        p.exists(),
        "missing {}: run ../shared/scripts/build-llamacpp.sh (or set LLAMACPP_HOME)",
        p.display()
    );
    p
}

/// Runs a command and returns its standard output; panics with both outputs when it fails.
pub fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_output(cmd).0).into_owned()
}

/// Runs a command and returns its standard output as bytes and its standard error as text (a peer's
/// logs, which some checks read); panics with both outputs when it fails.
pub fn run_output(cmd: &mut Command) -> (Vec<u8>, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    (out.stdout, stderr)
}

/// A small deterministic generator (SplitMix64) for test data: the same seed gives the same
/// values on every machine. Not for sampling or cryptography.
#[derive(Debug, Clone)]
pub struct TestRng(pub u64);

impl TestRng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut bits = shuku_math::SplitMix64::new(self.0);
        let next = bits.next_u64();
        self.0 = bits.state;
        next
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        self.unit() * 2.0 - 1.0
    }

    /// Roughly normal (sum of four uniforms), unit variance.
    pub fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 3f32.sqrt()
    }

    /// Uniform in `lo..=hi`.
    pub fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i32
    }
}
