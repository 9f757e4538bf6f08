//! `shuku`: inspect, convert, evaluate and run language models and GGUF files.
//!
//! Each subcommand lives in its own module and only composes the library crates; errors are printed
//! as one clear line (with their cause chain), never as a backtrace.

mod bench;
mod calib;
mod chat;
mod convert;
mod distill;
mod engine_args;
mod export;
mod generate;
mod imatrix;
mod inspect;
mod output;
mod perplexity;
mod progress;
mod prune;
mod quantize;
mod run;
mod serve;
mod table;
mod text_tokenizer;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// shuku (縮, "to shrink"): make language models small and run them on an edge CPU.
#[derive(Debug, Parser)]
#[command(name = "shuku", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Convert(convert::Args),
    Perplexity(perplexity::Args),
    Generate(generate::Args),
    Run(run::Args),
    Chat(chat::Args),
    Bench(bench::Args),
    Quantize(quantize::Args),
    Imatrix(imatrix::Args),
    Prune(prune::Args),
    Distill(distill::Args),
    Serve(serve::Args),
    Export(export::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every command allocates its working memory afresh per step or forward pass: keep what it frees.
    shuku_model::threads::keep_freed_memory();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Run(args) => run::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Imatrix(args) => imatrix::run(args),
        Command::Prune(args) => prune::run(args),
        Command::Distill(args) => distill::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Export(args) => export::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            let mut said = err.to_string();
            for cause in err.chain().skip(1) {
                let text = cause.to_string();
                if let Some(new) = what_a_cause_adds(&said, &text) {
                    eprintln!("  caused by: {new}");
                }
                said = text;
            }
            ExitCode::FAILURE
        }
    }
}

/// The part of a cause worth printing under the line before it, or `None` when it adds nothing.
///
/// Library errors often repeat their source's text in their own message, and name their file
/// (`model.gguf: truncated GGUF: …`) where the command's context already ends with it
/// (`cannot read model.gguf`): the repeated text and the repeated file name are left out.
fn what_a_cause_adds<'a>(said: &str, cause: &'a str) -> Option<&'a str> {
    if said.contains(cause) {
        return None;
    }
    match cause.split_once(": ") {
        Some((file, rest)) if !file.is_empty() && said.ends_with(&format!(" {file}")) => Some(rest),
        _ => Some(cause),
    }
}

#[cfg(test)]
mod tests {
    use super::what_a_cause_adds;

    #[test]
    fn a_cause_is_printed_without_what_the_line_above_says() {
        let context = "cannot read /tmp/m.gguf";
        let cause = "/tmp/m.gguf: truncated GGUF: tensor count needs 8 bytes";
        assert_eq!(
            what_a_cause_adds(context, cause),
            Some("truncated GGUF: tensor count needs 8 bytes")
        );
        assert_eq!(what_a_cause_adds(context, "/tmp/m.gguf"), None);
        assert_eq!(
            what_a_cause_adds("cannot read /tmp/a.gguf", "/tmp/b.gguf: no such file"),
            Some("/tmp/b.gguf: no such file")
        );
        assert_eq!(
            what_a_cause_adds("--json-schema s.json", "json: expected value"),
            Some("json: expected value")
        );
    }
}
