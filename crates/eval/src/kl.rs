//! KL divergence and token-probability statistics of a test model against a reference, mirroring the
//! statistics `llama-perplexity --kl-divergence` prints.
//!
//! One difference from llama.cpp, on purpose: llama.cpp stores the reference log-probabilities in 16 bits and
//! therefore skips reference probabilities below e⁻¹⁶; here both sides are exact f64 log-softmaxes of the f32
//! logits, so the numbers are the exact values llama.cpp approximates.

use std::fmt;

use crate::error::EvalError;
use crate::perplexity::{NllSums, Progress};
use crate::protocol::PerplexityProtocol;
use crate::softmax::{argmax, log_softmax};
use crate::source::{checked_logits, LogitsSource};

/// Accumulates per-position statistics of `test` against `reference`.
#[derive(Debug, Default, Clone)]
pub struct KlStats {
    nll_test: NllSums,
    nll_ref: NllSums,
    sum_nll_nll_ref: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    n_same_top: usize,
    kld_values: Vec<f64>,
    p_diff_values: Vec<f64>,
}

/// Statistics for one scored position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionKl {
    /// `KL(P_ref ‖ P_test) = Σ p_ref (ln p_ref − ln p_test)`.
    pub kld: f64,
    /// `p_test(target) − p_ref(target)`: change in probability of the token that actually came next.
    pub p_diff: f64,
    /// Whether both models put their maximum on the same token.
    pub same_top: bool,
}

/// `(mean, standard error)` as llama.cpp computes it: no uncertainty for 10 values or fewer.
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count == 0 {
        return (0.0, 0.0);
    }
    let n = count as f64;
    let mean = sum / n;
    let var = sum2 / n - mean * mean;
    let err = if var > 0.0 && count > 10 {
        (var / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, err)
}

/// llama.cpp's covariance of two running sums (zero below 10 values).
fn covariance(sum_a: f64, sum_b: f64, sum_ab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1.0)
}

/// Linear-interpolated percentile of sorted values, as llama.cpp computes it.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let ip = p as usize;
    let frac = p - ip as f64;
    (1.0 - frac) * sorted[ip] + frac * sorted[(ip + 1).min(sorted.len() - 1)]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        0.5 * (sorted[n / 2] + sorted[n / 2 - 1])
    } else {
        sorted[n / 2]
    }
}

impl KlStats {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions added so far.
    pub fn count(&self) -> usize {
        self.nll_test.count
    }

    /// Adds one position: the reference and test logits rows and the token that actually follows.
    pub fn add(
        &mut self,
        ref_row: &[f32],
        test_row: &[f32],
        target: u32,
    ) -> Result<PositionKl, EvalError> {
        if ref_row.len() != test_row.len() {
            return Err(EvalError::VocabMismatch {
                reference: ref_row.len(),
                test: test_row.len(),
            });
        }
        let t = target as usize;
        if t >= ref_row.len() {
            return Err(EvalError::TokenOutOfRange {
                token: target,
                vocab: ref_row.len(),
            });
        }
        let lp_ref = log_softmax(ref_row);
        let lp_test = log_softmax(test_row);
        let kld: f64 = lp_ref
            .iter()
            .zip(&lp_test)
            .map(|(&r, &q)| {
                if r == f64::NEG_INFINITY {
                    0.0
                } else {
                    r.exp() * (r - q)
                }
            })
            .sum();
        let nll_ref = -lp_ref[t];
        let nll_test = -lp_test[t];
        self.nll_ref.add(nll_ref);
        self.nll_test.add(nll_test);
        self.sum_nll_nll_ref += nll_ref * nll_test;
        self.sum_kld += kld;
        self.sum_kld2 += kld * kld;
        let p_diff = (-nll_test).exp() - (-nll_ref).exp();
        self.sum_p_diff += p_diff;
        self.sum_p_diff2 += p_diff * p_diff;
        self.sum_p_diff4 += p_diff * p_diff * p_diff * p_diff;
        let same_top = argmax(ref_row) == argmax(test_row);
        self.n_same_top += usize::from(same_top);
        self.kld_values.push(kld);
        self.p_diff_values.push(p_diff);
        Ok(PositionKl {
            kld,
            p_diff,
            same_top,
        })
    }

