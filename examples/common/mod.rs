//! What the examples share: finding the model, the progress bar, the output folder rule, the
//! one-line error exit. Each example includes it with `mod common;` and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// The model and the text every example starts from.
#[derive(clap::Args, Debug)]
pub struct ModelText {
    /// HF model folder (or hub id).
    #[arg(long, default_value = "assets/shuku-base")]
    pub model: String,
    /// Text: calibration (and recovery) from its head, evaluation from its last 5 %.
    #[arg(long, default_value = "assets/corpus/shakespeare.txt")]
    pub text: PathBuf,
}

/// The process's exit for `result`: success, or the error chain on one line of stderr (no
/// backtrace, whatever `RUST_BACKTRACE` says) and failure.
pub fn exit_with(result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs an async example body on a two-worker runtime, then exits as [`exit_with`] does.
pub fn exit_with_async(
    body: impl std::future::Future<Output = Result<()>>,
) -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    exit_with(match runtime {
        Ok(rt) => rt.block_on(body),
        Err(e) => Err(e.into()),
    })
}

/// llama-quantize's presets by name, each checked, in the given order.
pub fn presets(names: &[String]) -> Result<Vec<(String, shuku::gguf::LlamaFileType)>> {
    names
        .iter()
        .map(|name| Ok((name.clone(), shuku::quantize::preset(name)?)))
        .collect()
}

/// The model's folder: a local path, or a hub id (`org/name`) resolved to the local cache, the only
/// use of the network.
pub fn model_dir(model: &str) -> Result<PathBuf> {
    let path = PathBuf::from(model);
    if path.is_dir() {
        if !path.join("config.json").is_file() {
            bail!("--model {model}: the folder has no config.json (give an HF model folder)");
        }
        return Ok(path);
    }
    let hub_like = model.split('/').count() == 2 && !model.starts_with('.') && !path.exists();
    if !hub_like {
        bail!("--model {model}: no such model folder (give an HF folder with config.json, or a hub id like org/name)");
    }
    shuku::model::resolve_hub_dir(model, None).with_context(|| format!("--model {model}"))
}

/// Creates the output folder and checks that it can be written to. A non-empty folder is reused
/// only with `overwrite` or when it is the example's own default under `target/`.
pub fn prepare_out_dir(out: &Path, default: &str, overwrite: bool) -> Result<PathBuf> {
    let non_empty = out.read_dir().is_ok_and(|mut d| d.next().is_some());
    if non_empty && !overwrite && out != Path::new(default) {
        bail!(
            "--out {}: the folder exists and is not empty (add --overwrite to replace what is in it)",
            out.display()
        );
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create the folder", out.display()))?;
    tempfile::tempfile_in(out)
        .with_context(|| format!("--out {}: cannot write in the folder", out.display()))?;
    Ok(out.to_path_buf())
}

/// Sets the compute threads of every pool (`shuku::model::threads::init`); 0 leaves the default
/// (every core).
pub fn set_threads(threads: usize) {
    shuku::model::threads::init((threads > 0).then_some(threads));
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn progress(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}
