//! The engine's own thread pool: one parallel-for, no per-op spawning.
//!
//! A device's service shares its cores with the user's other programs, so the
//! pool is built to degrade gently when a core is taken away:
//! - work is handed out as many small tasks from one atomic counter, so the
//!   calling thread simply does more of them when a worker is descheduled,
//!   instead of every thread waiting at a barrier for the slowest one;
//! - a job is finished when its tasks are done, not when every worker has
//!   checked in: a worker that wakes late finds nothing to claim and never
//!   holds the caller up;
//! - idle workers spin only briefly (long enough to catch the next matmul of
//!   the same forward pass) and then park on a condition variable.
//!
//! This module owns threading only; it knows nothing about models.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking. Between two matmuls of one
/// forward pass the gap is a few microseconds; between decode steps it can
/// be milliseconds, and spinning through that would steal the core from the
/// user's other programs.
const SPIN: Duration = Duration::from_micros(200);

type TaskFn = dyn Fn(usize) + Sync;

struct Job {
    /// Points at the closure passed to [`ThreadPool::run`]. It is only
    /// dereferenced after claiming a task index below `n_tasks`, and `run`
    /// does not return before every claimed task has finished, so the
    /// closure outlives every call made through this pointer.
    func: *const TaskFn,
    n_tasks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

// SAFETY: `func` points at a `Sync` closure and is only called while `run`
// keeps it alive (see the field's comment); the counters are atomics.
unsafe impl Send for Job {}
// SAFETY: as above.
unsafe impl Sync for Job {}

impl Job {
    /// Claim and run tasks until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n_tasks {
                return;
            }
            // SAFETY: task `i` is claimed and not yet counted as done, so the
            // `run` call that owns the closure is still waiting for it.
            let f = unsafe { &*self.func };
            f(i);
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

struct Shared {
    epoch: AtomicU64,
    slot: Mutex<Option<Arc<Job>>>,
    wake: Condvar,
    parked: AtomicUsize,
    shutdown: AtomicBool,
}

/// A fixed set of worker threads plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
}

impl ThreadPool {
    /// A pool of `n_threads` threads in all, the caller included.
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            slot: Mutex::new(None),
            wake: Condvar::new(),
            parked: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..n_threads)
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("hearth-worker-{i}"))
                    .spawn(move || worker(s))
                    .expect("spawning a worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            n_threads,
        }
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Call `f(i)` for every `i` in `0..n_tasks`, spread over the pool, and
    /// return when all calls have returned. Tasks must be independent.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.n_threads == 1 || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        // SAFETY: erases the closure's lifetime so workers can reach it; see
        // `Job::func` for why no call outlives this function.
        let short: *const (dyn Fn(usize) + Sync + '_) = f;
        let func: *const TaskFn = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const TaskFn>(short)
        };
        let job = Arc::new(Job {
            func,
            n_tasks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        });
        {
            let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(Arc::clone(&job));
            self.shared.epoch.fetch_add(1, Ordering::Release);
        }
        if self.shared.parked.load(Ordering::Acquire) > 0 {
            self.shared.wake.notify_all();
        }
        job.work();
        let mut spin = Spinner::new();
        while job.done.load(Ordering::Acquire) < n_tasks {
            if !spin.spin() {
                std::thread::yield_now();
            }
        }
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|j| Arc::ptr_eq(j, &job)) {
            *slot = None;
        }
    }

    /// Split `0..n` into about `4 × threads` contiguous chunks of at least
    /// `min_chunk` (rounded to `align`) and run `f(range)` for each.
    pub fn for_chunks(
        &self,
        n: usize,
        min_chunk: usize,
        align: usize,
        f: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let chunk = chunk_size(n, self.n_threads, min_chunk, align);
        let n_tasks = n.div_ceil(chunk);
        self.run(n_tasks, &|i| {
            let start = i * chunk;
            f(start..(start + chunk).min(n));
        });
    }
}

/// The chunk length [`ThreadPool::for_chunks`] uses: about four chunks per
/// thread, so that a thread that falls behind is caught up by the others.
pub(crate) fn chunk_size(n: usize, threads: usize, min_chunk: usize, align: usize) -> usize {
    chunk_size_in(n, threads * 4, min_chunk, align)
}

