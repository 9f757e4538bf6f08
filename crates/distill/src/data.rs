//! Text corpora → packed, shuffled token batches.
//!
//! Files are read in bounded chunks (cut at a newline, else at whitespace, else at a UTF-8
//! boundary), tokenized chunk by chunk and packed on the fly into sequences of `seq_len + 1`
//! tokens (inputs are the first `seq_len`, targets the last `seq_len`). Consecutive sequences
//! overlap by one token so every token is used as an input. Packed sequences are kept in memory
//! or, with [`DataConfig::spill_to_disk`], in an anonymous temporary file, so corpora larger than
//! memory can be used: only the current chunk and one partial sequence are ever buffered.
//!
//! The train/validation split is by sequence index (every `round(1/fraction)`-th sequence is
//! held out), hence deterministic and independent of the shuffling seed. Batch order is a
//! Fisher–Yates permutation per epoch drawn from [`SplitMix64`] seeded by `(seed, epoch)`, so the
//! whole sampler state is [`BatchState`] — three integers a checkpoint stores exactly.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{DistillError, Result};
use shuku_math::SplitMix64;

/// Anything that turns text into token ids (shuku-model's tokenizer wrapper implements it).
pub trait TextTokenizer {
    /// Token ids of `text` (no special tokens added).
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Number of distinct ids the tokenizer can produce.
    fn vocab_size(&self) -> usize;
}

/// One token per byte of UTF-8: a dependency-free tokenizer for tests and byte-level models.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl TextTokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn vocab_size(&self) -> usize {
        256
    }
}

/// How a corpus is packed and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// Tokens per training input (each packed sequence holds `seq_len + 1`).
    pub seq_len: usize,
    /// Vocabulary size of the model that will consume the ids; larger ids are an error.
    pub model_vocab: usize,
    /// Share of sequences held out for validation, in `[0, 0.5]`.
    pub validation_fraction: f64,
    /// Token appended after each file (e.g. EOS), so documents do not run together silently.
    pub separator: Option<u32>,
    /// Bytes read and tokenized at a time.
    pub chunk_bytes: usize,
    /// Keep packed sequences in a temporary file instead of memory.
    pub spill_to_disk: bool,
    /// Seed of the batch order.
    pub seed: u64,
}

impl DataConfig {
    /// Defaults for a given sequence length and model vocabulary.
    pub fn new(seq_len: usize, model_vocab: usize) -> Self {
        Self {
            seq_len,
            model_vocab,
            validation_fraction: 0.05,
            separator: None,
            chunk_bytes: 1 << 20,
            spill_to_disk: false,
            seed: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.seq_len == 0 {
            return Err(DistillError::InvalidConfig("seq_len must be > 0".into()));
        }
        if !(0.0..=0.5).contains(&self.validation_fraction) {
            return Err(DistillError::InvalidConfig(format!(
                "validation_fraction must be in [0, 0.5], got {}",
                self.validation_fraction
            )));
        }
        if self.chunk_bytes == 0 {
            return Err(DistillError::InvalidConfig(
                "chunk_bytes must be > 0".into(),
            ));
        }
        if let Some(sep) = self.separator {
            check_token(sep, self.model_vocab)?;
        }
        Ok(())
    }

    /// Every `period`-th sequence goes to validation (`None`: no validation set).
    fn validation_period(&self) -> Option<u64> {
        (self.validation_fraction > 0.0)
            .then(|| ((1.0 / self.validation_fraction).round() as u64).max(2))
    }
}

fn check_token(token: u32, vocab: usize) -> Result<()> {
    if (token as usize) < vocab {
        Ok(())
    } else {
        Err(DistillError::TokenOutOfVocab { token, vocab })
    }
}

/// Fixed-width rows of `u32` in memory or in a temporary file.
#[derive(Debug)]
enum SeqStore {
    Memory(Vec<u32>),
    Building(BufWriter<File>),
    File(File),
}

impl SeqStore {
    fn new(spill: bool) -> Result<Self> {
        Ok(if spill {
            let f = tempfile::tempfile().map_err(|e| DistillError::io("<tempfile>", e))?;
            SeqStore::Building(BufWriter::new(f))
        } else {
            SeqStore::Memory(Vec::new())
        })
    }

    fn push(&mut self, row: &[u32]) -> Result<()> {
        match self {
            SeqStore::Memory(v) => v.extend_from_slice(row),
            SeqStore::Building(w) => {
                for t in row {
                    w.write_all(&t.to_le_bytes())
                        .map_err(|e| DistillError::io("<tempfile>", e))?;
                }
            }
            SeqStore::File(_) => unreachable!("store is sealed"),
        }
        Ok(())
    }

