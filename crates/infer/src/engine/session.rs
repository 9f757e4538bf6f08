//! A conversation's state: the KV cache and the next position.
//!
//! Kept apart from the [`Engine`](super::Engine) so one loaded model can serve several sessions
//! (or fork one by cloning it) without reloading weights.

use super::attention::LayerCache;
use super::config::ModelConfig;

/// KV cache and position of one sequence.
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) pos: usize,
    /// The tokens evaluated so far, one per position.
    pub(crate) tokens: Vec<u32>,
    n_ctx: usize,
}

impl Session {
    /// An empty session holding up to `n_ctx` positions, evaluated in batches of at most `ubatch`
    /// tokens (sliding-window layers keep `window + ubatch − 1` positions).
    pub(crate) fn new(cfg: &ModelConfig, n_ctx: usize, ubatch: usize) -> Session {
        let layers = cfg
            .layers
            .iter()
            .map(|l| {
                LayerCache::new(
                    n_ctx,
                    l.n_head_kv * cfg.head_dim,
                    l.n_head_kv * cfg.head_dim_v,
                    l.sliding_window.map(|w| (w, ubatch)),
                )
            })
            .collect();
        Session {
            layers,
            pos: 0,
            tokens: Vec::new(),
            n_ctx,
        }
    }

    /// Positions filled so far (the position the next token will take).
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing has been evaluated yet.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Positions the session can hold.
    pub fn context(&self) -> usize {
        self.n_ctx
    }

    /// Forgets everything after the first `len` positions (e.g. to reuse a shared prompt prefix).
    /// A sliding-window layer keeps only its last positions; when it no longer holds the keys that
    /// position `len` attends to, the session forgets everything (as llama.cpp's SWA cache does).
    pub fn truncate(&mut self, len: usize) {
        let len = self.pos.min(len);
        self.pos = if self.layers.iter().all(|l| l.can_resume_at(len)) {
            len
        } else {
            0
        };
        self.tokens.truncate(self.pos);
    }

    /// Empties the session.
    pub fn clear(&mut self) {
        self.pos = 0;
        self.tokens.clear();
    }

    /// The tokens the session holds, in order (one per position).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Prepares the session for `prompt`: keeps the longest prefix it shares with what the session
    /// holds, forgets the rest, and returns how many positions were kept. At least one token of
    /// `prompt` is always left to evaluate (the next logits come from evaluating it), so a prompt
    /// equal to the held tokens keeps `prompt.len() - 1`; a sliding-window layer that no longer
    /// holds what the prefix's end attends to makes it keep nothing (see [`Session::truncate`]).
    pub fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let keep = common.min(prompt.len().saturating_sub(1));
        self.truncate(keep);
        self.pos
    }

    /// Bytes held by the KV cache now (it grows as positions are filled).
    pub fn cache_bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }

    /// Bytes the KV cache holds once the whole context is filled.
    pub fn max_cache_bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::max_bytes).sum()
    }
}
