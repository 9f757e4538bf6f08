//! The hybrid edge → cloud router: answer locally, escalate to an upstream OpenAI-compatible
//! server (llama-server, vLLM, another `shuku serve`) when the local answer is not good enough or
//! cannot be produced, and keep an exact-response cache in front of both.
//!
//! A request goes upstream when
//! * it asks for it (`x-shuku-route: upstream`),
//! * its prompt and `max_tokens` do not fit the local context,
//! * the local answer's confidence is under the threshold ([`Signal`]: the mean token
//!   log-probability, or a low quantile of them — the mean is length-biased: a long answer with one
//!   wrong turn averages it away, a quantile does not),
//! * or the local model could not finish a document under the request's JSON schema.
//!
//! When the upstream is down or answers with an error, the local answer is returned and the
//! response says so (`shuku.reason`); a request the edge can answer never fails because of the
//! upstream.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use shuku_infer::GeneratedToken;

use crate::api::Usage;
use crate::respond::{Answer, Endpoint};

/// Which number summarises a local answer's confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// Mean log-probability of the generated tokens.
    MeanLogprob,
    /// The `q` quantile (0–1) of the tokens' log-probabilities, e.g. 0.1.
    Quantile(f32),
}

impl std::str::FromStr for Signal {
    type Err = String;

    /// `mean`, or `pNN` for the NN-th percentile (`p10`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "mean" {
            return Ok(Signal::MeanLogprob);
        }
        s.strip_prefix('p')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&n| n <= 100)
            .map(|n| Signal::Quantile(n as f32 / 100.0))
            .ok_or_else(|| format!("`{s}` is not a signal (mean, or pNN such as p10)"))
    }
}

impl Signal {
    /// The signal over `tokens` (end-of-generation tokens excluded); `None` when nothing was
    /// generated.
    pub fn of(self, tokens: &[GeneratedToken]) -> Option<f32> {
        let mut lps: Vec<f32> = tokens
            .iter()
            .filter(|t| !t.is_eog)
            .map(|t| t.logprob)
            .collect();
        if lps.is_empty() {
            return None;
        }
        Some(match self {
            Signal::MeanLogprob => lps.iter().sum::<f32>() / lps.len() as f32,
            Signal::Quantile(q) => {
                lps.sort_by(f32::total_cmp);
                let i = ((q * lps.len() as f32).ceil() as usize).clamp(1, lps.len()) - 1;
                lps[i]
            }
        })
    }
}

/// Where to escalate and when.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterOptions {
    /// Base URL of the upstream server (`http://host:port`; `/v1/...` is appended).
    pub url: String,
    /// Bearer token for the upstream.
    pub api_key: Option<String>,
    /// Model name sent upstream (default: the client's).
    pub model: Option<String>,
    /// Escalate when the signal is below this (natural-log units); `None`: never for confidence.
    pub escalate_below: Option<f32>,
    /// The confidence signal.
    pub signal: Signal,
    /// How long to wait for the upstream.
    pub timeout: Duration,
}

/// The upstream client and policy.
#[derive(Debug)]
pub struct Router {
    options: RouterOptions,
    client: reqwest::Client,
}

impl Router {
    /// A router with its HTTP client.
    pub fn new(options: RouterOptions) -> Result<Router, String> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Router { options, client })
    }

    /// Its options.
    pub fn options(&self) -> &RouterOptions {
        &self.options
    }

    /// Why a local answer with this confidence should go upstream, if it should.
    pub fn should_escalate(&self, confidence: Option<f32>) -> Option<String> {
        let threshold = self.options.escalate_below?;
        let c = confidence?;
        (c < threshold).then(|| format!("low confidence ({c:.3} < {threshold})"))
    }

    /// The signal of a local answer.
    pub fn confidence(&self, tokens: &[GeneratedToken]) -> Option<f32> {
        self.options.signal.of(tokens)
    }

    /// Sends the request upstream (never streamed) and reads its answer.
    pub async fn ask(&self, endpoint: Endpoint, body: &Value) -> Result<(Answer, String), String> {
        let mut body = body.clone();
        if let Value::Object(map) = &mut body {
            map.insert("stream".into(), Value::Bool(false));
            map.remove("stream_options");
            if let Some(m) = &self.options.model {
                map.insert("model".into(), Value::String(m.clone()));
            }
        }
        let url = format!(
            "{}{}",
            self.options.url.trim_end_matches('/'),
            endpoint.path()
        );
        let mut request = self.client.post(&url).json(&body);
        if let Some(key) = &self.options.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("upstream {url} unreachable: {e}"))?;
        let status = response.status();
        let value: Value = response
            .json()
            .await
            .map_err(|e| format!("upstream {url} sent no JSON ({status}): {e}"))?;
        if !status.is_success() {
            let msg = value["error"]["message"].as_str().unwrap_or("no message");
            return Err(format!("upstream {url} answered {status}: {msg}"));
        }
        answer_from_upstream(endpoint, &value).map(|a| {
            let model = value["model"].as_str().unwrap_or("upstream").to_string();
            (a, model)
        })
    }
}