    fn seal(self) -> Result<Self> {
        Ok(match self {
            SeqStore::Building(w) => SeqStore::File(
                w.into_inner()
                    .map_err(|e| DistillError::io("<tempfile>", e.into_error()))?,
            ),
            other => other,
        })
    }

    fn read_row(&mut self, i: usize, width: usize, out: &mut Vec<u32>) -> Result<()> {
        match self {
            SeqStore::Memory(v) => out.extend_from_slice(&v[i * width..(i + 1) * width]),
            SeqStore::File(f) => {
                let mut bytes = vec![0u8; width * 4];
                f.seek(SeekFrom::Start((i * width * 4) as u64))
                    .and_then(|_| f.read_exact(&mut bytes))
                    .map_err(|e| DistillError::io("<tempfile>", e))?;
                out.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            SeqStore::Building(_) => unreachable!("store is not sealed"),
        }
        Ok(())
    }
}

/// Packs a token stream into overlapping `seq_len + 1` windows, routing each to train or
/// validation as it is completed.
struct Packer {
    width: usize,
    pending: Vec<u32>,
    total_tokens: usize,
    n_seqs: u64,
    period: Option<u64>,
    model_vocab: usize,
    train: SeqStore,
    val: SeqStore,
    n_train: usize,
    n_val: usize,
    /// `Some(true)`: every window goes to validation; `Some(false)`: to training; `None`: by
    /// `period`.
    route: Option<bool>,
}

impl Packer {
    fn new(cfg: &DataConfig) -> Result<Self> {
        Ok(Self {
            width: cfg.seq_len + 1,
            pending: Vec::new(),
            total_tokens: 0,
            n_seqs: 0,
            period: cfg.validation_period(),
            model_vocab: cfg.model_vocab,
            train: SeqStore::new(cfg.spill_to_disk)?,
            val: SeqStore::new(cfg.spill_to_disk)?,
            n_train: 0,
            n_val: 0,
            route: None,
        })
    }

    fn push(&mut self, tokens: &[u32]) -> Result<()> {
        for &t in tokens {
            check_token(t, self.model_vocab)?;
        }
        self.total_tokens += tokens.len();
        self.pending.extend_from_slice(tokens);
        let mut start = 0;
        while self.pending.len() - start >= self.width {
            let row = &self.pending[start..start + self.width];
            let is_val = self
                .route
                .unwrap_or_else(|| self.period.is_some_and(|p| self.n_seqs % p == p - 1));
            if is_val {
                self.val.push(row)?;
                self.n_val += 1;
            } else {
                self.train.push(row)?;
                self.n_train += 1;
            }
            self.n_seqs += 1;
            // Overlap by one token: the last target becomes the next first input.
            start += self.width - 1;
        }
        self.pending.drain(..start);
        Ok(())
    }

    fn finish(self, cfg: &DataConfig) -> Result<TokenDataset> {
        if self.total_tokens == 0 {
            return Err(DistillError::EmptyCorpus);
        }
        if self.n_seqs == 0 {
            return Err(DistillError::CorpusTooShort {
                tokens: self.total_tokens,
                needed: self.width,
            });
        }
        let mut ds = TokenDataset {
            seq_len: cfg.seq_len,
            total_tokens: self.total_tokens,
            train: self.train.seal()?,
            val: self.val.seal()?,
            n_train: self.n_train,
            n_val: self.n_val,
            state: BatchState {
                seed: cfg.seed,
                epoch: 0,
                cursor: 0,
            },
            order: Vec::new(),
        };
        ds.order = ds.permutation(0);
        Ok(ds)
    }
}

/// Where the sampler stands; saving and restoring it reproduces the batch stream exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchState {
    /// Shuffling seed.
    pub seed: u64,
    /// Completed passes over the training sequences.
    pub epoch: u64,
    /// Position inside the current epoch's permutation.
    pub cursor: u64,
}

/// Inputs and next-token targets, both `[batch, seq_len]` `u32`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Input ids.
    pub inputs: Tensor,
    /// Target ids (inputs shifted by one).
    pub targets: Tensor,
}

/// A packed, split corpus with a checkpointable shuffled sampler.
#[derive(Debug)]
pub struct TokenDataset {
    seq_len: usize,
    total_tokens: usize,
    train: SeqStore,
    val: SeqStore,
    n_train: usize,
    n_val: usize,
    state: BatchState,
    order: Vec<u32>,
}

/// Choose where to cut `buf` so the head is whole text: after the last newline, else (if the
/// buffer is full) after the last ASCII whitespace, else at the last UTF-8 boundary.
fn cut_point(buf: &[u8], full: bool) -> usize {
    if let Some(p) = buf.iter().rposition(|&b| b == b'\n') {
        return p + 1;
    }
    if !full {
        return 0;
    }
    if let Some(p) = buf.iter().rposition(|b| b.is_ascii_whitespace()) {
        return p + 1;
    }
    // Keep the last character only if it is complete.
    let Some(start) = buf.iter().rposition(|&b| (b & 0xC0) != 0x80) else {
        return buf.len();
    };
    let lead = buf[start];
    let len = match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    };
    if start + len <= buf.len() {
        buf.len()
    } else {
        start
    }
}

