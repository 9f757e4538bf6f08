//! SentencePiece-style BPE by score (llama.cpp's `llm_tokenizer_spm_session`).
//!
//! Every adjacent pair whose concatenation is a token is a candidate; the candidate whose token has the
//! highest score (then the leftmost) merges first. Same linked-list + heap scheme as [`super::bpe`].
//! Characters left without a token fall back to `<0xXX>` byte tokens. llama.cpp also keeps a
//! "reverse merge" map for re-segmentation, but it is only consulted for texts that are not tokens
//! while it only ever holds texts that are, so it never fires and is omitted here.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}

impl Ord for Pair {
    /// Max-heap order: highest score first, then leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Appends the tokens of `text` (spaces already escaped to `▁`) to `out`.
pub fn encode(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    for piece in vocab.independent_pieces(text) {
        encode_piece(vocab, piece, out);
    }
}

fn encode_piece(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    let n = text.chars().count();
    let mut symbols: Vec<Symbol> = text
        .char_indices()
        .enumerate()
        .map(|(i, (start, c))| Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: (i + 1 < n).then_some(i + 1),
        })
        .collect();
    let mut heap = BinaryHeap::new();
    let push = |symbols: &[Symbol], heap: &mut BinaryHeap<Pair>, left: usize, right: usize| {
        let (l, r) = (symbols[left], symbols[right]);
        let merged = &text[l.start..l.start + l.len + r.len];
        if let Some(id) = vocab.id(merged) {
            heap.push(Pair {
                score: vocab.scores[id as usize],
                left,
                right,
                len: merged.len(),
            });
        }
    };
    for i in 1..symbols.len() {
        push(&symbols, &mut heap, i - 1, i);
    }
    while let Some(pair) = heap.pop() {
        let (l, r) = (symbols[pair.left], symbols[pair.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != pair.len {
            continue;
        }
        symbols[pair.left].len += r.len;
        symbols[pair.right].len = 0;
        symbols[pair.left].next = r.next;
        if let Some(next) = r.next {
            symbols[next].prev = Some(pair.left);
        }
        if let Some(prev) = l.prev {
            push(&symbols, &mut heap, prev, pair.left);
        }
        if let Some(next) = r.next {
            push(&symbols, &mut heap, pair.left, next);
        }
    }
    for s in symbols.iter().filter(|s| s.len > 0) {
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                for &b in piece.as_bytes() {
                    // llama.cpp aborts when a byte has no token; shuku emits the unknown token.
                    out.extend(vocab.byte_token(b).or(vocab.ids.unk));
                }
            }
        }
    }
}
