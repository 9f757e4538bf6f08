//! Caches across requests.
//!
//! * [`PrefixCache`] keeps the session of the last request. A new prompt that shares a token
//!   prefix with it (the next turn of a chat re-sends the whole conversation) truncates the
//!   session to the common prefix and evaluates only the rest; the output is the same as with a
//!   fresh session, because the kept positions hold exactly what evaluating them again would give.
//! * [`ResponseCache`] remembers whole responses keyed by prompt tokens and parameters, for
//!   deterministic requests only (greedy, or a fixed seed), evicting the least recently used.

use std::collections::VecDeque;

use crate::engine::{Engine, Result, Session};
use crate::generate::{Generate, GeneratedToken, Generation, GenerationParams};

/// One session reused across requests whose prompts share a prefix.
#[derive(Debug)]
pub struct PrefixCache {
    session: Session,
}

impl PrefixCache {
    /// A cache holding an empty session of `engine`'s default context.
    pub fn new(engine: &Engine) -> PrefixCache {
        PrefixCache {
            session: engine.new_session(),
        }
    }

    /// A cache over an existing session (e.g. with another context length).
    pub fn with_session(session: Session) -> PrefixCache {
        PrefixCache { session }
    }

    /// The session (holding the last request's prompt and output).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Starts a generation for the full prompt `prompt`, reusing the longest prefix the session
    /// shares with it. The summary's `metrics.reused_tokens` says how much was reused, and
    /// `metrics.prompt_tokens` how much was evaluated.
    pub fn generate<'e, 's>(
        &'s mut self,
        engine: &'e Engine,
        prompt: &[u32],
        params: GenerationParams,
    ) -> Result<Generate<'e, 's>> {
        let kept = self.session.reuse_prefix(prompt);
        engine.generate(&mut self.session, &prompt[kept..], params)
    }
}

/// A finished response as the cache keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    /// The streamed tokens.
    pub tokens: Vec<GeneratedToken>,
    /// The summary of the run that produced them.
    pub generation: Generation,
}

/// Responses of deterministic requests, least recently used evicted beyond `capacity`.
#[derive(Debug)]
pub struct ResponseCache {
    capacity: usize,
    /// Most recently used first.
    entries: VecDeque<(ResponseKey, CachedResponse)>,
}

/// The identity of a request: prompt tokens and every parameter that changes the output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResponseKey {
    prompt: Vec<u32>,
    params: String,
}

impl ResponseKey {
    fn new(prompt: &[u32], params: &GenerationParams) -> Option<ResponseKey> {
        if !params.is_deterministic() {
            return None;
        }
        // The seed does not matter to greedy sampling.
        let mut p = params.clone();
        if p.sampler.is_greedy() {
            p.seed = None;
        }
        Some(ResponseKey {
            prompt: prompt.to_vec(),
            params: format!("{p:?}"),
        })
    }
}

impl ResponseCache {
    /// A cache of at most `capacity` responses.
    pub fn new(capacity: usize) -> ResponseCache {
        ResponseCache {
            capacity,
            entries: VecDeque::new(),
        }
    }

    /// Responses held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached response to this request, if any (it becomes the most recently used).
    /// Non-deterministic requests are never found.
    pub fn get(&mut self, prompt: &[u32], params: &GenerationParams) -> Option<&CachedResponse> {
        let key = ResponseKey::new(prompt, params)?;
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        let entry = self.entries.remove(i)?;
        self.entries.push_front(entry);
        self.entries.front().map(|(_, r)| r)
    }

    /// Stores a response; ignored for non-deterministic requests.
    pub fn insert(&mut self, prompt: &[u32], params: &GenerationParams, response: CachedResponse) {
        let Some(key) = ResponseKey::new(prompt, params) else {
            return;
        };
        if self.capacity == 0 {
            return;
        }
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push_front((key, response));
        self.entries.truncate(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::FinishReason;
    use crate::metrics::GenerationMetrics;
    use crate::sampler::SamplerConfig;

    fn response(text: &str) -> CachedResponse {
        CachedResponse {
            tokens: vec![],
            generation: Generation {
                finish_reason: FinishReason::Length,
                tokens: vec![],
                text: text.into(),
                metrics: GenerationMetrics::default(),
            },
        }
    }

    #[test]
    fn response_cache_is_lru_and_deterministic_only() {
        let greedy = GenerationParams {
            sampler: SamplerConfig::greedy(),
            ..GenerationParams::default()
        };
        let mut c = ResponseCache::new(2);
        c.insert(&[1], &greedy, response("a"));
        c.insert(&[2], &greedy, response("b"));
        assert_eq!(c.get(&[1], &greedy).unwrap().generation.text, "a");
        c.insert(&[3], &greedy, response("c")); // evicts [2], the least recently used
        assert!(c.get(&[2], &greedy).is_none());
        assert!(c.get(&[1], &greedy).is_some());
        assert_eq!(c.len(), 2);
        // The seed is irrelevant to greedy requests.
        let seeded_greedy = GenerationParams {
            seed: Some(9),
            ..greedy.clone()
        };
        assert!(c.get(&[1], &seeded_greedy).is_some());

        let random = GenerationParams::default();
        c.insert(&[4], &random, response("d"));
        assert!(c.get(&[4], &random).is_none());
        let seeded = GenerationParams {
            seed: Some(1),
            ..GenerationParams::default()
        };
        c.insert(&[4], &seeded, response("e"));
        assert_eq!(c.get(&[4], &seeded).unwrap().generation.text, "e");
        let other_seed = GenerationParams {
            seed: Some(2),
            ..GenerationParams::default()
        };
        assert!(c.get(&[4], &other_seed).is_none());
    }
}
