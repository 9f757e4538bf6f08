//! The errors of pruning: each names what was asked for and why it cannot be done.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The model could not be read, run or changed.
    #[error(transparent)]
    Model(#[from] shuku_model::ModelError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// A sparsity or removal ratio outside `[0, 1)`.
    #[error("{what} must be in [0, 1), got {value}")]
    Ratio {
        /// Which ratio.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// An `N:M` pattern that is not `0 < N < M`.
    #[error("pattern {n}:{m} must have 0 < N < M")]
    BadPattern {
        /// Weights pruned per group.
        n: usize,
        /// Group length.
        m: usize,
    },
    /// An `N:M` pattern whose group length does not divide a weight's input width.
    #[error(
        "tensor {tensor}: pattern {n}:{m} needs an input width divisible by {m}, it is {width}"
    )]
    PatternWidth {
        /// The weight.
        tensor: String,
        /// Weights pruned per group.
        n: usize,
        /// Group length.
        m: usize,
        /// The weight's input width.
        width: usize,
    },
    /// Less calibration text than the samples asked for.
    #[error("calibration text has {tokens} tokens, fewer than the {needed} needed for {samples} samples of {seq_len}")]
    CalibrationTooShort {
        /// Tokens available.
        tokens: usize,
        /// Tokens needed.
        needed: usize,
        /// Samples asked for.
        samples: usize,
        /// Tokens per sample.
        seq_len: usize,
    },
    /// A method that needs calibration data was given none.
    #[error("{method} needs calibration samples")]
    NoCalibration {
        /// The method.
        method: &'static str,
    },
    /// A structured removal that would leave a layer with nothing of some kind.
    #[error("layer {layer}: removing {ratio} of its {what} would leave none")]
    RemovesEverything {
        /// The layer.
        layer: usize,
        /// Heads, channels, ...
        what: &'static str,
        /// The ratio asked for.
        ratio: f64,
    },
    /// More layers asked to be removed than the model can lose.
    #[error("cannot remove {asked} of the model's {available} layers (at least one must remain)")]
    TooManyLayers {
        /// Layers asked for.
        asked: usize,
        /// Layers the model has.
        available: usize,
    },
    /// A structured specification that does not parse.
    #[error("bad structured specification `{spec}`: {reason}")]
    BadSpec {
        /// The text given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A structured removal that cannot keep the attention groups uniform.
    #[error("layer {layer}: {reason}")]
    Gqa {
        /// The layer.
        layer: usize,
        /// Why.
        reason: String,
    },
    /// The recovery step between pruning rounds failed.
    #[error("recovery after step {step} failed: {message}")]
    Recovery {
        /// The pruning step (1-based).
        step: usize,
        /// The cause.
        message: String,
    },
}

/// Results of this crate.
pub type Result<T, E = PruneError> = std::result::Result<T, E>;
