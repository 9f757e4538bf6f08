//! The GGUF inference engine: loads a model, keeps its weights in the memory map, runs the
//! transformer on the CPU.
//!
//! ```no_run
//! use shuku_infer::{Engine, EngineOptions};
//! let engine = Engine::load("model.gguf", EngineOptions { threads: 4, context: 2048, ..Default::default() })?;
//! let prompt = engine.tokenizer().encode("The capital of France is", true, true)?;
//! let ids = engine.generate_greedy(&prompt, 16)?;
//! println!("{}", engine.tokenizer().decode(&ids));
//! # Ok::<(), shuku_infer::EngineError>(())
//! ```
//!
//! Modules: `config` (hyper-parameters), `weights` (tensor lookup and validation), `kernels`
//! (matrix products over the mapped blocks, the crate's only `unsafe`), `ops` (norms, RoPE,
//! activations), `rope_factors` (which RoPE frequency factors a sequence uses), `attention` (KV
//! cache and attention), `session` (per-sequence state).

mod attention;
mod config;
mod error;
pub mod kernels;
mod ops;
mod rope_factors;
mod session;
mod weights;

use std::path::Path;

use shuku_gguf::GgufFile;

use crate::tokenizer::Tokenizer;
use attention::{attend, AttnShape};
pub use config::{Arch, LayerConfig, ModelConfig, RopeScaling, RopeStyle};
pub use error::{EngineError, Result};
use kernels::QActs;
use ops::Rope;
pub use session::Session;
use weights::{TensorRef, Weights};

/// How to run a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Worker threads for the matrix products (0: one per available core).
    pub threads: usize,
    /// Default context length of new sessions (0: the model's trained context). Longer contexts
    /// than the model was trained for are allowed, as in llama.cpp, but quality degrades.
    pub context: usize,
    /// Most tokens one forward pass evaluates (llama.cpp's `n_ubatch`; 0: 512). Longer batches
    /// are split, which bounds the activations' memory, and sliding-window layers keep only
    /// `window + ubatch − 1` positions of keys and values.
    pub ubatch: usize,
}

/// llama.cpp's default `n_ubatch`.
pub const DEFAULT_UBATCH: usize = 512;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: 0,
            context: 4096,
            ubatch: DEFAULT_UBATCH,
        }
    }
}

/// A loaded model: the mapped file, its configuration, tokenizer and worker threads.
pub struct Engine {
    file: GgufFile,
    config: ModelConfig,
    weights: Weights,
    tokenizer: Tokenizer,
    pool: rayon::ThreadPool,
    context: usize,
    ubatch: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("file", &self.file.path())
            .field("arch", &self.config.arch)
            .field("context", &self.context)
            .finish()
    }
}

impl Engine {
    /// Maps `path`, reads the configuration and tokenizer, and checks every tensor the forward
    /// pass needs. No weight is copied.
    pub fn load(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        let file = GgufFile::open(path)?;
        Engine::from_file(file, options)
    }

