//! Learning-rate schedules.
//!
//! candle-nn's optimizers only expose `set_learning_rate`; the schedule itself is ours. Every
//! schedule is a pure function of the optimizer step, so a checkpoint only needs the step to
//! resume it exactly (no hidden schedule state to save).

use serde::{Deserialize, Serialize};

use crate::error::{DistillError, Result};

/// Learning rate as a function of the (0-based) optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant {
        /// Learning rate.
        lr: f64,
    },
    /// Linear warmup from 0 to `max_lr` over `warmup_steps`, then linear to `end_lr` at `total_steps`.
    Linear {
        /// Peak rate, reached at the end of warmup.
        max_lr: f64,
        /// Rate at `total_steps` and after.
        end_lr: f64,
        /// Warmup length (0 for none).
        warmup_steps: usize,
        /// Step at which `end_lr` is reached.
        total_steps: usize,
    },
    /// Linear warmup, then half-cosine decay from `max_lr` to `min_lr` at `total_steps`.
    WarmupCosine {
        /// Peak rate, reached at the end of warmup.
        max_lr: f64,
        /// Floor, reached at `total_steps` and kept after.
        min_lr: f64,
        /// Warmup length (0 for none).
        warmup_steps: usize,
        /// Step at which `min_lr` is reached.
        total_steps: usize,
    },
}

impl LrSchedule {
    /// Learning rate for optimizer step `step` (0-based).
    ///
    /// Warmup is `max_lr * (step + 1) / warmup_steps`, so the very first update is not wasted at
    /// rate 0 and step `warmup_steps - 1` already uses `max_lr`; the decay then runs from
    /// `max_lr` at `step == warmup_steps` to its end value at `step == total_steps`.
    pub fn lr_at(&self, step: usize) -> f64 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::Linear {
                max_lr,
                end_lr,
                warmup_steps,
                total_steps,
            } => warmup(max_lr, step, warmup_steps).unwrap_or_else(|| {
                linear_interp(
                    max_lr,
                    end_lr,
                    step - warmup_steps,
                    total_steps.saturating_sub(warmup_steps),
                )
            }),
            LrSchedule::WarmupCosine {
                max_lr,
                min_lr,
                warmup_steps,
                total_steps,
            } => warmup(max_lr, step, warmup_steps).unwrap_or_else(|| {
                cosine_interp(
                    max_lr,
                    min_lr,
                    step - warmup_steps,
                    total_steps.saturating_sub(warmup_steps),
                )
            }),
        }
    }

    /// Reject negative or non-finite rates and a warmup longer than the run.
    pub fn validate(&self) -> Result<()> {
        let (rates, warm, total): (Vec<f64>, usize, usize) = match *self {
            LrSchedule::Constant { lr } => (vec![lr], 0, 0),
            LrSchedule::Linear {
                max_lr,
                end_lr,
                warmup_steps,
                total_steps,
            } => (vec![max_lr, end_lr], warmup_steps, total_steps),
            LrSchedule::WarmupCosine {
                max_lr,
                min_lr,
                warmup_steps,
                total_steps,
            } => (vec![max_lr, min_lr], warmup_steps, total_steps),
        };
        if rates.iter().any(|r| !r.is_finite() || *r < 0.0) {
            return Err(DistillError::InvalidConfig(format!(
                "learning rates must be finite and >= 0, got {rates:?}"
            )));
        }
        if warm > total {
            return Err(DistillError::InvalidConfig(format!(
                "warmup_steps ({warm}) exceeds total_steps ({total})"
            )));
        }
        Ok(())
    }
}

fn warmup(max_lr: f64, step: usize, warmup_steps: usize) -> Option<f64> {
    (step < warmup_steps).then(|| max_lr * (step + 1) as f64 / warmup_steps as f64)
}

/// `from` at `step == 0` to `to` at `step >= steps`, linearly.
pub(crate) fn linear_interp(from: f64, to: f64, step: usize, steps: usize) -> f64 {
    if steps == 0 || step >= steps {
        return to;
    }
    from + (to - from) * step as f64 / steps as f64
}

/// `from` at `step == 0` to `to` at `step >= steps` along a half cosine.
pub(crate) fn cosine_interp(from: f64, to: f64, step: usize, steps: usize) -> f64 {
    if steps == 0 || step >= steps {
        return to;
    }
    let progress = step as f64 / steps as f64;
    to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_hits_endpoints() {
        let s = LrSchedule::WarmupCosine {
            max_lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert_eq!(s.lr_at(0), 1e-4);
        assert_eq!(s.lr_at(9), 1e-3);
        assert_eq!(s.lr_at(10), 1e-3);
        assert!((s.lr_at(60) - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-15);
        assert_eq!(s.lr_at(110), 1e-5);
        assert_eq!(s.lr_at(1000), 1e-5);
        for w in (0..110).collect::<Vec<_>>().windows(2).skip(10) {
            assert!(s.lr_at(w[1]) <= s.lr_at(w[0]));
        }
    }

    #[test]
    fn linear_and_constant_hit_endpoints() {
        let s = LrSchedule::Linear {
            max_lr: 1.0,
            end_lr: 0.0,
            warmup_steps: 0,
            total_steps: 4,
        };
        let got: Vec<f64> = (0..6).map(|i| s.lr_at(i)).collect();
        assert_eq!(got, vec![1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
        assert_eq!(LrSchedule::Constant { lr: 0.1 }.lr_at(12345), 0.1);
    }

    #[test]
    fn validation() {
        assert!(LrSchedule::Constant { lr: -1.0 }.validate().is_err());
        assert!(LrSchedule::WarmupCosine {
            max_lr: 1.0,
            min_lr: 0.0,
            warmup_steps: 5,
            total_steps: 4
        }
        .validate()
        .is_err());
    }
}
