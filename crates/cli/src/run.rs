//! `shuku run MODEL.gguf -p PROMPT`: stream a continuation from a GGUF file.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use shuku_infer::speculative::MAX_DRAFT_TOKENS;
use shuku_infer::{DraftModel, Engine, GenerationParams, PromptLookup, Session, SpeculativeOutput};

use crate::engine_args::{EngineArgs, SamplingArgs, SchemaArgs};
use crate::output::Output;

/// Continue a prompt with a GGUF model, streaming the text as it is generated.
///
/// The continuation (not the prompt) goes to standard output token by token; one line of metrics
/// goes to standard error at the end: prompt tokens, time to first token, prefill and decode speed,
/// per-token latency percentiles and the process's peak resident memory (VmHWM). Generation stops
/// at the model's end-of-generation token, before any --stop text, or after -n tokens. Sampling
/// follows llama.cpp (penalties, top-k, top-p, min-p, temperature); --temp 0 is greedy and --seed
/// makes sampled output reproducible.
///
/// Example: shuku run smollm2.gguf -p "The capital of France is" -n 32 --temp 0
///
/// Example: shuku run smollm2.gguf -p "Once upon a time" -n 128 --temp 0.7 --seed 42 --stop "The End"
///
/// Speculative decoding (--draft or --lookup) proposes up to --draft-max tokens at a time and has
/// the model check them all in one forward pass: greedy output is the same tokens, sampled output
/// follows the same distribution. It is faster when most proposals are accepted and a pass over
/// K + 1 tokens costs much less than K + 1 single-token passes (compare `shuku bench -p K+1` with
/// its tg speed); otherwise rejected proposals make it slower. The metrics line then reports the
/// drafted and accepted tokens, the acceptance rate, the model's forward passes and tok/s.
///
/// Example: shuku run smollm2.gguf -p "Repeat: ..." -n 128 --temp 0 --lookup 3
///
/// Example: shuku run smollm2.gguf -p "A JSON list of three rivers: " -j '{"type":"array","items":{"type":"string"}}'
///
/// Example: shuku run smollm2-360m.gguf -p "Once upon a time" --temp 0 --draft smollm2-135m.gguf
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF model.
    model: PathBuf,
    /// The prompt (special tokens such as <|im_start|> written in it are recognised).
    #[arg(short, long)]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    schema: SchemaArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    speculative: SpeculativeArgs,
}

/// Speculative decoding: where draft tokens come from and how many per step.
#[derive(Debug, Clone, clap::Args)]
pub struct SpeculativeArgs {
    /// Draft model: a smaller GGUF with the same vocabulary that proposes tokens for the model to
    /// verify (loaded with the same threads, context and micro-batch).
    #[arg(long, value_name = "PATH", conflicts_with = "lookup")]
    pub draft: Option<PathBuf>,
    /// Prompt lookup: propose what followed the last N tokens (then N − 1, …, 1) where they last
    /// occurred earlier in the text; pays when the output repeats the prompt. No model needed.
    #[arg(long, value_name = "N")]
    pub lookup: Option<usize>,
    /// Most tokens proposed per step, up to 32 (default: 8 with --lookup, whose proposals cost
    /// nothing; 4 with --draft, which pays one draft pass per token and whose later tokens are
    /// accepted less often).
    #[arg(long = "draft-max", value_name = "K")]
    pub draft_max: Option<usize>,
    /// With --draft: stop a draft at a token the draft model gives less than this probability
    /// (0: never); such tokens are rarely accepted and each costs a draft pass and a verified row.
    #[arg(long = "draft-p-min", value_name = "P", default_value_t = 0.0)]
    pub draft_p_min: f32,
}

/// Default --draft-max with --lookup.
pub const LOOKUP_DRAFT_MAX: usize = 8;
/// Default --draft-max with --draft.
pub const MODEL_DRAFT_MAX: usize = 4;

impl SpeculativeArgs {
    /// Whether speculative decoding is asked for; refuses --draft-max or --lookup values that
    /// cannot work.
    pub fn enabled(&self) -> Result<bool> {
        let on = self.draft.is_some() || self.lookup.is_some();
        if !on && self.draft_max.is_some() {
            bail!("--draft-max needs --draft or --lookup");
        }
        if self.draft.is_none() && self.draft_p_min != 0.0 {
            bail!("--draft-p-min needs --draft");
        }
        if !(0.0..=1.0).contains(&self.draft_p_min) {
            bail!("--draft-p-min must be between 0 and 1");
        }
        if self.lookup == Some(0) {
            bail!("--lookup must be at least 1");
        }
        if let Some(k) = self.draft_max {
            if !(1..=MAX_DRAFT_TOKENS).contains(&k) {
                bail!("--draft-max must be between 1 and {MAX_DRAFT_TOKENS}");
            }
        }
        Ok(on)
    }

