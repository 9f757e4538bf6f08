//! Load on any OpenAI-compatible server (`shuku serve`, llama-server, vLLM): N concurrent
//! streaming clients, each sending chat requests one after another, measured from the client's
//! side — errors, aggregate tokens/s, time to first token and time between tokens (P50/P95). With
//! `--prefix-test`, also the time to first token of a request whose ~1k-token system prompt the
//! server has just seen (warm) against one it has not (cold).
//!
//! ```text
//! shuku serve smollm2.gguf --port 8080 --parallel 4 -c 8192 &
//! cargo run --release --example serve_load -- --url http://127.0.0.1:8080 --clients 1,4,16,50
//! ```
//!
//! One line of Markdown per concurrency level (and `--json FILE` for the raw numbers);
//! `benches/serve_vs_llama.sh` runs it against both servers.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

/// Measure an OpenAI-compatible server under concurrent streaming clients.
#[derive(Parser, Debug)]
struct Args {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrency levels, each run in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,50")]
    clients: Vec<usize>,
    /// Requests each client sends, one after another.
    #[arg(long, default_value_t = 2)]
    requests: usize,
    /// Tokens per answer at most.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// A label for the table's first column.
    #[arg(long, default_value = "server")]
    label: String,
    /// Also measure cold against warm time to first token with a shared ~1k-token prefix.
    #[arg(long)]
    prefix_test: bool,
    /// Write the numbers as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const QUESTIONS: &[&str] = &[
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "List three uses of copper.",
    "What does a compiler do?",
    "Give me a tip for learning to cook.",
    "Why is the sky blue?",
    "Name a famous painting and its painter.",
];

/// What one streamed request saw.
#[derive(Debug, Default)]
struct Trace {
    ok: bool,
    error: Option<String>,
    ttft: Option<Duration>,
    gaps: Vec<Duration>,
    tokens: usize,
}

async fn stream_chat(
    client: &reqwest::Client,
    url: &str,
    messages: Value,
    max_tokens: usize,
) -> Trace {
    let mut trace = Trace::default();
    let body = json!({
        "model": "m",
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let start = Instant::now();
    let mut r = match client
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            trace.error = Some(e.to_string());
            return trace;
        }
    };
    if !r.status().is_success() {
        trace.error = Some(format!("HTTP {}", r.status()));
        return trace;
    }
    let mut buf = String::new();
    let mut last: Option<Instant> = None;
    let mut pieces = 0usize;
    loop {
        let chunk = match r.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                trace.error = Some(e.to_string());
                return trace;
            }
        };
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                if data == "[DONE]" {
                    trace.ok = true;
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    trace.tokens = n as usize;
                }
                let content = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
                if content.is_empty() {
                    continue;
                }
                pieces += 1;
                match last {
                    None => trace.ttft = Some(now - start),
                    Some(t) => trace.gaps.push(now - t),
                }
                last = Some(now);
            }
        }
    }
    if trace.tokens == 0 {
        trace.tokens = pieces;
    }
    if !trace.ok {
        trace
            .error
            .get_or_insert_with(|| "the stream ended without [DONE]".into());
    }
    trace
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

/// A client that opens a connection per request: a pooled keep-alive connection that the server
/// has just closed would count as the server's error.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default()
}

