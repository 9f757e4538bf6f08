//! Decode speed, per-token latency and peak memory of a model, full precision or GGUF.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};
use shuku_infer::metrics::percentile;
use shuku_infer::{Engine, EngineOptions, GenerationParams, Prompt, SamplerConfig};
use shuku_model::{KvCache, Llama};

use super::Result;

/// A model as it is deployed: an HF folder run by shuku-model (candle, f32) or a GGUF file run by
/// shuku-infer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deployable {
    /// A full-precision HF folder.
    HfDir(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
}

impl std::fmt::Display for Deployable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deployable::HfDir(p) | Deployable::Gguf(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a speed measurement runs: greedy decoding of `decode_tokens` tokens after `prompt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeedOptions {
    /// Prompt token ids (the same for every stage, so every row does the same work).
    pub prompt: Vec<u32>,
    /// Tokens to decode after the prompt.
    pub decode_tokens: usize,
    /// Compute threads (0: one per core).
    pub threads: usize,
}

/// Decode speed and memory of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Speed {
    /// Decoded tokens per second (the prompt excluded).
    pub tokens_per_s: f64,
    /// Median time per decoded token, milliseconds.
    pub latency_p50_ms: f64,
    /// 95th percentile of the time per decoded token, milliseconds.
    pub latency_p95_ms: f64,
    /// Peak resident memory of the measuring process in bytes (`None` where the OS does not say).
    pub peak_rss_bytes: Option<u64>,
}

/// Measures `target` in this process (its peak RSS is this process's, everything it holds
/// included; [`super::speed_isolated`] measures the model alone).
pub fn speed(target: &Deployable, options: &SpeedOptions) -> Result<Speed> {
    match target {
        Deployable::Gguf(path) => gguf_speed(path, options),
        Deployable::HfDir(dir) => {
            let model = Llama::from_hf_dir(dir, &Device::Cpu)?;
            model_speed(&model, options)
        }
    }
}

fn gguf_speed(path: &std::path::Path, options: &SpeedOptions) -> Result<Speed> {
    let engine = Engine::load(
        path,
        EngineOptions {
            threads: options.threads,
            context: options.prompt.len() + options.decode_tokens + 1,
            ..EngineOptions::default()
        },
    )?;
    let mut session = engine.new_session();
    let params = GenerationParams {
        max_tokens: options.decode_tokens,
        sampler: SamplerConfig::greedy(),
        ..GenerationParams::default()
    };
    let generation = engine
        .generate(&mut session, Prompt::Tokens(options.prompt.clone()), params)?
        .finish()?;
    let m = generation.metrics;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Speed {
        tokens_per_s: m.decode_tokens as f64 / m.decode.as_secs_f64().max(1e-9),
        latency_p50_ms: ms(m.latency_p50),
        latency_p95_ms: ms(m.latency_p95),
        peak_rss_bytes: shuku_infer::metrics::peak_rss_bytes(),
    })
}

/// Greedy decoding with shuku-model's KV cache, timing every step after the prompt.
fn model_speed(model: &Llama, options: &SpeedOptions) -> Result<Speed> {
    if options.prompt.is_empty() {
        return Err(shuku_model::ModelError::InvalidInput("empty prompt".into()).into());
    }
    let mut cache = KvCache::new(model.config());
    let mut input = options.prompt.clone();
    let mut latencies = Vec::with_capacity(options.decode_tokens);
    for step in 0..=options.decode_tokens {
        let start = Instant::now();
        let tokens = Tensor::from_vec(input.clone(), (1, input.len()), &Device::Cpu)
            .map_err(shuku_model::ModelError::from)?;
        let logits = model.forward(&tokens, Some(&mut cache))?;
        let next = logits
            .squeeze(0)
            .and_then(|l| l.get(input.len() - 1))
            .and_then(|l| l.argmax(D::Minus1))
            .and_then(|l| l.to_scalar::<u32>())
            .map_err(shuku_model::ModelError::from)?;
        if step > 0 {
            latencies.push(start.elapsed());
        }
        input = vec![next];
    }
    let total: Duration = latencies.iter().sum();
    latencies.sort();
    let pick = |q: f64| percentile(&latencies, q).as_secs_f64() * 1e3;
    Ok(Speed {
        tokens_per_s: latencies.len() as f64 / total.as_secs_f64().max(1e-9),
        latency_p50_ms: pick(0.50),
        latency_p95_ms: pick(0.95),
        peak_rss_bytes: shuku_infer::metrics::peak_rss_bytes(),
    })
}