    /// The draft length per step.
    pub fn max_draft(&self) -> usize {
        self.draft_max.unwrap_or(if self.draft.is_some() {
            MODEL_DRAFT_MAX
        } else {
            LOOKUP_DRAFT_MAX
        })
    }

    /// Generates with speculative decoding, streaming the text to `on_text`.
    pub fn generate(
        &self,
        engine: &Engine,
        engine_args: &EngineArgs,
        session: &mut Session,
        prompt: &str,
        params: &GenerationParams,
        on_text: impl FnMut(&str),
    ) -> Result<SpeculativeOutput> {
        let k = self.max_draft();
        let out = match &self.draft {
            Some(path) => {
                let draft_engine = engine_args.load(path)?;
                let mut drafter = DraftModel::new(&draft_engine, engine)
                    .with_context(|| format!("cannot draft with {}", path.display()))?
                    .with_min_probability(self.draft_p_min);
                engine.generate_speculative_with(session, prompt, params, &mut drafter, k, on_text)
            }
            None => {
                let mut drafter = PromptLookup::new(self.lookup.unwrap_or(1));
                engine.generate_speculative_with(session, prompt, params, &mut drafter, k, on_text)
            }
        };
        out.context("speculative generation failed")
    }
}

pub fn run(args: Args) -> Result<()> {
    let speculative = args.speculative.enabled()?;
    if speculative && args.schema.json_schema.is_some() {
        bail!("--json-schema cannot be combined with --draft or --lookup");
    }
    let engine = args.engine.load(&args.model)?;
    let constraint = args.schema.constraint(&engine)?;
    let mut session = engine.new_session();
    if speculative {
        let mut out = Output::stdout();
        let g = args.speculative.generate(
            &engine,
            &args.engine,
            &mut session,
            &args.prompt,
            &args.sampling.params(args.n_predict),
            |piece| {
                out.text(piece);
                out.flush();
            },
        )?;
        out.line("");
        eprintln!("{} | finish {}", g.stats, g.finish_reason);
        return Ok(());
    }
    let mut stream = engine
        .generate(
            &mut session,
            args.prompt.as_str(),
            args.sampling.params(args.n_predict),
        )
        .context("cannot start generation")?;
    if let Some(c) = constraint {
        stream = stream.with_constraint(c);
    }
    let mut out = Output::stdout();
    for token in &mut stream {
        let token = token.context("generation failed")?;
        out.text(&token.text_piece);
        out.flush();
    }
    out.line("");
    if let Some(g) = stream.summary() {
        eprintln!("{} | finish {}", g.metrics, g.finish_reason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        speculative: SpeculativeArgs,
    }

    fn parse(args: &[&str]) -> Result<SpeculativeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .map(|c| c.speculative)
    }

    #[test]
    fn draft_length_defaults_to_the_drafter_kind() {
        let off = parse(&[]).unwrap();
        assert!(!off.enabled().unwrap());
        let lookup = parse(&["--lookup", "3"]).unwrap();
        assert!(lookup.enabled().unwrap());
        assert_eq!(lookup.max_draft(), LOOKUP_DRAFT_MAX);
        let draft = parse(&["--draft", "d.gguf"]).unwrap();
        assert_eq!(draft.max_draft(), MODEL_DRAFT_MAX);
        let set = parse(&["--draft", "d.gguf", "--draft-max", "6"]).unwrap();
        assert_eq!(set.max_draft(), 6);
    }

    #[test]
    fn unusable_speculation_options_are_refused() {
        assert!(parse(&["--draft", "d.gguf", "--lookup", "2"]).is_err());
        for bad in [
            &["--lookup", "2", "--draft-p-min", "0.5"][..],
            &["--draft-max", "4"],
            &["--lookup", "0"],
            &["--lookup", "2", "--draft-max", "0"],
            &["--lookup", "2", "--draft-max", "33"],
            &["--draft", "d.gguf", "--draft-p-min", "1.5"],
        ] {
            let args = parse(bad).unwrap();
            assert!(args.enabled().is_err(), "{bad:?}");
        }
    }
}
