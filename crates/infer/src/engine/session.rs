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
    n_ctx: usize,
}

impl Session {
    /// An empty session holding up to `n_ctx` positions.
    pub(crate) fn new(cfg: &ModelConfig, n_ctx: usize) -> Session {
        let layers = cfg
            .layers
            .iter()
            .map(|l| {
                LayerCache::new(
                    n_ctx,
                    l.n_head_kv * cfg.head_dim,
                    l.n_head_kv * cfg.head_dim_v,
                )
            })
            .collect();
        Session {
            layers,
            pos: 0,
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
    pub fn truncate(&mut self, len: usize) {
        self.pos = self.pos.min(len);
    }

    /// Empties the session.
    pub fn clear(&mut self) {
        self.pos = 0;
    }

    /// Bytes held by the KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }
}
