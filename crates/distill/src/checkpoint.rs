//! Exact-resume training checkpoints in a single safetensors file.
//!
//! candle can save tensors but has no notion of optimizer state. A checkpoint here holds the
//! weights (`param.<name>`), AdamW's moments (`adam_m.<name>`, `adam_v.<name>`) and, in the
//! safetensors metadata map, every scalar needed to continue the run bit for bit: the trainer
//! step, Adam's step, the sampler state ([`BatchState`]) and the training config as JSON.
//! LR and temperature schedules are pure functions of the step, so they need no extra state.
//!
//! Writes are atomic (temporary file in the same directory, `fsync`, rename) so a crash while
//! saving never leaves a half-written checkpoint in place. Loading validates everything (format
//! tag, names, shapes, dtypes) before touching the model, so a failed load changes nothing.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::borrow::Cow;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, View};
use safetensors::SafeTensors;

use crate::data::BatchState;
use crate::error::{DistillError, Result};
use crate::optim::AdamW;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "shuku-distill-checkpoint";
/// Value of the `format_version` metadata key.
pub const FORMAT_VERSION: &str = "1";

/// The scalar part of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingState {
    /// Completed optimizer steps of the trainer.
    pub step: u64,
    /// Sampler position.
    pub batch: BatchState,
    /// Training configuration as JSON (informational; compared by the trainer).
    pub config_json: String,
}

/// A tensor copied to host bytes (little-endian), as safetensors wants it.
///
/// The workspace's `safetensors` and the one candle links against are different major versions,
/// so candle's own `View`/`Load` bridges cannot be used; the conversion is done here for the
/// float dtypes a trainable parameter can have.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn st_dtype(d: DType) -> Option<Dtype> {
    Some(match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        _ => return None,
    })
}

fn to_host(t: &Tensor) -> Result<HostTensor> {
    let flat = t.to_device(&Device::Cpu)?.flatten_all()?;
    let data: Vec<u8> = match t.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F16 => flat
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::BF16 => flat
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        other => {
            return Err(DistillError::InvalidConfig(format!(
                "cannot checkpoint a {other:?} parameter"
            )))
        }
    };
    Ok(HostTensor {
        dtype: st_dtype(t.dtype()).unwrap_or(Dtype::F32),
        shape: t.dims().to_vec(),
        data,
    })
}

fn from_host(bytes: &[u8], dtype: DType, shape: &[usize], device: &Device) -> Result<Tensor> {
    fn le<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    let t = match dtype {
        DType::F32 => Tensor::from_vec(le(bytes, f32::from_le_bytes), shape, device)?,
        DType::F64 => Tensor::from_vec(le(bytes, f64::from_le_bytes), shape, device)?,
        DType::F16 => Tensor::from_vec(le(bytes, half::f16::from_le_bytes), shape, device)?,
        DType::BF16 => Tensor::from_vec(le(bytes, half::bf16::from_le_bytes), shape, device)?,
        other => {
            return Err(DistillError::InvalidConfig(format!(
                "cannot restore a {other:?} parameter"
            )))
        }
    };
    Ok(t)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DistillError + '_ {
    move |e| DistillError::io(path, e)
}

/// Save weights, moments and state to `path`, atomically.
pub fn save_checkpoint(path: &Path, optimizer: &AdamW, state: &TrainingState) -> Result<()> {
    let mut tensors: Vec<(String, HostTensor)> = Vec::with_capacity(optimizer.params().len() * 3);
    for p in optimizer.params() {
        tensors.push((format!("param.{}", p.name), to_host(p.var.as_tensor())?));
        tensors.push((format!("adam_m.{}", p.name), to_host(&p.m)?));
        tensors.push((format!("adam_v.{}", p.name), to_host(&p.v)?));
    }
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("step", state.step.to_string()),
        ("adam_step", optimizer.step_count().to_string()),
        ("batch_seed", state.batch.seed.to_string()),
        ("batch_epoch", state.batch.epoch.to_string()),
        ("batch_cursor", state.batch.cursor.to_string()),
        ("config", state.config_json.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| DistillError::io(path, std::io::Error::other(e)))?;

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut builder = tempfile::Builder::new();
    // Temporary files are private by default; a checkpoint is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(&dir).map_err(io(path))?;
    tmp.write_all(&bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path)
        .map_err(|e| DistillError::io(path, e.error))?;
    Ok(())
}

fn corrupt(path: &Path, reason: impl Into<String>) -> DistillError {
    DistillError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn mismatch(path: &Path, reason: impl Into<String>) -> DistillError {
    DistillError::CheckpointMismatch {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Load a checkpoint into `optimizer` (its parameters, i.e. the model, and its moments).
///
/// Fails with [`DistillError::CorruptCheckpoint`] for an unreadable/truncated/foreign file and
/// [`DistillError::CheckpointMismatch`] when names, shapes or dtypes differ from the model.
pub fn load_checkpoint(path: &Path, optimizer: &mut AdamW) -> Result<TrainingState> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(path, e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(path, e.to_string()))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| corrupt(path, "no metadata"))?;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(corrupt(path, "not a shuku-distill checkpoint"));
    }
    if meta.get("format_version").map(String::as_str) != Some(FORMAT_VERSION) {
        return Err(corrupt(path, "unsupported checkpoint format version"));
    }
    let int = |key: &str| -> Result<u64> {
        meta.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt(path, format!("missing or invalid metadata {key:?}")))
    };
    let state = TrainingState {
        step: int("step")?,
        batch: BatchState {
            seed: int("batch_seed")?,
            epoch: int("batch_epoch")?,
            cursor: int("batch_cursor")?,
        },
        config_json: meta.get("config").cloned().unwrap_or_default(),
    };
    let adam_step = int("adam_step")?;

    let expected = optimizer.params().len() * 3;
    if st.len() != expected {
        return Err(mismatch(
            path,
            format!("{} tensors, expected {expected}", st.len()),
        ));
    }
    let mut weights = Vec::with_capacity(optimizer.params().len());
    let mut moments = Vec::with_capacity(optimizer.params().len());
    for p in optimizer.params() {
        let dev = p.var.device();
        let load = |prefix: &str| -> Result<Tensor> {
            let key = format!("{prefix}.{}", p.name);
            let view = st
                .tensor(&key)
                .map_err(|_| mismatch(path, format!("missing tensor {key:?}")))?;
            if view.shape() != p.var.dims() {
                return Err(mismatch(
                    path,
                    format!(
                        "tensor {key:?} has shape {:?}, model has {:?}",
                        view.shape(),
                        p.var.dims()
                    ),
                ));
            }
            if Some(view.dtype()) != st_dtype(p.var.dtype()) {
                return Err(mismatch(
                    path,
                    format!(
                        "tensor {key:?} is {:?}, model has {:?}",
                        view.dtype(),
                        p.var.dtype()
                    ),
                ));
            }
            from_host(view.data(), p.var.dtype(), view.shape(), dev)
        };
        weights.push(load("param")?);
        moments.push((load("adam_m")?, load("adam_v")?));
    }
    for (p, w) in optimizer.params().iter().zip(&weights) {
        p.var.set(w)?;
    }
    optimizer.restore(adam_step, moments);
    Ok(state)
}
