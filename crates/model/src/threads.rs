//! The compute runtime of training and calibration passes: one thread count for every pool, and an
//! allocator that keeps the memory a step frees for the next one.
//!
//! Three pools could run a step: rayon's (the fused kernels of [`crate::fused`] and the `gemm` products
//! inside them, which follow the pool the caller runs in), candle's matmul (sized by
//! `RAYON_NUM_THREADS`, read at every call) and candle's barrier pool for its element-wise ops (sized by
//! `CANDLE_NUM_THREADS` once, at first use). [`init`] gives all three the one count. candle's
//! element-wise ops that remain are the additions and zeroed buffers with which its backward pass
//! accumulates every gradient: on one thread they were about a sixth of a two-thread step on the 40 M
//! shape, done while the other core waited. Its idle workers spin for a while (candle's
//! `CANDLE_BARRIER_POOL_SPIN_LIMIT`) before parking, as the inference engine's pool does; measured with
//! them on both cores: 6–9 % more tokens/s on the 40 M shape's two-thread step, the same (within the
//! machine's noise) on the base shape's.
//!
//! A training step allocates every activation and gradient afresh (candle's tensors own their
//! buffers), hundreds of megabytes per step. With glibc's defaults the freed top of the heap is
//! returned to the OS and blocks of 32 MiB and more are mapped and unmapped each time, so every step
//! faults its pages back in and the kernel zeroes them, one fault at a time while the other cores
//! wait. Measured on `train_base --bench-steps 20` (base model, batch 8 × 256): 1.59 M page faults and
//! 3.7 s of system time for the run with the defaults, 0.47 M and 1.2 s when glibc keeps the memory;
//! 5–13 % more tokens/s on one thread and 21–34 % on two (alternating runs). [`init`] sets that
//! through `mallopt`, glibc's documented knob, for which no safe wrapper exists: the one `unsafe`
//! outside the kernels. Other C libraries keep their defaults.

/// Runs `work` on a thread of rayon's global pool (on this thread when it already is one of a pool's)
/// and returns what it returns.
///
/// A step's parallel kernels are rayon jobs. Called from outside the pool (a program's main thread),
/// each of them is handed to a worker and the caller sleeps until it is done: a wake-up on each side
/// per kernel, and on one thread the kernels ran on a worker while the products between them ran on
/// the caller, often on the other core, each side reading what the other had just written from
/// another core's cache. Inside the pool a one-thread step never leaves its thread and a two-thread
/// step splits each kernel with the other worker. Measured on `train_base --bench-steps` (alternating
/// runs, same losses): 12–30 % more tokens/s on the base shape's one-thread step, 10–22 % on the 40 M
/// shape's; 2–14 % on two threads.
///
/// The caller's kernel switches ([`crate::ops::without_gradients`], [`crate::ops::composed_only`],
/// thread-local) hold for `work` on the pool's thread too.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return work();
    }
    let switches = crate::ops::KernelSwitches::current();
    rayon::scope(|_| switches.apply(work))
}

/// Sets the compute runtime for the rest of the process: rayon's global pool gets `threads` workers
/// (`None`: one per core), candle's matmul and its barrier pool follow it, and (with glibc) freed memory
/// stays with the process for reuse. Call it at the start of `main`, before
/// any tensor op and before other threads start (it sets environment variables candle reads). Returns
/// `false` if rayon's global pool was already built, in which case it keeps its size.
pub fn init(threads: Option<usize>) -> bool {
    keep_freed_memory();
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads.filter(|&n| n > 0) {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        builder = builder.num_threads(n);
    }
    builder.build_global().is_ok()
}

/// With glibc, keeps the memory the process frees for its next allocations: never trim the heap's top
/// below 4 GiB of slack, grow it 256 MiB at a time, and map blocks separately only from 32 MiB (the
/// largest threshold glibc accepts; fixed, so it no longer adapts). Pages are committed only when
/// touched, so the resident size is the high-water mark of what was in use. [`init`] calls it; an
/// inference process (whose every forward pass allocates its activations afresh) calls it alone.
/// Does nothing with other C libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    const SETTINGS: [(libc::c_int, libc::c_int); 3] = [
        (libc::M_TRIM_THRESHOLD, i32::MAX),
        (libc::M_TOP_PAD, 256 << 20),
        (libc::M_MMAP_THRESHOLD, 32 << 20),
    ];
    for (param, value) in SETTINGS {
        // SAFETY: `mallopt` only changes glibc's allocator parameters (under its own lock); it takes
        // plain integers and touches no memory of the caller. A refused value (return 0) keeps glibc's
        // default, which is harmless.
        unsafe {
            libc::mallopt(param, value);
        }
    }
}

/// See the glibc version: other C libraries keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

#[cfg(test)]
mod tests {
    use super::on_pool;

    #[test]
    fn work_runs_on_a_pool_thread_and_stays_on_it_when_nested() {
        let (outer, inner) = on_pool(|| {
            let outer = rayon::current_thread_index();
            (outer, on_pool(rayon::current_thread_index))
        });
        assert!(outer.is_some(), "on_pool ran its work outside rayon's pool");
        let probe =
            candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        assert!(on_pool(|| crate::ops::fused_for(&probe)));
        assert!(
            !crate::ops::composed_only(|| on_pool(|| crate::ops::fused_for(&probe))),
            "composed_only did not reach the pool's thread"
        );
        assert_eq!(outer, inner, "a nested on_pool left its thread");
        assert_eq!(on_pool(|| 6 * 7), 42);
    }
}
