//! Dense linear algebra for Hessian-aware compression (GPTQ quantization, SparseGPT pruning).
//!
//! Both methods minimise the layer-output error `‖X Wᵀ − X Ŵᵀ‖²` one weight column (= one input feature) at a
//! time. The error of a column that has been rounded or pruned is pushed onto the columns still to come,
//! weighted by the inverse Hessian `H⁻¹ = (XᵀX)⁻¹` (the Optimal Brain Surgeon update). Frantar et al., *GPTQ:
//! Accurate Post-Training Quantization for Generative Pre-trained Transformers* (2022), Algorithm 1, show
//! that processing the columns in a fixed order needs only the rows of the upper Cholesky factor `U` of
//! `H⁻¹` (`H⁻¹ = UᵀU`), and that the updates can be batched lazily over blocks of columns.
//!
//! * [`damped_cholesky_inverse_upper`] prepares `U` from a calibration Hessian exactly as the reference
//!   implementation's `fasterquant` does (dead columns, relative damping), retrying with more damping when
//!   the Hessian is numerically singular.
//! * [`obs_sweep`] runs the column sweep with lazy block updates; a caller-supplied closure decides each
//!   column's new values (quantize for GPTQ, zero for SparseGPT) and can read the current state of the
//!   columns still to come through a [`ColumnView`].
//!
//! Everything is plain Rust on row-major `Vec`s, in f64 where the factorisation needs it. The `O(n³)` and
//! `O(rows·cols²)` loops are spread over rows with scoped threads once they are large enough to pay for them.

use std::num::NonZeroUsize;
use std::ops::Range;

use crate::error::{ModelError, Result};

/// How many times the damping is multiplied by ten after the first failed factorisation.
const DAMP_RETRIES: usize = 4;

/// Relative damping the retries start from when the caller asked for none (the reference default).
const FALLBACK_PERCDAMP: f64 = 0.01;

/// Columns factored together by the blocked Cholesky decomposition.
const CHOLESKY_BLOCK: usize = 64;

/// Rows of `L⁻¹` solved together, so every row of `L` read from memory serves all of them.
const INVERSE_ROW_GROUP: usize = 8;

/// Estimated multiply-adds below which a row loop stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Prepares the inverse-Hessian factor that GPTQ and SparseGPT sweep with.
///
/// `h` is the `n × n` row-major calibration Hessian `XᵀX` (symmetric; the factor 2/N of the true Hessian
/// cancels). Following the reference implementation (IST-DASLab `gptq`, `GPTQ.fasterquant`):
///
/// 1. Columns with `H[i,i] == 0` never saw a non-zero input; they are *dead*: `H[i,i]` is set to 1 so the
///    matrix stays invertible, and the caller must zero those weight columns (see [`zero_dead_columns`]),
///    since any value there is unobservable.
/// 2. `percdamp · mean(diag H)` (mean taken after step 1) is added to the diagonal. This keeps the
///    factorisation stable when `X` has (nearly) dependent columns; GPTQ uses `percdamp = 0.01`.
/// 3. The result is `U`, the upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`), row-major `n × n` with zeros
///    below the diagonal, and the dead-column mask.
///
/// The reference computes `chol(H)`, inverts it to `H⁻¹` and factors again. This function reaches the same
/// `U` (the Cholesky factor with positive diagonal is unique) with one factorisation and one triangular
/// inverse: if `H = R Rᵀ` with `R` upper triangular, then `H⁻¹ = (R⁻¹)ᵀ R⁻¹`, so `U = R⁻¹`; and `R` is the
/// ordinary lower Cholesky factor of `H` with its rows and columns in reverse order, re-reversed. Only the
/// upper triangle and the diagonal of `h` are read.
///
/// When the damped matrix is not numerically positive definite, the damping is multiplied by ten (starting
/// from 0.01 if `percdamp` was 0) up to four times before [`ModelError::Numerical`] is returned. Non-finite
/// entries are refused at once with the same error; a length that is not a square or a negative or
/// non-finite `percdamp` is [`ModelError::InvalidInput`].
pub fn damped_cholesky_inverse_upper(h: &[f64], percdamp: f64) -> Result<(Vec<f64>, Vec<bool>)> {
    let n = square_side(h.len())?;
    if !(percdamp.is_finite() && percdamp >= 0.0) {
        return Err(ModelError::InvalidInput(format!(
            "percdamp must be a finite non-negative number, got {percdamp}"
        )));
    }
    if let Some(p) = h.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::Numerical(format!(
            "Hessian entry ({}, {}) is {}",
            p / n,
            p % n,
            h[p]
        )));
    }
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let dead: Vec<bool> = (0..n).map(|i| h[i * n + i] == 0.0).collect();
    let diag: Vec<f64> = (0..n)
        .map(|i| if dead[i] { 1.0 } else { h[i * n + i] })
        .collect();
    let mean_diag = diag.iter().sum::<f64>() / n as f64;
    let mut relative = percdamp;
    for attempt in 0..=DAMP_RETRIES {
        if let Some(upper) = upper_factor_of_inverse(h, &diag, relative * mean_diag) {
            return Ok((upper, dead));
        }
        if attempt < DAMP_RETRIES {
            relative = if relative > 0.0 {
                relative * 10.0
            } else {
                FALLBACK_PERCDAMP
            };
        }
    }
    Err(ModelError::Numerical(format!(
        "{n}×{n} Hessian is not positive definite even with relative damping {relative}"
    )))
}

