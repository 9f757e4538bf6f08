//! HF folders: load (`config.json` + single or sharded safetensors, memory-mapped), save (atomically), and
//! resolve from the hub cache (online or with `HF_HUB_OFFLINE`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::model::Llama;
use crate::safetensors_dir::{shard_files, SafetensorsDir, INDEX, SINGLE};
use crate::staged_dir::StagedDir;

/// Tokenizer files copied next to a saved model, when the source has them.
/// Files that hold a vocabulary: HF's fast tokenizer, SentencePiece's model, or the tokenizer keys of a
/// GGUF file the model was imported from ([`crate::VOCAB_GGUF`]).
const VOCABULARY_FILES: [&str; 3] = ["tokenizer.json", "tokenizer.model", crate::VOCAB_GGUF];

/// Every tokenizer file a model folder may carry.
const TOKENIZER_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer.model",
    crate::VOCAB_GGUF,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
];

fn not_found(path: &Path, what: &str) -> ModelError {
    ModelError::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, what.to_string()),
    )
}

/// Loads every tensor of one safetensors file as f32 (from f32, f16 or bf16) on `device`.
pub fn load_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    tensors_of(&SafetensorsDir::open_files(&[path.to_path_buf()])?, device)
}

/// Every tensor of `src` as an f32 tensor on `device`.
fn tensors_of(src: &SafetensorsDir, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(src.entries().len());
    for entry in src.entries() {
        let values = src.read_f32(&entry.name)?;
        out.insert(
            entry.name.clone(),
            Tensor::from_vec(values, entry.shape.as_slice(), device)?,
        );
    }
    Ok(out)
}

/// All tensors of an HF folder, single-file or sharded; returns them with a label naming the source.
fn load_dir_tensors(dir: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, String)> {
    let src = SafetensorsDir::open(dir)?;
    Ok((tensors_of(&src, device)?, src.label()))
}

/// Whether `HF_HUB_OFFLINE` asks for cache-only operation (as the Python hub does).
fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// The local snapshot folder of `repo_id` at `revision` (default `main`) holding `config.json`, the weights
/// and, when the repo has it, `tokenizer.json`. Downloads what is missing unless `HF_HUB_OFFLINE` is set, in
/// which case only the cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`) is consulted.
pub fn resolve_hub_dir(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    let revision = revision.unwrap_or("main");
    if hub_offline() {
        offline_snapshot(repo_id, revision)
    } else {
        online_snapshot(repo_id, revision)
    }
}

/// hf-hub's cache layout: `<cache>/models--org--name/{refs/<rev>, snapshots/<commit>/<file>}`.
fn offline_snapshot(repo_id: &str, revision: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    let repo_dir = cache
        .path()
        .join(hf_hub::Repo::model(repo_id.to_string()).folder_name());
    let commit = fs::read_to_string(repo_dir.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string()); // a commit hash names its snapshot directly
    let snapshot = repo_dir.join("snapshots").join(commit);
    let missing = |file: &str| ModelError::HubOffline {
        repo: repo_id.to_string(),
        revision: revision.to_string(),
        file: file.to_string(),
        cache: cache.path().clone(),
    };
    if !snapshot.join("config.json").is_file() {
        return Err(missing("config.json"));
    }
    let index = snapshot.join(INDEX);
    if index.is_file() {
        for shard in shard_files(&index)? {
            if !snapshot.join(&shard).is_file() {
                return Err(missing(&shard));
            }
        }
    } else if !snapshot.join(SINGLE).is_file() {
        return Err(missing(SINGLE));
    }
    Ok(snapshot)
}

fn online_snapshot(repo_id: &str, revision: &str) -> Result<PathBuf> {
    let hub_err = |file: &str, e: &dyn std::fmt::Display| ModelError::Hub {
        repo: repo_id.to_string(),
        revision: revision.to_string(),
        file: file.to_string(),
        message: e.to_string(),
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .build()
        .map_err(|e| hub_err("<api>", &e))?;
    let repo = api.repo(hf_hub::Repo::with_revision(
        repo_id.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    ));
    let config = repo
        .get("config.json")
        .map_err(|e| hub_err("config.json", &e))?;
    if let Err(single_err) = repo.get(SINGLE) {
        let index = repo.get(INDEX).map_err(|_| hub_err(SINGLE, &single_err))?;
        for shard in shard_files(&index)? {
            repo.get(&shard).map_err(|e| hub_err(&shard, &e))?;
        }
    }
    // The tokenizer is optional for loading the model; fetch it so callers find it next to the config.
    let _ = repo.get("tokenizer.json");
    let _ = repo.get("tokenizer_config.json");
    config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| not_found(&config, "snapshot directory"))
}

