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
    /// Copy the weight matrices into the lane layout of the engine's kernels at load, and drop
    /// the file's pages of them (see `kernels::repack`); `false` reads every matrix from the
    /// mapped file, as `--no-repack`. No effect on CPUs without the lane kernels.
    pub repack: bool,
}

/// llama.cpp's default `n_ubatch`.
pub const DEFAULT_UBATCH: usize = 512;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: 0,
            context: 4096,
            ubatch: DEFAULT_UBATCH,
            repack: true,
        }
    }
}

/// A loaded model: the mapped file, its configuration, tokenizer and worker threads.
pub struct Engine {
    file: GgufFile,
    config: ModelConfig,
    weights: Weights,
    tokenizer: Tokenizer,
    pool: kernels::pool::Pool,
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
        let mut weights = Weights::load(&file, &config)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let pool = kernels::pool::Pool::new(threads, "shuku-infer").map_err(|e| {
            EngineError::ThreadPool {
                threads,
                why: e.to_string(),
            }
        })?;
        if options.repack {
            pool.install(|| weights.repack(&file));
        }
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

    /// Most tokens one forward pass evaluates ([`EngineOptions::ubatch`]).
    pub fn ubatch(&self) -> usize {
        self.ubatch
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
        self.check_fits(session, tokens)?;
        let mut logits = Vec::new();
        for batch in tokens.chunks(self.ubatch) {
            let mut segment = [Segment {
                session: &mut *session,
                tokens: batch,
            }];
            let out = self
                .pool
                .install(|| self.run_segments(&mut segment, all_logits));
            if all_logits {
                logits.extend(out);
            } else {
                logits = out;
            }
        }
        Ok(logits)
    }

