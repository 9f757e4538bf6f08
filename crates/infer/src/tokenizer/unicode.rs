//! Code-point classes and the GPT-2 byte↔unicode table, with llama.cpp's exact semantics.
//!
//! llama.cpp does not use a regex engine's notion of `\p{L}` or `\s`: it classifies every code point
//! once into a small set of flags (`unicode_cpt_flags` in `unicode.cpp`) and both its hand-written
//! splitters and its regex fallback only ever see those flags. Reproducing its tokenisation therefore
//! means reproducing these flags, not Unicode's full property set: e.g. its whitespace set is a fixed
//! list of 25 code points (no U+001C..U+001F), and an unassigned code point is "undefined", which the
//! splitters treat like punctuation. The general category itself comes from the
//! `unicode-general-category` crate.

use unicode_general_category::{get_general_category, GeneralCategory as Gc};

/// Unassigned code point (`Cn`).
pub const UNDEFINED: u16 = 0x0001;
/// `\p{N}`.
pub const NUMBER: u16 = 0x0002;
/// `\p{L}`.
pub const LETTER: u16 = 0x0004;
/// `\p{Z}`.
pub const SEPARATOR: u16 = 0x0008;
/// `\p{M}`.
pub const MARK: u16 = 0x0010;
/// `\p{P}`.
pub const PUNCTUATION: u16 = 0x0020;
/// `\p{S}`.
pub const SYMBOL: u16 = 0x0040;
/// `\p{C}` other than unassigned.
pub const CONTROL: u16 = 0x0080;
/// The category bits (exactly one is set for a real code point).
pub const MASK_CATEGORIES: u16 = 0x00FF;
/// llama.cpp's `\s`.
pub const WHITESPACE: u16 = 0x0100;

/// llama.cpp's whitespace set (`unicode_set_whitespace` in `unicode-data.cpp`).
const WHITESPACE_SET: [u32; 25] = [
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
    0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
];

/// Precomputed flags of the ASCII range, the hot path of every splitter.
static ASCII_FLAGS: [u16; 128] = {
    let mut t = [0u16; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphabetic() {
            LETTER
        } else if c.is_ascii_digit() {
            NUMBER
        } else if c == b' ' {
            SEPARATOR | WHITESPACE
        } else if c < 0x20 || c == 0x7F {
            if c >= 0x09 && c <= 0x0D {
                CONTROL | WHITESPACE
            } else {
                CONTROL
            }
        } else if matches!(
            c,
            b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'`' | b'|' | b'~'
        ) {
            SYMBOL
        } else {
            PUNCTUATION
        };
        i += 1;
    }
    t
};

/// The flags llama.cpp assigns to code point `c`.
pub fn flags(c: char) -> u16 {
    let cp = c as u32;
    if cp < 128 {
        return ASCII_FLAGS[cp as usize];
    }
    let cat = match get_general_category(c) {
        Gc::Unassigned => UNDEFINED,
        Gc::Control | Gc::Format | Gc::PrivateUse | Gc::Surrogate => CONTROL,
        Gc::UppercaseLetter
        | Gc::LowercaseLetter
        | Gc::TitlecaseLetter
        | Gc::ModifierLetter
        | Gc::OtherLetter => LETTER,
        Gc::NonspacingMark | Gc::SpacingMark | Gc::EnclosingMark => MARK,
        Gc::DecimalNumber | Gc::LetterNumber | Gc::OtherNumber => NUMBER,
        Gc::ConnectorPunctuation
        | Gc::DashPunctuation
        | Gc::OpenPunctuation
        | Gc::ClosePunctuation
        | Gc::InitialPunctuation
        | Gc::FinalPunctuation
        | Gc::OtherPunctuation => PUNCTUATION,
        Gc::MathSymbol | Gc::CurrencySymbol | Gc::ModifierSymbol | Gc::OtherSymbol => SYMBOL,
        Gc::SpaceSeparator | Gc::LineSeparator | Gc::ParagraphSeparator => SEPARATOR,
        _ => UNDEFINED,
    };
    if WHITESPACE_SET.contains(&cp) {
        cat | WHITESPACE
    } else {
        cat
    }
}

/// GPT-2's reversible byte → printable code point table (`bytes_to_unicode`).
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut assigned = [false; 256];
    for b in (0x21u32..=0x7E).chain(0xA1..=0xAC).chain(0xAE..=0xFF) {
        table[b as usize] = char::from_u32(b).unwrap_or('\0');
        assigned[b as usize] = true;
    }
    let mut n = 0u32;
    for b in 0..256usize {
        if !assigned[b] {
            table[b] = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
        }
    }
    table
}

/// Inverse of [`byte_to_char_table`]: code point → byte, for code points below 0x144.
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        0x100..=0x143 => {
            // The n-th unassigned byte (in increasing order) maps to 256 + n.
            let n = cp - 0x100;
            let mut seen = 0u32;
            for b in 0..=255u8 {
                let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
                if !printable {
                    if seen == n {
                        return Some(b);
                    }
                    seen += 1;
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips() {
        let t = byte_to_char_table();
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(t[b as usize]), Some(b));
        }
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn ascii_flags_match_unicode_categories() {
        for b in 0u8..128 {
            let c = b as char;
            let slow = match get_general_category(c) {
                Gc::UppercaseLetter | Gc::LowercaseLetter => LETTER,
                Gc::DecimalNumber => NUMBER,
                Gc::Control => CONTROL,
                Gc::SpaceSeparator => SEPARATOR,
                Gc::MathSymbol | Gc::CurrencySymbol | Gc::ModifierSymbol => SYMBOL,
                _ => PUNCTUATION,
            };
            assert_eq!(flags(c) & MASK_CATEGORIES, slow, "{b:#x}");
        }
        assert_eq!(flags('\u{3000}'), SEPARATOR | WHITESPACE);
        assert_eq!(flags('\u{0301}'), MARK);
        assert_eq!(flags('é'), LETTER);
    }
}
