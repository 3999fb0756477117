//! Work split over the OpenMP thread team of the process (the one torch's CPU operations use),
//! found at run time; without one, the caller runs the work itself.
//!
//! A decode step alternates torch's parallel operations with this crate's kernels. Threads of
//! our own would sleep and wake, or spin beside torch's, at every call; the team torch keeps
//! warm is already there. `GOMP_parallel` and `omp_get_thread_num` are the GNU OpenMP entry
//! points, which LLVM's and Intel's runtimes export too.

use std::ffi::{c_int, c_uint, c_void};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

type Parallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);
type Query = unsafe extern "C" fn() -> c_int;

struct Runtime {
    parallel: Parallel,
    thread_num: Query,
    num_threads: Query,
}

static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();

#[cfg(unix)]
fn find() -> Option<Runtime> {
    // SAFETY: dlsym with RTLD_DEFAULT looks a name up in what the process has loaded; the
    // three functions have these C signatures in every OpenMP runtime that exports them.
    unsafe {
        let symbol = |name: &std::ffi::CStr| libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        let (p, t, n) = (
            symbol(c"GOMP_parallel"),
            symbol(c"omp_get_thread_num"),
            symbol(c"omp_get_num_threads"),
        );
        if p.is_null() || t.is_null() || n.is_null() {
            return None;
        }
        Some(Runtime {
            parallel: std::mem::transmute::<*mut c_void, Parallel>(p),
            thread_num: std::mem::transmute::<*mut c_void, Query>(t),
            num_threads: std::mem::transmute::<*mut c_void, Query>(n),
        })
    }
}

#[cfg(not(unix))]
fn find() -> Option<Runtime> {
    None
}

/// Whether an OpenMP runtime is loaded in this process.
pub fn available() -> bool {
    RUNTIME.get_or_init(find).is_some()
}

struct Call<'a> {
    work: &'a (dyn Fn(usize, usize) + Sync),
    runtime: &'a Runtime,
    panicked: AtomicBool,
}

extern "C" fn trampoline(data: *mut c_void) {
    // SAFETY: `data` is the `Call` that `parallel` passed, alive until GOMP_parallel returns.
    let call = unsafe { &*(data as *const Call<'_>) };
    // SAFETY: called inside a parallel region, as these functions expect.
    let (thread, team) = unsafe { ((call.runtime.thread_num)(), (call.runtime.num_threads)()) };
    let (thread, team) = (thread.max(0) as usize, team.max(1) as usize);
    if catch_unwind(AssertUnwindSafe(|| (call.work)(thread, team))).is_err() {
        call.panicked.store(true, Ordering::Relaxed);
    }
}

/// Run `work(thread, team)` on up to `threads` threads of the OpenMP team (the calling thread
/// is thread 0; `team` is how many threads the runtime gave, which may be fewer); with one
/// thread, or no runtime, `work(0, 1)` here. Returns false when a thread panicked.
pub fn parallel(threads: usize, work: &(dyn Fn(usize, usize) + Sync)) -> bool {
    let runtime = match RUNTIME.get_or_init(find) {
        Some(runtime) if threads > 1 => runtime,
        _ => return catch_unwind(AssertUnwindSafe(|| work(0, 1))).is_ok(),
    };
    let call = Call {
        work,
        runtime,
        panicked: AtomicBool::new(false),
    };
    let threads = c_uint::try_from(threads).unwrap_or(c_uint::MAX);
    // SAFETY: the trampoline only reads `call`, which outlives the region (GOMP_parallel
    // returns after every thread finished), and no panic crosses the C frames.
    unsafe {
        (runtime.parallel)(
            trampoline,
            &call as *const Call<'_> as *mut c_void,
            threads,
            0,
        )
    };
    !call.panicked.load(Ordering::Relaxed)
}

/// Split `0..count` into at most `threads` contiguous ranges and run `work` on each, over the
/// OpenMP team (see [`parallel`]); each range runs on exactly one thread. Returns false when a
/// thread panicked.
pub fn split(count: usize, threads: usize, work: &(dyn Fn(Range<usize>) + Sync)) -> bool {
    let threads = threads.clamp(1, count.max(1));
    let per_thread = count.div_ceil(threads).max(1);
    let blocks = count.div_ceil(per_thread);
    parallel(threads, &|thread, team| {
        for block in (thread..blocks).step_by(team) {
            work(block * per_thread..((block + 1) * per_thread).min(count));
        }
    })
}

/// An output buffer's first float, shared with the threads that each write their own part.
#[derive(Clone, Copy)]
pub struct SharedOut(pub *mut f32);

// SAFETY: the kernels hand each thread a disjoint part of the buffer (see `split`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer.
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
