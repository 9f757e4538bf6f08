//! From a parsed request to what the engine runs: the prompt's tokens (a chat rendered with the
//! model's own template), the sampling chain, the stop strings, the JSON-schema constraint and
//! the logprobs asked for. Every value the server cannot honour is refused here with a 400 that
//! names the field, before the request takes a place in the queue.

use serde_json::Value;
use shuku_infer::{
    ChatMessage, Engine, GenerationParams, GrammarVocab, JsonSchemaConstraint, SamplerConfig,
};

use crate::api::{
    ChatRequest, CompletionRequest, Content, PromptField, ResponseFormat, SamplingFields,
};
use crate::error::ApiError;
use crate::respond::{Endpoint, LogprobRequest};

/// Most stop strings per request.
pub const MAX_STOP: usize = 16;
/// Most alternatives per position in chat logprobs (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Most alternatives per position in completion logprobs (OpenAI's limit).
pub const MAX_COMPLETION_LOGPROBS: u32 = 5;
/// OpenAI's default `max_tokens` of `/v1/completions`.
pub const COMPLETION_DEFAULT_MAX_TOKENS: usize = 16;

/// A request ready for the engine.
#[derive(Debug)]
pub struct Prepared {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The model name to answer with.
    pub model: String,
    /// The prompt's tokens.
    pub prompt: Vec<u32>,
    /// The prompt's text (for the log, with `--log-prompts`).
    pub prompt_text: String,
    /// Sampling and stopping; `max_tokens` is resolved.
    pub params: GenerationParams,
    /// Whether `max_tokens` was given (otherwise generation may run to the end of the context).
    pub explicit_max_tokens: bool,
    /// The JSON-schema constraint.
    pub constraint: Option<JsonSchemaConstraint>,
    /// Logprobs asked for.
    pub logprobs: LogprobRequest,
    /// Stream the answer.
    pub stream: bool,
    /// The request body, for the upstream and the cache key.
    pub body: Value,
}

impl Prepared {
    /// Positions the request needs: the prompt and every token it may generate.
    pub fn positions_needed(&self) -> usize {
        self.prompt.len()
            + if self.explicit_max_tokens {
                self.params.max_tokens
            } else {
                1
            }
    }
}

/// Checks the sampling fields and builds the engine's parameters (`max_tokens` left to the caller).
pub fn sampling(f: &SamplingFields) -> Result<GenerationParams, ApiError> {
    let range = |name: &str, v: Option<f32>, lo: f32, hi: f32| -> Result<(), ApiError> {
        match v {
            Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(ApiError::invalid_param(
                name,
                format!("`{name}` must be between {lo} and {hi}, got {x}"),
            )),
            _ => Ok(()),
        }
    };
    range("temperature", f.temperature, 0.0, 2.0)?;
    range("top_p", f.top_p, 0.0, 1.0)?;
    range("min_p", f.min_p, 0.0, 1.0)?;
    range("frequency_penalty", f.frequency_penalty, -2.0, 2.0)?;
    range("presence_penalty", f.presence_penalty, -2.0, 2.0)?;
    range("repeat_penalty", f.repeat_penalty, 0.0, 10.0)?;
    if let Some(n) = f.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid_param(
            "n",
            format!("only n = 1 is supported, got {n}"),
        ));
    }
    let stop = f.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > MAX_STOP {
        return Err(ApiError::invalid_param(
            "stop",
            format!("at most {MAX_STOP} stop strings, got {}", stop.len()),
        ));
    }
    let d = SamplerConfig::default();
    let sampler = SamplerConfig {
        temperature: f.temperature.unwrap_or(d.temperature),
        top_k: f.top_k.map_or(d.top_k, |k| k as usize),
        top_p: f.top_p.unwrap_or(d.top_p),
        min_p: f.min_p.unwrap_or(d.min_p),
        repeat_penalty: f.repeat_penalty.unwrap_or(d.repeat_penalty),
        frequency_penalty: f.frequency_penalty.unwrap_or(d.frequency_penalty),
        presence_penalty: f.presence_penalty.unwrap_or(d.presence_penalty),
        penalty_last_n: d.penalty_last_n,
    };
    Ok(GenerationParams {
        max_tokens: 0,
        sampler,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        seed: f.seed,
        top_logprobs: 0,
    })
}

/// The constraint a `response_format` asks for.
pub fn constraint(
    format: Option<&ResponseFormat>,
    vocab: &GrammarVocab,
) -> Result<Option<JsonSchemaConstraint>, ApiError> {
    let Some(format) = format else {
        return Ok(None);
    };
    let schema = match format.kind.as_str() {
        "text" => return Ok(None),
        "json_object" => serde_json::json!({"type": "object"}),
        "json_schema" => format
            .json_schema
            .as_ref()
            .and_then(|s| s.schema.clone())
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "response_format",
                    "`response_format.json_schema.schema` is required with type json_schema",
                )
            })?,
        other => {
            return Err(ApiError::invalid_param(
                "response_format",
                format!("unknown response_format type `{other}` (text, json_object, json_schema)"),
            ))
        }
    };
    JsonSchemaConstraint::with_vocab(&schema, vocab)
        .map(Some)
        .map_err(|e| ApiError {
            code: Some("invalid_schema"),
            ..ApiError::invalid_param("response_format", format!("unusable JSON schema: {e}"))
        })
}

