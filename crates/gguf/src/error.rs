//! The single error type of this crate.
//!
//! Every malformed-input case gets its own variant naming the field, key or tensor involved, so
//! callers (and tests) can match on *what* is wrong instead of parsing messages. Errors raised
//! while opening a file are wrapped in [`Error::File`] so the message always names the path.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading, validating or writing GGUF.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Wraps an error raised while processing a specific file, to name that file.
    #[error("{}: {source}", path.display())]
    File {
        /// The file being read or written.
        path: PathBuf,
        /// What went wrong.
        source: Box<Error>,
    },
    /// An operating-system error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The input ended before a fixed-size field could be read.
    #[error("truncated GGUF: {what} needs {need} bytes at offset {offset}, only {have} left")]
    Truncated {
        /// The field being read.
        what: String,
        /// Byte offset of the field.
        offset: u64,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {0}{hint}", hint = version_hint(*.0))]
    UnsupportedVersion(u32),
    /// A big-endian GGUF file (only little-endian is supported).
    #[error("big-endian GGUF (version {version} byte-swapped) is not supported; convert it to little-endian")]
    BigEndian {
        /// The byte-swapped version number.
        version: u32,
    },
    /// A metadata value type id outside 0..=12.
    #[error("metadata key `{key}`: unknown value type id {type_id}")]
    UnknownValueType {
        /// The key whose value has the bad type.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// A count or length that would need more bytes than the input holds.
    #[error("{what}: count {count} needs more than the {remaining} bytes left")]
    CountTooLarge {
        /// What is being counted.
        what: String,
        /// The declared count or length.
        count: u64,
        /// Bytes remaining in the input.
        remaining: u64,
    },
    /// Arrays nested deeper than the parser allows.
    #[error("metadata key `{key}`: arrays nested deeper than {max}")]
    NestingTooDeep {
        /// The key holding the array.
        key: String,
        /// Maximum nesting depth.
        max: usize,
    },
    /// A string that is not valid UTF-8.
    #[error("{what}: invalid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
    },
    /// A boolean byte other than 0 or 1.
    #[error("metadata key `{key}`: invalid bool byte {byte}")]
    InvalidBool {
        /// The key.
        key: String,
        /// The byte found.
        byte: u8,
    },
    /// The same metadata key appears twice.
    #[error("duplicate metadata key `{key}`")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// The same tensor name appears twice.
    #[error("duplicate tensor `{name}`")]
    DuplicateTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor name longer than llama.cpp's 63-byte limit (`GGML_MAX_NAME` = 64 with NUL).
    #[error("tensor name `{name}` is {len} bytes, more than the 63 llama.cpp allows")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A tensor with more than 4 dimensions.
    #[error("tensor `{name}` has {n_dims} dimensions, at most 4 are allowed")]
    TooManyDims {
        /// The tensor.
        name: String,
        /// Declared number of dimensions.
        n_dims: u32,
    },
    /// A tensor with zero dimensions.
    #[error("tensor `{name}` declares 0 dimensions")]
    NoDims {
        /// The tensor.
        name: String,
    },
    /// A tensor dimension equal to zero.
    #[error("tensor `{name}` has size 0 along axis {axis}")]
    ZeroDim {
        /// The tensor.
        name: String,
        /// The axis (ggml order, 0 = innermost).
        axis: usize,
    },
    /// The element count (or byte size) of a tensor does not fit in 63 bits.
    #[error("tensor `{name}`: element count or byte size overflows")]
    DimOverflow {
        /// The tensor.
        name: String,
    },
    /// A tensor's first dimension is not a multiple of its type's block size.
    #[error(
        "tensor `{name}`: ne[0] = {ne0} is not a multiple of the {ttype} block size {block_size}"
    )]
    RowNotBlockAligned {
        /// The tensor.
        name: String,
        /// Its first (innermost) dimension.
        ne0: u64,
        /// The type name.
        ttype: String,
        /// The type's block size.
        block_size: u64,
    },
    /// A tensor's bytes lie (partly) outside the file.
    #[error("tensor `{name}`: bytes {start}..{end} lie outside the {file_size}-byte file")]
    TensorOutOfBounds {
        /// The tensor.
        name: String,
        /// Absolute start offset.
        start: u64,
        /// Absolute end offset (saturating).
        end: u64,
        /// File size.
        file_size: u64,
    },
    /// Two tensors' byte ranges overlap.
    #[error("tensors `{a}` and `{b}` overlap")]
    TensorsOverlap {
        /// First tensor.
        a: String,
        /// Second tensor.
        b: String,
    },
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor `{name}`: offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        /// The tensor.
        name: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("general.alignment = {0} is not a non-zero power of two")]
    BadAlignment(u64),
    /// A required metadata key is absent.
    #[error("missing metadata key `{key}`")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata key holds a value of an unexpected type.
    #[error("metadata key `{key}`: expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// No tensor of that name.
    #[error("no tensor named `{name}`")]
    TensorNotFound {
        /// The requested name.
        name: String,
    },
    /// A tensor whose ggml type id this crate does not know; its bytes cannot be interpreted.
    #[error("tensor `{name}` has unknown ggml type id {type_id}")]
    UnknownTensorType {
        /// The tensor.
        name: String,
        /// The type id.
        type_id: u32,
    },
    /// A known ggml type that candle cannot represent.
    #[error("tensor `{name}`: ggml type {ttype} is not supported by candle")]
    UnsupportedByCandle {
        /// The tensor.
        name: String,
        /// The type name.
        ttype: String,
    },
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writer: the output already exists and overwriting was not requested.
    #[error("{}: output already exists (set overwrite to replace it)", path.display())]
    OutputExists {
        /// The output path.
        path: PathBuf,
    },
    /// Writer: a tensor's data has the wrong number of bytes.
    #[error("tensor `{name}`: expected {expected} bytes, got {got}")]
    SizeMismatch {
        /// The tensor.
        name: String,
        /// Bytes declared by its shape and type.
        expected: u64,
        /// Bytes supplied.
        got: u64,
    },
    /// Writer: tensors must be written in declaration order.
    #[error("tensor `{got}` written out of order: expected `{expected}`")]
    OutOfOrder {
        /// The tensor expected next (or `<none>` when all are written).
        expected: String,
        /// The tensor supplied.
        got: String,
    },
    /// Writer: `finish` called before every declared tensor was written.
    #[error("{missing} declared tensor(s) not written, first `{first}`")]
    TensorsNotWritten {
        /// Number of missing tensors.
        missing: usize,
        /// The first missing tensor.
        first: String,
    },
    /// Writer: an array whose elements do not all have one type, or a value that cannot be encoded.
    #[error("metadata key `{key}`: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// An API used in a way it does not support (e.g. `finish` on an in-memory writer).
    #[error("{0}")]
    Misuse(String),
    /// Tokenizer export: the tokenizer files are not understood.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Tokenizer export: the pre-tokenizer matches no known llama.cpp `tokenizer.ggml.pre`.
    #[error("tokenizer: unrecognised pre-tokenizer {0}; pass an explicit `pre` override")]
    UnknownPreTokenizer(String),
    /// Tokenizer export: a tokenizer file is not valid JSON.
    #[error("{}: invalid JSON: {source}", file.display())]
    TokenizerJson {
        /// The file.
        file: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// Tokenizer export: a field of a tokenizer file is missing or holds something the export
    /// cannot use.
    #[error("{}: `{field}`: {problem}", file.display())]
    TokenizerField {
        /// The file (or, for a missing file, the folder's file that was looked for).
        file: PathBuf,
        /// The field, as a JSON path (`model.vocab`, `added_tokens[3].id`).
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A SentencePiece `tokenizer.model` that is not a well-formed `ModelProto`.
    #[error("sentencepiece model: {field} at byte {offset}: {problem}")]
    SentencePiece {
        /// The protobuf message or field being read.
        field: String,
        /// Byte offset in the file.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
}

fn version_hint(v: u32) -> &'static str {
    match v {
        1 => " (GGUF v1 is obsolete; re-convert the model with a current llama.cpp)",
        _ => " (only versions 2 and 3 are supported)",
    }
}

impl Error {
    /// The error with any [`Error::File`] wrappers removed, for matching on the cause.
    pub fn root(&self) -> &Error {
        match self {
            Error::File { source, .. } => source.root(),
            e => e,
        }
    }

    /// Wraps `self` in [`Error::File`] naming `path` (unless it already names a path).
    pub fn in_file(self, path: impl Into<PathBuf>) -> Error {
        match self {
            e @ (Error::File { .. } | Error::Io { .. } | Error::OutputExists { .. }) => e,
            e => Error::File {
                path: path.into(),
                source: Box::new(e),
            },
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
