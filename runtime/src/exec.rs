//! Running compiled programs: kernel calls over one arena, split across a small thread pool.
//!
//! A compiled kernel is a plain C function `f(arena, begin, end, step)` that computes work items
//! `[begin, end)` of its outermost parallel loop. Work items of one kernel write disjoint
//! elements and every kernel's accesses were bounds-checked when it was compiled, so splitting
//! `[0, work_items)` into contiguous ranges on different threads is safe, and because each work
//! item computes the same thing whatever the split, results do not depend on the thread count.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The signature of every compiled kernel.
pub type KernelFn = unsafe extern "C" fn(arena: *mut f32, begin: u64, end: u64, step: u64);

/// One kernel of a program and how much parallel work it has.
#[derive(Clone, Copy, Debug)]
pub struct KernelCall {
    /// The compiled function.
    pub f: KernelFn,
    /// Iterations of its outermost parallel loop (1 when it has none).
    pub work_items: usize,
}

/// Sets flush-to-zero and denormals-are-zero for the calling thread (x86-64): arithmetic on
/// denormal floats is ~100x slower, and training produces them (tiny gradients, exp of large
/// negative numbers). Other architectures are left as they are.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    {
        const FTZ: u32 = 1 << 15;
        const DAZ: u32 = 1 << 6;
        let mut csr: u32 = 0;
        // SAFETY: reading and writing MXCSR only changes this thread's floating-point modes.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= FTZ | DAZ;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack));
        }
    }
}

/// A job as the workers see it: a borrowed closure (valid until `run` returns) and its size.
type Job = (*const (dyn Fn(usize, usize) + Sync), usize);

struct Shared {
    /// Incremented to publish a job.
    epoch: AtomicU64,
    /// Workers still running the current job.
    pending: AtomicUsize,
    job: UnsafeCell<Job>,
    shutdown: AtomicBool,
    /// Threads in all, the caller included; set once the workers are started, before any job.
    threads: AtomicUsize,
}

// The job cell is written only by the thread in `Pool::run` while no worker reads it (all are
// waiting for the next epoch) and read by workers only after they observe the new epoch.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A fixed pool of threads that split `[0, work)` into contiguous ranges; the calling thread
/// takes the first range. Idle workers spin briefly, then yield, then sleep, so hand-off is fast
/// during training and cheap when idle.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

/// The `t`-th of `threads` contiguous ranges of `[0, work)`.
fn chunk(work: usize, t: usize, threads: usize) -> (usize, usize) {
    (work * t / threads, work * (t + 1) / threads)
}

