//! Tokens back to text (llama.cpp's `token_to_piece` and `detokenize`), and a streaming decoder.
//!
//! A piece is bytes, not a string: byte-fallback tokens and byte-level BPE tokens can carry a
//! fraction of a UTF-8 character, which only the next token(s) complete. [`StreamDecoder`] holds such
//! an incomplete tail back so that streamed text is always valid UTF-8.

use super::unicode::char_to_byte;
use super::vocab::{attr, Vocab, VocabKind};

/// The piece of every token as llama.cpp renders it with `special = true`, computed once.
pub fn piece_cache(vocab: &Vocab) -> Vec<Box<[u8]>> {
    (0..vocab.n_tokens() as u32)
        .map(|id| render(vocab, id).into_boxed_slice())
        .collect()
}

/// llama.cpp's `token_to_piece(.., special = true)` without the cache.
fn render(vocab: &Vocab, id: u32) -> Vec<u8> {
    let a = vocab.attr(id);
    let text = &vocab.texts[id as usize];
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        return text.as_bytes().to_vec();
    }
    if a & attr::NORMAL != 0 {
        return match vocab.kind {
            VocabKind::Bpe(_) if !vocab.escape_whitespaces => byte_decode(text),
            _ => text.replace('\u{2581}', " ").into_bytes(),
        };
    }
    if a & attr::BYTE != 0 {
        // "<0xXX>"
        return text
            .get(3..5)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map(|b| vec![b])
            .unwrap_or_default();
    }
    Vec::new()
}

/// GPT-2 byte-level decoding (llama.cpp's `llama_decode_text`), including its marker for code points
/// outside the byte table.
fn byte_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp's `clean_up_tokenization_spaces` passes over detokenised bytes.
pub fn clean_spaces(text: &mut Vec<u8>) {
    // " ?", " !", " .", " ,"
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }
    // " ' " → "'"; llama.cpp blanks the removed right space in place, so it no longer counts as the
    // left space of what follows.
    let mut t = out;
    let mut out: Vec<u8> = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        let x = t[i];
        if i > 0 && x == b'\'' && i + 1 < t.len() && t[i - 1] == b' ' && t[i + 1] == b' ' {
            out.pop();
            out.push(x);
            t[i + 1] = 0;
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }
    // " 's", " 'm", " 're", " 've"
    let t = out;
    let mut out: Vec<u8> = Vec::with_capacity(t.len());
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && x == b'\'' && i + 1 < t.len() {
            let x1 = t[i + 1];
            let x2 = t.get(i + 2).copied();
            let drop = matches!(x1, b's' | b'm')
                || (i + 2 < t.len() && matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e'))));
            if drop {
                out.pop();
            }
        }
        out.push(x);
    }
    *text = out;
}

/// Turns a stream of tokens into a stream of complete UTF-8 text.
///
/// Bytes that end in the middle of a UTF-8 sequence are held back until the next token completes
/// them; invalid sequences become U+FFFD. [`finish`](Self::finish) flushes whatever remains.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    /// Remove one leading space from the first piece (SPM's `add_space_prefix`).
    strip_first_space: bool,
    started: bool,
    render_special: bool,
}

impl StreamDecoder {
    /// A decoder; `strip_first_space` drops the space an SPM tokenizer prepends to the text, and
    /// `render_special` renders control tokens as their text.
    pub fn new(strip_first_space: bool, render_special: bool) -> StreamDecoder {
        StreamDecoder {
            pending: Vec::new(),
            strip_first_space,
            started: false,
            render_special,
        }
    }

    /// Feeds one token's piece; returns the text that is now complete (possibly empty).
    pub fn push_piece(&mut self, piece: &[u8]) -> String {
        let mut piece = piece;
        if !self.started && !piece.is_empty() {
            self.started = true;
            if self.strip_first_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
        }
        self.pending.extend_from_slice(piece);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: `valid_up_to` bytes are valid UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether control tokens are rendered.
    pub fn render_special(&self) -> bool {
        self.render_special
    }

    /// Flushes held-back bytes (an incomplete sequence becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_spaces_matches_llama() {
        let mut t = b"Hello , world ! It 's a ' b ' I 'll go .".to_vec();
        clean_spaces(&mut t);
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "Hello, world! It's a'b'I 'll go."
        );
    }

    #[test]
    fn stream_decoder_holds_split_utf8() {
        let mut d = StreamDecoder::new(false, false);
        let bytes = "é🦙".as_bytes();
        assert_eq!(d.push_piece(&bytes[..1]), "");
        assert_eq!(d.push_piece(&bytes[1..3]), "é");
        assert_eq!(d.push_piece(&bytes[3..5]), "");
        assert_eq!(d.push_piece(&bytes[5..]), "🦙");
        assert_eq!(d.push_piece(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(d.push_piece(&[0xE2]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