async fn level(args: &Args, clients: usize) -> Value {
    let client = http_client();
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            let url = args.url.clone();
            let (requests, max_tokens) = (args.requests, args.max_tokens);
            tokio::spawn(async move {
                let mut traces = Vec::new();
                for r in 0..requests {
                    let q = QUESTIONS[(c * requests + r) % QUESTIONS.len()];
                    let messages = json!([{"role": "user", "content": q}]);
                    traces.push(stream_chat(&client, &url, messages, max_tokens).await);
                }
                traces
            })
        })
        .collect();
    let mut traces = Vec::new();
    for t in tasks {
        traces.extend(t.await.unwrap_or_default());
    }
    let wall = start.elapsed().as_secs_f64();
    let errors: Vec<&String> = traces.iter().filter_map(|t| t.error.as_ref()).collect();
    let tokens: usize = traces.iter().map(|t| t.tokens).sum();
    let mut ttft: Vec<Duration> = traces.iter().filter_map(|t| t.ttft).collect();
    let mut gaps: Vec<Duration> = traces.iter().flat_map(|t| t.gaps.iter().copied()).collect();
    ttft.sort();
    gaps.sort();
    json!({
        "label": args.label,
        "clients": clients,
        "requests": traces.len(),
        "errors": errors.len(),
        "first_error": errors.first(),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_second": tokens as f64 / wall,
        "ttft_p50_ms": pct(&ttft, 0.5),
        "ttft_p95_ms": pct(&ttft, 0.95),
        "token_p50_ms": pct(&gaps, 0.5),
        "token_p95_ms": pct(&gaps, 0.95),
    })
}

/// Cold and warm time to first token with a shared ~1k-token system prompt (a fresh prefix each
/// run, so "cold" is never already cached).
async fn prefix_test(args: &Args) -> Result<Value> {
    let client = http_client();
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let text = std::fs::read_to_string("assets/corpus/shakespeare.txt")
        .context("the prefix test reads assets/corpus/shakespeare.txt")?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let offset = (salt as usize) % (words.len().saturating_sub(900)).max(1);
    let system = format!(
        "Session {salt}. Reference text:\n{}",
        words[offset..offset + 700].join(" ")
    );
    let mut out = Vec::new();
    for q in ["Who speaks first?", "Summarise it in one line."] {
        let messages =
            json!([{"role": "system", "content": system}, {"role": "user", "content": q}]);
        let t = stream_chat(&client, &args.url, messages, 8).await;
        if let Some(e) = t.error {
            bail!("prefix test: {e}");
        }
        out.push(t.ttft.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3));
    }
    Ok(
        json!({"label": args.label, "cold_ttft_ms": out[0], "warm_ttft_ms": out[1], "ratio": out[0] / out[1]}),
    )
}

async fn run(args: Args) -> Result<()> {
    let health = reqwest::get(format!("{}/health", args.url))
        .await
        .with_context(|| format!("no server at {}", args.url))?;
    if !health.status().is_success() {
        bail!("{}/health answered {}", args.url, health.status());
    }
    println!("| server | clients | requests | errors | tok/s | TTFT P50 ms | TTFT P95 ms | token P50 ms | token P95 ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut all = Vec::new();
    for &c in &args.clients {
        let v = level(&args, c).await;
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            args.label,
            c,
            v["requests"],
            v["errors"],
            v["tokens_per_second"].as_f64().unwrap_or(0.0),
            v["ttft_p50_ms"].as_f64().unwrap_or(f64::NAN),
            v["ttft_p95_ms"].as_f64().unwrap_or(f64::NAN),
            v["token_p50_ms"].as_f64().unwrap_or(f64::NAN),
            v["token_p95_ms"].as_f64().unwrap_or(f64::NAN),
        );
        if let Some(e) = v["first_error"].as_str() {
            eprintln!("  first error: {e}");
        }
        all.push(v);
    }
    let prefix = if args.prefix_test {
        let p = prefix_test(&args).await?;
        println!(
            "prefix: cold TTFT {:.1} ms, warm {:.1} ms ({:.1}x)",
            p["cold_ttft_ms"].as_f64().unwrap_or(f64::NAN),
            p["warm_ttft_ms"].as_f64().unwrap_or(f64::NAN),
            p["ratio"].as_f64().unwrap_or(f64::NAN)
        );
        Some(p)
    } else {
        None
    };
    if let Some(path) = &args.json {
        let v = json!({"levels": all, "prefix": prefix});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with_async(run(Args::parse()))
}
