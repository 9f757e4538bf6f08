//! BPE by merge rank over one pre-tokenised word (llama.cpp's `llm_tokenizer_bpe_session`).
//!
//! The word's characters form a doubly linked list; candidate adjacent pairs sit in a min-heap keyed by
//! (merge rank, left position), so a word of n characters costs O(n log n) instead of the quadratic
//! "rescan for the best pair" loop. A popped pair is stale when either side has changed since it was
//! pushed, which (because symbols only ever grow to the right) is exactly when the two current lengths
//! no longer add up to the pushed length.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::pretokenize::PreType;
use super::vocab::Vocab;

#[derive(Clone, Copy)]
struct Symbol {
    /// Byte offset in the word.
    start: usize,
    /// Byte length; 0 once merged into its left neighbour.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(PartialEq, Eq)]
struct Pair {
    rank: u32,
    left: usize,
    right: usize,
    len: usize,
}

impl Ord for Pair {
    /// Max-heap order: lowest rank first, then leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reusable buffers for encoding many words.
#[derive(Default)]
pub struct BpeSession {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Pair>,
    key: String,
}

impl BpeSession {
    /// Appends the tokens of `word` (already byte-encoded / whitespace-escaped) to `out`.
    pub fn encode_word(&mut self, vocab: &Vocab, pre: PreType, word: &str, out: &mut Vec<u32>) {
        // Long words (Gemma 4 splits on newlines only) are cut where no merge can join.
        if word.len() > 256 && !(vocab.ignore_merges && vocab.id(word).is_some()) {
            for piece in vocab.independent_pieces(word) {
                self.encode_piece(vocab, pre, piece, false, out);
            }
        } else {
            self.encode_piece(vocab, pre, word, true, out);
        }
    }

    /// Merges one piece; `whole_word` = the piece is the entire word, so llama.cpp's "emit the word
    /// as one token when it is one" rules apply.
    fn encode_piece(
        &mut self,
        vocab: &Vocab,
        pre: PreType,
        word: &str,
        whole_word: bool,
        out: &mut Vec<u32>,
    ) {
        self.symbols.clear();
        self.heap.clear();
        let whole_word = whole_word
            && (vocab.ignore_merges
                || (pre == PreType::Gemma4 && word.bytes().all(|b| b == b'\n')))
            && vocab.id(word).is_some();
        if whole_word {
            self.symbols.push(Symbol {
                start: 0,
                len: word.len(),
                prev: None,
                next: None,
            });
        } else {
            let n = word.chars().count();
            for (i, (start, c)) in word.char_indices().enumerate() {
                self.symbols.push(Symbol {
                    start,
                    len: c.len_utf8(),
                    prev: i.checked_sub(1),
                    next: (i + 1 < n).then_some(i + 1),
                });
            }
            for i in 1..self.symbols.len() {
                self.push_pair(vocab, word, i - 1, i);
            }
            while let Some(pair) = self.heap.pop() {
                let (l, r) = (self.symbols[pair.left], self.symbols[pair.right]);
                if l.len == 0 || r.len == 0 || l.len + r.len != pair.len {
                    continue;
                }
                self.symbols[pair.left].len += r.len;
                self.symbols[pair.right].len = 0;
                self.symbols[pair.left].next = r.next;
                if let Some(next) = r.next {
                    self.symbols[next].prev = Some(pair.left);
                }
                if let Some(prev) = l.prev {
                    self.push_pair(vocab, word, prev, pair.left);
                }
                if let Some(next) = r.next {
                    self.push_pair(vocab, word, pair.left, next);
                }
            }
        }
        for s in self.symbols.iter().filter(|s| s.len > 0) {
            let text = &word[s.start..s.start + s.len];
            match vocab.id(text) {
                Some(id) => out.push(id),
                None => fallback_bytes(vocab, pre, text, out),
            }
        }
    }

    fn push_pair(&mut self, vocab: &Vocab, word: &str, left: usize, right: usize) {
        let (l, r) = (self.symbols[left], self.symbols[right]);
        self.key.clear();
        self.key.push_str(&word[l.start..l.start + l.len]);
        self.key.push(' ');
        self.key.push_str(&word[r.start..r.start + r.len]);
        if let Some(&rank) = vocab.merges.get(self.key.as_str()) {
            self.heap.push(Pair {
                rank,
                left,
                right,
                len: l.len + r.len,
            });
        }
    }
}

/// A final symbol that is not a token: llama.cpp emits a token per byte where one exists and
/// silently drops the rest. In byte-level vocabularies it looks up the raw UTF-8 bytes of the
/// (already byte-encoded) symbol, so only its ASCII bytes can ever match.
fn fallback_bytes(vocab: &Vocab, pre: PreType, text: &str, out: &mut Vec<u32>) {
    for &b in text.as_bytes() {
        let id = if pre.byte_encode() {
            if b.is_ascii() {
                let mut buf = [0u8; 4];
                vocab.id((b as char).encode_utf8(&mut buf))
            } else {
                None
            }
        } else {
            vocab.id(&format!("<0x{b:02X}>"))
        };
        out.extend(id);
    }
}
