//! Four edge use cases on a real instruct GGUF, each run several times with its latency measured
//! as an edge deployment would report it (mean, P50, P95 of the whole answer, time to first token
//! and time per token):
//!
//! * `analysis`: structured review analysis constrained to a JSON schema (summary, sentiment ∈
//!   {positive, negative, neutral}, score);
//! * `translate`: offline translation of a short message;
//! * `defect`: the likely root cause of a defect report;
//! * `driving`: a driving-scene risk call with a per-token latency budget (`--budget-ms`), which
//!   the run reports as met or missed at P95.
//!
//! With `--via-server`, the analysis case goes through `shuku serve`'s HTTP API with the hybrid
//! router in front: an in-process edge server (this model) escalating to an upstream server
//! (`--upstream URL`, or a second in-process server on the same model when none is given) when the
//! answer's mean token log-probability is under `--escalate-below`.
//!
//! ```text
//! cargo run --release --example edge_use_cases -- --model SmolLM2-135M-Instruct.Q4_1.gguf
//! cargo run --release --example edge_use_cases -- --model smollm2.gguf --case analysis --via-server
//! ```

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use shuku::infer::{
    ChatMessage, Engine, EngineOptions, GenerationParams, JsonSchemaConstraint, SamplerConfig,
};
use shuku::serve::{RouterOptions, RunningServer, ServeOptions, Server, Signal};

/// Run the edge use cases on an instruct GGUF and print answers with latency statistics.
#[derive(Parser, Debug)]
struct Args {
    /// An instruct GGUF with a chat template.
    #[arg(long)]
    model: PathBuf,
    /// Which case: analysis, translate, defect, driving, or all.
    #[arg(long, default_value = "all")]
    case: String,
    /// Runs per case (the latency statistics are over these).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Worker threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Per-token latency budget of the driving case, in milliseconds (checked at P95).
    #[arg(long, default_value_t = 100.0)]
    budget_ms: f64,
    /// Send the analysis case through the HTTP server with the hybrid router.
    #[arg(long)]
    via_server: bool,
    /// The router's upstream (default: a second in-process server on the same model).
    #[arg(long)]
    upstream: Option<String>,
    /// Escalate answers whose mean token log-probability is under this.
    #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
    escalate_below: f32,
}

const SYSTEM: &str =
    "You are an assistant running on an edge device. Answer briefly and precisely.";

struct Case {
    name: &'static str,
    prompt: &'static str,
    max_tokens: usize,
    schema: Option<Value>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "analysis",
            prompt: "Analyse this customer review and answer in JSON with a one-sentence summary, the sentiment and a score from 0 to 1.\nReview: \"The battery lasts two days and the screen is bright, but the charger broke after a week.\"",
            max_tokens: 120,
            schema: Some(json!({
                "type": "object",
                "properties": {
                    "summary": {"type": "string", "maxLength": 160},
                    "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
                    "score": {"type": "number", "minimum": 0, "maximum": 1}
                },
                "required": ["summary", "sentiment", "score"],
                "additionalProperties": false
            })),
        },
        Case {
            name: "translate",
            prompt: "Translate into French: \"The train to Lyon leaves at eight o'clock from platform two.\"",
            max_tokens: 48,
            schema: None,
        },
        Case {
            name: "defect",
            prompt: "Defect report: after the firmware update, the pump controller resets every few minutes when the motor starts; the supply voltage dips to 9 V at start-up. What is the most likely root cause? Answer in two sentences.",
            max_tokens: 64,
            schema: None,
        },
        Case {
            name: "driving",
            prompt: "Driving scene: wet road, 60 km/h, a child's ball rolls onto the road from between parked cars 30 m ahead. Give the risk level (low, medium, high) and the action, in one line.",
            max_tokens: 32,
            schema: None,
        },
    ]
}

/// Latency samples of one case.
#[derive(Default)]
struct Samples {
    total: Vec<Duration>,
    ttft: Vec<Duration>,
    per_token: Vec<Duration>,
}

fn stats(v: &[Duration]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let p = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    (s.iter().sum::<f64>() / s.len() as f64, p(0.5), p(0.95))
}

fn print_row(name: &str, route: &str, s: &Samples) {
    let (tm, t50, t95) = stats(&s.total);
    let (_, f50, _) = stats(&s.ttft);
    let (_, k50, k95) = stats(&s.per_token);
    println!(
        "| {name} | {route} | {} | {tm:.0} | {t50:.0} | {t95:.0} | {f50:.0} | {k50:.1} | {k95:.1} |",
        s.total.len()
    );
}