    /// Running mean KL divergence (0 before any position).
    pub fn mean_kld(&self) -> f64 {
        mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count()).0
    }

    /// The summary statistics; fails on an empty accumulator.
    pub fn report(&self) -> Result<KlReport, EvalError> {
        let count = self.count();
        if count == 0 {
            return Err(EvalError::Empty);
        }
        let mut kld = self.kld_values.clone();
        kld.sort_by(f64::total_cmp);
        let mut p_diff = self.p_diff_values.clone();
        p_diff.sort_by(f64::total_cmp);

        let (ln_ppl_test, ln_ppl_test_err) =
            mean_and_uncertainty(self.nll_test.nll, self.nll_test.nll2, count);
        let (ln_ppl_ref, ln_ppl_ref_err) =
            mean_and_uncertainty(self.nll_ref.nll, self.nll_ref.nll2, count);
        let cov = covariance(
            self.nll_test.nll,
            self.nll_ref.nll,
            self.sum_nll_nll_ref,
            count,
        );
        let ratio_var =
            ln_ppl_test_err * ln_ppl_test_err + ln_ppl_ref_err * ln_ppl_ref_err - 2.0 * cov;
        let (mean_kld, mean_kld_stderr) = mean_and_uncertainty(self.sum_kld, self.sum_kld2, count);
        let (mean_p_diff, mean_p_diff_stderr) =
            mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, count);
        let (p_diff_mse, p_diff_mse_err) =
            mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, count);
        let rms_p_diff = p_diff_mse.sqrt();
        let rms_p_diff_stderr = if rms_p_diff > 0.0 {
            0.5 / rms_p_diff * p_diff_mse_err
        } else {
            0.0
        };
        let same_top = self.n_same_top as f64 / count as f64;
        let same_top_stderr = if count > 1 {
            (same_top * (1.0 - same_top) / (count - 1) as f64).sqrt()
        } else {
            0.0
        };
        Ok(KlReport {
            count,
            ppl_test: ln_ppl_test.exp(),
            ppl_test_stderr: ln_ppl_test.exp() * ln_ppl_test_err,
            ppl_ref: ln_ppl_ref.exp(),
            ppl_ref_stderr: ln_ppl_ref.exp() * ln_ppl_ref_err,
            ln_ppl_ratio: ln_ppl_test - ln_ppl_ref,
            ln_ppl_ratio_stderr: ratio_var.max(0.0).sqrt(),
            mean_kld,
            mean_kld_stderr,
            max_kld: kld[kld.len() - 1],
            kld_p999: percentile(&kld, 0.999),
            kld_p99: percentile(&kld, 0.99),
            kld_p90: percentile(&kld, 0.90),
            median_kld: median(&kld),
            min_kld: kld[0],
            mean_p_diff,
            mean_p_diff_stderr,
            max_p_diff: p_diff[p_diff.len() - 1],
            median_p_diff: median(&p_diff),
            min_p_diff: p_diff[0],
            rms_p_diff,
            rms_p_diff_stderr,
            same_top,
            same_top_stderr,
        })
    }
}

