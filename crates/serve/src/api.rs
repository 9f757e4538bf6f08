//! The OpenAI wire format: the request fields people use and the response shapes the official
//! clients parse.
//!
//! Requests are read strictly: a field the server does not know is a 400 naming it (a typo such as
//! `max_token` would otherwise be ignored in silence and the user would wonder why generation
//! never stops), and a known field with a value the server cannot honour (`n` > 1, `echo`) is a
//! 400 too. Both endpoints share [`SamplingFields`] through `#[serde(flatten)]`, which serde's
//! `deny_unknown_fields` does not support, so [`parse_request`] checks the keys against each
//! request's field list first (a test keeps the lists equal to the structs). Responses carry OpenAI's fields plus one `shuku` object (route, timings), which the
//! official clients keep as an extra attribute.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Text or a list of stop strings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StopField {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl StopField {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

/// A message's content: a string or a list of parts (only text parts are understood).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    /// The part's kind; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One message of a chat request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChatMessageIn {
    /// `system`, `user`, `assistant` (or `developer`, read as `system`).
    pub role: String,
    /// The text (absent or null reads as empty).
    #[serde(default)]
    pub content: Option<Content>,
    /// An optional participant name (accepted, not rendered).
    #[serde(default)]
    pub name: Option<String>,
}

/// `{"include_usage": bool}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Accepted for compatibility; usage is always sent with the last chunk.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// `response_format`: free text, any JSON object, or a JSON schema.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `json_schema`: `{name, schema, strict, description}`.
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
}

/// The `json_schema` member of a `response_format`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    /// The schema's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
    /// The schema itself.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Accepted; output always follows the schema strictly.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// The sampling fields both endpoints share.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SamplingFields {
    /// Softmax temperature (0: greedy). Absent: the engine's default chain.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (a llama.cpp extension).
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Minimum probability relative to the most likely token (a llama.cpp extension).
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Seed of the sampler: the same request with the same seed gives the same output.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Penalty on tokens by how often they appeared.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Penalty on tokens that appeared at all.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// llama.cpp's repetition penalty.
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<StopField>,
    /// Completions to return; only 1 is supported.
    #[serde(default)]
    pub n: Option<u32>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// An end-user id (accepted, not used).
    #[serde(default)]
    pub user: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatRequest {
    /// The model name (any name is accepted: the server has one model).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessageIn>,
    /// Most tokens to generate (absent: until the end of generation or of the context).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Newer name of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Return each token's log-probability.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// With `logprobs`: how many alternatives per position (0–20).
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    /// Constrain the output (`json_object`, `json_schema`).
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// Sampling, stopping and streaming.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// A completion prompt: text, or a list holding one text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PromptField {
    /// The prompt.
    Text(String),
    /// A batch of prompts (only one is supported).
    Many(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionRequest {
    /// The model name (any name is accepted).
    #[serde(default)]
    pub model: Option<String>,
    /// The text to continue.
    pub prompt: PromptField,
    /// Most tokens to generate (OpenAI's default: 16).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Return the log-probabilities of this many alternatives per position (0–5) along with each
    /// token's own.
    #[serde(default)]
    pub logprobs: Option<u32>,
    /// Return the prompt too (only `false` is supported).
    #[serde(default)]
    pub echo: Option<bool>,
    /// Text after the completion (not supported).
    #[serde(default)]
    pub suffix: Option<String>,
    /// Constrain the output (a shuku and llama.cpp extension on this endpoint).
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// Sampling, stopping and streaming.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// Fields of [`SamplingFields`].
const SAMPLING_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repeat_penalty",
    "stop",
    "n",
    "stream",
    "stream_options",
    "user",
];

/// A request body with its own fields and the shared [`SamplingFields`].
pub trait RequestBody: serde::de::DeserializeOwned {
    /// The body's own top-level fields.
    const FIELDS: &'static [&'static str];
}

impl RequestBody for ChatRequest {
    const FIELDS: &'static [&'static str] = &[
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "logprobs",
        "top_logprobs",
        "response_format",
    ];
}

impl RequestBody for CompletionRequest {
    const FIELDS: &'static [&'static str] = &[
        "model",
        "prompt",
        "max_tokens",
        "logprobs",
        "echo",
        "suffix",
        "response_format",
    ];
}

/// Parses a request body: JSON, an object, no unknown field, every field of the right type.
/// Returns the request and the body as JSON; the error is one line naming what is wrong.
pub fn parse_request<T: RequestBody>(body: &[u8]) -> Result<(T, Value), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let Value::Object(map) = &value else {
        return Err("the body must be a JSON object".into());
    };
    if let Some(k) = map
        .keys()
        .find(|k| !T::FIELDS.contains(&k.as_str()) && !SAMPLING_FIELDS.contains(&k.as_str()))
    {
        return Err(format!("unknown field `{k}`"));
    }
    let request =
        serde_json::from_value(value.clone()).map_err(|e| format!("invalid request: {e}"))?;
    Ok((request, value))
}

