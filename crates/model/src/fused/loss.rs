//! Losses from logits in one pass per row: cross-entropy against integer targets and the distillation
//! KL divergence. The backward pass writes `softmax − target` directly, where the composed version keeps
//! an `[N, V]` log-softmax and its intermediates alive and walks them several times.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_tensor, f32s, rows_per_task, with_f32s};
use multiversion::multiversion;
use shuku_math::{exp, lane_max, lane_sum};

/// Marks a position whose target is ignored.
pub(super) const IGNORED: u32 = u32::MAX;

/// Mean cross-entropy of `logits` `[N, C]` against `targets` (one per row, each `< C` or `None` to
/// ignore the row). The mean runs over the rows not ignored; with none left the loss is 0.
/// Differentiable in `logits`.
pub fn cross_entropy(logits: &Tensor, targets: &[Option<u32>]) -> candle_core::Result<Tensor> {
    let (n, c) = logits.dims2()?;
    let (ids, count) = target_ids(targets, (n, c), "cross_entropy")?;
    logits.contiguous()?.apply_op1(CrossEntropy {
        targets: ids.into(),
        count,
    })
}

/// `targets` (one per each of `n` rows, `None` to ignore it) as class ids below `c`, ignored rows as
/// [`IGNORED`], with the count of rows kept (at least 1, the mean's divisor); a wrong count or an id
/// outside the classes is an error naming `op`.
pub(super) fn target_ids(
    targets: &[Option<u32>],
    (n, c): (usize, usize),
    op: &str,
) -> candle_core::Result<(Vec<u32>, usize)> {
    if targets.len() != n {
        candle_core::bail!("{op}: {} targets for {n} rows", targets.len());
    }
    let mut ids = Vec::with_capacity(n);
    for t in targets {
        match *t {
            Some(id) if (id as usize) < c => ids.push(id),
            Some(id) => candle_core::bail!("{op}: target {id} is outside {c} classes"),
            None => ids.push(IGNORED),
        }
    }
    let count = ids.iter().filter(|&&id| id != IGNORED).count().max(1);
    Ok((ids, count))
}

/// `T² · KL(softmax(teacher/T) ‖ softmax(student/T))`, averaged over the rows of `[N, C]` logits
/// (Hinton's distillation loss). Differentiable in `student`; the teacher receives no gradient.
pub fn forward_kl(
    student: &Tensor,
    teacher: &Tensor,
    temperature: f64,
) -> candle_core::Result<Tensor> {
    if student.dims() != teacher.dims() || student.rank() != 2 {
        candle_core::bail!(
            "forward_kl: student {:?} and teacher {:?} must be the same [N, C]",
            student.dims(),
            teacher.dims()
        );
    }
    student.contiguous()?.apply_op2(
        &teacher.detach().contiguous()?,
        ForwardKl {
            temperature: temperature as f32,
        },
    )
}

/// `(max, log Σ exp(x − max))` of one row scaled by `1/temperature`.
#[multiversion(targets = "simd")]
pub(super) fn log_sum_exp(row: &[f32], inv_t: f32) -> (f32, f32) {
    let max = lane_max(row) * inv_t;
    let sum = lane_sum(row, row, |x, _| exp(x * inv_t - max));
    (max, sum.ln())
}

/// `d = g · exp(x · inv_t − shift)` over one row: `g` times the softmax when `shift` is the row's
/// log-sum-exp.
#[multiversion(targets = "simd")]
fn scaled_exp(d: &mut [f32], x: &[f32], inv_t: f32, shift: f32, g: f32) {
    for (d, v) in d.iter_mut().zip(x) {
        *d = g * exp(v * inv_t - shift);
    }
}

/// `KL(softmax(t/T) ‖ softmax(s/T))` of one row pair, given both rows' log-sum-exps `(zs, zt)` at
/// `1/T = inv_t`.
#[multiversion(targets = "simd")]
pub(super) fn kl_row(s: &[f32], t: &[f32], inv_t: f32, (zs, zt): (f32, f32)) -> f32 {
    lane_sum(s, t, |s, t| {
        let log_pt = t * inv_t - zt;
        exp(log_pt) * (log_pt - (s * inv_t - zs))
    })
}

