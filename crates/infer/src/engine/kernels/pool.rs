//! The engine's worker threads: a fixed set of threads that, with the calling thread, run one
//! parallel loop at a time, meeting at a barrier of atomics.
//!
//! Why not rayon: a decoded token runs some twenty matrix products, attentions and norms one after
//! the other, each a few microseconds long on a small model. rayon parks an idle worker after a few
//! rounds of yielding, so nearly every operation paid a futex wake and a context switch, and two
//! threads decoded barely faster than one. Here the workers spin on an epoch counter between
//! operations (a new loop reaches them in well under a microsecond), and park on a condition
//! variable only after [`SPIN_BEFORE_PARK`] without work, so an idle engine costs no CPU. The
//! caller takes part in every loop instead of sleeping while the workers run.
//!
//! Work is handed out one index at a time from an atomic counter, so a thread that finishes early
//! takes the next task; results never depend on which thread ran which task. A worker joins a loop
//! only while it is open, and the caller waits only for the workers that joined: on a machine
//! whose cores are busy with other work, a worker that is not scheduled in time costs nothing (the
//! caller runs its tasks) instead of stalling every operation.
//!
//! Loops run on the pool installed on the calling thread ([`Pool::install`]); with none (or inside
//! a task, or while another thread's loop holds the pool) they run on the calling thread alone.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next loop before parking.
pub const SPIN_BEFORE_PARK: Duration = Duration::from_millis(1);

/// Spins between two looks at the clock.
const SPINS_PER_CHECK: u32 = 64;

/// A loop published to the workers: `run(i)` for every `i < n`. It lives on the publishing
/// thread's stack until the loop is closed and every worker that joined it has left
/// ([`Shared::entry`]).
struct Job {
    run: *const (dyn Fn(usize) + Sync),
    n: usize,
    /// The counter every thread writes sits on lines of its own, away from what is only read.
    next: Padded<AtomicUsize>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// [`Shared::entry`]'s flag: the current loop takes new workers.
const OPEN: usize = 1 << (usize::BITS - 1);

/// A value alone on its cache lines (two, for the adjacent-line prefetcher).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Job {
    /// Takes tasks until none is left; a panicking task stops the loop and is kept for the caller.
    fn work(&self) {
        // SAFETY: `run` points at the publisher's closure, which outlives the job: the publisher
        // closes the loop and waits for every worker inside it to leave before returning or
        // unwinding.
        let run = unsafe { &*self.run };
        let result = panic::catch_unwind(AssertUnwindSafe(|| loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                break;
            }
            run(i);
        }));
        if let Err(payload) = result {
            self.next.store(self.n, Ordering::Relaxed);
            let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(payload);
        }
    }
}

/// What the workers and publishers share.
struct Shared {
    /// Incremented for every published loop; workers wait for it to change.
    epoch: Padded<AtomicU64>,
    /// The current loop (valid to a worker that joined it through `entry`).
    job: AtomicPtr<Job>,
    /// [`OPEN`] while the current loop takes workers, plus the number of workers inside it. A worker
    /// joins only an open loop; the publisher closes it when its own share is done and then waits
    /// for the count to reach zero, so a worker that was not scheduled in time is not waited for
    /// (its tasks ran on the threads that were).
    entry: Padded<AtomicUsize>,
    /// Workers parked, or about to park, on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// Held by the thread publishing a loop: one loop at a time.
    publish: Mutex<()>,
    quit: std::sync::atomic::AtomicBool,
    workers: usize,
}

