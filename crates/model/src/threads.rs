//! One thread count for every compute pool a training or calibration pass touches.
//!
//! Three pools could run a step: rayon's (the fused kernels of [`crate::fused`] and the `gemm` products
//! inside them, which follow the pool the caller runs in), candle's matmul (sized by
//! `RAYON_NUM_THREADS`, read at every call) and candle's barrier pool for its element-wise ops (sized by
//! `CANDLE_NUM_THREADS` once, at first use), whose idle workers spin for a while before parking and on a
//! loaded machine steal the cores the other pools need. [`init`] keeps candle's barrier pool to the
//! calling thread (its remaining element-wise ops are small next to the fused kernels; measured: the
//! same step time) and sizes rayon's global pool, so the one count reaches everything.

/// Sets the compute threads for the rest of the process: rayon's global pool gets `threads` workers
/// (`None`: one per core), candle's matmul follows it, and candle's spinning barrier pool gets none.
/// Call it at the start of `main`, before any tensor op and before other threads start (it sets
/// environment variables candle reads). Returns `false` if rayon's global pool was already built, in
/// which case it keeps its size.
pub fn init(threads: Option<usize>) -> bool {
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads.filter(|&n| n > 0) {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        builder = builder.num_threads(n);
    }
    builder.build_global().is_ok()
}
