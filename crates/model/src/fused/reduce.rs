//! Whole-tensor reductions that optimizers need every step, without the f64 copy and the squared
//! tensor the composed version (`to_dtype(F64)?.sqr()?.sum_all()`) allocates.

use rayon::prelude::*;

use super::with_f32s;

/// Values per rayon task; fixed, so the sum does not depend on the thread count.
const TASK: usize = 64 * 1024;

/// `Σ x²` over every value of an f32 CPU tensor, each task's part summed in f64 and the parts added in
/// order.
pub fn sum_of_squares(t: &candle_core::Tensor) -> candle_core::Result<f64> {
    with_f32s([t], "sum_of_squares", |[x]| {
        let parts: Vec<f64> = x
            .par_chunks(TASK)
            .map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum())
            .collect();
        Ok(parts.iter().sum())
    })
}