/// Token counts of a response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

impl Usage {
    /// Counts for a prompt and a completion.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// A token with its log-probability, as chat logprobs list them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Natural log of its probability.
    pub logprob: f32,
    /// Its UTF-8 bytes (a token may hold part of a character).
    pub bytes: Vec<u8>,
}

/// One generated token in chat logprobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Natural log of its probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely alternatives at this position.
    pub top_logprobs: Vec<TopLogprob>,
}

/// Chat logprobs: `{"content": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<TokenLogprob>,
}

/// Completion logprobs (the legacy layout).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CompletionLogprobs {
    /// Each token's text.
    pub tokens: Vec<String>,
    /// Each token's log-probability.
    pub token_logprobs: Vec<f32>,
    /// Per position, the alternatives' log-probabilities by text.
    pub top_logprobs: Vec<serde_json::Map<String, Value>>,
    /// Each token's byte offset in the completion text.
    pub text_offset: Vec<usize>,
}

/// What the server adds to each response: how it was answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ShukuInfo {
    /// `local`, `upstream` or `cache`.
    pub route: String,
    /// Why it took that route, when it was not the plain local one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The local answer's confidence (the router's signal), when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// Milliseconds to the first token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Decode speed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Prompt tokens taken from a cached prefix instead of evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_prompt_tokens: Option<usize>,
}

/// The assistant's message in a chat response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// One choice of a chat response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatChoice {
    /// Always 0.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// A chat response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatResponse {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's name.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
    /// How it was answered.
    pub shuku: ShukuInfo,
}

/// One choice of a completion response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionChoice {
    /// The continuation.
    pub text: String,
    /// Always 0.
    pub index: u32,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// A completion response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionResponse {
    /// `cmpl-…`.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's name.
    pub model: String,
    /// One choice.
    pub choices: Vec<CompletionChoice>,
    /// Token counts.
    pub usage: Usage,
    /// How it was answered.
    pub shuku: ShukuInfo,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    fn sorted(a: &[&[&str]]) -> Vec<String> {
        let mut k: Vec<String> = a.concat().iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    }

    fn full_sampling() -> SamplingFields {
        SamplingFields {
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(4),
            min_p: Some(0.1),
            seed: Some(1),
            frequency_penalty: Some(0.0),
            presence_penalty: Some(0.0),
            repeat_penalty: Some(1.0),
            stop: Some(StopField::One("x".into())),
            n: Some(1),
            stream: Some(false),
            stream_options: Some(StreamOptions {
                include_usage: None,
            }),
            user: Some("u".into()),
        }
    }

    #[test]
    fn field_lists_equal_the_structs() {
        let chat = ChatRequest {
            model: Some("m".into()),
            messages: vec![],
            max_tokens: Some(1),
            max_completion_tokens: Some(1),
            logprobs: Some(true),
            top_logprobs: Some(1),
            response_format: None,
            sampling: full_sampling(),
        };
        let mut v = serde_json::to_value(&chat).unwrap();
        v["response_format"] = serde_json::json!({"type": "text"});
        assert_eq!(keys(v), sorted(&[ChatRequest::FIELDS, SAMPLING_FIELDS]));
        let completion = CompletionRequest {
            model: Some("m".into()),
            prompt: PromptField::Text("p".into()),
            max_tokens: Some(1),
            logprobs: Some(1),
            echo: Some(false),
            suffix: Some(String::new()),
            response_format: None,
            sampling: full_sampling(),
        };
        let mut v = serde_json::to_value(&completion).unwrap();
        v["response_format"] = serde_json::json!({"type": "text"});
        assert_eq!(
            keys(v),
            sorted(&[CompletionRequest::FIELDS, SAMPLING_FIELDS])
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse_request::<ChatRequest>(
            br#"{"messages": [{"role": "user", "content": "hi"}], "max_token": 5}"#,
        )
        .unwrap_err();
        assert!(e.contains("`max_token`"), "{e}");
        let e = parse_request::<ChatRequest>(br#"{"messages": 3}"#).unwrap_err();
        assert!(e.contains("invalid request"), "{e}");
        let e = parse_request::<ChatRequest>(b"[1]").unwrap_err();
        assert!(e.contains("object"), "{e}");
        let e = parse_request::<ChatRequest>(b"{\"messages\": [").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse_request::<ChatRequest>(
            br#"{"messages": [{"role": "user", "content": "hi", "colour": 1}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let (ok, _): (ChatRequest, _) = parse_request(
            br#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "temperature": 0, "stop": "x", "stream": true, "stream_options": {"include_usage": true}}"#,
        )
        .unwrap();
        assert_eq!(ok.sampling.stop, Some(StopField::One("x".into())));
        assert_eq!(ok.sampling.temperature, Some(0.0));
    }
}
