//! The safetensors files of an HF folder, memory-mapped, read one tensor at a time.
//!
//! `model.safetensors` or the shards named by `model.safetensors.index.json`. Headers are parsed and
//! validated up front (names unique across shards, dtypes known, byte ranges inside the file — the
//! `safetensors` crate checks the latter); tensor data is only touched when a tensor is read, so a
//! converter streaming a model to GGUF holds one tensor at a time.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

pub(crate) const SINGLE: &str = "model.safetensors";
pub(crate) const INDEX: &str = "model.safetensors.index.json";

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// HF name.
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Stored element type.
    pub dtype: Dtype,
    shard: usize,
}

/// The memory-mapped safetensors files of one model folder.
pub struct SafetensorsDir {
    shards: Vec<(PathBuf, Mmap)>,
    entries: Vec<TensorEntry>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for SafetensorsDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsDir")
            .field(
                "shards",
                &self.shards.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn malformed(file: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Safetensors {
        file: file.display().to_string(),
        message: message.into(),
    }
}

/// Shard file names listed by an index file's `weight_map`, each once, sorted.
pub(crate) fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
        file: index.display().to_string(),
        source,
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| malformed(index, "no `weight_map` object"))?;
    let files: BTreeSet<String> = map
        .values()
        .map(|f| {
            f.as_str()
                .map(str::to_string)
                .ok_or_else(|| malformed(index, "`weight_map` values must be file names"))
        })
        .collect::<Result<_>>()?;
    for f in &files {
        if f.contains('/') || f.contains('\\') || f == ".." {
            return Err(malformed(
                index,
                format!("shard name {f:?} must be a plain file name"),
            ));
        }
    }
    Ok(files.into_iter().collect())
}

impl SafetensorsDir {
    /// Opens `dir/model.safetensors`, or the shards of `dir/model.safetensors.index.json`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let single = dir.join(SINGLE);
        let index = dir.join(INDEX);
        let files: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shard_files(&index)?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else {
            return Err(ModelError::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither model.safetensors nor model.safetensors.index.json exists",
                ),
            ));
        };
        Self::open_files(&files)
    }

    /// Opens these safetensors files as one model.
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(files.len());
        let mut entries = Vec::new();
        let mut by_name = HashMap::new();
        for (shard, path) in files.iter().enumerate() {
            let file = fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
            // SAFETY: the map is read-only; a concurrent writer could only make reads return other bytes
            // (caught by validation or giving wrong values), never violate this process's memory safety.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| malformed(path, e.to_string()))?;
            let mut names: Vec<(String, Vec<usize>, Dtype)> = st
                .iter()
                .map(|(n, v)| (n.to_string(), v.shape().to_vec(), v.dtype()))
                .collect();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, shape, dtype) in names {
                if by_name.insert(name.clone(), entries.len()).is_some() {
                    return Err(malformed(
                        path,
                        format!("tensor {name} appears in more than one shard"),
                    ));
                }
                entries.push(TensorEntry {
                    name,
                    shape,
                    dtype,
                    shard,
                });
            }
            shards.push((path.clone(), mmap));
        }
        Ok(SafetensorsDir {
            shards,
            entries,
            by_name,
        })
    }

    /// Every tensor's header entry, sorted by name within each shard.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// The entry of `name`, if present.
    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The file that holds `name`.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.entry(name).map(|e| self.shards[e.shard].0.as_path())
    }

    /// The values of `name` as f32 (from f32, f16 or bf16), row-major.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let entry = self.entry(name).ok_or_else(|| ModelError::MissingTensor {
            file: self
                .shards
                .first()
                .map(|(p, _)| p.display().to_string())
                .unwrap_or_default(),
            tensor: name.to_string(),
        })?;
        let (path, mmap) = &self.shards[entry.shard];
        let st = SafeTensors::deserialize(mmap).map_err(|e| malformed(path, e.to_string()))?;
        let view = st
            .tensor(name)
            .map_err(|e| malformed(path, e.to_string()))?;
        let bytes = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDType {
                    file: path.display().to_string(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        })
    }

    /// A label naming the files, for messages.
    pub fn label(&self) -> String {
        match self.shards.as_slice() {
            [(p, _)] => p.display().to_string(),
            many => format!(
                "{} shards in {}",
                many.len(),
                many.first()
                    .and_then(|(p, _)| p.parent())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        }
    }
}