impl TokenDataset {
    /// Stream, tokenize and pack text files.
    ///
    /// Tokenization happens per chunk cut at newlines, so a tokenizer never sees a line split
    /// in two (unless a single line exceeds [`DataConfig::chunk_bytes`]). Invalid UTF-8 is
    /// replaced by U+FFFD rather than aborting a long run.
    pub fn from_files<P: AsRef<Path>>(
        paths: &[P],
        tokenizer: &dyn TextTokenizer,
        cfg: &DataConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        if tokenizer.vocab_size() > cfg.model_vocab {
            return Err(DistillError::VocabMismatch {
                what: "tokenizer vs model vocabulary",
                left: tokenizer.vocab_size(),
                right: cfg.model_vocab,
            });
        }
        let mut packer = Packer::new(cfg)?;
        let mut buf: Vec<u8> = Vec::with_capacity(cfg.chunk_bytes);
        for path in paths {
            let path = path.as_ref();
            let io = |e| DistillError::io(PathBuf::from(path), e);
            let mut file = File::open(path).map_err(io)?;
            buf.clear();
            loop {
                let have = buf.len();
                buf.resize(cfg.chunk_bytes.max(have + 1), 0);
                let n = file.read(&mut buf[have..]).map_err(io)?;
                buf.truncate(have + n);
                let eof = n == 0;
                let cut = if eof {
                    buf.len()
                } else {
                    cut_point(&buf, buf.len() >= cfg.chunk_bytes)
                };
                if cut > 0 {
                    let text = String::from_utf8_lossy(&buf[..cut]);
                    packer.push(&tokenizer.encode(&text)?)?;
                    buf.drain(..cut);
                }
                if eof {
                    break;
                }
            }
            if let Some(sep) = cfg.separator {
                packer.push(&[sep])?;
            }
        }
        packer.finish(cfg)
    }

    /// Pack an already tokenized stream.
    pub fn from_tokens(tokens: &[u32], cfg: &DataConfig) -> Result<Self> {
        cfg.validate()?;
        let mut packer = Packer::new(cfg)?;
        packer.push(tokens)?;
        packer.finish(cfg)
    }

    /// Pack a training stream and a held-out stream separately: every window of `train` is a
    /// training sequence, every window of `held_out` a validation sequence, and no window
    /// straddles the two (so no held-out token is ever a training target).
    /// [`DataConfig::validation_fraction`] is ignored.
    pub fn from_token_split(train: &[u32], held_out: &[u32], cfg: &DataConfig) -> Result<Self> {
        cfg.validate()?;
        let mut packer = Packer::new(cfg)?;
        packer.route = Some(false);
        packer.push(train)?;
        packer.pending.clear();
        packer.route = Some(true);
        packer.push(held_out)?;
        packer.finish(cfg)
    }