fn run_local(engine: &Engine, case: &Case, runs: usize) -> Result<(String, Samples)> {
    let messages = [
        ChatMessage::new("system", SYSTEM),
        ChatMessage::new("user", case.prompt),
    ];
    let prompt = engine.render_chat(&messages, true)?;
    let constraint = case
        .schema
        .as_ref()
        .map(|s| JsonSchemaConstraint::new(s, engine.tokenizer()))
        .transpose()?;
    let mut samples = Samples::default();
    let mut answer = String::new();
    for _ in 0..runs {
        let mut session = engine.new_session();
        let params = GenerationParams {
            max_tokens: case.max_tokens,
            sampler: SamplerConfig::greedy(),
            ..Default::default()
        };
        let start = Instant::now();
        let mut stream = engine.generate(&mut session, prompt.as_str(), params)?;
        if let Some(c) = &constraint {
            stream = stream.with_constraint(c.clone());
        }
        let g = stream.finish()?;
        samples.total.push(start.elapsed());
        samples.ttft.push(g.metrics.time_to_first_token);
        if g.metrics.decode_tokens > 0 {
            samples
                .per_token
                .push(g.metrics.decode / g.metrics.decode_tokens as u32);
        }
        answer = g.text;
    }
    Ok((answer, samples))
}

async fn run_via_server(args: &Args, case: &Case) -> Result<(String, Samples, Vec<String>)> {
    let load = || {
        Engine::load(
            &args.model,
            EngineOptions {
                threads: args.threads,
                ..Default::default()
            },
        )
    };
    let log = std::env::temp_dir().join("shuku-edge-use-cases.jsonl");
    let mut servers: Vec<RunningServer> = Vec::new();
    let upstream = match &args.upstream {
        Some(u) => u.clone(),
        None => {
            let up = Server::new(
                load()?,
                ServeOptions {
                    model_name: "upstream".into(),
                    log_file: Some(log.clone()),
                    ..ServeOptions::default()
                },
            )?
            .spawn("127.0.0.1:0")?;
            let url = up.url();
            servers.push(up);
            url
        }
    };
    let edge_server = Server::new(
        load()?,
        ServeOptions {
            model_name: "edge".into(),
            cache: 0,
            log_file: Some(log),
            router: Some(RouterOptions {
                url: upstream,
                api_key: None,
                model: None,
                escalate_below: Some(args.escalate_below),
                signal: Signal::MeanLogprob,
                timeout: Duration::from_secs(120),
            }),
            ..ServeOptions::default()
        },
    )?
    .spawn("127.0.0.1:0")?;
    let edge = edge_server.url();
    servers.push(edge_server);
    let client = reqwest::Client::new();
    let body = json!({
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": case.prompt}],
        "max_tokens": case.max_tokens,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "analysis", "schema": case.schema}},
    });
    let mut samples = Samples::default();
    let mut routes = Vec::new();
    let mut answer = String::new();
    for _ in 0..args.runs {
        let start = Instant::now();
        let r = client
            .post(format!("{edge}/v1/chat/completions"))
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("the edge server answered {status}: {v}");
        }
        samples.total.push(start.elapsed());
        if let Some(t) = v["shuku"]["ttft_ms"].as_f64() {
            samples.ttft.push(Duration::from_secs_f64(t / 1e3));
        }
        routes.push(format!(
            "{}{}",
            v["shuku"]["route"].as_str().unwrap_or("?"),
            v["shuku"]["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        answer = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    drop(servers);
    Ok((answer, samples, routes))
}

fn run(args: Args) -> Result<()> {
    let selected: Vec<Case> = cases()
        .into_iter()
        .filter(|c| args.case == "all" || args.case == c.name)
        .collect();
    if selected.is_empty() {
        bail!(
            "--case {}: not a case (analysis, translate, defect, driving, all)",
            args.case
        );
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let engine = Engine::load(
        &args.model,
        EngineOptions {
            threads: args.threads,
            ..Default::default()
        },
    )
    .with_context(|| format!("--model {}", args.model.display()))?;
    let mut rows = Vec::new();
    for case in &selected {
        let (answer, samples) = run_local(&engine, case, args.runs)?;
        println!("[{}] {}\n", case.name, answer.trim());
        if let Some(schema) = &case.schema {
            let doc: Value =
                serde_json::from_str(&answer).context("the constrained answer is not JSON")?;
            let ok = schema["required"].as_array().is_some_and(|r| {
                r.iter()
                    .all(|k| doc.get(k.as_str().unwrap_or("")).is_some())
            });
            println!("  JSON valid with every required field: {ok}\n");
        }
        if case.name == "driving" {
            let (_, _, p95) = stats(&samples.per_token);
            println!(
                "  per-token P95 {p95:.1} ms against a budget of {:.0} ms: {}\n",
                args.budget_ms,
                if p95 <= args.budget_ms {
                    "met"
                } else {
                    "missed"
                }
            );
        }
        rows.push((case.name, "engine".to_string(), samples));
    }
    if args.via_server {
        let case = selected
            .iter()
            .find(|c| c.name == "analysis")
            .context("--via-server runs the analysis case: use --case analysis or all")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (answer, samples, routes) = runtime.block_on(run_via_server(&args, case))?;
        println!(
            "[analysis via the server] {}\n  routes: {}\n",
            answer.trim(),
            routes.join("; ")
        );
        rows.push(("analysis", "server + router".to_string(), samples));
    }
    println!("| case | path | runs | mean ms | P50 ms | P95 ms | TTFT P50 ms | token P50 ms | token P95 ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, path, s) in &rows {
        print_row(name, path, s);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with(run(Args::parse()))
}