/// Copies the tokenizer files of `src` (a folder, or a `tokenizer.json` / `tokenizer.model` /
/// `tokenizer.gguf` file whose siblings come along) into `dst`; at least one tokenizer must be there.
pub fn copy_tokenizer(src: &Path, dst: &Path) -> Result<()> {
    let dir = if src.is_dir() {
        src.to_path_buf()
    } else {
        src.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let present: Vec<PathBuf> = TOKENIZER_FILES
        .iter()
        .map(|name| dir.join(name))
        .filter(|p| p.is_file())
        .collect();
    let has_vocabulary = present.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| VOCABULARY_FILES.iter().any(|v| n == *v))
    });
    if !has_vocabulary {
        return Err(not_found(
            &dir,
            "no tokenizer.json, tokenizer.model or tokenizer.gguf in this folder",
        ));
    }
    for p in present {
        let name = p.file_name().unwrap_or_default();
        fs::copy(&p, dst.join(name)).map_err(|e| ModelError::io(&p, e))?;
    }
    Ok(())
}

impl Llama {
    /// Loads an HF folder: `config.json` plus `model.safetensors` or a sharded
    /// `model.safetensors.index.json`; f32/f16/bf16 weights become f32.
    pub fn from_hf_dir(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = LlamaConfig::from_file(dir.join("config.json"))?;
        let (tensors, label) = load_dir_tensors(dir, device)?;
        Self::from_tensor_map(config, tensors, &label, device)
    }

    /// Loads `repo_id` from the HF hub through hf-hub's cache; see [`resolve_hub_dir`] for offline use.
    pub fn from_hub(repo_id: &str, revision: Option<&str>, device: &Device) -> Result<Self> {
        Self::from_hf_dir(resolve_hub_dir(repo_id, revision)?, device)
    }

    /// Writes an HF folder: `config.json` with the current widths, f32 `model.safetensors` in HF names, and
    /// the tokenizer files from `tokenizer_src` (a folder or a `tokenizer.json`). Everything is written to a
    /// temporary folder next to `dir` and renamed into place, so a crash never leaves half a model. An existing
    /// non-empty `dir` is replaced only when `overwrite` is true.
    pub fn save_hf_dir(
        &self,
        dir: impl AsRef<Path>,
        tokenizer_src: Option<&Path>,
        overwrite: bool,
    ) -> Result<()> {
        let staged = StagedDir::create(dir, overwrite)?;
        let config_path = staged.path().join("config.json");
        let json = serde_json::to_string_pretty(&self.config().to_hf_json()).map_err(|source| {
            ModelError::Json {
                file: config_path.display().to_string(),
                source,
            }
        })?;
        fs::write(&config_path, json + "\n").map_err(|e| ModelError::io(&config_path, e))?;
        self.write_safetensors(&staged.path().join(SINGLE))?;
        if let Some(src) = tokenizer_src {
            copy_tokenizer(src, staged.path())?;
        }

        staged.commit()?;
        Ok(())
    }

    /// f32 safetensors of every weight under its HF name (metadata `format: pt`, which `transformers` expects).
    pub fn write_safetensors(&self, path: &Path) -> Result<()> {
        let tensors = self.file_tensors()?;
        let mut buffers = Vec::with_capacity(tensors.len());
        for (name, t) in &tensors {
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            buffers.push((name.clone(), t.dims().to_vec(), bytes));
        }
        let views = buffers
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| ModelError::Safetensors {
                        file: path.display().to_string(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| {
            ModelError::Safetensors {
                file: path.display().to_string(),
                message: e.to_string(),
            }
        })
    }
}