/// Zeroes the weight columns that [`damped_cholesky_inverse_upper`] reported dead (`w` is `rows × cols`
/// row-major, `dead` has one entry per column).
pub fn zero_dead_columns(w: &mut [f32], cols: usize, dead: &[bool]) {
    debug_assert_eq!(dead.len(), cols);
    for row in w.chunks_mut(cols.max(1)) {
        for (v, &d) in row.iter_mut().zip(dead) {
            if d {
                *v = 0.0;
            }
        }
    }
}

/// `n` with `n² == len`, or an input error.
fn square_side(len: usize) -> Result<usize> {
    let n = len.isqrt();
    if n * n != len {
        return Err(ModelError::InvalidInput(format!(
            "Hessian has {len} entries, not a square matrix"
        )));
    }
    Ok(n)
}

/// `U` for `H` with diagonal replaced by `diag + damp`, or `None` when the Cholesky factorisation fails.
///
/// Reversing a row-major matrix's flat storage reverses both its row and column order (`P H P` with `P`
/// the exchange matrix), which turns the lower factor of the reversed matrix into the upper factor `R` of
/// `H = R Rᵀ`, and the inverse of that lower factor into `U = R⁻¹`.
fn upper_factor_of_inverse(h: &[f64], diag: &[f64], damp: f64) -> Option<Vec<f64>> {
    let n = diag.len();
    let mut a: Vec<f64> = h.iter().rev().copied().collect();
    for i in 0..n {
        a[i * n + i] = diag[n - 1 - i] + damp;
    }
    cholesky_lower_in_place(&mut a, n).ok()?;
    let mut u = invert_lower(&a, n);
    u.reverse();
    Some(u)
}

/// Blocked right-looking Cholesky factorisation `A = L Lᵀ` of a row-major `n × n` matrix, writing `L` into
/// the lower triangle (the strict upper triangle is left as it was). Fails with the index of the first
/// non-positive (or non-finite) pivot.
fn cholesky_lower_in_place(a: &mut [f64], n: usize) -> std::result::Result<(), usize> {
    for k0 in (0..n).step_by(CHOLESKY_BLOCK) {
        let k1 = (k0 + CHOLESKY_BLOCK).min(n);
        factor_diagonal_block(a, n, k0..k1)?;
        if k1 == n {
            break;
        }
        let nb = k1 - k0;
        let diag_block: Vec<f64> = (k0..k1)
            .flat_map(|i| a[i * n + k0..i * n + k1].iter().copied())
            .collect();
        let (_, below) = a.split_at_mut(k1 * n);
        // Panel: L[i, k0..k1] for every row below the diagonal block (rows are independent).
        let panel_work = (n - k1) * nb * nb / 2;
        par_rows(below, n, panel_work, |_, row| {
            solve_panel_row(&mut row[k0..k1], &diag_block, nb);
        });
        let panel: Vec<f64> = below
            .chunks(n)
            .flat_map(|row| row[k0..k1].iter().copied())
            .collect();
        // Trailing update of the lower triangle: A[i, j] -= L[i, k0..k1] · L[j, k0..k1] for k1 <= j <= i.
        let trailing_work = (n - k1) * (n - k1) * nb / 2;
        par_rows(below, n, trailing_work, |r, row| {
            let mine = &panel[r * nb..(r + 1) * nb];
            for (jr, other) in panel.chunks(nb).take(r + 1).enumerate() {
                row[k1 + jr] -= dot(mine, other);
            }
        });
    }
    Ok(())
}

