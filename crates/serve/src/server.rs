//! The HTTP side: routes, authentication, the body-size limit, and the path of each request
//! through the cache, the local engine and the upstream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use shuku_infer::{Engine, GeneratedToken, GrammarVocab};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::{parse_request, unix_now, ChatRequest, CompletionRequest, ShukuInfo, Usage};
use crate::error::{ApiError, ServeError};
use crate::log::{unix_time, LogLine, RequestLog};
use crate::metrics::Metrics;
use crate::prepare::{self, Prepared};
use crate::respond::{response, Answer, ChunkWriter, Endpoint};
use crate::router::{CachedAnswer, ExactCache, Router, RouterOptions};
use crate::scheduler::{Event, Job, Outcome, Scheduler, SchedulerOptions};

/// The header that picks a route: `local` or `upstream`.
pub const ROUTE_HEADER: &str = "x-shuku-route";

/// How to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// The model name in responses and `/v1/models`.
    pub model_name: String,
    /// Requests decoded together (slots).
    pub parallel: usize,
    /// Context positions of all slots together, split evenly (llama-server's `-c` with `-np`).
    pub context: usize,
    /// Requests that may wait for a slot.
    pub queue: usize,
    /// Most time a request may take, queue included.
    pub timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Bearer token clients must send (none: open).
    pub api_key: Option<String>,
    /// Append the request log here (none: standard error).
    pub log_file: Option<PathBuf>,
    /// Put prompts and answers in the log.
    pub log_prompts: bool,
    /// Answers the exact-response cache keeps (0: off).
    pub cache: usize,
    /// Where and when to escalate.
    pub router: Option<RouterOptions>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            model_name: "shuku".into(),
            parallel: 4,
            context: 8192,
            queue: 64,
            timeout: Duration::from_secs(600),
            max_body_bytes: 1 << 20,
            api_key: None,
            log_file: None,
            log_prompts: false,
            cache: 256,
            router: None,
        }
    }
}

/// A configured server: the engine, its scheduler and everything a request goes through.
#[derive(Debug, Clone)]
pub struct Server {
    app: Arc<App>,
}

#[derive(Debug)]
struct App {
    engine: Arc<Engine>,
    scheduler: Scheduler,
    vocab: GrammarVocab,
    options: ServeOptions,
    slot_context: usize,
    metrics: Metrics,
    log: RequestLog,
    router: Option<Router>,
    cache: ExactCache,
}

impl Server {
    /// Prepares the slots, the JSON-schema vocabulary, the log and the router, and starts the
    /// decoding thread.
    pub fn new(engine: Engine, options: ServeOptions) -> Result<Server, ServeError> {
        if options.parallel == 0 {
            return Err(ServeError::Option {
                name: "parallel",
                why: "at least one slot is needed".into(),
            });
        }
        let slot_context = options.context / options.parallel;
        if slot_context < 2 {
            return Err(ServeError::Option {
                name: "context",
                why: format!(
                    "{} positions split over {} slots leave fewer than 2 per slot",
                    options.context, options.parallel
                ),
            });
        }
        let vocab = GrammarVocab::new(engine.tokenizer())?;
        let log = RequestLog::open(options.log_file.as_deref(), options.log_prompts)?;
        let router = options
            .router
            .clone()
            .map(Router::new)
            .transpose()
            .map_err(|why| ServeError::Option {
                name: "upstream",
                why,
            })?;
        let engine = Arc::new(engine);
        let scheduler = Scheduler::start(
            engine.clone(),
            SchedulerOptions {
                parallel: options.parallel,
                slot_context,
                queue: options.queue,
                ubatch: engine.ubatch(),
            },
        )?;
        Ok(Server {
            app: Arc::new(App {
                metrics: Metrics::new(options.parallel),
                cache: ExactCache::new(options.cache),
                engine,
                scheduler,
                vocab,
                slot_context,
                log,
                router,
                options,
            }),
        })
    }