/// The statistics `llama-perplexity --kl-divergence` prints. Probabilities are fractions (not percent).
#[derive(Debug, Clone, PartialEq)]
pub struct KlReport {
    /// Positions compared.
    pub count: usize,
    /// Perplexity of the test model ("Mean PPL(Q)").
    pub ppl_test: f64,
    /// Its standard error.
    pub ppl_test_stderr: f64,
    /// Perplexity of the reference ("Mean PPL(base)").
    pub ppl_ref: f64,
    /// Its standard error.
    pub ppl_ref_stderr: f64,
    /// `ln(PPL(Q)/PPL(base))`.
    pub ln_ppl_ratio: f64,
    /// Its standard error, accounting for the correlation of the two.
    pub ln_ppl_ratio_stderr: f64,
    /// "Mean KLD".
    pub mean_kld: f64,
    /// Standard error of the mean KLD.
    pub mean_kld_stderr: f64,
    /// "Maximum KLD".
    pub max_kld: f64,
    /// "99.9% KLD".
    pub kld_p999: f64,
    /// "99.0% KLD".
    pub kld_p99: f64,
    /// "90.0% KLD".
    pub kld_p90: f64,
    /// "Median KLD".
    pub median_kld: f64,
    /// "Minimum KLD".
    pub min_kld: f64,
    /// "Mean Δp": mean of `p_test(next) − p_ref(next)`.
    pub mean_p_diff: f64,
    /// Its standard error.
    pub mean_p_diff_stderr: f64,
    /// "Maximum Δp".
    pub max_p_diff: f64,
    /// "Median Δp".
    pub median_p_diff: f64,
    /// "Minimum Δp".
    pub min_p_diff: f64,
    /// "RMS Δp".
    pub rms_p_diff: f64,
    /// Its standard error.
    pub rms_p_diff_stderr: f64,
    /// "Same top p": fraction of positions where both argmaxes agree.
    pub same_top: f64,
    /// Its binomial standard error.
    pub same_top_stderr: f64,
}

impl fmt::Display for KlReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "positions        : {}", self.count)?;
        writeln!(
            f,
            "Mean PPL(Q)      : {:.6} ± {:.6}",
            self.ppl_test, self.ppl_test_stderr
        )?;
        writeln!(
            f,
            "Mean PPL(base)   : {:.6} ± {:.6}",
            self.ppl_ref, self.ppl_ref_stderr
        )?;
        writeln!(
            f,
            "Mean ln(PPL(Q)/PPL(base)): {:.6} ± {:.6}",
            self.ln_ppl_ratio, self.ln_ppl_ratio_stderr
        )?;
        writeln!(
            f,
            "Mean    KLD: {:.6} ± {:.6}",
            self.mean_kld, self.mean_kld_stderr
        )?;
        writeln!(f, "Maximum KLD: {:.6}", self.max_kld)?;
        writeln!(f, "99.9%   KLD: {:.6}", self.kld_p999)?;
        writeln!(f, "99.0%   KLD: {:.6}", self.kld_p99)?;
        writeln!(f, "Median  KLD: {:.6}", self.median_kld)?;
        writeln!(
            f,
            "Mean    Δp: {:.3} ± {:.3} %",
            100.0 * self.mean_p_diff,
            100.0 * self.mean_p_diff_stderr
        )?;
        writeln!(
            f,
            "RMS Δp    : {:.3} ± {:.3} %",
            100.0 * self.rms_p_diff,
            100.0 * self.rms_p_diff_stderr
        )?;
        write!(
            f,
            "Same top p: {:.3} ± {:.3} %",
            100.0 * self.same_top,
            100.0 * self.same_top_stderr
        )
    }
}

/// Runs the same windows through `reference` and `test` and compares them position by position. Progress
/// reports the running mean KLD.
pub fn kl_divergence(
    reference: &mut dyn LogitsSource,
    test: &mut dyn LogitsSource,
    tokens: &[u32],
    protocol: &PerplexityProtocol,
    mut progress: Option<Progress<'_>>,
) -> Result<KlReport, EvalError> {
    let (vr, vt) = (reference.vocab_size(), test.vocab_size());
    if vr != vt {
        return Err(EvalError::VocabMismatch {
            reference: vr,
            test: vt,
        });
    }
    let n_chunks = protocol.n_chunks_for(tokens.len())?;
    let mut stats = KlStats::new();
    for chunk in 0..n_chunks {
        let (input, original) = protocol.window(tokens, chunk);
        let ref_logits = checked_logits(reference, &input)?;
        let test_logits = checked_logits(test, &input)?;
        for (j, target) in protocol.scored_positions(original) {
            let row = j * vr..(j + 1) * vr;
            stats.add(&ref_logits[row.clone()], &test_logits[row], target)?;
        }
        if let Some(cb) = progress.as_mut() {
            cb(chunk + 1, n_chunks, stats.mean_kld());
        }
    }
    stats.report()
}
