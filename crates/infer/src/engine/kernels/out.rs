//! A matmul's token-major output (`n × rows`) split by row ranges, so that each parallel task
//! writes its rows' results in place.
//!
//! Why: a task owns rows `r0..r1` for every token, which in a token-major output are `n` separate
//! runs, one per token. Handing each task its own buffer and copying the buffers into the output
//! afterwards cost an allocation per task and a second parallel pass per product (a tenth of
//! prompt time on short prompts). The views below give each task its runs directly: the tasks'
//! ranges are disjoint, so no two views ever reach the same value.

use std::marker::PhantomData;

/// An output of `n` tokens × `stride` values, shared by tasks that each write their own columns.
pub(super) struct SharedOut<'a> {
    ptr: *mut f32,
    n: usize,
    stride: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `SharedOut` only hands out `RowsOut` views through `rows`, whose contract makes the
// views of different threads disjoint; the pointer itself is never read or written here.
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    /// `out` as `n` tokens × `stride` values.
    pub(super) fn new(out: &'a mut [f32], n: usize, stride: usize) -> Self {
        assert_eq!(out.len(), n * stride, "output of {n} × {stride}");
        SharedOut {
            ptr: out.as_mut_ptr(),
            n,
            stride,
            _out: PhantomData,
        }
    }

    /// The view of columns `r0..r1` of every token.
    ///
    /// # Safety
    /// No other live view may overlap `r0..r1`.
    pub(super) unsafe fn rows(&self, r0: usize, r1: usize) -> RowsOut<'_> {
        assert!(
            r0 <= r1 && r1 <= self.stride,
            "columns {r0}..{r1} of {}",
            self.stride
        );
        RowsOut {
            ptr: self.ptr,
            n: self.n,
            stride: self.stride,
            r0,
            r1,
            _out: PhantomData,
        }
    }
}

/// Columns `r0..r1` of each of `n` token rows of an output: one task's results.
pub(super) struct RowsOut<'a> {
    ptr: *mut f32,
    n: usize,
    stride: usize,
    r0: usize,
    r1: usize,
    _out: PhantomData<&'a mut [f32]>,
}

impl<'a> RowsOut<'a> {
    /// The whole of `out`, one token of `out.len()` values.
    pub(super) fn whole(out: &'a mut [f32]) -> Self {
        RowsOut {
            ptr: out.as_mut_ptr(),
            n: 1,
            stride: out.len(),
            r0: 0,
            r1: out.len(),
            _out: PhantomData,
        }
    }

    /// `out` as `n` tokens × `out.len() / n` values, all columns.
    pub(super) fn tokens(out: &'a mut [f32], n: usize) -> Self {
        let stride = out.len() / n.max(1);
        assert_eq!(out.len(), n * stride, "output of {n} tokens");
        RowsOut {
            ptr: out.as_mut_ptr(),
            n,
            stride,
            r0: 0,
            r1: stride,
            _out: PhantomData,
        }
    }

    /// Token `t`'s values of this view's columns.
    pub(super) fn token(&mut self, t: usize) -> &mut [f32] {
        assert!(t < self.n, "token {t} of {}", self.n);
        // SAFETY: `t < n` and `r0 <= r1 <= stride`, so the run lies inside the `n × stride`
        // output this view borrows; views of one output cover disjoint columns (the contract of
        // `SharedOut::rows`; the other constructors borrow the output whole), and the returned
        // slice borrows the view mutably, so nothing else reaches these values while it lives.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.add(t * self.stride + self.r0),
                self.r1 - self.r0,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks writing disjoint column ranges fill every value of the output exactly once.
    #[test]
    fn disjoint_views_fill_the_output() {
        let (n, stride) = (5, 37);
        let mut out = vec![-1f32; n * stride];
        let shared = SharedOut::new(&mut out, n, stride);
        let pool = super::super::pool::Pool::new(2, "test").unwrap();
        pool.install(|| {
            super::super::pool::for_each(stride.div_ceil(16), |c| {
                let (r0, r1) = (16 * c, (16 * c + 16).min(stride));
                // SAFETY: the tasks' ranges are disjoint.
                let mut v = unsafe { shared.rows(r0, r1) };
                for t in 0..n {
                    for (i, x) in v.token(t).iter_mut().enumerate() {
                        *x = (t * stride + r0 + i) as f32;
                    }
                }
            })
        });
        assert!(out.iter().enumerate().all(|(i, &x)| x == i as f32));
    }
}