impl Pool {
    /// A pool of `threads` threads in all (the caller counts as one); at least 1. If the system
    /// refuses to start that many (a huge `--threads`), the pool runs with those it could start:
    /// results do not depend on the thread count, so this changes only the speed.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let noop: &'static (dyn Fn(usize, usize) + Sync) = &|_, _| {};
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            job: UnsafeCell::new((noop as *const _, 0)),
            shutdown: AtomicBool::new(false),
            threads: AtomicUsize::new(1),
        });
        let workers: Vec<JoinHandle<()>> = (1..threads)
            .map_while(|t| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("kiln-worker-{t}"))
                    .spawn(move || worker(&shared, t))
                    .ok()
            })
            .collect();
        // Workers read the count only after they see a job, which comes after this store.
        shared.threads.store(1 + workers.len(), Ordering::Release);
        Pool { shared, workers }
    }

    /// Number of threads, the caller included.
    pub fn threads(&self) -> usize {
        self.shared.threads.load(Ordering::Acquire)
    }

    /// Runs `job(begin, end)` over contiguous ranges covering `[0, work)`, one per thread, and
    /// returns when all are done.
    pub fn run(&self, work: usize, job: &(dyn Fn(usize, usize) + Sync)) {
        let threads = self.threads().min(work);
        if threads <= 1 {
            if work > 0 {
                job(0, work);
            }
            return;
        }
        let s = &*self.shared;
        // SAFETY: every worker is waiting for the next epoch, so nobody reads the cell now; the
        // pointer stays valid because we wait for all workers before returning.
        unsafe {
            // Erase the borrow's lifetime: the workers use the pointer only until `pending`
            // reaches 0, which this function waits for.
            let job: *const (dyn Fn(usize, usize) + Sync + '_) = job;
            let job: *const (dyn Fn(usize, usize) + Sync + 'static) = std::mem::transmute(job);
            *s.job.get() = (job, work);
        }
        let all = self.threads();
        s.pending.store(all - 1, Ordering::Release);
        s.epoch.fetch_add(1, Ordering::AcqRel);
        let (b, e) = chunk(work, 0, all);
        if b < e {
            job(b, e);
        }
        while s.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
    }
}

fn worker(s: &Shared, t: usize) {
    flush_denormals();
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            spins = spins.saturating_add(1);
            if spins < 50_000 {
                std::hint::spin_loop();
            } else if spins < 60_000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        // SAFETY: published before the epoch changed; valid until `pending` reaches 0.
        let (f, work) = unsafe { *s.job.get() };
        let (b, e) = chunk(work, t, s.threads.load(Ordering::Acquire));
        if b < e {
            unsafe { (*f)(b, e) };
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A pointer to the arena that the pool's threads may share (they write disjoint elements).
#[derive(Clone, Copy)]
struct ArenaPtr(*mut f32);
unsafe impl Send for ArenaPtr {}
unsafe impl Sync for ArenaPtr {}

/// Runs every kernel of `calls` in order on `arena` at training step `step`, splitting kernels
/// with more than one work item over the pool.
///
/// # Safety
/// Every kernel must only access `arena` within the bounds it was compiled for (the kernel
/// compiler checks this statically), `arena` must be at least that long, and the work items of
/// one kernel must write disjoint elements.
pub unsafe fn run_kernels(pool: &Pool, calls: &[KernelCall], arena: &mut [f32], step: u64) {
    flush_denormals();
    let ptr = ArenaPtr(arena.as_mut_ptr());
    for c in calls {
        if c.work_items > 1 && pool.threads() > 1 {
            let f = c.f;
            pool.run(c.work_items, &move |b, e| {
                let p = ptr;
                unsafe { f(p.0, b as u64, e as u64, step) }
            });
        } else {
            unsafe { (c.f)(ptr.0, 0, c.work_items as u64, step) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn ranges_cover_the_work_exactly_once() {
        for threads in 1..=4 {
            let pool = Pool::new(threads);
            for work in [0, 1, 2, 3, 7, 64, 1001] {
                let seen = Mutex::new(vec![0u32; work]);
                pool.run(work, &|b, e| {
                    let mut s = seen.lock().unwrap();
                    for i in b..e {
                        s[i] += 1;
                    }
                });
                assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1), "{threads} {work}");
            }
        }
    }

    #[test]
    fn denormals_are_flushed() {
        flush_denormals();
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        assert_eq!(std::hint::black_box(tiny / 4.0), 0.0);
    }

    #[test]
    fn many_small_jobs_in_a_row() {
        let pool = Pool::new(2);
        let total = AtomicUsize::new(0);
        for _ in 0..20_000 {
            pool.run(2, &|b, e| {
                total.fetch_add(e - b, Ordering::Relaxed);
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 40_000);
    }

    unsafe extern "C" fn fill(arena: *mut f32, begin: u64, end: u64, step: u64) {
        for i in begin..end {
            unsafe { *arena.add(i as usize) = (i + step) as f32 };
        }
    }

    #[test]
    fn runs_kernel_calls_over_the_arena() {
        let pool = Pool::new(2);
        let mut arena = vec![0.0f32; 10];
        let calls = [KernelCall { f: fill, work_items: 10 }];
        unsafe { run_kernels(&pool, &calls, &mut arena, 5) };
        assert_eq!(arena, (5..15).map(|v| v as f32).collect::<Vec<_>>());
    }
}
