//! A reader for SentencePiece `tokenizer.model` files: the vocabulary of a serialized `ModelProto`.
//!
//! llama.cpp's converter writes a SentencePiece model's vocabulary from three facts per piece: its
//! text, its score and its type. Those are three fields of one repeated message (`ModelProto.pieces`,
//! field 1: `piece` = 1, `score` = 2, `type` = 3), so this module reads them with a small protobuf
//! decoder of its own instead of a dependency: the `sentencepiece` crates bind the C++ library (a
//! C++ toolchain for a 40-line need), and a general protobuf runtime would need the schema compiled
//! in. Every other field (trainer and normalizer specs, self-test data) is skipped by its wire type.
//!
//! The input is untrusted: every length and offset is checked against the bytes that remain, varints
//! longer than ten bytes or wider than 64 bits are refused, and the deprecated group wire types are
//! rejected, each with [`Error::SentencePiece`] naming the field and byte offset.

use crate::error::{Error, Result};

/// A piece's `type` (`ModelProto.SentencePiece.Type`); the enum values are the proto's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PieceType {
    /// `NORMAL` (1), also the value of an absent or unknown `type` field, as protobuf reads it.
    Normal,
    /// `UNKNOWN` (2): the unknown-token piece.
    Unknown,
    /// `CONTROL` (3): control symbols such as `<s>`.
    Control,
    /// `USER_DEFINED` (4): pieces matched verbatim in the input.
    UserDefined,
    /// `UNUSED` (5).
    Unused,
    /// `BYTE` (6): byte-fallback pieces `<0xXX>`.
    Byte,
}

impl PieceType {
    /// The proto enum value, or `Normal` for values the schema does not define (protobuf keeps
    /// an unknown enum value out of the field, leaving its default).
    fn from_proto(v: u64) -> Self {
        match v {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }
}

/// One vocabulary entry of a SentencePiece model.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece's text (`▁` stands for a space).
    pub piece: String,
    /// Its score (log probability for unigram models, minus the merge rank for BPE models).
    pub score: f32,
    /// Its type.
    pub kind: PieceType,
}

/// The vocabulary of a SentencePiece model, in id order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SentencePieceModel {
    /// The pieces; a piece's id is its index.
    pub pieces: Vec<Piece>,
}

impl SentencePieceModel {
    /// Parses a serialized `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, 0);
        let mut pieces = Vec::new();
        while !r.at_end() {
            let (field, wire) = r.key("ModelProto")?;
            match (field, wire) {
                (1, WIRE_LEN) => {
                    let (offset, body) = r.bytes("ModelProto.pieces")?;
                    pieces.push(parse_piece(body, offset)?);
                }
                _ => r.skip(wire, "ModelProto")?,
            }
        }
        Ok(Self { pieces })
    }

    /// Reads and parses `path`; errors name the file.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes).map_err(|e| e.in_file(path))
    }
}