    /// Positions each slot holds.
    pub fn slot_context(&self) -> usize {
        self.app.slot_context
    }

    /// One line for the console: slots, context and memory.
    pub fn summary(&self) -> String {
        let kv = self
            .app
            .scheduler
            .stats()
            .slot_cache_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "{} slots × {} positions, KV cache {:.1} MiB per slot; queue {}; {}",
            self.app.options.parallel,
            self.app.slot_context,
            kv as f64 / (1024.0 * 1024.0),
            self.app.options.queue,
            match &self.app.router {
                Some(r) => format!("escalating to {}", r.options().url),
                None => "no upstream".into(),
            }
        )
    }

    /// The routes, ready for `axum::serve` (or a test client).
    pub fn router(&self) -> axum::Router {
        let app = self.app.clone();
        axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completion))
            .route("/v1/models", get(models))
            .route("/metrics", get(metrics))
            .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth))
            .route("/health", get(health))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(app.options.max_body_bytes))
            .with_state(app)
    }

    /// Serves on `listener` until Ctrl-C (or SIGTERM), finishing the requests in flight.
    pub async fn run(self, listener: tokio::net::TcpListener) -> Result<(), ServeError> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(ServeError::Io)
    }
}

/// A server running on its own thread and async runtime ([`Server::spawn`]). Stopping it (or
/// dropping it) shuts the runtime down, which closes every open connection too: clients see the
/// server gone, not a listener closed while kept-alive connections still answer.
#[derive(Debug)]
pub struct RunningServer {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and waits until its thread has ended.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl Server {
    /// Binds `addr` (`127.0.0.1:0` picks a free port) and serves on a thread of its own with a
    /// two-worker runtime, until the returned handle is stopped or dropped. For applications and
    /// tests that embed a server next to other work.
    pub fn spawn(self, addr: &str) -> Result<RunningServer, ServeError> {
        let bind_error = |source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shuku-serve-http")
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = self.router();
        let thread = std::thread::Builder::new()
            .name("shuku-serve".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = axum::serve(listener, router) => {},
                        _ = stopped => {},
                    }
                });
                // Dropping the runtime ends every connection task with it.
                runtime.shutdown_background();
            })?;
        Ok(RunningServer {
            addr: local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Checks `Authorization: Bearer KEY` when the server has a key.
async fn auth(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(key) = &app.options.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            app.metrics.request("auth", 401, "none");
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

async fn not_found(request: Request) -> Response {
    ApiError::not_found(request.uri().path()).into_response()
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let s = app.scheduler.stats();
    let load = |a: &std::sync::atomic::AtomicUsize| a.load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({
        "status": "ok",
        "model": app.options.model_name,
        "slots": app.options.parallel,
        "slots_busy": load(&s.busy),
        "queue": load(&s.queued),
        "queue_capacity": app.options.queue,
        "slot_context": app.slot_context,
        "slot_kv_cache_bytes": load(&s.slot_cache_bytes),
        "upstream": app.router.as_ref().map(|r| r.options().url.clone()),
    }))
}

async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    app.metrics.request("models", 200, "none");
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.options.model_name,
            "object": "model",
            "created": unix_now(),
            "owned_by": "shuku",
            "meta": {
                "architecture": format!("{:?}", app.engine.config().arch).to_lowercase(),
                "n_vocab": app.engine.vocab_size(),
                "slot_context": app.slot_context,
            }
        }]
    }))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(app.scheduler.stats()),
    )
        .into_response()
}

async fn chat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    app.handle(Endpoint::Chat, headers, body).await
}

async fn completion(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    app.handle(Endpoint::Completion, headers, body).await
}

/// What a request gets back.
enum Reply {
    /// A whole answer (JSON, or replayed as a stream).
    Complete {
        prepared: Box<Prepared>,
        id: String,
        model: String,
        answer: Answer,
        shuku: ShukuInfo,
    },
    /// A stream fed by the scheduler as tokens come (it logs itself when it ends).
    Live(Response),
}