    /// Evaluates several sequences in one pass (continuous batching): each item's tokens follow
    /// what its session holds, and the matrix products run over every item's rows together, so the
    /// weights are read once for the whole batch. Returns the logits of each item's last position
    /// (`vocab` values per item, in order). The output of each item is the same as evaluating it
    /// alone with [`Engine::forward`].
    ///
    /// The items must hold distinct sessions, at least one token each, and at most
    /// [`EngineOptions::ubatch`] tokens together.
    pub fn forward_batch(&self, batch: &mut [BatchItem<'_, '_>]) -> Result<Vec<Vec<f32>>> {
        let total: usize = batch.iter().map(|b| b.tokens.len()).sum();
        if total > self.ubatch {
            return Err(EngineError::InvalidRequest(format!(
                "a batch of {total} tokens is longer than the micro-batch of {}",
                self.ubatch
            )));
        }
        for item in batch.iter() {
            if item.tokens.is_empty() {
                return Err(EngineError::InvalidRequest("no tokens to evaluate".into()));
            }
            self.check_fits(item.session, item.tokens)?;
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut segments: Vec<Segment> = batch
            .iter_mut()
            .map(|b| Segment {
                session: &mut *b.session,
                tokens: b.tokens,
            })
            .collect();
        let logits = self
            .pool
            .install(|| self.run_segments(&mut segments, false));
        Ok(logits
            .chunks_exact(self.config.n_vocab)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Refuses tokens that would not fit the session or lie outside the vocabulary.
    fn check_fits(&self, session: &Session, tokens: &[u32]) -> Result<()> {
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
        Ok(())
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

    fn mat<'a>(&'a self, t: &'a TensorRef) -> kernels::QMatrix<'a> {
        t.matrix(self.file.bytes())
    }

    /// The transformer over the rows of several sequences; runs inside the engine's thread pool.
    /// The matrix products see all rows at once; norms and activations are per row; RoPE, the KV
    /// cache and attention are per segment, at each segment's own positions. Advances every
    /// segment's session and returns the logits of each segment's last row, in order (of every
    /// row when `all_logits` is set).
    fn run_segments(&self, segments: &mut [Segment<'_, '_>], all_logits: bool) -> Vec<f32> {
        let cfg = &self.config;
        let w = &self.weights;
        let n: usize = segments.iter().map(|s| s.tokens.len()).sum();
        let e = cfg.n_embd;
        // Row range of each segment within the batch.
        let spans: Vec<std::ops::Range<usize>> = segments
            .iter()
            .scan(0, |start, s| {
                let r = *start..*start + s.tokens.len();
                *start = r.end;
                Some(r)
            })
            .collect();

        let mut x = vec![0f32; n * e];
        let embd = self.mat(&w.token_embd);
        let tokens = segments.iter().flat_map(|s| s.tokens.iter());
        for (row, &t) in x.chunks_exact_mut(e).zip(tokens) {
            embd.dequantize_row(t as usize, row);
            if let Some(s) = cfg.embd_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }

        // One table per (base, scale) pair and segment: Gemma 3's local and global layers differ
        // in both, and each segment starts at its own position.
        let mut ropes: Vec<((f32, f32), Vec<Rope>)> = Vec::new();
        let mut h = vec![0f32; n * e];
        let mut b = LayerBuffers::default();
        for (il, (lw, lc)) in w.layers.iter().zip(&cfg.layers).enumerate() {
            let key = (lc.rope_base, lc.rope_freq_scale);
            if !ropes.iter().any(|(k, _)| *k == key) {
                let per_segment = segments
                    .iter()
                    .map(|s| {
                        // LongRoPE picks its factors from the sequence's context, as llama.cpp
                        // from `n_ctx_seq`.
                        let factors = w.rope_factors.select(s.session.context(), cfg.n_ctx_orig);
                        Rope::new(
                            s.session.pos,
                            s.tokens.len(),
                            cfg.n_rot,
                            lc.rope_base,
                            lc.rope_freq_scale,
                            factors,
                            cfg.rope_attn_factor,
                        )
                    })
                    .collect();
                ropes.push((key, per_segment));
            }
            let rope = ropes.iter().find(|(k, _)| *k == key).map(|(_, r)| r);

            // Attention.
            h.copy_from_slice(&x);
            ops::rms_norm(&mut h, &lw.attn_norm, cfg.rms_eps);
            self.project(
                &h,
                n,
                [&lw.wq, &lw.wk, &lw.wv],
                [&mut b.q, &mut b.k, &mut b.v],
                &mut b.acts,
            );
            let (q, k, v) = (&mut b.q, &mut b.k, &mut b.v);
            for (t, bias) in [(&mut *q, &lw.bq), (&mut *k, &lw.bk), (&mut *v, &lw.bv)] {
                if let Some(bias) = bias {
                    ops::add_bias(t, bias);
                }
            }
            if let Some(qn) = &lw.q_norm {
                ops::rms_norm(q, qn, cfg.rms_eps);
            }
            if let Some(kn) = &lw.k_norm {
                ops::rms_norm(k, kn, cfg.rms_eps);
            }
            if let Some(ropes) = rope {
                let (qw, kw) = (lc.n_head * cfg.head_dim, lc.n_head_kv * cfg.head_dim);
                for (rope, span) in ropes.iter().zip(&spans) {
                    let (a, b) = (span.start, span.end);
                    let (hd, style) = (cfg.head_dim, cfg.rope_style);
                    rope.apply_rows(&mut q[a * qw..b * qw], qw, hd, style);
                    rope.apply_rows(&mut k[a * kw..b * kw], kw, hd, style);
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
            let (qw, kw, vw) = (
                lc.n_head * cfg.head_dim,
                lc.n_head_kv * cfg.head_dim,
                lc.n_head_kv * cfg.head_dim_v,
            );
            let aw = lc.n_head * cfg.head_dim_v;
            let att = sized(&mut b.att, n * aw);
            let shape = AttnShape {
                n_head: lc.n_head,
                n_head_kv: lc.n_head_kv,
                head_dim: cfg.head_dim,
                head_dim_v: cfg.head_dim_v,
                scale: fa_scale,
                window: lc.sliding_window,
            };
            for (s, span) in segments.iter_mut().zip(&spans) {
                let pos0 = s.session.pos;
                let cache = &mut s.session.layers[il];
                let (a, b) = (span.start, span.end);
                cache.store(pos0, &k[a * kw..b * kw], &v[a * vw..b * vw]);
                attend(
                    cache,
                    &q[a * qw..b * qw],
                    pos0,
                    shape,
                    &mut att[a * aw..b * aw],
                );
            }
            self.project(&b.att, n, [&lw.wo], [&mut b.o], &mut b.acts);
            let o = &mut b.o;
            if let Some(bias) = &lw.bo {
                ops::add_bias(o, bias);
            }
            if let Some(pn) = &lw.post_attn_norm {
                ops::rms_norm(o, pn, cfg.rms_eps);
            }
            ops::add_in_place(&mut x, o);

            // Feed-forward.
            h.copy_from_slice(&x);
            ops::rms_norm(&mut h, &lw.ffn_norm, cfg.rms_eps);
            self.project(&h, n, [&lw.gate, &lw.up], [&mut b.g, &mut b.u], &mut b.acts);
            match cfg.arch {
                Arch::Gemma3 => ops::geglu(&mut b.g, &b.u),
                Arch::Llama | Arch::Qwen2 | Arch::Qwen3 | Arch::Phi3 => ops::swiglu(&mut b.g, &b.u),
            }
            self.project(&b.g, n, [&lw.down], [&mut b.d], &mut b.acts);
            let d = &mut b.d;
            if let Some(pn) = &lw.post_ffn_norm {
                ops::rms_norm(d, pn, cfg.rms_eps);
            }
            ops::add_in_place(&mut x, d);
        }

        for s in segments.iter_mut() {
            s.session.pos += s.tokens.len();
            s.session.tokens.extend_from_slice(s.tokens);
        }
        let (mut rows, m) = if all_logits {
            (x, n)
        } else {
            let last: Vec<f32> = spans
                .iter()
                .flat_map(|r| x[(r.end - 1) * e..r.end * e].iter().copied())
                .collect();
            (last, spans.len())
        };
        ops::rms_norm(&mut rows, &w.output_norm, cfg.rms_eps);
        let mut logits = vec![0f32; m * cfg.n_vocab];
        self.mat(&w.output).matmul(&rows, m, &mut logits);
        if let Some(c) = cfg.final_logit_softcap {
            ops::softcap(&mut logits, c);
        }
        logits
    }

    /// Projections of the same input `x` (`n` rows) into `outs` (resized to fit), converting the
    /// activations once per weight type into `converted` (one slot per type, reused from call to
    /// call).
    fn project<const M: usize>(
        &self,
        x: &[f32],
        n: usize,
        ws: [&TensorRef; M],
        outs: [&mut Vec<f32>; M],
        converted: &mut Vec<(u8, QActs)>,
    ) {
        let mats = ws.map(|t| self.mat(t));
        let mut done: Vec<u8> = Vec::with_capacity(M);
        for m in &mats {
            let class = vec_dot_class(m.ttype());
            if done.contains(&class) {
                continue;
            }
            done.push(class);
            let slot = match converted.iter().position(|(c, _)| *c == class) {
                Some(i) => &mut converted[i].1,
                None => {
                    converted.push((class, QActs::F32(Vec::new())));
                    &mut converted.last_mut().expect("just pushed").1
                }
            };
            m.quantize_acts_into(x, n, slot);
        }
        let converted = &*converted;
        let acts = |m: &kernels::QMatrix<'_>| {
            let class = vec_dot_class(m.ttype());
            converted
                .iter()
                .find(|(c, _)| *c == class)
                .map(|(_, a)| a)
                .expect("every class was converted above")
        };
        if n == 1 {
            // Decoding: every matrix in one parallel loop.
            let jobs = mats
                .iter()
                .zip(outs)
                .map(|(m, out)| (*m, acts(m), sized(out, m.rows())))
                .collect();
            kernels::matmul_many(jobs);
            return;
        }
        for (m, out) in mats.iter().zip(outs) {
            m.matmul_q(acts(m), n, sized(out, n * m.rows()));
        }
    }
}

/// The per-layer buffers of one forward pass, reused by every layer: a fresh buffer per layer
/// costs a memset and, past the allocator's mmap threshold, a page fault per page.
#[derive(Default)]
struct LayerBuffers {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    d: Vec<f32>,
    /// The activations converted for the products, one slot per vec-dot type.
    acts: Vec<(u8, QActs)>,
}

/// `buf` resized to `len` values (zeros only where it grows) as a slice; every user overwrites it.
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    buf
}

/// One sequence of a batch: its session and the tokens that follow what the session holds.
#[derive(Debug)]
pub struct BatchItem<'s, 't> {
    /// The sequence's state; advanced past `tokens`.
    pub session: &'s mut Session,
    /// Tokens to evaluate (at least one).
    pub tokens: &'t [u32],
}

/// A segment of the rows [`Engine::run_segments`] evaluates.
struct Segment<'s, 't> {
    session: &'s mut Session,
    tokens: &'t [u32],
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