/// `d = coef · (softmax(s/T) − softmax(t/T))` over one row pair, given their log-sum-exps.
#[multiversion(targets = "simd")]
fn kl_gradient(
    d: &mut [f32],
    (s, t): (&[f32], &[f32]),
    inv_t: f32,
    (zs, zt): (f32, f32),
    coef: f32,
) {
    for ((d, s), t) in d.iter_mut().zip(s).zip(t) {
        *d = coef * (exp(s * inv_t - zs) - exp(t * inv_t - zt));
    }
}

/// Sums per-chunk partials of `f(row index, row)` over the rows of `x` (row length `c`) in a fixed
/// order.
fn sum_rows(x: &[f32], c: usize, f: impl Fn(usize, &[f32]) -> f64 + Sync) -> f64 {
    let task = rows_per_task(c);
    let partial: Vec<f64> = x
        .par_chunks(task * c)
        .enumerate()
        .map(|(chunk, rows)| {
            rows.chunks_exact(c)
                .enumerate()
                .map(|(r, row)| f(chunk * task + r, row))
                .sum()
        })
        .collect();
    partial.iter().sum()
}

fn scalar(value: f64) -> (CpuStorage, Shape) {
    (CpuStorage::F32(vec![value as f32]), Shape::from(()))
}

struct CrossEntropy {
    targets: Arc<[u32]>,
    count: usize,
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "shuku-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, self.name())?;
        let (_, c) = l.shape().dims2()?;
        let total = sum_rows(x, c, |n, row| match self.targets[n] {
            IGNORED => 0.0,
            t => {
                let (max, lse) = log_sum_exp(row, 1.0);
                f64::from(max + lse - row[t as usize])
            }
        });
        Ok(scalar(total / self.count as f64))
    }

    /// `d logits[n] = g / count · (softmax(logits[n]) − onehot(target[n]))`, zero on ignored rows.
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (_, c) = x.dims2()?;
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? / self.count as f32;
        let dx = with_f32s([x], self.name(), |[x]| {
            let mut dx = vec![0f32; x.len()];
            let task = rows_per_task(c) * c;
            dx.par_chunks_mut(task)
                .zip(x.par_chunks(task))
                .enumerate()
                .for_each(|(chunk, (dx, x))| {
                    for (r, (dx, x)) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).enumerate() {
                        let t = self.targets[chunk * task / c + r];
                        if t == IGNORED {
                            continue;
                        }
                        let (max, lse) = log_sum_exp(x, 1.0);
                        scaled_exp(dx, x, 1.0, max + lse, g);
                        dx[t as usize] -= g;
                    }
                });
            Ok(dx)
        })?;
        Ok(Some(cpu_tensor(dx, x.dims())?))
    }
}

struct ForwardKl {
    temperature: f32,
}

impl CustomOp2 for ForwardKl {
    fn name(&self) -> &'static str {
        "shuku-forward-kl"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (s, t) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let (n, c) = l1.shape().dims2()?;
        let inv_t = 1.0 / self.temperature;
        let total = sum_rows(s, c, |r, srow| {
            let trow = &t[r * c..][..c];
            let (ms, ls) = log_sum_exp(srow, inv_t);
            let (mt, lt) = log_sum_exp(trow, inv_t);
            f64::from(kl_row(srow, trow, inv_t, (ms + ls, mt + lt)))
        });
        let t2 = f64::from(self.temperature).powi(2);
        Ok(scalar(t2 * total / n.max(1) as f64))
    }

    /// `d student[n] = g · T / N · (softmax(student[n]/T) − softmax(teacher[n]/T))`.
    fn bwd(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c) = student.dims2()?;
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let coef = g * self.temperature / n.max(1) as f32;
        let inv_t = 1.0 / self.temperature;
        let ds = with_f32s([student, teacher], self.name(), |[s, t]| {
            let mut ds = vec![0f32; s.len()];
            let task = rows_per_task(c) * c;
            ds.par_chunks_mut(task)
                .zip(s.par_chunks(task).zip(t.par_chunks(task)))
                .for_each(|(ds, (s, t))| {
                    for ((ds, s), t) in ds
                        .chunks_exact_mut(c)
                        .zip(s.chunks_exact(c))
                        .zip(t.chunks_exact(c))
                    {
                        let (ms, ls) = log_sum_exp(s, inv_t);
                        let (mt, lt) = log_sum_exp(t, inv_t);
                        kl_gradient(ds, (s, t), inv_t, (ms + ls, mt + lt), coef);
                    }
                });
            Ok(ds)
        })?;
        Ok((Some(cpu_tensor(ds, student.dims())?), None))
    }
}
