//! What an export wrote: files, sizes and bits per weight, printed as a table.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{ExportError, Result};
use crate::options::Format;

/// The outcome of one export.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    /// `onnx` or `mlx`.
    pub format: String,
    /// The folder written.
    pub dir: PathBuf,
    /// Weight precision (4, 8, 16 or 32).
    pub bits: u32,
    /// Weights per quantization group (quantized exports).
    pub group_size: Option<usize>,
    /// Every file and its size in bytes.
    pub files: Vec<(String, u64)>,
    /// Parameters of the model as exported (after any padding).
    pub parameters: u64,
    /// Parameters the model has (before padding).
    pub model_parameters: u64,
    /// Bytes of weight data written (model files, not tokenizer or config).
    pub weight_bytes: u64,
    /// Wall time of the export in seconds.
    pub seconds: f64,
    /// Anything the user should know about the layout (e.g. padding of uneven widths).
    pub notes: Vec<String>,
}

impl ExportReport {
    /// Bits per model parameter of the weight files.
    pub fn bits_per_weight(&self) -> f64 {
        self.weight_bytes as f64 * 8.0 / self.model_parameters.max(1) as f64
    }

    /// Total bytes of every file.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|(_, b)| b).sum()
    }

    pub(crate) fn list_files(dir: &Path) -> Result<Vec<(String, u64)>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| ExportError::io(dir, e))? {
            let entry = entry.map_err(|e| ExportError::io(dir, e))?;
            let meta = entry
                .metadata()
                .map_err(|e| ExportError::io(entry.path(), e))?;
            files.push((entry.file_name().to_string_lossy().into_owned(), meta.len()));
        }
        files.sort();
        Ok(files)
    }

    pub(crate) fn new(format: Format, dir: &Path, bits: u32, group_size: Option<usize>) -> Self {
        Self {
            format: format.as_str().into(),
            dir: dir.to_path_buf(),
            bits,
            group_size,
            files: Vec::new(),
            parameters: 0,
            model_parameters: 0,
            weight_bytes: 0,
            seconds: 0.0,
            notes: Vec::new(),
        }
    }
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let precision = match self.group_size {
            Some(g) => format!("{}-bit, groups of {g}", self.bits),
            None => format!("{}-bit float", self.bits),
        };
        writeln!(
            f,
            "{} export to {} ({precision}, {:.1} s)",
            self.format,
            self.dir.display(),
            self.seconds
        )?;
        writeln!(f, "| file | MiB |")?;
        writeln!(f, "|---|---|")?;
        for (name, bytes) in &self.files {
            writeln!(f, "| {name} | {:.2} |", *bytes as f64 / (1 << 20) as f64)?;
        }
        writeln!(
            f,
            "| total | {:.2} |",
            self.total_bytes() as f64 / (1 << 20) as f64
        )?;
        writeln!(
            f,
            "{} parameters, {:.2} bits per weight",
            self.model_parameters,
            self.bits_per_weight()
        )?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}
