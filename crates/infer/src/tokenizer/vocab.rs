//! The vocabulary: tokens, attributes, merges, special ids, and the flags llama.cpp derives from them.
//!
//! [`VocabData`] is the plain input (what `tokenizer.ggml.*` holds); `Vocab::new` applies llama.cpp's
//! loader rules (`llama_vocab::impl::load`): per-model defaults for the special ids and for
//! `add_bos`/`add_eos`, the auto-detection of end-of-turn / end-of-generation tokens by their text, the
//! "unused" control tokens, and the special-token list used to split the input.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use super::error::{Result, TokenizerError};
use super::pretokenize::{PreInfo, PreType};

/// Token attribute bits (llama.cpp's `llama_token_attr`).
pub mod attr {
    /// Unknown token.
    pub const UNKNOWN: u32 = 1 << 0;
    /// Unused slot.
    pub const UNUSED: u32 = 1 << 1;
    /// Ordinary token.
    pub const NORMAL: u32 = 1 << 2;
    /// Control token (BOS, EOS, chat markers).
    pub const CONTROL: u32 = 1 << 3;
    /// User-defined token, matched as a whole string in the input.
    pub const USER_DEFINED: u32 = 1 << 4;
    /// Byte-fallback token `<0xXX>`.
    pub const BYTE: u32 = 1 << 5;
    /// Whitespace to the left of the token is removed when it is matched.
    pub const LSTRIP: u32 = 1 << 7;
    /// Whitespace to the right of the token is removed when it is matched.
    pub const RSTRIP: u32 = 1 << 8;
}

/// The tokenizer algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece BPE by score (`tokenizer.ggml.model = "llama"`).
    Spm,
    /// Byte-level BPE by merge rank (`"gpt2"`), or SPM-style BPE over raw UTF-8 (`"gemma4"`).
    Bpe(PreType),
}

/// The `tokenizer.ggml.*` values, as plain data.
#[derive(Debug, Clone, Default)]
pub struct VocabData {
    /// `tokenizer.ggml.model`.
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`.
    pub merges: Option<Vec<String>>,
    /// Special ids given by `tokenizer.ggml.*_token_id` keys.
    pub ids: SpecialIds,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `general.name` (llama.cpp sets per-token strip attributes for Phi-3 by name).
    pub name: Option<String>,
}

/// Special token ids; `None` = absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialIds {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// End of turn.
    pub eot: Option<u32>,
    /// End of message (tool call).
    pub eom: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Separator.
    pub sep: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
    /// Mask.
    pub mask: Option<u32>,
    /// Fill-in-the-middle prefix.
    pub fim_pre: Option<u32>,
    /// Fill-in-the-middle suffix.
    pub fim_suf: Option<u32>,
    /// Fill-in-the-middle middle.
    pub fim_mid: Option<u32>,
    /// Fill-in-the-middle pad.
    pub fim_pad: Option<u32>,
    /// Fill-in-the-middle repository.
    pub fim_rep: Option<u32>,
    /// Fill-in-the-middle file separator.
    pub fim_sep: Option<u32>,
}

/// A resolved vocabulary.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub kind: VocabKind,
    pub texts: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u32>,
    /// Text → id. FxHash: keys come from the vocabulary, inputs only ever look up, so a fast
    /// non-keyed hash is safe here and dominates encoding time otherwise.
    pub token_to_id: FxHashMap<String, u32>,
    /// `"left right"` → rank (first occurrence wins, as `std::map::emplace` in llama.cpp).
    pub merges: FxHashMap<String, u32>,
    pub ids: SpecialIds,
    pub eog: BTreeSet<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub escape_whitespaces: bool,
    pub clean_spaces: bool,
    pub ignore_merges: bool,
    /// Control, user-defined and unknown tokens, longest text first.
    pub special_tokens: Vec<u32>,
    /// Adjacent code-point pairs that occur inside some mergeable unit (a token for SPM, a merge
    /// result for BPE). Between two characters that form no such pair no merge can ever happen, so
    /// the text can be cut there and each piece merged on its own with the same result; this keeps
    /// the merge heap small on long inputs.
    pub joinable: FxHashSet<u64>,
}

/// Key of an adjacent pair in `Vocab::joinable`.
#[inline]
pub(crate) fn pair_key(a: char, b: char) -> u64 {
    ((a as u64) << 32) | b as u64
}

fn add_pairs(set: &mut FxHashSet<u64>, text: &str) {
    let mut chars = text.chars();
    if let Some(mut prev) = chars.next() {
        for c in chars {
            set.insert(pair_key(prev, c));
            prev = c;
        }
    }
}

/// Token types of `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
fn type_to_attr(t: i32) -> u32 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0,
    }
}

