//! `shuku serve MODEL.gguf`: the OpenAI-compatible server of shuku-serve.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use shuku_infer::{Engine, EngineOptions};
use shuku_serve::{RouterOptions, ServeOptions, Server, Signal};

/// Serve a GGUF model over the OpenAI API (chat, completions, streaming, JSON schemas, logprobs).
///
/// Requests are decoded together (continuous batching) in --parallel slots that share --ctx-size
/// positions, as llama-server's -np and -c; more wait in a queue of --queue and the next one is
/// refused with 429 and Retry-After. One JSON line per request goes to --log-file (or standard
/// error); /metrics is Prometheus text; /health says how busy the slots are.
///
/// With --upstream, requests the local model cannot answer well go to another OpenAI-compatible
/// server: prompts longer than a slot's context, answers whose confidence (--escalate-signal) is
/// under --escalate-below, JSON-schema failures, and requests with the header
/// `x-shuku-route: upstream`. When the upstream is down the local answer is returned.
///
/// Example: shuku serve smollm2.gguf --port 8080 --parallel 4 -c 8192
///
/// Example: shuku serve small.gguf --upstream http://10.0.0.2:8080 --escalate-below -1.5 --escalate-signal p10
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF model.
    model: PathBuf,
    /// Address to bind (loopback by default: nothing outside this machine can connect).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests decoded together (slots).
    #[arg(
        long = "parallel",
        short = 'n',
        visible_alias = "np",
        default_value_t = 4
    )]
    parallel: usize,
    /// Context positions of all slots together, split evenly between them.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 8192)]
    ctx: usize,
    /// Requests that may wait for a free slot.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Worker threads of the engine (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Most tokens per forward pass (prompt chunks and decoding slots together).
    #[arg(long = "ubatch-size", default_value_t = shuku_infer::engine::DEFAULT_UBATCH)]
    ubatch: usize,
    /// Model name in responses (default: the file's stem).
    #[arg(long)]
    alias: Option<String>,
    /// Clients must send `Authorization: Bearer KEY` (default: no key).
    #[arg(long, env = "SHUKU_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Seconds a request may take, queue included.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Append the request log (JSON lines) to this file instead of standard error.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Put prompts and answers in the request log.
    #[arg(long)]
    log_prompts: bool,
    /// Answers of deterministic requests (temperature 0 or a seed) kept for exact repeats (0: off).
    #[arg(long, default_value_t = 256)]
    cache: usize,
    /// Base URL of an OpenAI-compatible server to escalate to.
    #[arg(long)]
    upstream: Option<String>,
    /// Bearer token for the upstream.
    #[arg(long, env = "SHUKU_UPSTREAM_KEY", hide_env_values = true)]
    upstream_key: Option<String>,
    /// Model name to ask the upstream for (default: the client's).
    #[arg(long)]
    upstream_model: Option<String>,
    /// Escalate when the local answer's confidence is under this (natural log; e.g. -1.5).
    #[arg(long, allow_hyphen_values = true)]
    escalate_below: Option<f32>,
    /// The confidence: `mean` token log-probability, or a percentile such as `p10`.
    #[arg(long, default_value = "mean")]
    escalate_signal: Signal,
    /// Seconds to wait for the upstream.
    #[arg(long, default_value_t = 120)]
    upstream_timeout: u64,
}

pub fn run(args: Args) -> Result<()> {
    let slot_ctx = args.ctx / args.parallel.max(1);
    let engine = Engine::load(
        &args.model,
        EngineOptions {
            threads: args.threads,
            context: slot_ctx.max(1),
            ubatch: args.ubatch,
            ..Default::default()
        },
    )
    .with_context(|| format!("cannot load {}", args.model.display()))?;
    let name = args.alias.clone().unwrap_or_else(|| {
        args.model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned())
    });
    let router = args.upstream.clone().map(|url| RouterOptions {
        url,
        api_key: args.upstream_key.clone(),
        model: args.upstream_model.clone(),
        escalate_below: args.escalate_below,
        signal: args.escalate_signal,
        timeout: Duration::from_secs(args.upstream_timeout),
    });
    let options = ServeOptions {
        model_name: name.clone(),
        parallel: args.parallel,
        context: args.ctx,
        queue: args.queue,
        timeout: Duration::from_secs(args.timeout),
        max_body_bytes: args.max_body,
        api_key: args.api_key.clone(),
        log_file: args.log_file.clone(),
        log_prompts: args.log_prompts,
        cache: args.cache,
        router,
    };
    let server = Server::new(engine, options).context("cannot start the server")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr().context("no local address")?;
        eprintln!(
            "shuku serve: {name} on http://{local} | {}",
            server.summary()
        );
        server.run(listener).await.context("the server failed")
    })
}