/// Unblocked Cholesky of the diagonal block `range × range`, whose earlier columns have already been
/// subtracted by the trailing updates.
fn factor_diagonal_block(
    a: &mut [f64],
    n: usize,
    range: Range<usize>,
) -> std::result::Result<(), usize> {
    let k0 = range.start;
    for i in range.clone() {
        for j in k0..=i {
            let s = a[i * n + j] - dot(&a[i * n + k0..i * n + j], &a[j * n + k0..j * n + j]);
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return Err(i);
                }
                a[i * n + i] = s.sqrt();
            } else {
                a[i * n + j] = s / a[j * n + j];
            }
        }
    }
    Ok(())
}

/// Forward substitution `x ← x · L_kk⁻ᵀ` for one row of the panel below a factored diagonal block
/// (`diag_block` is that block's `nb × nb` lower factor).
fn solve_panel_row(x: &mut [f64], diag_block: &[f64], nb: usize) {
    for j in 0..nb {
        let lj = &diag_block[j * nb..j * nb + j];
        let s = x[j] - dot(&x[..j], lj);
        x[j] = s / diag_block[j * nb + j];
    }
}

/// Inverse of the lower triangle of `l` (row-major `n × n`), as a full matrix with zeros above the diagonal.
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0.0; n * n];
    par_rows(&mut x, n * INVERSE_ROW_GROUP, n * n * n / 6, |g, rows| {
        invert_lower_rows(l, n, g * INVERSE_ROW_GROUP, rows);
    });
    x
}

/// Rows `first ..` of `L⁻¹` (as many as `rows` holds): each solves `x L = eᵢ` from column `i` down to 0.
///
/// Column-oriented back substitution: once `x_k` is solved it is subtracted along row `k` of `L`
/// (contiguous in memory), so `x[..k]` holds running sums until solved. The columns are taken four at a
/// time: the four are solved among themselves, then one pass over `x[..k_lo]` applies all four rows of `L`,
/// which quarters the passes over `x`.
fn invert_lower_rows(l: &[f64], n: usize, first: usize, rows: &mut [f64]) {
    const STEP: usize = 4;
    let mut k_hi = first + rows.len() / n;
    while k_hi > 0 {
        let k_lo = k_hi.saturating_sub(STEP);
        for (i, x) in (first..).zip(rows.chunks_mut(n)) {
            if k_lo > i {
                continue;
            }
            let top = i.min(k_hi - 1);
            for k in (k_lo..=top).rev() {
                let rhs = if k == i { 1.0 } else { 0.0 };
                let xk = (rhs - x[k]) / l[k * n + k];
                x[k] = xk;
                for (acc, lkm) in x[k_lo..k].iter_mut().zip(&l[k * n + k_lo..k * n + k]) {
                    *acc += xk * lkm;
                }
            }
            let (head, solved) = x.split_at_mut(k_lo);
            add_rows_scaled(head, &solved[..=top - k_lo], l, n, k_lo);
        }
        k_hi = k_lo;
    }
}

/// `acc[m] += Σ_t coef[t] · L[k_lo + t, m]` for `m < acc.len()`, in one pass over `acc` when there are four
/// coefficients.
fn add_rows_scaled(acc: &mut [f64], coef: &[f64], l: &[f64], n: usize, k_lo: usize) {
    let len = acc.len();
    let row = |t: usize| &l[(k_lo + t) * n..(k_lo + t) * n + len];
    if let [c0, c1, c2, c3] = *coef {
        let (l0, l1, l2, l3) = (row(0), row(1), row(2), row(3));
        for m in 0..len {
            acc[m] += c0 * l0[m] + c1 * l1[m] + c2 * l2[m] + c3 * l3[m];
        }
    } else {
        for (t, &c) in coef.iter().enumerate() {
            for (a, v) in acc.iter_mut().zip(row(t)) {
                *a += c * v;
            }
        }
    }
}

/// Dot product with four independent accumulators, so the compiler can vectorise it.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0; 4];
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Calls `f(row_index, row)` for every `width`-wide row of `data`. When `work` (estimated multiply-adds)
/// is large, the rows are dealt round-robin to one scoped thread per available core, which balances
/// triangular workloads where later rows cost more.
fn par_rows<T: Send>(
    data: &mut [T],
    width: usize,
    work: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if width == 0 {
        return;
    }
    let n_rows = data.len() / width;
    let threads = if work < PARALLEL_MIN_WORK {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(n_rows)
    };
    if threads <= 1 {
        data.chunks_mut(width)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
        return;
    }
    let mut shares: Vec<Vec<(usize, &mut [T])>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, row) in data.chunks_mut(width).enumerate() {
        shares[i % threads].push((i, row));
    }
    let f = &f;
    std::thread::scope(|s| {
        for share in shares {
            s.spawn(move || share.into_iter().for_each(|(i, row)| f(i, row)));
        }
    });
}