/// The local engine's answer and how it went.
struct Local {
    answer: Answer,
    outcome: Outcome,
}

impl App {
    async fn handle(
        self: Arc<Self>,
        endpoint: Endpoint,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let arrived = Instant::now();
        let mut log = LogLine {
            time: unix_time(),
            endpoint: endpoint.name().into(),
            model: self.options.model_name.clone(),
            route: "none".into(),
            ..LogLine::default()
        };
        match self
            .answer(endpoint, &headers, body, arrived, &mut log)
            .await
        {
            Ok(Reply::Live(response)) => response,
            Ok(Reply::Complete {
                prepared,
                id,
                model,
                answer,
                shuku,
            }) => {
                log.id = id.clone();
                log.model = model.clone();
                log.status = 200;
                log.completion_tokens = answer.usage.completion_tokens;
                log.finish_reason = answer.finish_reason.clone();
                log.route = shuku.route.clone();
                log.route_reason = shuku.reason.clone();
                log.answer = Some(answer.text.clone());
                let tok = self.engine.tokenizer();
                let reply = if prepared.stream {
                    let writer = ChunkWriter::new(endpoint, id, model, prepared.logprobs);
                    let chunks = writer.replay(tok, &answer, shuku.clone());
                    let events = chunks
                        .into_iter()
                        .map(|c| SseEvent::default().data(c.to_string()))
                        .chain([SseEvent::default().data("[DONE]")])
                        .map(Ok::<_, Infallible>);
                    with_route(
                        Sse::new(futures_util::stream::iter(events)).into_response(),
                        &shuku.route,
                    )
                } else {
                    let v = response(
                        endpoint,
                        &id,
                        &model,
                        &answer,
                        prepared.logprobs,
                        tok,
                        shuku.clone(),
                    );
                    with_route(Json(v).into_response(), &shuku.route)
                };
                log.total_ms = ms(arrived.elapsed());
                self.metrics.request(endpoint.name(), 200, &log.route);
                self.metrics.generation(
                    log.ttft_ms.map(|t| t / 1e3),
                    log.tokens_per_second.filter(|&t| t > 0.0).map(|t| 1.0 / t),
                    arrived.elapsed().as_secs_f64(),
                    log.prompt_tokens,
                    log.completion_tokens,
                );
                self.log.write(log);
                reply
            }
            Err(e) => {
                log.status = e.status.as_u16();
                log.error = Some(e.message.clone());
                log.finish_reason = "error".into();
                log.total_ms = ms(arrived.elapsed());
                self.metrics
                    .request(endpoint.name(), log.status, &log.route);
                self.log.write(log);
                e.into_response()
            }
        }
    }