fn parse_piece(body: &[u8], base: u64) -> Result<Piece> {
    let mut r = Reader::new(body, base);
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    while !r.at_end() {
        let (field, wire) = r.key("SentencePiece")?;
        match (field, wire) {
            (1, WIRE_LEN) => {
                let (offset, text) = r.bytes("SentencePiece.piece")?;
                piece.piece = String::from_utf8(text.to_vec())
                    .map_err(|_| sp_err("SentencePiece.piece", offset, "invalid UTF-8"))?;
            }
            (2, WIRE_I32) => piece.score = f32::from_bits(r.fixed32("SentencePiece.score")?),
            (3, WIRE_VARINT) => piece.kind = PieceType::from_proto(r.varint("SentencePiece.type")?),
            _ => r.skip(wire, "SentencePiece")?,
        }
    }
    Ok(piece)
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

fn sp_err(field: &str, offset: u64, problem: impl Into<String>) -> Error {
    Error::SentencePiece {
        field: field.to_string(),
        offset,
        problem: problem.into(),
    }
}

/// A cursor over one message's bytes; `base` is the message's offset in the file, for errors.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: u64) -> Self {
        Self { buf, pos: 0, base }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn varint(&mut self, field: &str) -> Result<u64> {
        let start = self.offset();
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(sp_err(field, start, "truncated varint"));
            };
            self.pos += 1;
            let low = u64::from(b & 0x7f);
            // The tenth byte may carry only the 64th bit.
            if i == 9 && low > 1 {
                return Err(sp_err(field, start, "varint wider than 64 bits"));
            }
            value |= low << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(sp_err(field, start, "varint longer than 10 bytes"))
    }

    fn key(&mut self, message: &str) -> Result<(u64, u8)> {
        let start = self.offset();
        let key = self.varint(message)?;
        let field = key >> 3;
        if field == 0 {
            return Err(sp_err(message, start, "field number 0"));
        }
        Ok((field, (key & 7) as u8))
    }

    /// The next `n` bytes and their offset; a shortfall is reported at `reported` (where the
    /// field, or its length prefix, starts).
    fn take_at(&mut self, n: u64, field: &str, reported: u64) -> Result<(u64, &'a [u8])> {
        let start = self.offset();
        let left = self.buf.len().saturating_sub(self.pos);
        let end = match usize::try_from(n) {
            Ok(n) if n <= left => self.pos + n,
            _ => {
                return Err(sp_err(
                    field,
                    reported,
                    format!("needs {n} bytes, only {left} left"),
                ))
            }
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok((start, s))
    }

    fn take(&mut self, n: u64, field: &str) -> Result<(u64, &'a [u8])> {
        self.take_at(n, field, self.offset())
    }

    /// A length-delimited field's bytes and their offset.
    fn bytes(&mut self, field: &str) -> Result<(u64, &'a [u8])> {
        let start = self.offset();
        let n = self.varint(field)?;
        self.take_at(n, field, start)
    }

    fn fixed32(&mut self, field: &str) -> Result<u32> {
        let (_, b) = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, wire: u8, message: &str) -> Result<()> {
        match wire {
            WIRE_VARINT => self.varint(message).map(drop),
            WIRE_I64 => self.take(8, message).map(drop),
            WIRE_LEN => self.bytes(message).map(drop),
            WIRE_I32 => self.take(4, message).map(drop),
            other => Err(sp_err(
                message,
                self.offset(),
                format!("unsupported wire type {other}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(field: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn piece(text: &str, score: Option<f32>, kind: Option<u64>) -> Vec<u8> {
        let mut p = Vec::new();
        len_field(1, text.as_bytes(), &mut p);
        if let Some(s) = score {
            varint(2 << 3 | 5, &mut p);
            p.extend_from_slice(&s.to_le_bytes());
        }
        if let Some(k) = kind {
            varint(3 << 3, &mut p);
            varint(k, &mut p);
        }
        p
    }

    fn model() -> Vec<u8> {
        let mut m = Vec::new();
        len_field(1, &piece("<unk>", Some(0.0), Some(2)), &mut m);
        // A trainer spec between pieces is skipped.
        len_field(2, &[0x08, 0x01, 0x15, 0, 0, 0, 0], &mut m);
        len_field(1, &piece("<s>", None, Some(3)), &mut m);
        len_field(1, &piece("<0x0A>", Some(0.0), Some(6)), &mut m);
        len_field(1, &piece("\u{2581}the", Some(-1.5), None), &mut m);
        len_field(1, &piece("odd", Some(-2.0), Some(99)), &mut m);
        // Unknown fixed64 and varint fields at the top level.
        varint(9 << 3 | 1, &mut m);
        m.extend_from_slice(&[0; 8]);
        varint(10 << 3, &mut m);
        varint(u64::MAX, &mut m);
        m
    }

    #[test]
    fn reads_pieces_scores_and_types() {
        let m = SentencePieceModel::parse(&model()).unwrap();
        let got: Vec<(&str, f32, PieceType)> = m
            .pieces
            .iter()
            .map(|p| (p.piece.as_str(), p.score, p.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("<unk>", 0.0, PieceType::Unknown),
                ("<s>", 0.0, PieceType::Control),
                ("<0x0A>", 0.0, PieceType::Byte),
                ("\u{2581}the", -1.5, PieceType::Normal),
                ("odd", -2.0, PieceType::Normal),
            ]
        );
    }

    #[test]
    fn every_truncation_is_an_error_or_a_shorter_model() {
        let full = model();
        for n in 0..full.len() {
            match SentencePieceModel::parse(&full[..n]) {
                Err(Error::SentencePiece { offset, .. }) => assert!(offset <= n as u64),
                Err(e) => panic!("cut at {n}: unexpected error {e}"),
                // A cut that falls between two fields leaves a valid, shorter message.
                Ok(m) => assert!(m.pieces.len() <= 5),
            }
        }
    }

    #[test]
    fn hostile_lengths_and_varints_are_refused() {
        // A piece claiming more bytes than the file holds.
        let mut m = Vec::new();
        varint(1 << 3 | 2, &mut m);
        varint(u64::MAX / 2, &mut m);
        assert!(matches!(
            SentencePieceModel::parse(&m),
            Err(Error::SentencePiece { ref field, offset: 1, .. }) if field == "ModelProto.pieces"
        ));
        // An eleven-byte varint.
        let long = [0xffu8; 10]
            .iter()
            .copied()
            .chain([0x01])
            .collect::<Vec<_>>();
        assert!(SentencePieceModel::parse(&long).is_err());
        // A tenth byte carrying more than the 64th bit.
        let wide = [0xffu8; 9]
            .iter()
            .copied()
            .chain([0x02])
            .collect::<Vec<_>>();
        assert!(SentencePieceModel::parse(&wide).is_err());
        // Field number zero, and the group wire types.
        assert!(SentencePieceModel::parse(&[0x02, 0x00]).is_err());
        assert!(SentencePieceModel::parse(&[0x0b]).is_err());
        // Invalid UTF-8 in a piece, reported at the piece text's offset.
        let mut bad = Vec::new();
        len_field(1, &[0x0a, 0x01, 0xff], &mut bad);
        assert!(matches!(
            SentencePieceModel::parse(&bad),
            Err(Error::SentencePiece { ref field, offset: 4, .. }) if field == "SentencePiece.piece"
        ));
    }

    #[test]
    fn empty_input_is_an_empty_model() {
        assert_eq!(
            SentencePieceModel::parse(&[]).unwrap(),
            SentencePieceModel::default()
        );
    }
}