/// Read access to the weight matrix at the moment [`obs_sweep`] hands column `j` to its closure.
///
/// Columns `< j` hold their final (rounded / pruned) values. Columns `>= j` hold their *current* values:
/// the original weights plus every error correction from the columns already processed. Because the sweep
/// batches its updates lazily, columns past the current block have not received this block's corrections
/// in storage yet; the view adds them on the fly, so what it returns never depends on the block size.
///
/// This is what lets a caller choose per-group quantization parameters (or a SparseGPT mask) from the
/// up-to-date values of the next `G` columns when column `j` starts a group: read `j..j + G` with
/// [`ColumnView::read_columns`].
pub struct ColumnView<'a> {
    w: &'a [f32],
    rows: usize,
    cols: usize,
    u: &'a [f64],
    column: usize,
    block: Range<usize>,
    /// Scaled errors of columns `block.start .. column`, row-major with stride `err_stride`.
    err: &'a [f64],
    err_stride: usize,
    current: &'a [f32],
}

impl std::fmt::Debug for ColumnView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnView")
            .field("column", &self.column)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl ColumnView<'_> {
    /// The column about to be processed (`j`).
    pub fn column(&self) -> usize {
        self.column
    }

    /// Rows of the weight matrix (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the weight matrix (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Current values of column `j`, one per row (the same values the closure's output starts with).
    pub fn current(&self) -> &[f32] {
        self.current
    }

    /// Diagonal entry `U[col, col]` of the inverse-Hessian factor. The sweep divides a column's error by it;
    /// SparseGPT ranks weights for pruning by `w² / U[col, col]²`.
    pub fn u_diag(&self, col: usize) -> f64 {
        self.u[col * self.cols + col]
    }

    /// Current value of weight `(row, col)` (see the type's documentation for what "current" means).
    pub fn get(&self, row: usize, col: usize) -> f32 {
        let stored = self.w[row * self.cols + col];
        if col < self.block.end {
            return stored;
        }
        let errs = &self.err[row * self.err_stride..][..self.column - self.block.start];
        let pending: f64 = errs
            .iter()
            .zip(self.block.clone())
            .map(|(e, i)| e * self.u[i * self.cols + col])
            .sum();
        (f64::from(stored) - pending) as f32
    }

    /// Current values of columns `cols` for every row, written row-major into `out`
    /// (`rows × cols.len()`: row `r`'s values at `out[r * cols.len()..]`).
    ///
    /// # Panics
    /// If `cols` reaches past the matrix or `out` has the wrong length.
    pub fn read_columns(&self, cols: Range<usize>, out: &mut [f32]) {
        assert!(cols.end <= self.cols, "columns {cols:?} past {}", self.cols);
        assert_eq!(out.len(), self.rows * cols.len(), "output length");
        if cols.is_empty() {
            return;
        }
        for (r, dst) in out.chunks_mut(cols.len()).enumerate() {
            for (d, c) in dst.iter_mut().zip(cols.clone()) {
                *d = self.get(r, c);
            }
        }
    }
}

