//! Tokenizers built from GGUF metadata, matching llama.cpp's `llama-vocab.cpp`.
//!
//! Why hand-written: no crate implements llama.cpp's GGUF vocabulary semantics. HF `tokenizers` needs
//! a `tokenizer.json` (a GGUF only has `tokenizer.ggml.*`), and llama.cpp differs from it on purpose in
//! places that change token ids: its own per-`tokenizer.ggml.pre` regex lists evaluated over
//! code-point classes rather than Unicode properties, special-token splitting with user-defined tokens
//! always active, SPM merging by score with `<0xXX>` byte fallback, its BOS/EOS defaults per model, and
//! the end-of-generation tokens it infers from token texts. Generic parts come from crates:
//! `fancy-regex` for the regexes, `unicode-general-category` for code-point categories, and
//! `aho-corasick` to find special tokens.
//!
//! Supported: `tokenizer.ggml.model` = `"llama"` (SPM) and `"gpt2"` / `"gemma4"` (BPE) with the
//! pre-tokenizers listed in [`PreType`]. WPM (`bert`), UGM (`t5`), RWKV and PLaMo-2 are refused with
//! [`TokenizerError::Unsupported`].
//!
//! Modules: [`vocab`] (loading rules), [`pretokenize`] (word splitting), `bpe` / `spm` (merging),
//! `special` (special-token splitting), `decode` (pieces, detokenisation, streaming), `unicode`
//! (llama.cpp's code-point classes), `gguf` (reading the metadata).

mod bpe;
mod decode;
mod error;
mod gguf;
pub mod pretokenize;
mod special;
mod spm;
mod unicode;
pub mod vocab;

pub use decode::StreamDecoder;
pub use error::{Result, TokenizerError};
pub use pretokenize::PreType;
pub use special::Fragment;
pub use vocab::{SpecialIds, VocabData, VocabKind};

use bpe::BpeSession;
use pretokenize::PreTokenizer;
use special::SpecialMatcher;
use vocab::{attr, Vocab};

/// A tokenizer for one GGUF vocabulary.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    /// Word splitter (BPE only).
    pre: Option<PreTokenizer>,
    /// Special tokens matched when `parse_special` is off (user-defined only) / on.
    special_plain: SpecialMatcher,
    special_all: SpecialMatcher,
    /// Each token's piece with control tokens rendered.
    pieces: Vec<Box<[u8]>>,
    byte_chars: [char; 256],
}

/// How [`Tokenizer::decode_with`] renders tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeOptions {
    /// Drop a leading BOS and a trailing EOS where the model adds them.
    pub remove_special: bool,
    /// Render control tokens as their text.
    pub render_special: bool,
}

