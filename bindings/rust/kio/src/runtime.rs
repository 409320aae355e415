//! The runtime: kio_runtime_start / kio_runtime_stop, and the shared state
//! that keeps task handles from outliving it.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::ptr;
use std::sync::{Arc, Mutex as StdMutex, RwLock, Weak};

use crate::task::{spawn_with, JoinHandle, TaskOptions};
use crate::{cvt, sys};

/// What [`Runtime`], the task handles and the free `spawn` functions share
/// about one runtime. kio task handles become invalid when the runtime is
/// destroyed, so every use of one (detach, a cancel's request) happens under
/// `alive` while it is true; the runtime's drop clears it before it stops the
/// runtime.
///
/// `alive` is an OS mutex: it is only ever held for a few instructions and
/// kio calls that never park (kio_detach, kio_cancel_request), never across a
/// park, so it is safe on fibers.
pub(crate) struct RtShared {
    pub(crate) raw: *mut sys::kio_runtime,
    alive: StdMutex<bool>,
}

// SAFETY: the raw pointer is only passed to kio, whose runtime calls are
// thread-safe; liveness is guarded by `alive`.
unsafe impl Send for RtShared {}
unsafe impl Sync for RtShared {}

impl RtShared {
    /// Runs `f` (which must not park) if the runtime is still alive.
    pub(crate) fn if_alive<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let alive = self.alive.lock().unwrap_or_else(|e| e.into_inner());
        if *alive {
            Some(f())
        } else {
            None
        }
    }

    /// Marks the runtime dead, then stops it.
    fn shutdown(self: &Arc<Self>) {
        *self.alive.lock().unwrap_or_else(|e| e.into_inner()) = false;
        // SAFETY: raw came from kio_runtime_start and is stopped only here.
        let r = unsafe { sys::kio_runtime_stop(self.raw) };
        // Only now: tasks spawning during the stop still find the runtime.
        registry_remove(self);
        if r != 0 {
            eprintln!("kio: kio_runtime_stop failed: {}", io::Error::from_raw_os_error(-r));
        }
    }
}

/// Runtimes made by this crate, for `kio::spawn` inside their tasks (which
/// find theirs through kio_current()).
static REGISTRY: RwLock<Vec<Weak<RtShared>>> = RwLock::new(Vec::new());

fn registry_add(shared: &Arc<RtShared>) {
    let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    reg.retain(|w| w.strong_count() > 0);
    reg.push(Arc::downgrade(shared));
}

fn registry_remove(shared: &Arc<RtShared>) {
    let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    reg.retain(|w| w.strong_count() > 0 && !ptr::eq(w.as_ptr(), Arc::as_ptr(shared)));
}

/// The runtime of the calling task, if it is one this crate created.
pub(crate) fn current_shared() -> io::Result<Arc<RtShared>> {
    // SAFETY: no preconditions.
    let raw = unsafe { sys::kio_current() };
    if raw.is_null() {
        return Err(io::Error::other("not inside a kio task: use Runtime::spawn from plain threads"));
    }
    let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    // The newest entry wins: an address can only be reused by a runtime
    // created after the old one was stopped.
    reg.iter()
        .rev()
        .filter_map(Weak::upgrade)
        .find(|s| s.raw == raw)
        .ok_or_else(|| io::Error::other("the current kio runtime was not created by kio::Runtime"))
}

/// Settings for a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    threads: usize,
    stack_size: usize,
    backend: Option<String>,
    debug_migrate: bool,
}

impl Builder {
    /// Default settings: one worker per CPU, kio's default stack (64 KiB).
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The number of worker threads (0 = one per CPU, the default). Workers
    /// start lazily, when there is work for them.
    pub fn threads(mut self, n: usize) -> Builder {
        self.threads = n;
        self
    }