/// The GPTQ / SparseGPT column sweep (GPTQ paper, Algorithm 1) with lazy batch updates.
///
/// `w` is the `rows × cols` row-major weight (one row per output feature, one column per input feature),
/// `u` the `cols × cols` upper factor from [`damped_cholesky_inverse_upper`]. For every column `j` in order:
///
/// 1. `round_column(j, view, out)` chooses the column's new values. `out` (one entry per row) starts as the
///    current values, so a closure that leaves it alone changes nothing; GPTQ writes the quantized values,
///    SparseGPT zeroes the pruned ones. `view` reads the current matrix (see [`ColumnView`]).
/// 2. `err = (w[:, j] − out) / U[j, j]`, and `w[:, j] = out`.
/// 3. The error is compensated on the later columns: `w[:, k] −= err · U[j, k]`. Within the current block of
///    `block` columns this happens at once; for the columns after the block it is accumulated and applied
///    as one `Err_block · U[block, rest]` product when the block ends. The result is the same as updating
///    every column each time, but the expensive product touches the trailing columns once per block instead
///    of once per column (the paper's "lazy batch" updates; it uses `block = 128`).
///
/// Returns the proxy loss the reference reports, `Σ err² / 2` (the increase of `½‖(W − Ŵ)X‖²`).
///
/// Errors: [`ModelError::InvalidInput`] for inconsistent lengths or `block == 0`, [`ModelError::Numerical`]
/// for a non-positive diagonal of `u`.
pub fn obs_sweep<F>(
    w: &mut [f32],
    rows: usize,
    cols: usize,
    u: &[f64],
    block: usize,
    mut round_column: F,
) -> Result<f64>
where
    F: FnMut(usize, &ColumnView<'_>, &mut [f32]),
{
    check_sweep_input(w, rows, cols, u, block)?;
    let mut sweep = Sweep {
        w,
        rows,
        cols,
        u,
        block_size: block,
        err: vec![0.0; rows * block],
    };
    let mut loss = 0.0;
    let mut current = vec![0f32; rows];
    let mut chosen = vec![0f32; rows];
    for b0 in (0..cols).step_by(block) {
        let b1 = (b0 + block).min(cols);
        for j in b0..b1 {
            sweep.read_column(j, &mut current);
            chosen.copy_from_slice(&current);
            round_column(j, &sweep.view(j, b0..b1, &current), &mut chosen);
            loss += sweep.apply_column(j, b0..b1, &current, &chosen);
        }
        sweep.propagate_block(b0..b1);
    }
    Ok(loss)
}

/// Validates the shapes and the factor's diagonal for [`obs_sweep`].
fn check_sweep_input(w: &[f32], rows: usize, cols: usize, u: &[f64], block: usize) -> Result<()> {
    if block == 0 {
        return Err(ModelError::InvalidInput("sweep block size is 0".into()));
    }
    if w.len() != rows * cols {
        return Err(ModelError::InvalidInput(format!(
            "weight has {} values, expected {rows}×{cols}",
            w.len()
        )));
    }
    if u.len() != cols * cols {
        return Err(ModelError::InvalidInput(format!(
            "inverse-Hessian factor has {} values, expected {cols}×{cols}",
            u.len()
        )));
    }
    if let Some(j) = (0..cols).find(|&j| !(u[j * cols + j] > 0.0 && u[j * cols + j].is_finite())) {
        return Err(ModelError::Numerical(format!(
            "inverse-Hessian factor has diagonal {} at column {j}",
            u[j * cols + j]
        )));
    }
    Ok(())
}

/// State of one [`obs_sweep`]: the matrix being rewritten and the scaled errors of the current block.
struct Sweep<'a> {
    w: &'a mut [f32],
    rows: usize,
    cols: usize,
    u: &'a [f64],
    block_size: usize,
    /// `err[r * block_size + (j − block start)]`: scaled error of column `j` in row `r`.
    err: Vec<f64>,
}

