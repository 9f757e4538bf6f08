//! Running an export in its real runtime: logits for token windows from ONNX Runtime, onnxruntime-genai
//! or mlx-lm (a [`shuku_eval::LogitsSource`], so perplexity and KL divergence come from the same protocol
//! as every other number shuku prints), and greedy generation through the runtime's own loop.
//!
//! The runtimes are Python packages, so this drives a Python interpreter that has them (the venv
//! `scripts/export-venv.sh` makes) over a pipe, with two small scripts compiled into this crate
//! (`py/runtime_logits.py`, `py/generate.py`; `py/README.md` gives the protocol).

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::error::{ExportError, Result};

const LOGITS_SCRIPT: &str = include_str!("../py/runtime_logits.py");
const GENERATE_SCRIPT: &str = include_str!("../py/generate.py");

/// A runtime an export can be run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// A plain `onnxruntime.InferenceSession` on `model.onnx` (CPU).
    OnnxRuntime,
    /// onnxruntime-genai's `Model` and `Generator`, configured by `genai_config.json`.
    Genai,
    /// mlx-lm's `load` on the CPU backend.
    Mlx,
}

impl Runtime {
    /// The scripts' name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::OnnxRuntime => "onnx",
            Runtime::Genai => "genai",
            Runtime::Mlx => "mlx",
        }
    }
}

fn runtime_error(runtime: Runtime, message: impl Into<String>) -> ExportError {
    ExportError::Runtime {
        runtime: runtime.as_str(),
        message: message.into(),
    }
}

/// Writes one of the embedded scripts to a private temporary folder.
fn script(name: &str, text: &str) -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir().map_err(|e| ExportError::io(std::env::temp_dir(), e))?;
    let path = dir.path().join(name);
    std::fs::write(&path, text).map_err(|e| ExportError::io(&path, e))?;
    Ok((dir, path))
}

/// The Python that has the runtimes: `$SHUKU_EXPORT_PYTHON` when set, else the last line `venv_script`
/// prints (`scripts/export-venv.sh` makes the venv on first use and prints its Python).
pub fn runtime_python(venv_script: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SHUKU_EXPORT_PYTHON") {
        return Ok(p.into());
    }
    let out = Command::new("bash")
        .arg(venv_script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| ExportError::io(venv_script, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().last().map(str::trim) {
        Some(line) if out.status.success() && !line.is_empty() => Ok(PathBuf::from(line)),
        _ => Err(ExportError::Runtime {
            runtime: "python",
            message: format!("{} failed ({})", venv_script.display(), out.status),
        }),
    }
}

/// A model folder loaded in a runtime, answering windows of tokens with their logits (each window from an
/// empty KV cache).
pub struct RuntimeLogits {
    runtime: Runtime,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    vocab: usize,
    _script: tempfile::TempDir,
}

impl RuntimeLogits {
    /// Starts `python` with the runtime loading `dir`; fails if the folder does not load.
    pub fn spawn(python: &Path, runtime: Runtime, dir: &Path) -> Result<Self> {
        let (script_dir, path) = script("runtime_logits.py", LOGITS_SCRIPT)?;
        let mut child = Command::new(python)
            .arg(&path)
            .args(["--runtime", runtime.as_str()])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| ExportError::io(python, e))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut this = Self {
            runtime,
            child,
            stdin,
            stdout,
            vocab: 0,
            _script: script_dir,
        };
        // One token learns the vocabulary size and proves the model loaded.
        let (_, vocab, _) = this.window(&[0])?;
        this.vocab = vocab;
        Ok(this)
    }

    fn window(&mut self, tokens: &[u32]) -> Result<(usize, usize, Vec<f32>)> {
        let runtime = self.runtime;
        let line = format!("{{\"tokens\": {tokens:?}}}\n");
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| runtime_error(runtime, "closed"))?;
        stdin
            .write_all(line.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| runtime_error(runtime, format!("the runtime process exited ({e})")))?;
        let mut header = [0u8; 8];
        self.stdout.read_exact(&mut header).map_err(|e| {
            runtime_error(
                runtime,
                format!("no answer from the runtime process ({e}); its error is above"),
            )
        })?;
        let n = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let vocab = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        if n != tokens.len() {
            return Err(runtime_error(
                runtime,
                format!("{n} rows of logits for {} tokens", tokens.len()),
            ));
        }
        let mut bytes = vec![0u8; n * vocab * 4];
        self.stdout
            .read_exact(&mut bytes)
            .map_err(|e| runtime_error(runtime, format!("truncated logits ({e})")))?;
        let logits = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((n, vocab, logits))
    }

    /// Logits `[tokens.len(), vocab]` (row-major) of one window.
    pub fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.window(tokens).map(|(_, _, l)| l)
    }

    /// The model's vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }
}

impl Drop for RuntimeLogits {
    fn drop(&mut self) {
        // Closing stdin ends the script's loop.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl shuku_eval::LogitsSource for RuntimeLogits {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn logits(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, shuku_eval::SourceError> {
        RuntimeLogits::logits(self, tokens).map_err(|e| e.into())
    }
}

/// Greedy tokens generated by a runtime's own generation loop, with its timings.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Generation {
    /// The new tokens.
    pub tokens: Vec<u32>,
    /// Seconds until the first new token.
    pub prefill_s: f64,
    /// Seconds for the remaining tokens.
    pub decode_s: f64,
    /// Tokens per second after the first one (`None` for one token).
    pub decode_tok_s: Option<f64>,
}

/// What to generate.
#[derive(Debug, Clone, Default)]
pub struct GenerateRequest {
    /// Prompt token ids (no BOS is added).
    pub prompt: Vec<u32>,
    /// New tokens wanted.
    pub new_tokens: usize,
    /// Stop after an end-of-sequence token (which is included); otherwise end-of-sequence tokens are
    /// masked, so every run has `new_tokens` tokens (comparable timings).
    pub stop_at_eos: bool,
    /// Run once first and discard it, so the timings are steady.
    pub warm_up: bool,
}

/// Greedy generation by `runtime` (`Genai` or `Mlx`) on the folder `dir`, through the runtime's own
/// generation loop.
pub fn generate(
    python: &Path,
    runtime: Runtime,
    dir: &Path,
    request: &GenerateRequest,
) -> Result<Generation> {
    if runtime == Runtime::OnnxRuntime {
        return Err(runtime_error(
            runtime,
            "has no generation loop of its own (use genai)",
        ));
    }
    let (_script_dir, path) = script("generate.py", GENERATE_SCRIPT)?;
    let prompt: Vec<String> = request.prompt.iter().map(u32::to_string).collect();
    let mut cmd = Command::new(python);
    cmd.arg(&path)
        .args(["--runtime", runtime.as_str()])
        .arg(dir)
        .args(["--prompt-tokens", &prompt.join(",")])
        .args(["--max-new-tokens", &request.new_tokens.to_string()]);
    if request.warm_up {
        cmd.arg("--bench");
    }
    if request.stop_at_eos {
        cmd.arg("--stop-at-eos");
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| ExportError::io(python, e))?;
    if !out.status.success() {
        return Err(runtime_error(
            runtime,
            format!("generate.py failed ({})", out.status),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| runtime_error(runtime, format!("bad answer {line:?}: {e}")))
}