/// Reads an OpenAI response body into an [`Answer`].
pub fn answer_from_upstream(endpoint: Endpoint, value: &Value) -> Result<Answer, String> {
    let choice = &value["choices"][0];
    let text = match endpoint {
        Endpoint::Chat => choice["message"]["content"].as_str(),
        Endpoint::Completion => choice["text"].as_str(),
    }
    .ok_or("the upstream's answer has no text")?
    .to_string();
    let usage: Usage = serde_json::from_value(value["usage"].clone()).unwrap_or_default();
    Ok(Answer {
        text,
        finish_reason: choice["finish_reason"]
            .as_str()
            .unwrap_or("stop")
            .to_string(),
        usage,
        tokens: Vec::new(),
    })
}

/// A cached answer and the model that produced it.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    /// The answer.
    pub answer: Answer,
    /// Who produced it.
    pub model: String,
    /// Its original route.
    pub route: String,
}

/// Exact-response cache of deterministic requests (temperature 0 or a seed), keyed by the
/// endpoint and the request body with its keys sorted and the fields that do not change the answer
/// (`stream`, `stream_options`, `user`) removed; least recently used evicted.
#[derive(Debug)]
pub struct ExactCache {
    capacity: usize,
    entries: Mutex<VecDeque<(String, CachedAnswer)>>,
}

impl ExactCache {
    /// A cache of at most `capacity` answers (0: off).
    pub fn new(capacity: usize) -> ExactCache {
        ExactCache {
            capacity,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// The key of a request, or `None` when its answer is not reproducible (sampling without a
    /// seed) or the cache is off.
    pub fn key(&self, endpoint: Endpoint, body: &Value) -> Option<String> {
        if self.capacity == 0 {
            return None;
        }
        let greedy = body["temperature"].as_f64().is_some_and(|t| t <= 0.0);
        if !greedy && body["seed"].is_null() {
            return None;
        }
        let mut b = body.clone();
        if let Value::Object(map) = &mut b {
            for k in ["stream", "stream_options", "user"] {
                map.remove(k);
            }
        }
        // serde_json's map keeps keys sorted, so equal requests print equal.
        Some(format!("{}:{b}", endpoint.name()))
    }

    /// The answer cached under `key` (it becomes the most recently used).
    pub fn get(&self, key: &str) -> Option<CachedAnswer> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let i = e.iter().position(|(k, _)| k == key)?;
        let entry = e.remove(i)?;
        let found = entry.1.clone();
        e.push_front(entry);
        Some(found)
    }

    /// Stores an answer.
    pub fn put(&self, key: String, answer: CachedAnswer) {
        if self.capacity == 0 {
            return;
        }
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|(k, _)| *k != key);
        e.push_front((key, answer));
        e.truncate(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(lp: f32) -> GeneratedToken {
        GeneratedToken {
            id: 1,
            text_piece: String::new(),
            logprob: lp,
            top_logprobs: Vec::new(),
            is_eog: false,
        }
    }

    #[test]
    fn signals() {
        let t: Vec<_> = [-0.1, -0.2, -3.0, -0.1].into_iter().map(tok).collect();
        assert!((Signal::MeanLogprob.of(&t).unwrap() + 0.85).abs() < 1e-6);
        assert_eq!("p10".parse::<Signal>().unwrap().of(&t), Some(-3.0));
        assert_eq!("p50".parse::<Signal>().unwrap().of(&t), Some(-0.2));
        assert!("p200".parse::<Signal>().is_err() && "median".parse::<Signal>().is_err());
        assert_eq!(Signal::MeanLogprob.of(&[]), None);
    }

    #[test]
    fn cache_keys_only_reproducible_requests() {
        let c = ExactCache::new(2);
        let body = serde_json::json!({"messages": [], "temperature": 0, "stream": true});
        let same = serde_json::json!({"stream": false, "temperature": 0, "messages": []});
        assert_eq!(c.key(Endpoint::Chat, &body), c.key(Endpoint::Chat, &same));
        assert_ne!(
            c.key(Endpoint::Chat, &body),
            c.key(Endpoint::Completion, &body)
        );
        assert!(c
            .key(Endpoint::Chat, &serde_json::json!({"temperature": 0.7}))
            .is_none());
        assert!(c
            .key(
                Endpoint::Chat,
                &serde_json::json!({"temperature": 0.7, "seed": 3})
            )
            .is_some());
        let a = |t: &str| CachedAnswer {
            answer: Answer {
                text: t.into(),
                finish_reason: "stop".into(),
                usage: Usage::default(),
                tokens: vec![],
            },
            model: "m".into(),
            route: "local".into(),
        };
        c.put("a".into(), a("1"));
        c.put("b".into(), a("2"));
        assert!(c.get("a").is_some());
        c.put("c".into(), a("3"));
        assert!(c.get("b").is_none(), "least recently used goes first");
        assert_eq!(c.get("a").unwrap().answer.text, "1");
    }
}
