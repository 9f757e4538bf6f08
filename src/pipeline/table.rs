//! The stage table: one row per stage, printed as Markdown and saved as JSON.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::quality::Quality;
use super::speed::Speed;
use super::{write_atomically, PipelineError, Result};

/// One stage of a pipeline, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    /// What this stage is, e.g. `original`, `pruned ffn=0.25`, `Q4_K_M`.
    pub stage: String,
    /// Which curve of the size/quality plot the row belongs to (e.g. `quantize only`,
    /// `prune + recover + quantize`); `None` for rows that are not plotted.
    pub series: Option<String>,
    /// Parameters of the model.
    pub parameters: u64,
    /// Bytes of the model on disk.
    pub file_bytes: u64,
    /// Held-out quality.
    pub quality: Quality,
    /// Decode speed and memory, when measured.
    pub speed: Option<Speed>,
}

impl StageRow {
    /// Bits per weight of the file: its size over its parameters.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.file_bytes as f64 / self.parameters.max(1) as f64
    }
}

/// The measured stages of one run, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTable {
    /// The model the run started from.
    pub model: String,
    /// The rows, in the order the stages ran.
    pub rows: Vec<StageRow>,
}

impl StageTable {
    /// An empty table for `model`.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn push(&mut self, row: StageRow) {
        self.rows.push(row);
    }

    /// The table as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the table serializes")
    }

    /// Writes [`StageTable::to_json`] to `path` (temporary file, then rename).
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomically(path.as_ref(), (self.to_json() + "\n").as_bytes())
    }

    /// Reads a table written by [`StageTable::write_json`].
    pub fn read_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            PipelineError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }
}

const HEADERS: [&str; 10] = [
    "stage",
    "params",
    "MiB",
    "bpw",
    "PPL",
    "mean KLD",
    "same top-1",
    "decode tok/s",
    "P95 ms/tok",
    "peak RSS MiB",
];

impl fmt::Display for StageTable {
    /// A Markdown table, numbers right-aligned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| format!("{:.2}", b as f64 / (1024.0 * 1024.0));
        let cells: Vec<[String; 10]> = self
            .rows
            .iter()
            .map(|r| {
                let q = &r.quality;
                let s = r.speed.as_ref();
                [
                    r.stage.clone(),
                    format!("{:.2} M", r.parameters as f64 / 1e6),
                    mib(r.file_bytes),
                    format!("{:.2}", r.bits_per_weight()),
                    format!("{:.2} ± {:.2}", q.ppl, q.ppl_stderr),
                    q.mean_kld.map_or("—".into(), |k| format!("{k:.4}")),
                    q.same_top1
                        .map_or("—".into(), |t| format!("{:.1} %", 100.0 * t)),
                    s.map_or("—".into(), |s| format!("{:.1}", s.tokens_per_s)),
                    s.map_or("—".into(), |s| format!("{:.2}", s.latency_p95_ms)),
                    s.and_then(|s| s.peak_rss_bytes).map_or("—".into(), mib),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..HEADERS.len())
            .map(|c| {
                cells
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([HEADERS[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |f: &mut fmt::Formatter<'_>, row: &[String]| -> fmt::Result {
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c == 0 {
                    write!(f, "| {cell}{} ", " ".repeat(pad))?;
                } else {
                    write!(f, "| {}{cell} ", " ".repeat(pad))?;
                }
            }
            writeln!(f, "|")
        };
        line(f, &HEADERS.map(String::from))?;
        for (c, w) in widths.iter().enumerate() {
            let dashes = "-".repeat(*w);
            if c == 0 {
                write!(f, "|-{dashes}-")?;
            } else {
                write!(f, "|-{dashes}:")?;
            }
        }
        writeln!(f, "|")?;
        for row in &cells {
            line(f, row)?;
        }
        Ok(())
    }
}
