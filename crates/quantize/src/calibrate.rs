//! Importance matrices computed by shuku: per-column Σx² of every linear layer's input over
//! calibration text, from shuku-model's calibration observer, in llama-imatrix's protocol
//! (consecutive chunks of `n_ctx` tokens, each evaluated in a fresh context with its first token
//! replaced by BOS when the vocabulary adds one, every position counted; the output head is left
//! out, as llama-imatrix does without `--process-output`).

use shuku_model::{Calibration, CalibrationOptions, Llama};

use crate::error::{QuantizeError, Result};
use crate::imatrix::{Imatrix, ImatrixEntry};

/// How calibration text is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Tokens per chunk (llama-imatrix's `-c`, default 512).
    pub n_ctx: usize,
    /// At most this many chunks (`--chunks`); `None`: every full chunk of the text.
    pub max_chunks: Option<usize>,
    /// The token that replaces each chunk's first token (the vocabulary's BOS when it adds one).
    pub bos: Option<u32>,
}

/// The chunks llama-imatrix would evaluate for `tokens`.
pub fn chunks(tokens: &[u32], options: ChunkOptions) -> Vec<Vec<u32>> {
    let n_ctx = options.n_ctx.max(1);
    let n = (tokens.len() / n_ctx).min(options.max_chunks.unwrap_or(usize::MAX));
    (0..n)
        .map(|i| {
            let mut c = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
            if let Some(bos) = options.bos {
                c[0] = bos;
            }
            c
        })
        .collect()
}

/// Runs `model` over `chunks` and returns the importance matrix of its linear layers, keyed by
/// GGUF tensor name. `progress(done, total)` is called after each chunk.
pub fn collect_imatrix(
    model: &Llama,
    chunks: &[Vec<u32>],
    dataset: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Imatrix> {
    if chunks.is_empty() {
        return Err(QuantizeError::Calibration(
            "the calibration text is shorter than one chunk".into(),
        ));
    }
    let config = model.config();
    let arch = config.gguf_arch()?;
    let mut out = Imatrix {
        datasets: vec![dataset.to_string()],
        chunk_count: chunks.len() as u32,
        chunk_size: chunks[0].len() as u32,
        ..Imatrix::default()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let cal = Calibration::collect(
            model,
            std::slice::from_ref(chunk),
            CalibrationOptions::default(),
        )?;
        // Linears that share an input and a fused GGUF matrix (Phi-3's q/k/v) count once.
        let mut seen = std::collections::HashSet::new();
        for hf_name in cal.weights() {
            if hf_name == "lm_head.weight" {
                continue;
            }
            let file_name = config.file_name_of(hf_name);
            if !seen.insert(file_name.clone()) {
                continue;
            }
            let Some(stats) = cal.get(hf_name) else {
                continue;
            };
            let gguf = shuku_gguf::names::hf_to_gguf_arch(arch, &file_name).ok_or_else(|| {
                QuantizeError::Calibration(format!("no GGUF name for {hf_name} in {arch}"))
            })?;
            let e = out.entries.entry(gguf).or_insert_with(|| ImatrixEntry {
                sums: vec![0.0; stats.in_features()],
                counts: vec![0.0],
            });
            for (acc, s) in e.sums.iter_mut().zip(&stats.sum_sq) {
                *acc += *s as f32;
            }
            e.counts[0] += stats.n_tokens as f32;
        }
        progress(i + 1, chunks.len());
    }
    Ok(out)
}