    async fn answer(
        self: &Arc<Self>,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        arrived: Instant,
        log: &mut LogLine,
    ) -> Result<Reply, ApiError> {
        let bytes = body.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(self.options.max_body_bytes)
            } else {
                ApiError::invalid(r.body_text())
            }
        })?;
        let name = &self.options.model_name;
        let p = match endpoint {
            Endpoint::Chat => {
                let (req, body) =
                    parse_request::<ChatRequest>(&bytes).map_err(ApiError::invalid)?;
                prepare::chat(
                    req,
                    body,
                    &self.engine,
                    &self.vocab,
                    name,
                    self.slot_context,
                )?
            }
            Endpoint::Completion => {
                let (req, body) =
                    parse_request::<CompletionRequest>(&bytes).map_err(ApiError::invalid)?;
                prepare::completion(req, body, &self.engine, &self.vocab, name)?
            }
        };
        log.stream = p.stream;
        log.prompt_tokens = p.prompt.len();
        if self.log.logs_prompts() {
            log.prompt = Some(p.prompt_text.clone());
        }
        let id = endpoint.new_id();
        log.id = id.clone();

        let route_header = headers
            .get(ROUTE_HEADER)
            .map(|v| v.to_str().unwrap_or("?").to_string());
        // A client that names a route gets that route's answer, not another route's cached one.
        let key = self
            .cache
            .key(endpoint, &p.body)
            .map(|k| format!("{}|{k}", route_header.as_deref().unwrap_or("")));
        if let Some(hit) = key.as_deref().and_then(|k| self.cache.get(k)) {
            log.cache_hit = true;
            let shuku = ShukuInfo {
                route: "cache".into(),
                reason: Some(format!("answered before by the {} route", hit.route)),
                ..ShukuInfo::default()
            };
            return Ok(Reply::Complete {
                prepared: Box::new(p),
                id,
                model: hit.model,
                answer: hit.answer,
                shuku,
            });
        }

        let forced = match headers.get(ROUTE_HEADER).map(|v| v.to_str()) {
            None => None,
            Some(Ok("local")) => Some(false),
            Some(Ok("upstream")) => Some(true),
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "header `{ROUTE_HEADER}` must be `local` or `upstream`"
                )))
            }
        };
        let fits = p.positions_needed() <= self.slot_context;
        let context_error = || ApiError::context_length(p.positions_needed(), self.slot_context);

        let Some(router) = &self.router else {
            if forced == Some(true) {
                return Err(ApiError::invalid_param(
                    ROUTE_HEADER,
                    "this server has no upstream to route to",
                ));
            }
            if !fits {
                return Err(context_error());
            }
            if p.stream {
                return self.live(p, id, arrived, log.clone());
            }
            let local = self.local(&p).await?;
            return Ok(self.local_reply(p, id, local, None, None, key, log));
        };

        if forced == Some(true) || !fits {
            let why = if forced == Some(true) {
                "asked for by the client".to_string()
            } else {
                format!(
                    "the request needs {} positions, the local context holds {}",
                    p.positions_needed(),
                    self.slot_context
                )
            };
            match router.ask(endpoint, &p.body).await {
                Ok((answer, model)) => {
                    return Ok(self.upstream_reply(p, id, answer, model, why, None, key));
                }
                Err(e) if !fits => {
                    return Err(ApiError {
                        message: format!(
                            "{}; the upstream could not answer either: {e}",
                            context_error().message
                        ),
                        ..context_error()
                    });
                }
                Err(e) => {
                    let local = self.local(&p).await?;
                    let reason = format!("upstream unavailable: {e}");
                    return Ok(self.local_reply(p, id, local, Some(reason), None, key, log));
                }
            }
        }

        let local = match self.local(&p).await {
            Ok(l) => l,
            Err(e)
                if e.code == Some("generation_failed")
                    && p.constraint.is_some()
                    && forced.is_none() =>
            {
                let why = format!("the local model failed the schema: {}", e.message);
                return match router.ask(endpoint, &p.body).await {
                    Ok((answer, model)) => {
                        Ok(self.upstream_reply(p, id, answer, model, why, None, key))
                    }
                    Err(up) => Err(ApiError {
                        message: format!(
                            "{}; the upstream could not answer either: {up}",
                            e.message
                        ),
                        ..e
                    }),
                };
            }
            Err(e) => return Err(e),
        };
        let confidence = router.confidence(&local.answer.tokens);
        if forced.is_none() {
            if let Some(why) = router.should_escalate(confidence) {
                return Ok(match router.ask(endpoint, &p.body).await {
                    Ok((answer, model)) => {
                        self.upstream_reply(p, id, answer, model, why, confidence, key)
                    }
                    Err(e) => {
                        let reason = format!("{why}, but upstream unavailable: {e}");
                        self.local_reply(p, id, local, Some(reason), confidence, key, log)
                    }
                });
            }
        }
        Ok(self.local_reply(p, id, local, None, confidence, key, log))
    }

    #[allow(clippy::too_many_arguments)]
    fn local_reply(
        &self,
        p: Prepared,
        id: String,
        local: Local,
        reason: Option<String>,
        confidence: Option<f32>,
        key: Option<String>,
        log: &mut LogLine,
    ) -> Reply {
        let m = &local.outcome.generation.metrics;
        let ttft = local.outcome.queued + m.time_to_first_token;
        log.ttft_ms = (m.generated_tokens > 0).then(|| ms(ttft));
        log.tokens_per_second = Some(m.decode_tokens_per_second());
        log.queue_ms = ms(local.outcome.queued);
        log.reused_tokens = local.outcome.reused_tokens;
        let shuku = ShukuInfo {
            route: "local".into(),
            reason,
            confidence,
            ttft_ms: log.ttft_ms,
            tokens_per_second: log.tokens_per_second,
            reused_prompt_tokens: Some(local.outcome.reused_tokens),
        };
        if let Some(k) = key {
            self.cache.put(
                k,
                CachedAnswer {
                    answer: local.answer.clone(),
                    model: p.model.clone(),
                    route: "local".into(),
                },
            );
        }
        Reply::Complete {
            model: p.model.clone(),
            prepared: Box::new(p),
            id,
            answer: local.answer,
            shuku,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn upstream_reply(
        &self,
        p: Prepared,
        id: String,
        answer: Answer,
        model: String,
        reason: String,
        confidence: Option<f32>,
        key: Option<String>,
    ) -> Reply {
        if let Some(k) = key {
            self.cache.put(
                k,
                CachedAnswer {
                    answer: answer.clone(),
                    model: model.clone(),
                    route: "upstream".into(),
                },
            );
        }
        Reply::Complete {
            prepared: Box::new(p),
            id,
            model,
            answer,
            shuku: ShukuInfo {
                route: "upstream".into(),
                reason: Some(reason),
                confidence,
                ..ShukuInfo::default()
            },
        }
    }

    fn submit(&self, p: &Prepared) -> Result<UnboundedReceiver<Event>, ApiError> {
        let (tx, rx) = unbounded_channel();
        let now = Instant::now();
        self.scheduler.submit(Job {
            prompt: p.prompt.clone(),
            params: p.params.clone(),
            constraint: p.constraint.clone(),
            deadline: now + self.options.timeout,
            events: tx,
            submitted: now,
        })?;
        Ok(rx)
    }

    /// Generates locally to the end.
    async fn local(&self, p: &Prepared) -> Result<Local, ApiError> {
        let mut rx = self.submit(p)?;
        let mut tokens: Vec<GeneratedToken> = Vec::new();
        loop {
            match rx.recv().await {
                Some(Event::Token(t)) => tokens.push(t),
                Some(Event::Done(outcome)) => {
                    let g = &outcome.generation;
                    let answer = Answer {
                        text: g.text.clone(),
                        finish_reason: outcome.finish.openai().into(),
                        usage: Usage::new(p.prompt.len(), g.tokens.len()),
                        tokens,
                    };
                    return Ok(Local {
                        answer,
                        outcome: *outcome,
                    });
                }
                Some(Event::Failed(e)) => return Err(e),
                None => return Err(ApiError::unavailable("the decoding thread stopped")),
            }
        }
    }

    /// Streams the local answer as it is generated.
    fn live(
        self: &Arc<Self>,
        p: Prepared,
        id: String,
        arrived: Instant,
        mut log: LogLine,
    ) -> Result<Reply, ApiError> {
        let rx = self.submit(&p)?;
        log.route = "local".into();
        let writer = ChunkWriter::new(p.endpoint, id, p.model.clone(), p.logprobs);
        let mut pending = VecDeque::new();
        pending.extend(writer.opening());
        let live = LiveStream {
            app: self.clone(),
            rx,
            writer,
            pending,
            log,
            arrived,
            prompt_tokens: p.prompt.len(),
            finished: false,
            logged: false,
            text: String::new(),
        };
        let stream = futures_util::stream::unfold(live, |mut l| async move {
            l.next_event().await.map(|e| (Ok::<_, Infallible>(e), l))
        });
        Ok(Reply::Live(with_route(
            Sse::new(stream)
                .keep_alive(KeepAlive::default())
                .into_response(),
            "local",
        )))
    }
}

/// A streamed local answer. Dropped before its end (the client went away), it logs the request
/// as cancelled; dropping its receiver tells the scheduler to free the slot.
struct LiveStream {
    app: Arc<App>,
    rx: UnboundedReceiver<Event>,
    writer: ChunkWriter,
    pending: VecDeque<Value>,
    log: LogLine,
    arrived: Instant,
    prompt_tokens: usize,
    finished: bool,
    logged: bool,
    text: String,
}

impl LiveStream {
    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                let data = match v {
                    Value::String(s) => s,
                    v => v.to_string(),
                };
                return Some(SseEvent::default().data(data));
            }
            if self.finished {
                return None;
            }
            let tok = self.app.engine.tokenizer();
            match self.rx.recv().await {
                Some(Event::Token(t)) => {
                    if self.log.ttft_ms.is_none() && !t.is_eog {
                        self.log.ttft_ms = Some(ms(self.arrived.elapsed()));
                    }
                    self.text.push_str(&t.text_piece);
                    let piece = t.text_piece.clone();
                    self.pending
                        .extend(self.writer.text(tok, &piece, std::slice::from_ref(&t)));
                }
                Some(Event::Done(outcome)) => {
                    let g = &outcome.generation;
                    let usage = Usage::new(self.prompt_tokens, g.tokens.len());
                    self.log.tokens_per_second = Some(g.metrics.decode_tokens_per_second());
                    self.log.queue_ms = ms(outcome.queued);
                    self.log.reused_tokens = outcome.reused_tokens;
                    let shuku = ShukuInfo {
                        route: "local".into(),
                        ttft_ms: self.log.ttft_ms,
                        tokens_per_second: self.log.tokens_per_second,
                        reused_prompt_tokens: Some(outcome.reused_tokens),
                        ..ShukuInfo::default()
                    };
                    self.pending.push_back(self.writer.closing(
                        outcome.finish.openai(),
                        usage,
                        shuku,
                    ));
                    self.pending.push_back(Value::String("[DONE]".into()));
                    self.finished = true;
                    self.log.status = 200;
                    self.log.completion_tokens = usage.completion_tokens;
                    self.log.finish_reason = outcome.finish.log_name();
                    self.write_log();
                }
                Some(Event::Failed(e)) => {
                    self.pending.push_back(e.body());
                    self.pending.push_back(Value::String("[DONE]".into()));
                    self.finished = true;
                    self.log.status = e.status.as_u16();
                    self.log.error = Some(e.message);
                    self.log.finish_reason = "error".into();
                    self.write_log();
                }
                None => {
                    let e = ApiError::unavailable("the decoding thread stopped");
                    self.pending.push_back(e.body());
                    self.finished = true;
                    self.log.status = 503;
                    self.log.error = Some(e.message);
                    self.write_log();
                }
            }
        }
    }

    fn write_log(&mut self) {
        if self.logged {
            return;
        }
        self.logged = true;
        let mut log = std::mem::take(&mut self.log);
        log.total_ms = ms(self.arrived.elapsed());
        log.answer = Some(std::mem::take(&mut self.text));
        let m = &self.app.metrics;
        m.request(&log.endpoint, log.status, &log.route);
        if log.status == 200 {
            let latency = (log.completion_tokens > 1)
                .then(|| log.tokens_per_second.filter(|&t| t > 0.0).map(|t| 1.0 / t))
                .flatten();
            m.generation(
                log.ttft_ms.map(|t| t / 1e3),
                latency,
                log.total_ms / 1e3,
                log.prompt_tokens,
                log.completion_tokens,
            );
        }
        self.app.log.write(log);
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        if !self.logged {
            // 499: the client closed the connection (nginx's code; HTTP has none).
            self.log.status = 499;
            self.log.finish_reason = "cancelled".into();
            self.write_log();
        }
    }
}

fn with_route(mut response: Response, route: &str) -> Response {
    if let Ok(v) = route.parse() {
        response.headers_mut().insert(ROUTE_HEADER, v);
    }
    response
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
