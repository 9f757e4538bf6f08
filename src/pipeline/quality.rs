//! Quality against the original: held-out perplexity, KL divergence and same-top-1.

use serde::{Deserialize, Serialize};
use shuku_eval::{kl_divergence, perplexity, LogitsSource, PerplexityProtocol, Progress};

use super::Result;

/// A model's quality on held-out text, in llama-perplexity's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Perplexity.
    pub ppl: f64,
    /// Its standard error.
    pub ppl_stderr: f64,
    /// Mean KL divergence from the original's next-token distribution (`None` for the original).
    pub mean_kld: Option<f64>,
    /// Fraction of positions where the most likely token is the original's (`None` for the original).
    pub same_top1: Option<f64>,
}

/// The quality of `test` on `tokens`; with `reference` (the original model), its KL divergence and
/// same-top-1 against it too (both evaluated on the same windows). `progress(done, total, value)`
/// follows the windows.
pub fn quality(
    reference: Option<&mut dyn LogitsSource>,
    test: &mut dyn LogitsSource,
    tokens: &[u32],
    protocol: &PerplexityProtocol,
    progress: Option<Progress<'_>>,
) -> Result<Quality> {
    Ok(match reference {
        Some(reference) => {
            let kl = kl_divergence(reference, test, tokens, protocol, progress)?;
            Quality {
                ppl: kl.ppl_test,
                ppl_stderr: kl.ppl_test_stderr,
                mean_kld: Some(kl.mean_kld),
                same_top1: Some(kl.same_top),
            }
        }
        None => {
            let p = perplexity(test, tokens, protocol, progress)?;
            Quality {
                ppl: p.ppl,
                ppl_stderr: p.ppl_stderr,
                mean_kld: None,
                same_top1: None,
            }
        }
    })
}
