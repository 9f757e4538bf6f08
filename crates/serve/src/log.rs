//! The request log: one JSON object per line per request, appended to a file or written to
//! standard error. Prompts and answers are never logged unless the server was started with
//! `--log-prompts` (they may hold what users would not want kept).

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use crate::error::ServeError;

/// One request's line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogLine {
    /// Unix time in seconds, with milliseconds.
    pub time: f64,
    /// The response id.
    pub id: String,
    /// `chat` or `completion`.
    pub endpoint: String,
    /// The model that answered.
    pub model: String,
    /// The HTTP status.
    pub status: u16,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Prompt tokens reused from a slot's cache.
    pub reused_tokens: usize,
    /// Time in the queue.
    pub queue_ms: f64,
    /// Time to the first token.
    pub ttft_ms: Option<f64>,
    /// Decode speed.
    pub tokens_per_second: Option<f64>,
    /// Whole request.
    pub total_ms: f64,
    /// `local`, `upstream` or `cache`.
    pub route: String,
    /// Why that route.
    pub route_reason: Option<String>,
    /// Whether the exact-response cache answered.
    pub cache_hit: bool,
    /// `stop`, `length`, `timeout`, `cancelled`, ...
    pub finish_reason: String,
    /// The error message of a failed request.
    pub error: Option<String>,
    /// The prompt, only with `--log-prompts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The answer, only with `--log-prompts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// Where lines go.
pub struct RequestLog {
    out: Mutex<Box<dyn Write + Send>>,
    log_prompts: bool,
}

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLog")
            .field("log_prompts", &self.log_prompts)
            .finish()
    }
}

impl RequestLog {
    /// Appends to `path`, or writes to standard error when `None`.
    pub fn open(path: Option<&Path>, log_prompts: bool) -> Result<RequestLog, ServeError> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| ServeError::Log {
                        path: p.to_path_buf(),
                        source,
                    })?,
            ),
            None => Box::new(std::io::stderr()),
        };
        Ok(RequestLog {
            out: Mutex::new(out),
            log_prompts,
        })
    }

    /// Whether prompts and answers are logged.
    pub fn logs_prompts(&self) -> bool {
        self.log_prompts
    }

    /// Writes one line (prompt and answer dropped unless logging them was asked for).
    pub fn write(&self, mut line: LogLine) {
        if !self.log_prompts {
            line.prompt = None;
            line.answer = None;
        }
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// Now, in Unix seconds with milliseconds.
pub fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1e3)
}