/// A chunk length that splits `n` into about `parts` chunks of at least
/// `min_chunk`, rounded up to a multiple of `align`.
pub(crate) fn chunk_size_in(n: usize, parts: usize, min_chunk: usize, align: usize) -> usize {
    let align = align.max(1);
    let target = n.div_ceil(parts.max(1)).max(min_chunk).max(1);
    target.div_ceil(align) * align
}

/// Busy-waits for up to [`SPIN`], reading the clock only every few hundred
/// turns: a clock read costs more than the check it guards.
struct Spinner {
    start: Instant,
    turns: u32,
    expired: bool,
}

impl Spinner {
    fn new() -> Spinner {
        Spinner {
            start: Instant::now(),
            turns: 0,
            expired: false,
        }
    }

    /// Spin once; false once the spinning time is up.
    fn spin(&mut self) -> bool {
        if self.expired {
            return false;
        }
        self.turns = self.turns.wrapping_add(1);
        if self.turns.is_multiple_of(256) && self.start.elapsed() >= SPIN {
            self.expired = true;
            return false;
        }
        std::hint::spin_loop();
        true
    }
}

fn worker(s: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        let mut spin = Spinner::new();
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            if s.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            if spin.spin() {
                continue;
            }
            let mut slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            s.parked.fetch_add(1, Ordering::AcqRel);
            while s.epoch.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Acquire) {
                slot = s.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
            s.parked.fetch_sub(1, Ordering::AcqRel);
            drop(slot);
        }
        let job = {
            let slot = s.slot.lock().unwrap_or_else(|e| e.into_inner());
            seen = s.epoch.load(Ordering::Acquire);
            slot.clone()
        };
        if let Some(job) = job {
            job.work();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The number of physical cores (SMT siblings counted once), which is what
/// compute-bound kernels scale with.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(target_os = "linux")]
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let mut cores = std::collections::HashSet::new();
        let mut phys = "";
        for line in info.lines() {
            let mut kv = line.splitn(2, ':');
            let (k, v) = (
                kv.next().unwrap_or("").trim(),
                kv.next().unwrap_or("").trim(),
            );
            if k == "physical id" {
                phys = v;
            } else if k == "core id" {
                cores.insert((phys.to_string(), v.to_string()));
            }
        }
        if !cores.is_empty() {
            return cores.len().min(logical);
        }
    }
    logical
}

/// A slice that several tasks write at disjoint indices.
pub(crate) struct SharedMut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: only used to let pool tasks write disjoint parts of one buffer;
// every user states why its parts are disjoint.
unsafe impl<T: Send> Sync for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub(crate) fn new(s: &mut [T]) -> Self {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// No two live slices obtained from this value may overlap, and the
    /// buffer must outlive them.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: bounds checked above; disjointness is the caller's promise.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.end - range.start)
        }
    }

    /// A pointer to element `start`, for writes that reach at most `span`
    /// elements past it (checked), strided so that other tasks' parts lie
    /// in between.
    ///
    /// # Safety
    /// The elements written through it must be disjoint from every other
    /// live slice or pointer's, and the buffer must outlive it.
    pub(crate) unsafe fn ptr_at(&self, start: usize, span: usize) -> *mut T {
        assert!(start <= self.len && span <= self.len - start);
        // SAFETY: `start` is inside the buffer (checked above).
        unsafe { self.ptr.add(start) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once() {
        let pool = ThreadPool::new(3);
        for n in [0, 1, 2, 7, 100, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn survives_parking_between_jobs() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        for round in 0..5 {
            pool.run(10, &|_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
            if round % 2 == 0 {
                std::thread::sleep(SPIN * 5);
            }
        }
        assert_eq!(total.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn chunks_cover_the_range_aligned() {
        let pool = ThreadPool::new(2);
        let seen = Mutex::new(Vec::new());
        pool.for_chunks(1000, 16, 8, &|r| seen.lock().unwrap().push(r));
        let mut v = seen.into_inner().unwrap();
        v.sort_by_key(|r| r.start);
        assert_eq!(v.first().unwrap().start, 0);
        assert_eq!(v.last().unwrap().end, 1000);
        for w in v.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_eq!(w[0].start % 8, 0);
        }
    }

    #[test]
    fn physical_cores_is_positive() {
        assert!(physical_cores() >= 1);
    }
}
