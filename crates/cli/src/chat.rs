//! `shuku chat MODEL.gguf`: a multi-turn conversation on standard input.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use shuku_infer::{ChatMessage, PrefixCache};

use crate::engine_args::{EngineArgs, SamplingArgs, SchemaArgs};
use crate::output::Output;

/// Chat with a GGUF model: each line of standard input is one user turn.
///
/// The conversation is rendered with the model's own chat template (tokenizer.chat_template; ChatML
/// when the file has none, with a note on stderr) and the reply streams to standard output, one
/// reply per turn followed by an empty line. The session is kept between turns and only the new part
/// of the rendered conversation is evaluated (prompt-prefix reuse), so later turns start quickly.
/// Works interactively (a `> ` prompt on stderr; end with Ctrl-D) and with piped input. Metrics
/// of each reply go to standard error.
///
/// Example: shuku chat smollm2-instruct.gguf --system "Answer in one sentence."
///
/// Example: printf 'Hi!\nWhat is 2+2?\n' | shuku chat smollm2-instruct.gguf --temp 0
///
/// Example: shuku chat smollm2-instruct.gguf -j '{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"]}'
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF model (an instruction-tuned one).
    model: PathBuf,
    /// A system message opening the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Tokens per reply at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n_predict: usize,
    /// Print only the replies (no per-turn metrics on stderr).
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    schema: SchemaArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(args: Args) -> Result<()> {
    let engine = args.engine.load(&args.model)?;
    // Each reply is one document under the schema, with a fresh copy of the constraint.
    let constraint = args.schema.constraint(&engine)?;
    let template = engine.chat_template().context("unusable chat template")?;
    if template.is_fallback() {
        eprintln!(
            "note: {} has no chat template; using ChatML",
            args.model.display()
        );
    }
    let tok = engine.tokenizer();
    let bos_text = tok.bos().and_then(|b| tok.token_text(b)).unwrap_or("");
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    let mut cache = PrefixCache::new(&engine);
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut out = Output::stdout();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        let prompt = template.render(&messages, true)?;
        // The template writes BOS itself when it wants one; otherwise the tokenizer adds it.
        let add_special = bos_text.is_empty() || !prompt.starts_with(bos_text);
        let tokens = tok.encode(&prompt, add_special, true)?;
        let mut stream = cache.generate(&engine, &tokens, args.sampling.params(args.n_predict))?;
        if let Some(c) = &constraint {
            stream = stream.with_constraint(c.clone());
        }
        for token in &mut stream {
            out.text(&token.context("generation failed")?.text_piece);
            out.flush();
        }
        out.line("");
        out.line("");
        out.flush();
        let summary = stream.summary().cloned();
        drop(stream);
        if let Some(g) = summary {
            if !args.quiet {
                eprintln!("{} | finish {}", g.metrics, g.finish_reason);
            }
            messages.push(ChatMessage::new("assistant", g.text.trim().to_string()));
        }
    }
    Ok(())
}
