//! The one error type of `shuku-eval`.

/// The error a [`crate::LogitsSource`] may return: any boxed error, so a model crate can hand back its own
/// typed error without `shuku-eval` knowing about it.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong while scoring logits.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// llama.cpp refuses texts shorter than two context windows; so do we, so numbers stay comparable.
    #[error("the text tokenizes to {found} tokens, but a context of {n_ctx} needs at least {needed} (two windows)")]
    TooFewTokens {
        /// Tokens needed (`2 * n_ctx`).
        needed: usize,
        /// Tokens given.
        found: usize,
        /// The context size asked for.
        n_ctx: usize,
    },
    /// The protocol itself is unusable (for example a context too short to score anything).
    #[error("invalid evaluation protocol: {0}")]
    InvalidProtocol(String),
    /// A source returned a logits buffer of the wrong length.
    #[error("logits source returned {found} values, expected {expected} ({tokens} tokens x vocab {vocab})")]
    BadLogitsLength {
        /// `tokens * vocab`.
        expected: usize,
        /// What came back.
        found: usize,
        /// Tokens in the request.
        tokens: usize,
        /// The source's vocabulary size.
        vocab: usize,
    },
    /// Two rows that must describe the same vocabulary differ in length.
    #[error("vocabulary mismatch: reference has {reference} entries, test has {test}")]
    VocabMismatch {
        /// Reference vocabulary size.
        reference: usize,
        /// Test vocabulary size.
        test: usize,
    },
    /// A target token id does not index the logits row.
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The offending token id.
        token: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// Too few scored positions for the statistic asked for.
    #[error("no positions were scored")]
    Empty,
    /// The logits source failed.
    #[error("logits source failed: {0}")]
    Source(#[source] SourceError),
}
