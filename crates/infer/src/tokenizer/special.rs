//! Splitting the input around special tokens (llama.cpp's `tokenizer_st_partition`).
//!
//! llama.cpp takes the special tokens longest first and, for each, splits every remaining text
//! fragment at all its occurrences. Control and unknown tokens take part only when `parse_special`
//! is requested; user-defined tokens always do. Doing this naively costs one scan of the whole text
//! per special token (thousands for Gemma), so an Aho-Corasick pass first finds which special tokens
//! occur at all; the exact llama.cpp procedure then runs over those only, which gives the same result.

use std::ops::Range;

use aho_corasick::AhoCorasick;

use super::vocab::{attr, Vocab};

/// A piece of the input: raw text (a byte range) or an already-identified special token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    /// Text still to be tokenised.
    Text(Range<usize>),
    /// A special token matched in the input.
    Token(u32),
}

/// The special tokens matched in one mode, with their automaton.
#[derive(Debug)]
pub struct SpecialMatcher {
    /// Token ids in llama.cpp's order (longest text first).
    ids: Vec<u32>,
    automaton: Option<AhoCorasick>,
}

impl SpecialMatcher {
    /// Matcher over the special tokens of `vocab` that take part when `parse_special` is as given.
    pub fn new(vocab: &Vocab, parse_special: bool) -> SpecialMatcher {
        let ids: Vec<u32> = vocab
            .special_tokens
            .iter()
            .copied()
            .filter(|&id| parse_special || vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) == 0)
            .collect();
        let automaton = if ids.is_empty() {
            None
        } else {
            AhoCorasick::new(ids.iter().map(|&id| vocab.texts[id as usize].as_bytes())).ok()
        };
        SpecialMatcher { ids, automaton }
    }

    /// Splits `text` into fragments.
    pub fn partition(&self, vocab: &Vocab, text: &str) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(0..text.len())];
        let Some(ac) = &self.automaton else {
            return frags;
        };
        let mut present = vec![false; self.ids.len()];
        for m in ac.find_overlapping_iter(text) {
            present[m.pattern().as_usize()] = true;
        }
        for (i, &id) in self.ids.iter().enumerate() {
            if !present[i] {
                continue;
            }
            let needle = vocab.texts[id as usize].as_str();
            let a = vocab.attr(id);
            let mut next = Vec::with_capacity(frags.len() + 2);
            for frag in frags {
                match frag {
                    Fragment::Text(r) => split_fragment(text, r, needle, id, a, &mut next),
                    tok => next.push(tok),
                }
            }
            frags = next;
        }
        frags
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn split_fragment(
    text: &str,
    range: Range<usize>,
    needle: &str,
    id: u32,
    a: u32,
    out: &mut Vec<Fragment>,
) {
    let bytes = text.as_bytes();
    let (mut off, end) = (range.start, range.end);
    while off < end {
        let Some(m) = text[off..end].find(needle) else {
            break;
        };
        let m = off + m;
        let mut left_end = m;
        if a & attr::LSTRIP != 0 {
            while left_end > off && is_c_space(bytes[left_end - 1]) {
                left_end -= 1;
            }
        }
        if left_end > off {
            out.push(Fragment::Text(off..left_end));
        }
        out.push(Fragment::Token(id));
        off = m + needle.len();
        if a & attr::RSTRIP != 0 {
            while off < end && is_c_space(bytes[off]) {
                off += 1;
            }
        }
    }
    if off < end {
        out.push(Fragment::Text(off..end));
    }
}