impl Tokenizer {
    /// Builds the tokenizer of a GGUF file from its `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &shuku_gguf::GgufFile) -> Result<Tokenizer> {
        Tokenizer::from_data(VocabData::from_gguf(file)?)
    }

    /// Builds a tokenizer from plain vocabulary data.
    pub fn from_data(data: VocabData) -> Result<Tokenizer> {
        let vocab = Vocab::new(data)?;
        let pre = match vocab.kind {
            VocabKind::Bpe(p) => Some(PreTokenizer::new(p)?),
            VocabKind::Spm => None,
        };
        Ok(Tokenizer {
            special_plain: SpecialMatcher::new(&vocab, false),
            special_all: SpecialMatcher::new(&vocab, true),
            pieces: decode::piece_cache(&vocab),
            byte_chars: unicode::byte_to_char_table(),
            pre,
            vocab,
        })
    }

    /// Tokenises `text`. `add_special` adds BOS/EOS where the model asks for them; `parse_special`
    /// recognises control tokens (e.g. `<|im_start|>`) written in the text. User-defined tokens are
    /// recognised either way, as in llama.cpp.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let matcher = if parse_special {
            &self.special_all
        } else {
            &self.special_plain
        };
        let fragments = matcher.partition(&self.vocab, text);
        let v = &self.vocab;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && v.add_bos {
            out.extend(v.ids.bos);
        }
        match (&self.pre, v.kind) {
            (Some(pre), VocabKind::Bpe(pre_type)) => {
                let mut session = BpeSession::default();
                let mut escaped;
                let mut word_buf = String::new();
                for frag in &fragments {
                    let range = match frag {
                        Fragment::Token(id) => {
                            out.push(*id);
                            continue;
                        }
                        Fragment::Text(r) => r.clone(),
                    };
                    let mut piece = &text[range];
                    if v.escape_whitespaces {
                        escaped = piece.replace(' ', "\u{2581}");
                        piece = &escaped;
                    }
                    for word in pre.split(piece)? {
                        let word = &piece[word];
                        if pre_type.byte_encode() {
                            word_buf.clear();
                            word_buf.extend(word.bytes().map(|b| self.byte_chars[b as usize]));
                            session.encode_word(v, pre_type, &word_buf, &mut out);
                        } else {
                            session.encode_word(v, pre_type, word, &mut out);
                        }
                    }
                }
            }
            _ => {
                // SPM: a space is prepended to text that starts the input or follows a special
                // token, then spaces become '▁'.
                let mut prev_special = true;
                for frag in &fragments {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(*id);
                            prev_special = true;
                        }
                        Fragment::Text(r) => {
                            let mut s = String::with_capacity(r.len() + 4);
                            if v.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(&text[r.clone()]);
                            let s = s.replace(' ', "\u{2581}");
                            spm::encode(v, &s, &mut out);
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.ids.eos);
        }
        Ok(out)
    }

    /// The bytes of one token. Control and unknown tokens are empty unless `render_special`.
    /// Out-of-range ids are empty.
    pub fn token_to_piece(&self, id: u32, render_special: bool) -> &[u8] {
        let a = self.vocab.attr(id);
        if !render_special && a & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        self.pieces.get(id as usize).map(|p| &p[..]).unwrap_or(&[])
    }

    /// Detokenises `ids` (control tokens not rendered), as llama.cpp's `llama_detokenize`.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, DecodeOptions::default())
    }

    /// Detokenises `ids` with explicit options. Invalid UTF-8 becomes U+FFFD.
    pub fn decode_with(&self, ids: &[u32], opts: DecodeOptions) -> String {
        let v = &self.vocab;
        let mut ids = ids;
        let mut remove_space = v.add_space_prefix;
        if opts.remove_special && v.add_bos && ids.first().is_some_and(|&t| Some(t) == v.ids.bos) {
            remove_space = false;
            ids = &ids[1..];
        }
        if opts.remove_special && v.add_eos && ids.last().is_some_and(|&t| Some(t) == v.ids.eos) {
            ids = &ids[..ids.len() - 1];
        }
        let mut bytes = Vec::new();
        for &id in ids {
            let mut piece = self.token_to_piece(id, opts.render_special);
            if remove_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            remove_space = false;
            bytes.extend_from_slice(piece);
        }
        if v.clean_spaces {
            decode::clean_spaces(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A streaming decoder for generated tokens; feed it with [`Tokenizer::decode_next`].
    ///
    /// `first_in_text` = the stream starts the text (then SPM's added leading space is dropped).
    pub fn stream_decoder(&self, first_in_text: bool, render_special: bool) -> StreamDecoder {
        StreamDecoder::new(first_in_text && self.vocab.add_space_prefix, render_special)
    }

    /// Feeds `id` to `decoder`; returns the newly completed text.
    pub fn decode_next(&self, decoder: &mut StreamDecoder, id: u32) -> String {
        decoder.push_piece(self.token_to_piece(id, decoder.render_special()))
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.vocab.ids.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.vocab.ids.eos
    }

    /// End-of-turn token (e.g. `<|im_end|>`, `<end_of_turn>`), given or detected by text.
    pub fn eot(&self) -> Option<u32> {
        self.vocab.ids.eot
    }

    /// All special ids.
    pub fn special_ids(&self) -> &SpecialIds {
        &self.vocab.ids
    }

    /// Whether generation stops at `id` (EOS, EOT, EOM and the other end-of-generation tokens).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.contains(&id)
    }

    /// The end-of-generation tokens.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.vocab.eog.iter().copied()
    }

    /// Whether `id` is a control token.
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id) & attr::CONTROL != 0
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab.n_tokens()
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// The algorithm (SPM, or BPE with its pre-tokenizer).
    pub fn kind(&self) -> VocabKind {
        self.vocab.kind
    }

    /// Text of token `id` as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(String::as_str)
    }

    /// Id of a token text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpe_data(merges: &[&str]) -> VocabData {
        let mut tokens: Vec<String> = unicode::byte_to_char_table()
            .iter()
            .map(|c| c.to_string())
            .collect();
        tokens.extend(["he", "ll", "hell", "hello", "Ġw"].map(String::from));
        VocabData {
            model: "gpt2".into(),
            pre: Some("gpt-2".into()),
            tokens,
            merges: Some(merges.iter().map(|s| s.to_string()).collect()),
            ..VocabData::default()
        }
    }

    #[test]
    fn bpe_merges_by_rank_and_round_trips() {
        let tok =
            Tokenizer::from_data(bpe_data(&["h e", "l l", "he ll", "hell o", "Ġ w"])).unwrap();
        let hello = tok.token_id("hello").unwrap();
        let ids = tok.encode("hello wx", false, false).unwrap();
        assert_eq!(ids[0], hello);
        assert_eq!(tok.decode(&ids), "hello wx");
        // gpt2 default BOS/EOS id 11 is in range here.
        assert_eq!(tok.bos(), Some(11));
    }

    #[test]
    fn typed_errors() {
        let err = |d: VocabData| Tokenizer::from_data(d).unwrap_err();
        assert!(matches!(
            err(VocabData { model: "t5".into(), tokens: vec!["a".into()], ..Default::default() }),
            TokenizerError::Unsupported { model } if model == "t5"
        ));
        assert!(matches!(
            err(VocabData { model: "wat".into(), tokens: vec!["a".into()], ..Default::default() }),
            TokenizerError::UnknownModel(m) if m == "wat"
        ));
        let mut d = bpe_data(&["h e"]);
        d.pre = Some("no-such-pre".into());
        assert!(matches!(err(d), TokenizerError::UnknownPre(p) if p == "no-such-pre"));
        assert!(matches!(
            err(bpe_data(&["h e", "oops"])),
            TokenizerError::MalformedMerge { index: 1, .. }
        ));
        let mut d = bpe_data(&[]);
        d.merges = None;
        assert!(matches!(
            err(d),
            TokenizerError::MissingKey("tokenizer.ggml.merges")
        ));
        assert!(matches!(
            err(VocabData {
                model: "llama".into(),
                ..Default::default()
            }),
            TokenizerError::EmptyVocab
        ));
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let tok = Tokenizer::from_data(bpe_data(&["h e", "l l"])).unwrap();
        for s in [
            "\u{0}\u{FFFD}\u{10FFFF}",
            "\u{301}\u{301}x",
            "\u{E0080}'",
            "'",
            " \n\r\t\u{3000}",
        ] {
            let ids = tok.encode(s, true, true).unwrap();
            assert_eq!(tok.decode(&ids), s);
        }
        assert!(tok.token_to_piece(u32::MAX, true).is_empty());
        assert_eq!(tok.decode(&[u32::MAX, 7_000_000]), "");
    }
}
