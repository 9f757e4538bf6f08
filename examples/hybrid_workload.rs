//! The edge → cloud router under a mixed workload: two servers on loopback, a small model as the
//! edge and a larger one as the upstream. The workload mixes short questions, repeats of earlier
//! ones (the exact-response cache), prompts longer than the edge's context, and requests that ask
//! for the upstream. Halfway through the upstream is stopped, and the edge must keep answering.
//! Prints the count of each route, with its reasons, before and after the stop.
//!
//! ```text
//! cargo run --release --example hybrid_workload -- --edge SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --upstream gemma-3-270m-q4_k_m.gguf
//! ```

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use shuku::infer::{Engine, EngineOptions};
use shuku::serve::{RouterOptions, RunningServer, ServeOptions, Server, Signal};

/// Run a mixed workload through an edge server with an upstream, stopping the upstream halfway.
#[derive(Parser, Debug)]
struct Args {
    /// The edge model.
    #[arg(long)]
    edge: PathBuf,
    /// The upstream model.
    #[arg(long)]
    upstream: PathBuf,
    /// Requests in each half.
    #[arg(long, default_value_t = 24)]
    requests: usize,
    /// Escalate local answers whose P10 token log-probability is under this.
    #[arg(long, default_value_t = -1.5, allow_hyphen_values = true)]
    escalate_below: f32,
    /// Context positions of the edge's slot (prompts longer go upstream).
    #[arg(long, default_value_t = 256)]
    edge_context: usize,
    /// Worker threads per server (0: one per core).
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
}

const QUESTIONS: &[&str] = &[
    "What is the capital of France?",
    "Name three primary colours.",
    "What is 12 times 12?",
    "Translate 'good morning' into Spanish.",
    "Who wrote Hamlet?",
    "What gas do plants absorb?",
    "How many legs does a spider have?",
    "What is the boiling point of water at sea level?",
    "Give a synonym for 'happy'.",
    "What is the largest planet in the solar system?",
    "Which metal is liquid at room temperature?",
    "What does CPU stand for?",
    "Who painted the Mona Lisa?",
    "What is the square root of 81?",
    "Name a mammal that can fly.",
    "What language is spoken in Brazil?",
];

fn start(model: &PathBuf, options: ServeOptions, threads: usize) -> Result<RunningServer> {
    let engine = Engine::load(
        model,
        EngineOptions {
            threads,
            ..Default::default()
        },
    )
    .with_context(|| format!("cannot load {}", model.display()))?;
    Ok(Server::new(engine, options)?.spawn("127.0.0.1:0")?)
}

/// The i-th request of the mix: mostly short questions (the first round of each new, later ones
/// repeats), every fifth one too long for the edge, every seventh one asking for the upstream.
fn request(i: usize) -> (Value, Option<&'static str>) {
    let q = QUESTIONS[i % QUESTIONS.len()];
    let content = if i % 5 == 4 {
        format!(
            "{} Context: {}",
            q,
            "the quick brown fox jumps over the lazy dog ".repeat(40)
        )
    } else {
        q.to_string()
    };
    let body = json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 24,
        "temperature": 0,
    });
    (body, (i % 7 == 6).then_some("upstream"))
}

async fn half(
    client: &reqwest::Client,
    edge: &str,
    from: usize,
    n: usize,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in from..from + n {
        let (body, route) = request(i);
        let mut r = client
            .post(format!("{edge}/v1/chat/completions"))
            .json(&body);
        if let Some(route) = route {
            r = r.header("x-shuku-route", route);
        }
        let key = match r.send().await {
            Ok(resp) => {
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                if status.is_success() {
                    let route = v["shuku"]["route"].as_str().unwrap_or("?").to_string();
                    let reason = v["shuku"]["reason"].as_str().unwrap_or("");
                    let why = if reason.contains("unavailable") {
                        " (upstream unavailable)"
                    } else if reason.contains("positions") {
                        " (context)"
                    } else if reason.contains("client") {
                        " (asked)"
                    } else if reason.contains("confidence") {
                        " (low confidence)"
                    } else {
                        ""
                    };
                    format!("{route}{why}")
                } else {
                    format!(
                        "HTTP {status} {}",
                        v["error"]["code"].as_str().unwrap_or("")
                    )
                }
            }
            Err(e) => format!("transport error: {e}"),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

async fn run(args: Args) -> Result<()> {
    let log = std::env::temp_dir().join("shuku-hybrid-workload.jsonl");
    let upstream = start(
        &args.upstream,
        ServeOptions {
            model_name: "upstream".into(),
            log_file: Some(log.clone()),
            ..ServeOptions::default()
        },
        args.threads,
    )?;
    let edge = start(
        &args.edge,
        ServeOptions {
            model_name: "edge".into(),
            parallel: 1,
            context: args.edge_context,
            log_file: Some(log),
            router: Some(RouterOptions {
                url: upstream.url(),
                api_key: None,
                model: None,
                escalate_below: Some(args.escalate_below),
                signal: Signal::Quantile(0.1),
                timeout: Duration::from_secs(60),
            }),
            ..ServeOptions::default()
        },
        args.threads,
    )?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let bar = common::progress(2, "halves");
    let before = half(&client, &edge.url(), 0, args.requests).await;
    bar.inc(1);
    upstream.stop();
    let after = half(&client, &edge.url(), args.requests, args.requests).await;
    bar.finish_and_clear();
    drop(edge);
    println!("| route | upstream up | upstream stopped |");
    println!("|---|---|---|");
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for k in keys {
        println!(
            "| {k} | {} | {} |",
            before.get(k).copied().unwrap_or(0),
            after.get(k).copied().unwrap_or(0)
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with_async(run(Args::parse()))
}
