//! Building responses: a whole answer as OpenAI's response object, and the same answer as the
//! stream of chunks a streaming client expects (live, token by token, or replayed from a finished
//! answer when it came from the cache or the upstream).

use serde_json::{json, Value};
use shuku_infer::{GeneratedToken, Tokenizer};

use crate::api::{
    unix_now, AssistantMessage, ChatChoice, ChatLogprobs, ChatResponse, CompletionChoice,
    CompletionLogprobs, CompletionResponse, ShukuInfo, TokenLogprob, TopLogprob, Usage,
};

/// Which endpoint a request came to: it decides the response's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

impl Endpoint {
    /// The path upstream.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completion => "/v1/completions",
        }
    }

    /// The name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completion => "completion",
        }
    }

    /// A fresh response id.
    pub fn new_id(self) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = match self {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        format!("{prefix}-{:x}{n:06x}", unix_now())
    }
}

/// A finished answer, whatever produced it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The text.
    pub text: String,
    /// OpenAI's finish reason.
    pub finish_reason: String,
    /// Token counts.
    pub usage: Usage,
    /// The generated tokens, when logprobs were asked for (local answers only).
    pub tokens: Vec<GeneratedToken>,
}

/// How logprobs were asked for: `None`, or with this many alternatives.
pub type LogprobRequest = Option<usize>;

fn piece(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.token_to_piece(id, false).to_vec();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Chat logprobs of `tokens`.
pub fn chat_logprobs(tok: &Tokenizer, tokens: &[GeneratedToken]) -> ChatLogprobs {
    ChatLogprobs {
        content: tokens
            .iter()
            .filter(|t| !t.is_eog)
            .map(|t| {
                let (token, bytes) = piece(tok, t.id);
                TokenLogprob {
                    token,
                    logprob: t.logprob,
                    bytes,
                    top_logprobs: t
                        .top_logprobs
                        .iter()
                        .map(|&(id, logprob)| {
                            let (token, bytes) = piece(tok, id);
                            TopLogprob {
                                token,
                                logprob,
                                bytes,
                            }
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

/// Completion logprobs of `tokens`, with offsets counted from `offset` bytes into the text.
pub fn completion_logprobs(
    tok: &Tokenizer,
    tokens: &[GeneratedToken],
    mut offset: usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for t in tokens.iter().filter(|t| !t.is_eog) {
        let (text, _) = piece(tok, t.id);
        out.text_offset.push(offset);
        offset += text.len();
        out.tokens.push(text);
        out.token_logprobs.push(t.logprob);
        out.top_logprobs.push(
            t.top_logprobs
                .iter()
                .map(|&(id, lp)| (piece(tok, id).0, json!(lp)))
                .collect(),
        );
    }
    out
}

/// The whole response object.
pub fn response(
    endpoint: Endpoint,
    id: &str,
    model: &str,
    answer: &Answer,
    logprobs: LogprobRequest,
    tok: &Tokenizer,
    shuku: ShukuInfo,
) -> Value {
    let value = match endpoint {
        Endpoint::Chat => serde_json::to_value(ChatResponse {
            id: id.into(),
            object: "chat.completion".into(),
            created: unix_now(),
            model: model.into(),
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: answer.text.clone(),
                },
                logprobs: logprobs.map(|_| chat_logprobs(tok, &answer.tokens)),
                finish_reason: answer.finish_reason.clone(),
            }],
            usage: answer.usage,
            shuku,
        }),
        Endpoint::Completion => serde_json::to_value(CompletionResponse {
            id: id.into(),
            object: "text_completion".into(),
            created: unix_now(),
            model: model.into(),
            choices: vec![CompletionChoice {
                text: answer.text.clone(),
                index: 0,
                logprobs: logprobs.map(|_| completion_logprobs(tok, &answer.tokens, 0)),
                finish_reason: answer.finish_reason.clone(),
            }],
            usage: answer.usage,
            shuku,
        }),
    };
    value.unwrap_or_else(|e| json!({"error": {"message": e.to_string()}}))
}

/// Builds the chunks of one streamed response.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    endpoint: Endpoint,
    id: String,
    model: String,
    created: u64,
    logprobs: LogprobRequest,
    /// Bytes of text sent so far (completion logprobs' offsets).
    sent: usize,
}

impl ChunkWriter {
    /// A writer for response `id`.
    pub fn new(endpoint: Endpoint, id: String, model: String, logprobs: LogprobRequest) -> Self {
        ChunkWriter {
            endpoint,
            id,
            model,
            created: unix_now(),
            logprobs,
            sent: 0,
        }
    }

    fn chunk(&self, choice: Value, extra: Option<(Usage, ShukuInfo)>) -> Value {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        let mut v = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if let Some((usage, shuku)) = extra {
            v["usage"] = json!(usage);
            v["shuku"] = json!(shuku);
        }
        v
    }

    /// The first chunk of a chat stream (the role); none for completions.
    pub fn opening(&self) -> Option<Value> {
        (self.endpoint == Endpoint::Chat).then(|| {
            self.chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
                None,
            )
        })
    }

    /// A chunk carrying `text` and, when asked for, the logprobs of `tokens`. None when there is
    /// nothing to send.
    pub fn text(
        &mut self,
        tok: &Tokenizer,
        text: &str,
        tokens: &[GeneratedToken],
    ) -> Option<Value> {
        let with_logprobs = self.logprobs.is_some() && tokens.iter().any(|t| !t.is_eog);
        if text.is_empty() && !with_logprobs {
            return None;
        }
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "delta": {"content": text},
                "logprobs": with_logprobs.then(|| chat_logprobs(tok, tokens)),
                "finish_reason": null,
            }),
            Endpoint::Completion => json!({
                "index": 0,
                "text": text,
                "logprobs": with_logprobs.then(|| completion_logprobs(tok, tokens, self.sent)),
                "finish_reason": null,
            }),
        };
        self.sent += text.len();
        Some(self.chunk(choice, None))
    }

    /// The last chunk: the finish reason, usage and how the answer was produced.
    pub fn closing(&self, finish_reason: &str, usage: Usage, shuku: ShukuInfo) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason})
            }
            Endpoint::Completion => {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish_reason})
            }
        };
        self.chunk(choice, Some((usage, shuku)))
    }

    /// A whole answer as chunks: opening, the text in one chunk, closing.
    pub fn replay(mut self, tok: &Tokenizer, answer: &Answer, shuku: ShukuInfo) -> Vec<Value> {
        let mut out: Vec<Value> = self.opening().into_iter().collect();
        out.extend(self.text(tok, &answer.text, &answer.tokens));
        out.push(self.closing(&answer.finish_reason, answer.usage, shuku));
        out
    }
}