impl Sweep<'_> {
    /// Copies column `j` (stored values) into `out`.
    fn read_column(&self, j: usize, out: &mut [f32]) {
        for (r, v) in out.iter_mut().enumerate() {
            *v = self.w[r * self.cols + j];
        }
    }

    /// What the closure sees at column `j` of `block`; `current` is column `j`.
    fn view<'v>(&'v self, j: usize, block: Range<usize>, current: &'v [f32]) -> ColumnView<'v> {
        ColumnView {
            w: self.w,
            rows: self.rows,
            cols: self.cols,
            u: self.u,
            column: j,
            block,
            err: &self.err,
            err_stride: self.block_size,
            current,
        }
    }

    /// Steps 2–3 of [`obs_sweep`] for column `j` inside `block`: records the scaled error, stores the chosen
    /// values and corrects the rest of the block at once. Returns the column's share of the proxy loss.
    fn apply_column(
        &mut self,
        j: usize,
        block: Range<usize>,
        current: &[f32],
        chosen: &[f32],
    ) -> f64 {
        let cols = self.cols;
        let d = self.u[j * cols + j];
        let u_row = &self.u[j * cols + j + 1..j * cols + block.end];
        let mut loss = 0.0;
        for (r, row) in self.w.chunks_mut(cols).enumerate() {
            let e = (f64::from(current[r]) - f64::from(chosen[r])) / d;
            self.err[r * self.block_size + j - block.start] = e;
            loss += e * e / 2.0;
            row[j] = chosen[r];
            if e != 0.0 {
                for (v, ujk) in row[j + 1..block.end].iter_mut().zip(u_row) {
                    *v = (f64::from(*v) - e * ujk) as f32;
                }
            }
        }
        loss
    }

    /// The lazy batch update after a block: `W[:, rest] −= Err_block · U[block, rest]`, row-parallel.
    fn propagate_block(&mut self, block: Range<usize>) {
        let (cols, u) = (self.cols, self.u);
        let rest = block.end..cols;
        if rest.is_empty() {
            return;
        }
        let width = rest.len();
        // f32 copy of the block's factor rows: halves the memory traffic of the dominant product, which the
        // reference also runs in f32.
        let u_block: Vec<f32> = block
            .clone()
            .flat_map(|i| {
                u[i * cols + rest.start..(i + 1) * cols]
                    .iter()
                    .map(|&v| v as f32)
            })
            .collect();
        let (err, stride) = (&self.err, self.block_size);
        let work = self.rows * block.len() * width;
        par_rows(self.w, cols, work, |r, row| {
            let tail = &mut row[rest.clone()];
            let errs = &err[r * stride..][..block.len()];
            for (&e, u_row) in errs.iter().zip(u_block.chunks(width)) {
                let e = e as f32;
                if e != 0.0 {
                    for (v, ujk) in tail.iter_mut().zip(u_row) {
                        *v -= e * ujk;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Normal;

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    c[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        c
    }

    fn transpose(a: &[f64], n: usize) -> Vec<f64> {
        (0..n * n).map(|p| a[(p % n) * n + p / n]).collect()
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "entry {i}: {x} vs {y}");
        }
    }

    /// `XᵀX` of `samples` correlated rows of width `n` (a random mixing of independent normals), so the
    /// Hessian is far from diagonal and error feedback matters.
    fn correlated_hessian(n: usize, samples: usize, seed: u64) -> Vec<f64> {
        let mut rng = Normal::new(seed);
        let mix: Vec<f64> = (0..n * n).map(|_| rng.sample()).collect();
        let mut h = vec![0.0; n * n];
        for _ in 0..samples {
            let z: Vec<f64> = (0..n).map(|_| rng.sample()).collect();
            let x: Vec<f64> = (0..n)
                .map(|j| (0..n).map(|k| z[k] * mix[k * n + j]).sum::<f64>() + 0.3 * z[j])
                .collect();
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += x[i] * x[j];
                }
            }
        }
        h
    }

    /// `Σ_r (w_r − q_r)ᵀ H (w_r − q_r)` = `‖(W − Q) Xᵀ‖²` for `H = XᵀX`.
    fn output_error(w: &[f32], q: &[f32], h: &[f64], cols: usize) -> f64 {
        w.chunks(cols)
            .zip(q.chunks(cols))
            .map(|(wr, qr)| {
                let d: Vec<f64> = wr.iter().zip(qr).map(|(a, b)| f64::from(a - b)).collect();
                (0..cols)
                    .map(|i| d[i] * (0..cols).map(|j| h[i * cols + j] * d[j]).sum::<f64>())
                    .sum::<f64>()
            })
            .sum()
    }

    fn round_to_grid(v: f32, step: f32) -> f32 {
        (v / step).round() * step
    }

    #[test]
    fn hand_computed_three_by_three() {
        // H = R Rᵀ with R = [[1,2,3],[0,1,4],[0,0,1]], so H⁻¹ = UᵀU with U = R⁻¹.
        let h = [14.0, 14.0, 3.0, 14.0, 17.0, 4.0, 3.0, 4.0, 1.0];
        let (u, dead) = damped_cholesky_inverse_upper(&h, 0.0).unwrap();
        assert_eq!(dead, vec![false; 3]);
        assert_close(&u, &[1.0, -2.0, 5.0, 0.0, 1.0, -4.0, 0.0, 0.0, 1.0], 1e-10);
    }

    #[test]
    fn factor_inverts_the_damped_hessian() {
        for n in [1, 7, 70, 200] {
            let h = correlated_hessian(n, 2 * n + 5, n as u64);
            let (u, _) = damped_cholesky_inverse_upper(&h, 0.01).unwrap();
            for i in 0..n {
                assert!(u[i * n + i] > 0.0);
                assert!(u[i * n..i * n + i].iter().all(|&v| v == 0.0), "not upper");
            }
            let damp = 0.01 * (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
            let mut damped = h.clone();
            (0..n).for_each(|i| damped[i * n + i] += damp);
            let product = matmul(&matmul(&transpose(&u, n), &u, n), &damped, n);
            let identity: Vec<f64> = (0..n * n)
                .map(|p| if p % (n + 1) == 0 { 1.0 } else { 0.0 })
                .collect();
            assert_close(&product, &identity, 1e-8);
        }
    }

    #[test]
    fn dead_columns_are_reported_and_decoupled() {
        // Column 1 never saw input: zero row and column.
        let h = [4.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 3.0];
        let (u, dead) = damped_cholesky_inverse_upper(&h, 0.0).unwrap();
        assert_eq!(dead, vec![false, true, false]);
        assert_eq!((u[1], u[5]), (0.0, 0.0));
        assert!((u[4] - 1.0).abs() < 1e-12);

        let mut w = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        zero_dead_columns(&mut w, 3, &dead);
        assert_eq!(w, vec![1.0, 0.0, 3.0, 4.0, 0.0, 6.0]);
        obs_sweep(&mut w, 2, 3, &u, 2, |_, _, out| {
            out.iter_mut().for_each(|v| *v = round_to_grid(*v, 0.5));
        })
        .unwrap();
        assert_eq!((w[1], w[4]), (0.0, 0.0));
        assert!(w.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn singular_hessian_is_rescued_by_more_damping_or_refused() {
        // Indefinite: needs damping above 9 (mean diagonal 1): reached on the fourth attempt.
        let (u, _) = damped_cholesky_inverse_upper(&[1.0, 10.0, 10.0, 1.0], 0.01).unwrap();
        assert!(u.iter().all(|v| v.is_finite()));
        // Zero damping retries from the reference default.
        assert!(damped_cholesky_inverse_upper(&[1.0, 1.0, 1.0, 1.0], 0.0).is_ok());
        for bad in [[1.0, 1000.0, 1000.0, 1.0], [1.0, f64::NAN, f64::NAN, 1.0]] {
            let e = damped_cholesky_inverse_upper(&bad, 0.01).unwrap_err();
            assert!(matches!(e, ModelError::Numerical(_)), "{e}");
        }
        let e = damped_cholesky_inverse_upper(&[1.0, 2.0, 3.0], 0.01).unwrap_err();
        assert!(matches!(e, ModelError::InvalidInput(_)), "{e}");
    }

    fn random_weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        Normal::new(seed).vec(rows * cols, 1.0)
    }

    #[test]
    fn identity_rounding_leaves_weights_unchanged() {
        let (rows, cols) = (5, 19);
        let (u, _) = damped_cholesky_inverse_upper(&correlated_hessian(cols, 50, 1), 0.01).unwrap();
        let original = random_weights(rows, cols, 2);
        let mut w = original.clone();
        let loss = obs_sweep(&mut w, rows, cols, &u, 4, |_, _, _| {}).unwrap();
        assert_eq!(w, original);
        assert_eq!(loss, 0.0);
    }

    #[test]
    fn error_feedback_beats_round_to_nearest() {
        let (rows, cols, step) = (16, 40, 0.5);
        let h = correlated_hessian(cols, 200, 3);
        let (u, _) = damped_cholesky_inverse_upper(&h, 0.01).unwrap();
        let w = random_weights(rows, cols, 4);
        let rtn: Vec<f32> = w.iter().map(|&v| round_to_grid(v, step)).collect();
        let mut gptq = w.clone();
        obs_sweep(&mut gptq, rows, cols, &u, 8, |_, _, out| {
            out.iter_mut().for_each(|v| *v = round_to_grid(*v, step));
        })
        .unwrap();
        assert!(
            gptq.iter().all(|&v| round_to_grid(v, step) == v),
            "off grid"
        );
        let (e_rtn, e_gptq) = (
            output_error(&w, &rtn, &h, cols),
            output_error(&w, &gptq, &h, cols),
        );
        assert!(e_gptq < 0.5 * e_rtn, "GPTQ {e_gptq} vs RTN {e_rtn}");
    }

    #[test]
    fn pruning_with_compensation_beats_plain_zeroing() {
        let (rows, cols) = (8, 30);
        let h = correlated_hessian(cols, 120, 5);
        let (u, _) = damped_cholesky_inverse_upper(&h, 0.01).unwrap();
        let w = random_weights(rows, cols, 6);
        let pruned = |c: usize| c % 3 == 1;
        let naive: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(p, &v)| if pruned(p % cols) { 0.0 } else { v })
            .collect();
        let mut obs = w.clone();
        obs_sweep(&mut obs, rows, cols, &u, 7, |j, _, out| {
            if pruned(j) {
                out.fill(0.0);
            }
        })
        .unwrap();
        assert!((0..rows * cols).all(|p| !pruned(p % cols) || obs[p] == 0.0));
        let (e_naive, e_obs) = (
            output_error(&w, &naive, &h, cols),
            output_error(&w, &obs, &h, cols),
        );
        assert!(e_obs < e_naive, "OBS {e_obs} vs zeroing {e_naive}");
    }

    /// Runs a grid-rounding sweep and records, at every column, the view of all columns from it onwards.
    fn sweep_with_snapshots(
        w: &[f32],
        rows: usize,
        cols: usize,
        u: &[f64],
        block: usize,
    ) -> (Vec<f32>, Vec<Vec<f32>>, f64) {
        let mut w = w.to_vec();
        let mut snapshots = Vec::new();
        let loss = obs_sweep(&mut w, rows, cols, u, block, |j, view, out| {
            assert_eq!((view.column(), view.rows(), view.cols()), (j, rows, cols));
            let mut snap = vec![0.0; rows * (cols - j)];
            view.read_columns(j..cols, &mut snap);
            let first: Vec<f32> = snap.chunks(cols - j).map(|r| r[0]).collect();
            assert_eq!(first, view.current());
            snapshots.push(snap);
            out.iter_mut().for_each(|v| *v = round_to_grid(*v, 0.25));
        })
        .unwrap();
        (w, snapshots, loss)
    }

    #[test]
    fn block_size_does_not_change_the_sweep_or_the_view() {
        let (rows, cols) = (6, 23);
        let h = correlated_hessian(cols, 80, 7);
        let (u, _) = damped_cholesky_inverse_upper(&h, 0.01).unwrap();
        let w = random_weights(rows, cols, 8);
        // Block 1 updates every column eagerly: the plain (unbatched) Algorithm 1.
        let (eager, eager_snaps, eager_loss) = sweep_with_snapshots(&w, rows, cols, &u, 1);
        for block in [4, 5, 23, 64] {
            let (lazy, lazy_snaps, lazy_loss) = sweep_with_snapshots(&w, rows, cols, &u, block);
            assert!((lazy_loss - eager_loss).abs() < 1e-6 * eager_loss.max(1.0));
            for (a, b) in lazy.iter().zip(&eager) {
                assert!((a - b).abs() < 1e-5, "block {block}: {a} vs {b}");
            }
            for (j, (a, b)) in lazy_snaps.iter().zip(&eager_snaps).enumerate() {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() < 1e-5,
                        "block {block}, column {j}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn parallel_paths_match_serial_results() {
        // Large enough that the Cholesky, inverse and block propagation all take the threaded path.
        let n = 160;
        let h = correlated_hessian(n, 400, 9);
        let (u, _) = damped_cholesky_inverse_upper(&h, 0.01).unwrap();
        let rows = 2048;
        let w = random_weights(rows, n, 10);
        let mut threaded = w.clone();
        obs_sweep(&mut threaded, rows, n, &u, 32, |_, _, out| {
            out.iter_mut().for_each(|v| *v = round_to_grid(*v, 0.5));
        })
        .unwrap();
        // Rows are independent: sweeping a few rows alone (serial path) gives the same rows.
        let mut single = w[..3 * n].to_vec();
        obs_sweep(&mut single, 3, n, &u, 32, |_, _, out| {
            out.iter_mut().for_each(|v| *v = round_to_grid(*v, 0.5));
        })
        .unwrap();
        assert_eq!(&threaded[..3 * n], single.as_slice());
    }

    #[test]
    fn sweep_rejects_inconsistent_input() {
        let u = [1.0, 0.0, 0.0, 1.0];
        let mut w = vec![0.0f32; 4];
        let bad_len = obs_sweep(&mut w, 3, 2, &u, 1, |_, _, _| {}).unwrap_err();
        assert!(matches!(bad_len, ModelError::InvalidInput(_)));
        let zero_block = obs_sweep(&mut w, 2, 2, &u, 0, |_, _, _| {}).unwrap_err();
        assert!(matches!(zero_block, ModelError::InvalidInput(_)));
        let singular = obs_sweep(&mut w, 2, 2, &[1.0, 0.0, 0.0, 0.0], 1, |_, _, _| {}).unwrap_err();
        assert!(matches!(singular, ModelError::Numerical(_)));
    }
}
