//! What a quantization run did: per tensor and in total, printed as llama-quantize's summary
//! lines or an aligned table, and serialisable to JSON.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One tensor's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    /// GGUF name.
    pub name: String,
    /// ggml dimensions.
    pub ne: Vec<usize>,
    /// Type in the input.
    pub from: String,
    /// Type written.
    pub to: String,
    /// Bytes in the input.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Root-mean-square error of the written values against the input's, when measured.
    pub rmse: Option<f64>,
    /// Whether an importance matrix weighted the rounding.
    pub imatrix: bool,
}

impl TensorReport {
    /// Elements in the tensor.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().map(|&d| d as u64).product()
    }

    /// Bits per weight written.
    pub fn bpw(&self) -> f64 {
        self.bytes_out as f64 * 8.0 / self.n_elements().max(1) as f64
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The input file or folder.
    pub input: PathBuf,
    /// The file written.
    pub output: PathBuf,
    /// The preset's name.
    pub preset: String,
    /// Every tensor, in the order written.
    pub tensors: Vec<TensorReport>,
    /// Tensors whose row length forced a fallback type.
    pub n_fallback: usize,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl Report {
    /// Parameters in the model.
    pub fn n_elements(&self) -> u64 {
        self.tensors.iter().map(TensorReport::n_elements).sum()
    }

    /// Tensor bytes in the input.
    pub fn bytes_in(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_in).sum()
    }

    /// Tensor bytes written.
    pub fn bytes_out(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_out).sum()
    }

    /// Bits per weight of the input.
    pub fn bpw_in(&self) -> f64 {
        self.bytes_in() as f64 * 8.0 / self.n_elements().max(1) as f64
    }

    /// Bits per weight written.
    pub fn bpw_out(&self) -> f64 {
        self.bytes_out() as f64 * 8.0 / self.n_elements().max(1) as f64
    }

    /// llama-quantize's closing lines: sizes before and after, bits per weight, time.
    pub fn summary(&self) -> String {
        let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
        let mut s = format!(
            "model size = {:8.2} MiB ({:.2} BPW)\nquant size = {:8.2} MiB ({:.2} BPW)  {} -> {}  {:.2} s",
            mib(self.bytes_in()),
            self.bpw_in(),
            mib(self.bytes_out()),
            self.bpw_out(),
            self.preset,
            self.output.display(),
            self.seconds
        );
        if self.n_fallback > 0 {
            s += &format!(
                "\n{} of {} tensors needed a fallback type (row length not a multiple of the block size)",
                self.n_fallback,
                self.tensors.len()
            );
        }
        s
    }

    /// The per-tensor table: name, shape, types, bits per weight, RMSE.
    pub fn table(&self) -> String {
        let w = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(6);
        let mut s = format!(
            "{:<w$}  {:>16}  {:>5}  {:>6}  {:>6}  {:>10}  {}\n",
            "tensor", "shape", "from", "to", "bpw", "rmse", "imatrix"
        );
        for t in &self.tensors {
            let shape =
                t.ne.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("×");
            let rmse = t.rmse.map_or("-".to_string(), |r| format!("{r:.3e}"));
            s += &format!(
                "{:<w$}  {:>16}  {:>5}  {:>6}  {:>6.3}  {:>10}  {}\n",
                t.name,
                shape,
                t.from,
                t.to,
                t.bpw(),
                rmse,
                if t.imatrix { "yes" } else { "" }
            );
        }
        s
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}
