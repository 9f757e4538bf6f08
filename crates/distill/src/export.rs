//! Saving a trained model as an HF folder with f16 weights.
//!
//! shuku-model's `save_hf_dir` writes f32, which is what conversion and quantization want as
//! input, but a model shipped inside the repository must be small: f16 halves the bytes and
//! every loader in the pipeline (shuku-model, `shuku convert`, `transformers`) widens it back
//! exactly. Note the shipped weights are then the f16-rounded ones: measure the model *after*
//! [`save_hf_dir_f16`] (reload it) when reporting numbers for what is shipped.

use std::collections::HashMap;
use std::path::Path;

use candle_core::DType;
use half::f16;
use shuku_model::Llama;

use crate::error::{DistillError, Result};

fn st_err(path: &Path, e: impl std::fmt::Display) -> DistillError {
    DistillError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes every weight of `model` as f16 safetensors at `path` (HF names, metadata
/// `format: pt`), through a temporary file renamed into place.
pub fn write_safetensors_f16(model: &Llama, path: &Path) -> Result<()> {
    let mut buffers = Vec::new();
    for (name, t) in model.named_tensors() {
        let values = t.to_dtype(DType::F16)?.flatten_all()?.to_vec1::<f16>()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name, t.dims().to_vec(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| st_err(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| DistillError::io(dir, e))?;
    safetensors::serialize_to_file(views, Some(metadata), tmp.path())
        .map_err(|e| st_err(path, e))?;
    // Temporary files are created private (0600); a saved model is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| DistillError::io(tmp.path(), e))?;
    }
    tmp.persist(path)
        .map_err(|e| DistillError::io(path, e.error))?;
    Ok(())
}

/// Saves `model` as an HF folder (`config.json` with `torch_dtype: float16`, f16
/// `model.safetensors`); refuses a non-empty existing `dir` unless `overwrite`.
pub fn save_hf_dir_f16(model: &Llama, dir: &Path, overwrite: bool) -> Result<()> {
    model.save_hf_dir(dir, None, overwrite)?;
    write_safetensors_f16(model, &dir.join("model.safetensors"))?;
    let cfg_path = dir.join("config.json");
    let mut cfg = model.config().to_hf_json();
    cfg["torch_dtype"] = "float16".into();
    let text = serde_json::to_string_pretty(&cfg)?;
    std::fs::write(&cfg_path, text + "\n").map_err(|e| DistillError::io(&cfg_path, e))
}