impl Shared {
    /// Runs `f(i)` for `i < n` on this thread and every worker; returns when all are done.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let _one_at_a_time = match self.publish.try_lock() {
            Ok(guard) => guard,
            // A task of an earlier loop panicked; the lock guards no data.
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return serial(n, f),
        };
        // SAFETY: only the lifetime is erased; `Job::work` explains why the closure outlives every
        // use.
        let run: *const (dyn Fn(usize) + Sync + 'static) = unsafe {
            std::mem::transmute::<&(dyn Fn(usize) + Sync), &(dyn Fn(usize) + Sync + 'static)>(f)
        };
        let job = Job {
            run,
            n,
            next: Padded(AtomicUsize::new(0)),
            panic: Mutex::new(None),
        };
        self.job
            .store(&job as *const Job as *mut Job, Ordering::Relaxed);
        // The last loop left `entry` at zero (closed, nobody inside).
        self.entry.store(OPEN, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        {
            // Closes the loop and waits for the workers inside it, even if this thread's share
            // panics.
            let _closed = CloseAndWait(&self.entry);
            let _inside = Inside::enter();
            job.work();
        }
        let payload = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = payload {
            panic::resume_unwind(payload);
        }
    }

    /// A worker's life: wait for a new epoch, join the open loop if there is one, take part, leave.
    fn worker(&self) {
        INSIDE.with(|c| c.set(true));
        let mut seen = 0u64;
        loop {
            match self.wait_for_epoch(seen) {
                Some(epoch) => seen = epoch,
                None => return,
            }
            if !self.join() {
                continue; // closed already: its tasks are done
            }
            let job = self.job.load(Ordering::Relaxed);
            // SAFETY: joining synchronised with the publisher's opening of the loop, which came
            // after it stored the job; the publisher keeps the job alive until this worker leaves
            // below.
            let job = unsafe { &*job };
            job.work();
            self.entry.fetch_sub(1, Ordering::Release);
        }
    }

    /// Enters the current loop if it is open.
    fn join(&self) -> bool {
        let mut state = self.entry.load(Ordering::Acquire);
        loop {
            if state & OPEN == 0 {
                return false;
            }
            match self.entry.compare_exchange_weak(
                state,
                state + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// The first epoch after `seen`, spinning for [`SPIN_BEFORE_PARK`] and then parked; `None`
    /// when the pool is dropped.
    fn wait_for_epoch(&self, seen: u64) -> Option<u64> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            if epoch != seen {
                return Some(epoch);
            }
            if self.quit.load(Ordering::Acquire) {
                return None;
            }
            spins += 1;
            if spins.is_multiple_of(SPINS_PER_CHECK) && start.elapsed() > SPIN_BEFORE_PARK {
                break;
            }
            std::hint::spin_loop();
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            if epoch != seen || self.quit.load(Ordering::Acquire) {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return (epoch != seen).then_some(epoch);
            }
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Closes the loop of [`Shared::entry`] and spins (then yields) until every worker inside has left,
/// when dropped.
struct CloseAndWait<'a>(&'a AtomicUsize);

impl Drop for CloseAndWait<'_> {
    fn drop(&mut self) {
        self.0.fetch_and(!OPEN, Ordering::AcqRel);
        let mut spins = 0u32;
        while self.0.load(Ordering::Acquire) != 0 {
            spins = spins.saturating_add(1);
            if spins > 1 << 12 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

thread_local! {
    /// The pool loops started on this thread run on.
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
    /// Set on the workers, and on a publisher while it runs its share: loops started there run
    /// serially.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as inside a loop until dropped.
struct Inside(bool);

impl Inside {
    fn enter() -> Inside {
        Inside(INSIDE.with(|c| c.replace(true)))
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.with(|c| c.set(self.0));
    }
}

/// The worker threads of one engine. Dropping it stops and joins them.
pub struct Pool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Pool {
    /// A pool of `threads` threads in all: the caller of each loop and `threads - 1` workers, named
    /// `{name}-1`, `{name}-2`, ….
    pub fn new(threads: usize, name: &str) -> std::io::Result<Pool> {
        let workers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            epoch: Padded(AtomicU64::new(0)),
            job: AtomicPtr::new(std::ptr::null_mut()),
            entry: Padded(AtomicUsize::new(0)),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            publish: Mutex::new(()),
            quit: std::sync::atomic::AtomicBool::new(false),
            workers,
        });
        let mut pool = Pool {
            shared: shared.clone(),
            handles: Vec::with_capacity(workers),
        };
        for i in 1..=workers {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || shared.worker())?;
            pool.handles.push(handle);
        }
        Ok(pool)
    }

    /// Threads that run each loop, the caller included.
    pub fn threads(&self) -> usize {
        self.shared.workers + 1
    }

    /// Runs `f` with this pool as the calling thread's: the loops it starts ([`for_each`],
    /// [`for_each_chunk`], [`map`]) run on every thread of the pool.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Arc<Shared>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| *c.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(Some(self.shared.clone()))));
        f()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for handle in self.handles.drain(..) {
            // A worker catches its tasks' panics, so joining only fails on a bug here.
            let _ = handle.join();
        }
    }
}

fn serial(n: usize, f: &(dyn Fn(usize) + Sync)) {
    (0..n).for_each(f);
}

/// Threads a loop started here would run on: the installed pool's, or 1.
pub fn current_threads() -> usize {
    if INSIDE.with(Cell::get) {
        return 1;
    }
    CURRENT.with(|c| c.borrow().as_ref().map_or(1, |s| s.workers + 1))
}

/// `f(i)` for every `i < n`, on the installed pool's threads (see the module doc).
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    let shared = if n > 1 && !INSIDE.with(Cell::get) {
        CURRENT.with(|c| c.borrow().clone())
    } else {
        None
    };
    match shared {
        Some(shared) if shared.workers > 0 => shared.run(n, &f),
        _ => serial(n, &f),
    }
}

/// A slice whose disjoint chunks tasks write through a shared pointer.
struct Chunks<T> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
}

