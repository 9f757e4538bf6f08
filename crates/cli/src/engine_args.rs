//! Options shared by the subcommands that run a GGUF file: threads, context, batch size and
//! sampling.

use std::path::Path;

use anyhow::{Context, Result};
use shuku_infer::{Engine, EngineOptions, GenerationParams, JsonSchemaConstraint, SamplerConfig};

/// How to run the engine.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Worker threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Context length in tokens (0: the model's trained context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx: usize,
    /// Most tokens per forward pass (llama.cpp's -ub); sliding-window layers keep window + this − 1
    /// positions.
    #[arg(long = "ubatch-size", short_alias = 'u', default_value_t = shuku_infer::engine::DEFAULT_UBATCH)]
    pub ubatch: usize,
    /// Read every weight matrix from the mapped file instead of copying it into the lane layout
    /// of the engine's kernels at load (to compare; slower on CPUs with AVX-512 VNNI).
    #[arg(long)]
    pub no_repack: bool,
}

impl EngineArgs {
    /// Loads `model` with these options.
    pub fn load(&self, model: &Path) -> Result<Engine> {
        Engine::load(
            model,
            EngineOptions {
                threads: self.threads,
                context: self.ctx,
                ubatch: self.ubatch,
                repack: !self.no_repack,
            },
        )
        .with_context(|| format!("cannot load {}", model.display()))
    }
}

/// The sampling chain (llama.cpp's defaults and order: penalties, top-k, top-p, min-p, temperature).
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Temperature; 0 picks the most likely token every time (greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Sample among the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sample among the most likely tokens whose probabilities add up to P (1.0: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0.0: off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise tokens seen in the last --repeat-last-n tokens (1.0: off; 1.1 is mild).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtract this once per earlier occurrence (0.0: off).
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Subtract this once for any earlier occurrence (0.0: off).
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Seed of the random generator: the same seed gives the same text (default: from the clock).
    #[arg(long, short = 's')]
    pub seed: Option<u64>,
    /// Stop before this text (repeatable); it is not printed.
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// Generation parameters for at most `max_tokens` tokens.
    pub fn params(&self, max_tokens: usize) -> GenerationParams {
        GenerationParams {
            max_tokens,
            sampler: SamplerConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                frequency_penalty: self.frequency_penalty,
                presence_penalty: self.presence_penalty,
                penalty_last_n: self.repeat_last_n,
            },
            stop: self.stop.clone(),
            seed: self.seed,
            top_logprobs: 0,
        }
    }
}

/// Output constrained to a JSON schema (llama.cpp's `-j`).
#[derive(Debug, Clone, clap::Args)]
pub struct SchemaArgs {
    /// Constrain the output to this JSON schema: a file, or the schema itself as JSON text.
    #[arg(short = 'j', long = "json-schema", value_name = "FILE|JSON")]
    pub json_schema: Option<String>,
}

impl SchemaArgs {
    /// The constraint for `engine`'s vocabulary, if a schema was given.
    pub fn constraint(&self, engine: &Engine) -> Result<Option<JsonSchemaConstraint>> {
        let Some(arg) = &self.json_schema else {
            return Ok(None);
        };
        let text = if arg.trim_start().starts_with('{') {
            arg.clone()
        } else {
            std::fs::read_to_string(arg).with_context(|| format!("--json-schema {arg}"))?
        };
        JsonSchemaConstraint::new(text.as_str(), engine.tokenizer())
            .map(Some)
            .with_context(|| format!("--json-schema {arg}"))
    }
}
