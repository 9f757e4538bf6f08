//! Stage measurements and the stage table of a compress-then-deploy run.
//!
//! A pipeline (load → prune → recover → quantize → deploy) is judged stage by stage on the same
//! numbers: parameters, size on disk, bits per weight, held-out perplexity, KL divergence and
//! same-top-1 against the original model, decode speed, per-token latency and peak memory. This
//! module measures them ([`quality`], [`speed`]), collects them into a [`StageTable`] that prints
//! as a Markdown table and saves as JSON, and draws the size/quality picture ([`plot_svg`]).
//!
//! Speed and memory are measured by [`speed_isolated`] in a fresh child process that loads only
//! the model under test, so each row's peak RSS is that model's alone (what a deployment needs),
//! not the pipeline's. A program that uses it calls [`serve_isolated_measurement`] first thing in
//! `main`.

mod isolate;
mod plot;
mod quality;
mod speed;
mod table;

pub use isolate::{serve_isolated_measurement, speed_isolated};
pub use plot::{plot_svg, PlotSeries};
pub use quality::{quality, Quality};
pub use speed::{speed, Deployable, Speed, SpeedOptions};
pub use table::{StageRow, StageTable};

use std::path::{Path, PathBuf};

/// Errors of the pipeline's measurements, each naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading or writing a file or folder.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The full-precision model failed.
    #[error(transparent)]
    Model(#[from] shuku_model::ModelError),
    /// The GGUF engine failed.
    #[error(transparent)]
    Engine(#[from] shuku_infer::EngineError),
    /// The evaluation protocol refused the input (e.g. a text shorter than one window).
    #[error(transparent)]
    Eval(#[from] shuku_eval::EvalError),
    /// The measuring child process failed or answered something unreadable.
    #[error("measuring {target} in a child process: {reason}")]
    Child {
        /// The model being measured.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// Drawing the plot.
    #[error("drawing {path}: {reason}")]
    Plot {
        /// The image being written.
        path: PathBuf,
        /// The drawing library's error.
        reason: String,
    },
}

impl PipelineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        PipelineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result of this module's functions.
pub type Result<T> = std::result::Result<T, PipelineError>;

/// Bytes on disk of a model: a GGUF file's size, or the sum of an HF folder's `*.safetensors`.
pub fn model_bytes(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| PipelineError::io(path, e))?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(|e| PipelineError::io(path, e))? {
        let entry = entry.map_err(|e| PipelineError::io(path, e))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            total += entry
                .metadata()
                .map_err(|e| PipelineError::io(&p, e))?
                .len();
        }
    }
    Ok(total)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a reader
/// never sees half a file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| PipelineError::io(dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| PipelineError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| PipelineError::io(path, e.error))?;
    Ok(())
}