    /// Like [`Engine::load`] for an already opened file.
    pub fn from_file(file: GgufFile, options: EngineOptions) -> Result<Engine> {
        let config = ModelConfig::from_gguf(&file)?;
        let weights = Weights::load(&file, &config)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("shuku-infer-{i}"))
            .build()
            .map_err(|e| EngineError::ThreadPool {
                threads,
                why: e.to_string(),
            })?;
        let context = match options.context {
            0 => config.n_ctx_train.max(1),
            c => c,
        };
        let ubatch = match options.ubatch {
            0 => DEFAULT_UBATCH,
            u => u,
        };
        Ok(Engine {
            file,
            config,
            weights,
            tokenizer,
            pool,
            context,
            ubatch,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The underlying file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Default context length of new sessions.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Logits per position.
    pub fn vocab_size(&self) -> usize {
        self.config.n_vocab
    }

    /// A new session with the engine's default context.
    pub fn new_session(&self) -> Session {
        Session::new(&self.config, self.context, self.ubatch)
    }

    /// A new session holding `n_ctx` positions.
    pub fn new_session_with_context(&self, n_ctx: usize) -> Session {
        Session::new(&self.config, n_ctx, self.ubatch)
    }

    /// Evaluates `tokens` after what `session` holds, in batches of at most
    /// [`EngineOptions::ubatch`] tokens, and returns the logits of the last position (`vocab`
    /// values), or of every position (`tokens.len() × vocab`, row-major) when `all_logits` is set.
    pub fn forward(
        &self,
        session: &mut Session,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("no tokens to evaluate".into()));
        }
        let needed = session.pos + tokens.len();
        if needed > session.context() {
            return Err(EngineError::ContextOverflow {
                needed,
                context: session.context(),
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.n_vocab) {
            return Err(EngineError::TokenOutOfRange {
                token: bad,
                vocab: self.config.n_vocab,
            });
        }
        let mut logits = Vec::new();
        for batch in tokens.chunks(self.ubatch) {
            let out = self
                .pool
                .install(|| self.forward_batch(session, batch, all_logits));
            session.pos += batch.len();
            session.tokens.extend_from_slice(batch);
            if all_logits {
                logits.extend(out);
            } else {
                logits = out;
            }
        }
        Ok(logits)
    }

    /// Greedy decoding: evaluates `prompt` in a fresh session, then appends the most likely token
    /// up to `n` times, stopping before an end-of-generation token (which is not returned).
    pub fn generate_greedy(&self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut session = self.new_session_with_context((prompt.len() + n).max(1));
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return Ok(out);
        }
        let mut logits = self.forward(&mut session, prompt, false)?;
        loop {
            let next = argmax(&logits);
            if self.tokenizer.is_eog(next) {
                break;
            }
            out.push(next);
            if out.len() == n {
                break;
            }
            logits = self.forward(&mut session, &[next], false)?;
        }
        Ok(out)
    }

    fn mat<'a>(&'a self, t: &TensorRef) -> kernels::QMatrix<'a> {
        t.matrix(self.file.bytes())
    }

    /// The transformer over one batch; runs inside the engine's thread pool.
    fn forward_batch(&self, session: &mut Session, tokens: &[u32], all_logits: bool) -> Vec<f32> {
        let cfg = &self.config;
        let w = &self.weights;
        let n = tokens.len();
        let e = cfg.n_embd;
        let pos0 = session.pos;

        let mut x = vec![0f32; n * e];
        let embd = self.mat(&w.token_embd);
        for (row, &t) in x.chunks_exact_mut(e).zip(tokens) {
            embd.dequantize_row(t as usize, row);
            if let Some(s) = cfg.embd_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }

        // LongRoPE picks its factors from the sequence's context, as llama.cpp from `n_ctx_seq`.
        let rope_factors = w.rope_factors.select(session.context(), cfg.n_ctx_orig);
        // One table per (base, scale) pair: Gemma 3's local and global layers differ in both.
        let mut ropes: Vec<((f32, f32), Rope)> = Vec::new();
        let mut h = vec![0f32; n * e];
        for (il, (lw, lc)) in w.layers.iter().zip(&cfg.layers).enumerate() {
            let key = (lc.rope_base, lc.rope_freq_scale);
            if !ropes.iter().any(|(k, _)| *k == key) {
                let r = Rope::new(
                    pos0,
                    n,
                    cfg.n_rot,
                    lc.rope_base,
                    lc.rope_freq_scale,
                    rope_factors,
                    cfg.rope_attn_factor,
                );
                ropes.push((key, r));
            }
            let rope = ropes.iter().find(|(k, _)| *k == key).map(|(_, r)| r);

            // Attention.
            h.copy_from_slice(&x);
            ops::rms_norm(&mut h, &lw.attn_norm, cfg.rms_eps);
            let (mut q, mut k, mut v) = self.project3(&h, n, [&lw.wq, &lw.wk, &lw.wv]);
            for (t, b) in [(&mut q, &lw.bq), (&mut k, &lw.bk), (&mut v, &lw.bv)] {
                if let Some(b) = b {
                    ops::add_bias(t, b);
                }
            }
            if let Some(qn) = &lw.q_norm {
                ops::rms_norm(&mut q, qn, cfg.rms_eps);
            }
            if let Some(kn) = &lw.k_norm {
                ops::rms_norm(&mut k, kn, cfg.rms_eps);
            }
            if let Some(rope) = rope {
                let (qw, kw) = (lc.n_head * cfg.head_dim, lc.n_head_kv * cfg.head_dim);
                for t in 0..n {
                    rope.apply(
                        &mut q[t * qw..(t + 1) * qw],
                        t,
                        cfg.head_dim,
                        cfg.rope_style,
                    );
                    rope.apply(
                        &mut k[t * kw..(t + 1) * kw],
                        t,
                        cfg.head_dim,
                        cfg.rope_style,
                    );
                }
            }
            // Gemma and Phi-3 scale Q before attention (llama.cpp's graphs do the same, then attend
            // with scale 1); the others scale the scores.
            let fa_scale = if cfg.arch.scales_q() {
                q.iter_mut().for_each(|v| *v *= cfg.attn_scale);
                1.0
            } else {
                cfg.attn_scale
            };
            let cache = &mut session.layers[il];
            cache.store(pos0, &k, &v);
            let mut att = vec![0f32; n * lc.n_head * cfg.head_dim_v];
            let shape = AttnShape {
                n_head: lc.n_head,
                n_head_kv: lc.n_head_kv,
                head_dim: cfg.head_dim,
                head_dim_v: cfg.head_dim_v,
                scale: fa_scale,
                window: lc.sliding_window,
            };
            attend(cache, &q, pos0, shape, &mut att);
            let mut o = vec![0f32; n * e];
            self.mat(&lw.wo).matmul(&att, n, &mut o);
            if let Some(b) = &lw.bo {
                ops::add_bias(&mut o, b);
            }
            if let Some(pn) = &lw.post_attn_norm {
                ops::rms_norm(&mut o, pn, cfg.rms_eps);
            }
            ops::add_in_place(&mut x, &o);

            // Feed-forward.
            h.copy_from_slice(&x);
            ops::rms_norm(&mut h, &lw.ffn_norm, cfg.rms_eps);
            let (mut g, u) = self.project2(&h, n, [&lw.gate, &lw.up]);
            match cfg.arch {
                Arch::Gemma3 => ops::geglu(&mut g, &u),
                Arch::Llama | Arch::Qwen2 | Arch::Qwen3 | Arch::Phi3 => ops::swiglu(&mut g, &u),
            }
            let mut d = vec![0f32; n * e];
            self.mat(&lw.down).matmul(&g, n, &mut d);
            if let Some(pn) = &lw.post_ffn_norm {
                ops::rms_norm(&mut d, pn, cfg.rms_eps);
            }
            ops::add_in_place(&mut x, &d);
        }

        let (rows, m) = if all_logits {
            (x, n)
        } else {
            (x[(n - 1) * e..].to_vec(), 1)
        };
        let mut rows = rows;
        ops::rms_norm(&mut rows, &w.output_norm, cfg.rms_eps);
        let mut logits = vec![0f32; m * cfg.n_vocab];
        self.mat(&w.output).matmul(&rows, m, &mut logits);
        if let Some(c) = cfg.final_logit_softcap {
            ops::softcap(&mut logits, c);
        }
        logits
    }

    /// Three projections of the same input, converting the activations once per weight type.
    fn project3(&self, x: &[f32], n: usize, w: [&TensorRef; 3]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut outs = self.project(x, n, &w);
        let c = outs.pop().unwrap_or_default();
        let b = outs.pop().unwrap_or_default();
        let a = outs.pop().unwrap_or_default();
        (a, b, c)
    }

    fn project2(&self, x: &[f32], n: usize, w: [&TensorRef; 2]) -> (Vec<f32>, Vec<f32>) {
        let mut outs = self.project(x, n, &w);
        let b = outs.pop().unwrap_or_default();
        let a = outs.pop().unwrap_or_default();
        (a, b)
    }

    fn project(&self, x: &[f32], n: usize, ws: &[&TensorRef]) -> Vec<Vec<f32>> {
        let mut cached: Vec<(shuku_gguf::GgmlType, QActs)> = Vec::new();
        ws.iter()
            .map(|t| {
                let m = self.mat(t);
                let mut out = vec![0f32; n * m.rows()];
                let vdt = vec_dot_class(m.ttype());
                match cached.iter().find(|(c, _)| vec_dot_class(*c) == vdt) {
                    Some((_, a)) => m.matmul_q(a, n, &mut out),
                    None => {
                        let a = m.quantize_acts(x, n);
                        m.matmul_q(&a, n, &mut out);
                        cached.push((m.ttype(), a));
                    }
                }
                out
            })
            .collect()
    }
}

/// Weight types whose activations are converted the same way share one conversion.
fn vec_dot_class(t: shuku_gguf::GgmlType) -> u8 {
    use shuku_gguf::GgmlType as G;
    match t {
        G::F32 => 0,
        G::F16 => 1,
        G::BF16 => 2,
        G::Q4_0 | G::Q5_0 | G::Q8_0 => 3,
        G::Q4_1 | G::Q5_1 => 4,
        _ => 5,
    }
}

/// Index of the largest value (the first one on ties, as llama.cpp's greedy sampler).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

impl shuku_eval::LogitsSource for Engine {
    fn vocab_size(&self) -> usize {
        self.config.n_vocab
    }

    fn logits(&mut self, tokens: &[u32]) -> std::result::Result<Vec<f32>, shuku_eval::SourceError> {
        let mut session = self.new_session_with_context(tokens.len().max(1));
        Ok(self.forward(&mut session, tokens, true)?)
    }
}
