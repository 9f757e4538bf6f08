//! The evaluation protocol shared by shuku's trainer and its GGUF inference engine.
//!
//! Both sides implement [`LogitsSource`]; this crate turns logits into llama.cpp-comparable numbers:
//! [`perplexity`] reproduces `llama-perplexity` (same chunking, same scored half, same error estimate) and
//! [`kl_divergence`] mirrors `llama-perplexity --kl-divergence`. It depends on no tensor library, so the
//! inference engine does not pull in the training model.
//!
//! ```
//! use shuku_eval::{perplexity, LogitsSource, PerplexityProtocol, SourceError};
//!
//! /// A "model" that predicts every token with equal probability.
//! struct Uniform(usize);
//! impl LogitsSource for Uniform {
//!     fn vocab_size(&self) -> usize { self.0 }
//!     fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SourceError> {
//!         Ok(vec![0.0; tokens.len() * self.0])
//!     }
//! }
//!
//! let tokens: Vec<u32> = (0..64).map(|i| i % 10).collect();
//! let report = perplexity(&mut Uniform(10), &tokens, &PerplexityProtocol::new(16), None).unwrap();
//! assert!((report.ppl - 10.0).abs() < 1e-9);
//! println!("{report}");
//! ```

mod error;
mod kl;
mod perplexity;
mod protocol;
mod softmax;
mod source;

pub use error::{EvalError, SourceError};
pub use kl::{kl_divergence, KlReport, KlStats, PositionKl};
pub use perplexity::{perplexity, PerplexityReport, Progress};
pub use protocol::PerplexityProtocol;
pub use softmax::log_softmax;
pub use source::LogitsSource;