fn max_tokens(given: Option<u64>, default: usize) -> Result<(usize, bool), ApiError> {
    match given {
        None => Ok((default, false)),
        Some(0) => Err(ApiError::invalid_param(
            "max_tokens",
            "`max_tokens` must be at least 1",
        )),
        Some(n) => Ok((usize::try_from(n).unwrap_or(usize::MAX), true)),
    }
}

fn content_text(c: &Option<Content>) -> Result<String, ApiError> {
    match c {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t.clone()),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => out.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::invalid_param(
                            "messages",
                            format!("content parts of type `{kind}` are not supported (text only)"),
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Tokenizes rendered or raw text, adding BOS unless the text already starts with it.
fn tokenize(engine: &Engine, text: &str) -> Result<Vec<u32>, ApiError> {
    let tok = engine.tokenizer();
    let bos_text = tok.bos().and_then(|b| tok.token_text(b)).unwrap_or("");
    let add_special = bos_text.is_empty() || !text.starts_with(bos_text);
    let tokens = tok
        .encode(text, add_special, true)
        .map_err(|e| ApiError::invalid(format!("cannot tokenize the prompt: {e}")))?;
    if tokens.is_empty() {
        return Err(ApiError::invalid_param("prompt", "the prompt is empty"));
    }
    Ok(tokens)
}

/// A chat request, prepared. `slot_context` bounds a request without `max_tokens`.
pub fn chat(
    req: ChatRequest,
    body: Value,
    engine: &Engine,
    vocab: &GrammarVocab,
    model: &str,
    slot_context: usize,
) -> Result<Prepared, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param("messages", "`messages` is empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::invalid_param(
                    "messages",
                    format!("role `{other}` is not supported (system, developer, user, assistant)"),
                ))
            }
        };
        messages.push(ChatMessage::new(role, content_text(&m.content)?));
    }
    let text = engine.render_chat(&messages, true).map_err(|e| {
        ApiError::invalid_param(
            "messages",
            format!("the chat template refused the conversation: {e}"),
        )
    })?;
    let prompt = tokenize(engine, &text)?;
    let mut params = sampling(&req.sampling)?;
    let (max, explicit) = max_tokens(
        req.max_completion_tokens.or(req.max_tokens),
        slot_context.saturating_sub(prompt.len()).max(1),
    )?;
    params.max_tokens = max;
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(n)) if n > MAX_TOP_LOGPROBS => {
            return Err(ApiError::invalid_param(
                "top_logprobs",
                format!("`top_logprobs` must be at most {MAX_TOP_LOGPROBS}, got {n}"),
            ))
        }
        (false, Some(_)) => {
            return Err(ApiError::invalid_param(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            ))
        }
        (true, n) => Some(n.unwrap_or(0) as usize),
        (false, None) => None,
    };
    params.top_logprobs = logprobs.unwrap_or(0);
    Ok(Prepared {
        endpoint: Endpoint::Chat,
        model: model.to_string(),
        prompt,
        prompt_text: text,
        params,
        explicit_max_tokens: explicit,
        constraint: constraint(req.response_format.as_ref(), vocab)?,
        logprobs,
        stream: req.sampling.stream.unwrap_or(false),
        body,
    })
}

/// A completion request, prepared.
pub fn completion(
    req: CompletionRequest,
    body: Value,
    engine: &Engine,
    vocab: &GrammarVocab,
    model: &str,
) -> Result<Prepared, ApiError> {
    let text = match req.prompt {
        PromptField::Text(t) => t,
        PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptField::Many(v) => {
            return Err(ApiError::invalid_param(
                "prompt",
                format!("one prompt per request is supported, got {}", v.len()),
            ))
        }
    };
    if req.echo == Some(true) {
        return Err(ApiError::invalid_param("echo", "`echo` is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_param(
            "suffix",
            "`suffix` is not supported",
        ));
    }
    let prompt = tokenize(engine, &text)?;
    let mut params = sampling(&req.sampling)?;
    // OpenAI's default of 16 bounds the request as a given value does.
    let (max, _) = max_tokens(req.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS)?;
    params.max_tokens = max;
    let logprobs = match req.logprobs {
        Some(n) if n > MAX_COMPLETION_LOGPROBS => {
            return Err(ApiError::invalid_param(
                "logprobs",
                format!("`logprobs` must be at most {MAX_COMPLETION_LOGPROBS}, got {n}"),
            ))
        }
        n => n.map(|n| n as usize),
    };
    params.top_logprobs = logprobs.unwrap_or(0);
    Ok(Prepared {
        endpoint: Endpoint::Completion,
        model: model.to_string(),
        prompt,
        prompt_text: text,
        params,
        explicit_max_tokens: true,
        constraint: constraint(req.response_format.as_ref(), vocab)?,
        logprobs,
        stream: req.sampling.stream.unwrap_or(false),
        body,
    })
}