    /// The default stack size of tasks in bytes (0 = kio's default, 64 KiB;
    /// at least 16 KiB, rounded up to pages). Stacks are reserved address
    /// space: untouched pages cost no memory. Rust code that formats, panics
    /// or recurses deeply may want more.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = bytes;
        self
    }

    /// The poller backend: "auto" (default), "epoll" or "kqueue".
    pub fn backend(mut self, name: &str) -> Builder {
        self.backend = Some(name.to_owned());
        self
    }

    /// Debugging: resume every fiber on another worker than it parked on
    /// (`KIO_DEBUG_MIGRATE`), to flush out code that is not migration-safe.
    /// Pinned tasks still stay put. Slow.
    pub fn debug_migrate(mut self, on: bool) -> Builder {
        self.debug_migrate = on;
        self
    }

    /// Starts the runtime on threads of its own (`kio_runtime_start`).
    pub fn build(self) -> io::Result<Runtime> {
        let threads = u32::try_from(self.threads)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many threads"))?;
        let backend = match &self.backend {
            Some(b) => Some(
                CString::new(b.as_str())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "backend name contains NUL"))?,
            ),
            None => None,
        };
        // SAFETY: kio_options_init fills every field; the backend string
        // outlives the start call, which copies the options.
        let raw = unsafe {
            let mut opts: sys::kio_options = std::mem::zeroed();
            sys::kio_options_init(&mut opts);
            opts.threads = threads;
            opts.stack_size = self.stack_size;
            if let Some(b) = &backend {
                opts.backend = b.as_ptr();
            }
            if self.debug_migrate {
                opts.debug_flags |= sys::KIO_DEBUG_MIGRATE;
            }
            let mut raw = ptr::null_mut();
            cvt(sys::kio_runtime_start(&opts, &mut raw))?;
            raw
        };
        let shared = Arc::new(RtShared {
            raw,
            alive: StdMutex::new(true),
        });
        registry_add(&shared);
        Ok(Runtime { shared })
    }
}

/// A kio runtime whose workers run on threads of their own, so the thread
/// that creates it (and every other Rust thread) stays a plain thread that
/// can spawn into it and wait for tasks, blocking itself.
///
/// Dropping the runtime cancels every task still running (detached ones
/// included), waits for all of them to finish and joins the workers; tasks
/// that ignore cancellation keep it waiting. [`JoinHandle`]s may outlive the
/// runtime: they then return the result their task produced while being
/// canceled. Dropping it from one of its own tasks hands the shutdown to a
/// new thread (a runtime cannot wait for itself).
pub struct Runtime {
    shared: Arc<RtShared>,
}

impl Runtime {
    /// A runtime with default settings (one worker per CPU).
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// Settings for a runtime.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Spawns `f` as a pinned task of this runtime (see [`crate::spawn`]).
    ///
    /// # Panics
    ///
    /// If kio cannot create the task (out of memory).
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.try_spawn(f).unwrap_or_else(|e| panic!("kio: failed to spawn a task: {e}"))
    }

    /// [`Runtime::spawn`], returning kio's error instead of panicking.
    pub fn try_spawn<F, T>(&self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_with(&self.shared, f, &TaskOptions::default())
    }

    /// Spawns `f` as a task that may migrate between worker threads.
    ///
    /// # Safety
    ///
    /// See [`crate::spawn_migratable`].
    pub unsafe fn spawn_migratable<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let opts = TaskOptions { pinned: false, ..TaskOptions::default() };
        spawn_with(&self.shared, f, &opts).unwrap_or_else(|e| panic!("kio: failed to spawn a task: {e}"))
    }

    /// Runs `f` as a task and waits for its result from the calling thread;
    /// re-raises its panic.
    ///
    /// # Panics
    ///
    /// If the task cannot be spawned, if the wait is interrupted (the caller
    /// is itself a canceled kio task or reaches its deadline), or if `f`
    /// panics.
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(f).join().unwrap_or_else(|e| panic!("kio: block_on: {e}"))
    }

    pub(crate) fn shared(&self) -> &Arc<RtShared> {
        &self.shared
    }

    /// The `kio_runtime *`, for the C API. Valid while `self` lives.
    pub fn as_raw(&self) -> *mut sys::kio_runtime {
        self.shared.raw
    }

    /// kio's counters of this runtime (`kio_stats`).
    pub fn stats(&self) -> io::Result<sys::kio_stats> {
        // SAFETY: kio_stats_init sets size; the runtime is alive.
        unsafe {
            let mut st: sys::kio_stats = std::mem::zeroed();
            sys::kio_stats_init(&mut st);
            cvt(sys::kio_stats(self.shared.raw, &mut st))?;
            Ok(st)
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: no preconditions.
        if unsafe { sys::kio_current() } == self.shared.raw {
            // One of our own tasks: kio_runtime_stop would wait for itself.
            let shared = self.shared.clone();
            std::thread::Builder::new()
                .name("kio-runtime-stop".into())
                .spawn(move || shared.shutdown())
                .unwrap_or_else(|e| crate::abort(&format!("cannot start a thread to stop a runtime: {e}")));
        } else {
            self.shared.shutdown();
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("raw", &self.shared.raw).finish()
    }
}