/// Candidate end-of-turn texts, in the order shuku prefers them when several exist (llama.cpp walks an
/// unordered map, so its choice among several candidates is unspecified).
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Texts llama.cpp treats as end of generation.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

impl Vocab {
    /// Resolves `data` with llama.cpp's loader rules.
    pub fn new(data: VocabData) -> Result<Vocab> {
        let VocabData {
            model,
            pre,
            tokens,
            scores,
            token_types,
            merges,
            ids: given,
            add_bos: key_add_bos,
            add_eos: key_add_eos,
            add_space_prefix: key_add_space_prefix,
            name,
        } = data;
        if tokens.is_empty() {
            return Err(TokenizerError::EmptyVocab);
        }

        // Model type and its defaults.
        let mut ids = SpecialIds::default();
        let (kind, info) = match model.as_str() {
            "llama" => {
                ids.bos = Some(1);
                ids.eos = Some(2);
                ids.unk = Some(0);
                (VocabKind::Spm, None)
            }
            "gpt2" | "gemma4" => {
                let pre_name = if model == "gemma4" {
                    Some("gemma4")
                } else {
                    pre.as_deref()
                };
                let info = match pre_name {
                    None => PreInfo::from_name("default"),
                    Some(p) => PreInfo::from_name(p),
                }
                .ok_or_else(|| TokenizerError::UnknownPre(pre_name.unwrap_or("").to_string()))?;
                if model == "gpt2" {
                    ids.bos = Some(11);
                    ids.eos = Some(11);
                }
                if info.no_bos_token {
                    ids.bos = None;
                }
                (VocabKind::Bpe(info.pre), Some(info))
            }
            "bert" | "t5" | "rwkv" | "plamo2" | "hybriddna" | "whitespace" | "no_vocab"
            | "none" | "test" => return Err(TokenizerError::Unsupported { model }),
            _ => return Err(TokenizerError::UnknownModel(model)),
        };

        let (
            mut add_bos,
            mut add_eos,
            mut add_space_prefix,
            escape_whitespaces,
            clean_spaces,
            ignore_merges,
        ) = match (kind, info) {
            (VocabKind::Bpe(_), Some(i)) => (
                i.add_bos.unwrap_or(false),
                false,
                false,
                i.escape_whitespaces,
                i.clean_spaces,
                i.ignore_merges,
            ),
            _ => (true, false, true, true, false, false),
        };
        if let Some(v) = key_add_space_prefix {
            add_space_prefix = v;
        }

        // Merges (BPE only).
        let mut merge_map = FxHashMap::default();
        if let VocabKind::Bpe(_) = kind {
            let merges = merges.ok_or(TokenizerError::MissingKey("tokenizer.ggml.merges"))?;
            merge_map.reserve(merges.len());
            for (index, merge) in merges.into_iter().enumerate() {
                // llama.cpp splits at the first space after the first byte.
                let split = merge
                    .as_bytes()
                    .iter()
                    .skip(1)
                    .position(|&b| b == b' ')
                    .map(|p| p + 1);
                let Some(pos) = split else {
                    return Err(TokenizerError::MalformedMerge { index, merge });
                };
                let rank = u32::try_from(index).unwrap_or(u32::MAX);
                let key = if merge[pos + 1..].contains(' ') {
                    // Keep the first-space split explicit: "a b c" is ("a", "b c").
                    format!("{} {}", &merge[..pos], &merge[pos + 1..])
                } else {
                    merge
                };
                merge_map.entry(key).or_insert(rank);
            }
        }

        // Tokens, scores, attributes.
        let n = tokens.len();
        if let Some(s) = &scores {
            if s.len() < n {
                return Err(TokenizerError::InvalidKey {
                    key: "tokenizer.ggml.scores",
                    why: format!("{} scores for {n} tokens", s.len()),
                });
            }
        }
        if let Some(t) = &token_types {
            if t.len() < n {
                return Err(TokenizerError::InvalidKey {
                    key: "tokenizer.ggml.token_type",
                    why: format!("{} types for {n} tokens", t.len()),
                });
            }
        }
        let mut texts = tokens;
        let mut token_to_id = FxHashMap::with_capacity_and_hasher(n, Default::default());
        for (i, text) in texts.iter_mut().enumerate() {
            if text.is_empty() {
                *text = format!("[EMPTY_{i}]");
            }
            token_to_id.insert(text.clone(), i as u32);
        }
        let scores = scores.map(|mut s| {
            s.truncate(n);
            s
        });
        let scores = scores.unwrap_or_else(|| vec![0.0; n]);
        let mut attrs: Vec<u32> = match &token_types {
            Some(t) => t[..n].iter().map(|&t| type_to_attr(t)).collect(),
            None => vec![attr::NORMAL; n],
        };

        // Special ids: defaults out of range are disabled, then the GGUF keys override.
        let n32 = n as u32;
        let resolve = |default: Option<u32>, key: Option<u32>| -> Option<u32> {
            let default = default.filter(|&d| d < n32);
            match key {
                Some(k) if k < n32 => Some(k),
                _ => default,
            }
        };
        ids = SpecialIds {
            bos: resolve(ids.bos, given.bos),
            eos: resolve(ids.eos, given.eos),
            eot: resolve(None, given.eot),
            eom: resolve(None, given.eom),
            unk: resolve(ids.unk, given.unk),
            sep: resolve(None, given.sep),
            pad: resolve(None, given.pad),
            mask: resolve(None, given.mask),
            fim_pre: resolve(None, given.fim_pre),
            fim_suf: resolve(None, given.fim_suf),
            fim_mid: resolve(None, given.fim_mid),
            fim_pad: resolve(None, given.fim_pad),
            fim_rep: resolve(None, given.fim_rep),
            fim_sep: resolve(None, given.fim_sep),
        };
        if let Some(v) = key_add_bos {
            add_bos = v;
        }
        if let Some(v) = key_add_eos {
            add_eos = v;
        }
        if kind == VocabKind::Bpe(PreType::Gemma4) {
            add_bos = true;
        }

        // Auto-detection by text; detected tokens become control tokens.
        let detect = |slot: &mut Option<u32>, candidates: &[&str], attrs: &mut Vec<u32>| {
            if slot.is_some() {
                return;
            }
            if let Some(&id) = candidates.iter().find_map(|t| token_to_id.get(*t)) {
                *slot = Some(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        };
        detect(&mut ids.eot, EOT_TEXTS, &mut attrs);
        detect(&mut ids.eom, &["<|eom_id|>"], &mut attrs);
        detect(&mut ids.fim_pre, FIM_PRE_TEXTS, &mut attrs);
        detect(&mut ids.fim_suf, FIM_SUF_TEXTS, &mut attrs);
        detect(&mut ids.fim_mid, FIM_MID_TEXTS, &mut attrs);
        detect(&mut ids.fim_pad, FIM_PAD_TEXTS, &mut attrs);
        detect(&mut ids.fim_rep, FIM_REP_TEXTS, &mut attrs);
        detect(&mut ids.fim_sep, FIM_SEP_TEXTS, &mut attrs);

        // Control tokens whose text says "unused" are unused.
        for (text, a) in texts.iter().zip(attrs.iter_mut()) {
            if *a & attr::CONTROL != 0 && text.contains("unused") {
                *a |= attr::UNUSED;
            }
        }

        // End-of-generation set.
        let mut eog = BTreeSet::new();
        eog.extend(ids.fim_pad);
        eog.extend(ids.fim_rep);
        eog.extend(ids.fim_sep);
        for t in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*t) {
                eog.insert(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        // gpt-oss: always render these.
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = token_to_id.get(t) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend(ids.eos);
        eog.extend(ids.eot);
        eog.extend(ids.eom);
        // o200k_harmony / solar-open: "<|end|>" is not end of generation there.
        let has =
            |eog: &BTreeSet<u32>, t: &str| token_to_id.get(t).is_some_and(|id| eog.contains(id));
        if ((has(&eog, "<|return|>") && has(&eog, "<|call|>"))
            || (has(&eog, "<|calls|>") && has(&eog, "<|flush|>")))
            && has(&eog, "<|end|>")
        {
            let end = token_to_id["<|end|>"];
            eog.remove(&end);
            attrs[end as usize] = attr::USER_DEFINED;
        }
        // Gemma 4 / PLaMo: "</s>" is a normal token when these markers exist.
        if (has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>")) && has(&eog, "</s>") {
            let s = token_to_id["</s>"];
            eog.remove(&s);
            attrs[s as usize] = attr::NORMAL;
        }

        // Special tokens matched in the input, longest first.
        let mut special_tokens: Vec<u32> = (0..n32)
            .filter(|&id| {
                attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_tokens.sort_by(|&a, &b| texts[b as usize].len().cmp(&texts[a as usize].len()));

        // Phi-3: special tokens eat the whitespace that follows them.
        let lname = name.unwrap_or_default().to_lowercase();
        if lname.contains("phi-3") || lname.contains("phi3") {
            for &id in &special_tokens {
                attrs[id as usize] |= attr::RSTRIP;
            }
            if let Some(&id) = token_to_id.get("</s>") {
                attrs[id as usize] |= attr::RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(&id) = token_to_id.get(t) {
                    attrs[id as usize] &= !attr::RSTRIP;
                }
            }
        }

        let mut joinable = FxHashSet::default();
        match kind {
            VocabKind::Spm => texts.iter().for_each(|t| add_pairs(&mut joinable, t)),
            VocabKind::Bpe(_) => merge_map.keys().for_each(|m| {
                // "left right": the merge result is both sides joined.
                if let Some(p) = m.as_bytes().iter().skip(1).position(|&b| b == b' ') {
                    let (l, r) = (&m[..p + 1], &m[p + 2..]);
                    add_pairs(&mut joinable, l);
                    add_pairs(&mut joinable, r);
                    if let (Some(a), Some(b)) = (l.chars().last(), r.chars().next()) {
                        joinable.insert(pair_key(a, b));
                    }
                }
            }),
        }

        Ok(Vocab {
            joinable,
            kind,
            texts,
            scores,
            attrs,
            token_to_id,
            merges: merge_map,
            ids,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            escape_whitespaces,
            clean_spaces,
            ignore_merges,
            special_tokens,
        })
    }

    /// Number of tokens.
    pub fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    /// Id of a token text.
    #[inline]
    pub fn id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// Attribute bits of `id` (0 when out of range).
    #[inline]
    pub fn attr(&self, id: u32) -> u32 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    /// Splits `text` where no merge can join the neighbouring characters (see [`Vocab::joinable`]).
    pub fn independent_pieces<'a>(&'a self, text: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let mut rest = text;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut it = rest.char_indices();
            let (_, mut prev) = it.next()?;
            let mut cut = rest.len();
            for (i, c) in it {
                if !self.joinable.contains(&pair_key(prev, c)) {
                    cut = i;
                    break;
                }
                prev = c;
            }
            let (piece, tail) = rest.split_at(cut);
            rest = tail;
            Some(piece)
        })
    }

    /// Byte-fallback token of byte `b`: `<0xXX>`, else the one-byte token.
    pub fn byte_token(&self, b: u8) -> Option<u32> {
        self.id(&format!("<0x{b:02X}>")).or_else(|| {
            if b.is_ascii() {
                self.id(&(b as char).to_string())
            } else {
                None
            }
        })
    }
}