// SAFETY: tasks only reach disjoint chunks (`Chunks::get` for distinct indices), and `T: Send`
// lets each chunk be written from another thread.
unsafe impl<T: Send> Sync for Chunks<T> {}

impl<T> Chunks<T> {
    /// Chunk `i`.
    ///
    /// # Safety
    /// No two live results may come from the same `i`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, i: usize) -> &mut [T] {
        let start = i * self.chunk;
        let len = self.chunk.min(self.len - start);
        // SAFETY: `start + len <= self.len` for every chunk index below `len.div_ceil(chunk)`;
        // the caller keeps the chunks disjoint.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// `f(i, chunk)` for each `len`-long chunk of `x` (the last may be shorter), on the installed
/// pool's threads.
pub fn for_each_chunk<T: Send>(x: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    assert!(len > 0, "chunks of no items");
    let chunks = Chunks {
        ptr: x.as_mut_ptr(),
        len: x.len(),
        chunk: len,
    };
    // SAFETY: every index is run exactly once, so each chunk is borrowed by one task.
    for_each(x.len().div_ceil(len), |i| f(i, unsafe { chunks.get(i) }));
}

/// `f(i)` for every `i < n`, in order, computed on the installed pool's threads.
pub fn map<B: Send>(n: usize, f: impl Fn(usize) -> B + Sync) -> Vec<B> {
    let mut out: Vec<Option<B>> = (0..n).map(|_| None).collect();
    let per_task = n.div_ceil(4 * current_threads()).max(1);
    for_each_chunk(&mut out, per_task, |c, slots| {
        for (j, slot) in slots.iter_mut().enumerate() {
            *slot = Some(f(c * per_task + j));
        }
    });
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index runs once, on more than one thread, for loops of many sizes back to back.
    #[test]
    fn runs_every_index_once() {
        let pool = Pool::new(3, "test").unwrap();
        pool.install(|| {
            for n in [0, 1, 2, 7, 64, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for_each(n, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
            let mut x = vec![0usize; 1001];
            for_each_chunk(&mut x, 10, |c, chunk| {
                for (j, v) in chunk.iter_mut().enumerate() {
                    *v = c * 10 + j;
                }
            });
            assert!(x.iter().enumerate().all(|(i, &v)| i == v));
            assert_eq!(
                map(37, |i| i * i),
                (0..37).map(|i| i * i).collect::<Vec<_>>()
            );
        });
    }

    /// The workers take part: with tasks that wait for each other, one thread alone would hang.
    #[test]
    fn workers_share_the_loop() {
        let pool = Pool::new(2, "test").unwrap();
        let arrived = AtomicUsize::new(0);
        pool.install(|| {
            for_each(2, |_| {
                arrived.fetch_add(1, Ordering::SeqCst);
                let start = Instant::now();
                while arrived.load(Ordering::SeqCst) < 2 {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "one thread ran both"
                    );
                    std::hint::spin_loop();
                }
            })
        });
    }

    /// Parked workers wake for the next loop.
    #[test]
    fn wakes_parked_workers() {
        let pool = Pool::new(2, "test").unwrap();
        std::thread::sleep(SPIN_BEFORE_PARK * 5);
        let threads = Mutex::new(std::collections::HashSet::new());
        pool.install(|| {
            for _ in 0..50 {
                for_each(64, |_| {
                    threads.lock().unwrap().insert(std::thread::current().id());
                    std::thread::sleep(Duration::from_micros(50));
                });
                if threads.lock().unwrap().len() == 2 {
                    break;
                }
                std::thread::sleep(SPIN_BEFORE_PARK * 3);
            }
        });
        assert_eq!(threads.lock().unwrap().len(), 2);
    }

    /// A task's panic reaches the caller after every thread has left the loop, and the pool
    /// keeps working.
    #[test]
    fn a_panic_reaches_the_caller() {
        let pool = Pool::new(2, "test").unwrap();
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.install(|| for_each(100, |i| assert!(i != 57, "task 57")))
        }));
        assert!(result.is_err());
        let sum = AtomicUsize::new(0);
        pool.install(|| {
            for_each(10, |i| {
                sum.fetch_add(i, Ordering::Relaxed);
            })
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }

    /// Loops inside a task, and loops with no pool installed, run on the calling thread.
    #[test]
    fn nested_and_uninstalled_loops_run_serially() {
        assert_eq!(current_threads(), 1);
        assert_eq!(map(5, |i| i + 1), vec![1, 2, 3, 4, 5]);
        let pool = Pool::new(2, "test").unwrap();
        pool.install(|| {
            assert_eq!(current_threads(), 2);
            let inner: Vec<usize> = map(4, |_| current_threads());
            assert_eq!(inner, vec![1; 4]);
            let nested = map(3, |i| map(3, |j| i * 3 + j).iter().sum::<usize>());
            assert_eq!(nested, vec![3, 12, 21]);
        });
    }
}