    fn permutation(&self, epoch: u64) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.n_train as u32).collect();
        let mut rng = SplitMix64::new(self.state.seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
        rng.shuffle(&mut order);
        order
    }

    /// Tokens in the input (before packing).
    pub fn total_tokens(&self) -> usize {
        self.total_tokens
    }

    /// Training sequences.
    pub fn train_len(&self) -> usize {
        self.n_train
    }

    /// Validation sequences.
    pub fn validation_len(&self) -> usize {
        self.n_val
    }

    /// Tokens per input row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Current sampler state (for checkpoints).
    pub fn batch_state(&self) -> BatchState {
        self.state
    }

    /// Restore a sampler state saved by [`TokenDataset::batch_state`].
    pub fn set_batch_state(&mut self, state: BatchState) -> Result<()> {
        if state.cursor > self.n_train as u64 {
            return Err(DistillError::InvalidConfig(format!(
                "sampler cursor {} beyond {} training sequences",
                state.cursor, self.n_train
            )));
        }
        self.state = state;
        self.order = self.permutation(state.epoch);
        Ok(())
    }

    fn rows_to_batch(&self, flat: Vec<u32>, rows: usize, device: &Device) -> Result<Batch> {
        let all = Tensor::from_vec(flat, (rows, self.seq_len + 1), device)?;
        Ok(Batch {
            inputs: all.narrow(1, 0, self.seq_len)?.contiguous()?,
            targets: all.narrow(1, 1, self.seq_len)?.contiguous()?,
        })
    }

    /// Next shuffled training batch; wraps into a new epoch (new permutation) when exhausted.
    pub fn next_batch(&mut self, batch_size: usize, device: &Device) -> Result<Batch> {
        if batch_size == 0 {
            return Err(DistillError::InvalidConfig("batch_size must be > 0".into()));
        }
        let width = self.seq_len + 1;
        let mut flat = Vec::with_capacity(batch_size * width);
        for _ in 0..batch_size {
            if self.state.cursor as usize >= self.order.len() {
                self.state.epoch += 1;
                self.state.cursor = 0;
                self.order = self.permutation(self.state.epoch);
            }
            let row = self.order[self.state.cursor as usize] as usize;
            self.state.cursor += 1;
            self.train.read_row(row, width, &mut flat)?;
        }
        self.rows_to_batch(flat, batch_size, device)
    }

    /// Validation batches in order (the last one may be smaller), at most `max_batches`.
    pub fn validation_batches(
        &mut self,
        batch_size: usize,
        max_batches: Option<usize>,
        device: &Device,
    ) -> Result<Vec<Batch>> {
        if batch_size == 0 {
            return Err(DistillError::InvalidConfig("batch_size must be > 0".into()));
        }
        let width = self.seq_len + 1;
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.n_val && max_batches.is_none_or(|m| out.len() < m) {
            let rows = batch_size.min(self.n_val - i);
            let mut flat = Vec::with_capacity(rows * width);
            for r in i..i + rows {
                self.val.read_row(r, width, &mut flat)?;
            }
            out.push(self.rows_to_batch(flat, rows, device)?);
            i += rows;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_overlaps_by_one_and_splits() {
        let toks: Vec<u32> = (0..31).collect();
        let mut cfg = DataConfig::new(5, 100);
        cfg.validation_fraction = 0.5;
        let mut ds = TokenDataset::from_tokens(&toks, &cfg).unwrap();
        // windows start at 0,5,10,15,20,25 (each 6 long): 6 sequences, every 2nd held out.
        assert_eq!(ds.train_len() + ds.validation_len(), 6);
        assert_eq!(ds.validation_len(), 3);
        let v = ds.validation_batches(8, None, &Device::Cpu).unwrap();
        let first: Vec<Vec<u32>> = v[0].inputs.to_vec2().unwrap();
        assert_eq!(first[0], vec![5, 6, 7, 8, 9]);
        let t: Vec<Vec<u32>> = v[0].targets.to_vec2().unwrap();
        assert_eq!(t[0], vec![6, 7, 8, 9, 10]);
    }

    #[test]
    fn token_split_keeps_streams_apart() {
        let train: Vec<u32> = (0..20).collect();
        let held: Vec<u32> = (50..61).collect();
        let cfg = DataConfig::new(4, 100);
        let mut ds = TokenDataset::from_token_split(&train, &held, &cfg).unwrap();
        // 20 tokens → windows at 0,4,8,12 (5 wide, stride 4); 11 held-out tokens → 50, 54.
        assert_eq!(ds.train_len(), 4);
        assert_eq!(ds.validation_len(), 2);
        let v = ds.validation_batches(8, None, &Device::Cpu).unwrap();
        let rows: Vec<Vec<u32>> = v[0].inputs.to_vec2().unwrap();
        assert_eq!(rows, vec![vec![50, 51, 52, 53], vec![54, 55, 56, 57]]);
        for _ in 0..3 {
            let b = ds.next_batch(4, &Device::Cpu).unwrap();
            let t: Vec<Vec<u32>> = b.targets.to_vec2().unwrap();
            assert!(t.iter().flatten().all(|&x| x < 20));
        }
    }

    #[test]
    fn cut_points() {
        assert_eq!(cut_point(b"ab\ncd", false), 3);
        assert_eq!(cut_point(b"abcd", false), 0);
        assert_eq!(cut_point(b"ab cd", true), 3);
        // "é" is C3 A9: never split it.
        assert_eq!(cut_point(&[b'a', 0xC3], true), 1);
        assert_eq!(cut_point(&[b'a', 0xC3, 0xA9], true), 3);
    }

    #[test]
    fn spilled_store_matches_memory() {
        let toks: Vec<u32> = (0..500).map(|i| (i * 7 % 97) as u32).collect();
        let mut cfg = DataConfig::new(8, 97);
        let mut a = TokenDataset::from_tokens(&toks, &cfg).unwrap();
        cfg.spill_to_disk = true;
        let mut b = TokenDataset::from_tokens(&toks, &cfg).unwrap();
        for _ in 0..20 {
            let x = a.next_batch(3, &Device::Cpu).unwrap();
            let y = b.next_batch(3, &Device::Cpu).unwrap();
            assert_eq!(
                x.inputs.to_vec2::<u32>().unwrap(),
                y.inputs.to_vec2::<u32>().unwrap()
            );
        }
    }
}
