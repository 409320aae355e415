//! Tasks: spawning closures, join handles, cancellation.
//!
//! A spawned closure travels to its task in a box (with the `Packet` its
//! result goes to), passed to kio as `arg` with a trampoline as `fn` and a
//! destructor as `arg_destructor`, so that a spawn that fails frees it. The
//! trampoline runs the closure under `catch_unwind` (no unwinding ever
//! crosses `extern "C"`) and stores the value or the panic in the packet,
//! where `join` finds it and re-raises a panic.
//!
//! Completion is signalled through the packet (a kio mutex and condition),
//! not through `kio_await`: a handle then stays usable after its runtime has
//! been stopped, when the kio task handle no longer is. The kio handle is
//! only used to cancel or detach, and only while the runtime is alive.

use std::any::Any;
use std::cell::UnsafeCell;
use std::ffi::{c_void, CString};
use std::fmt;
use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::runtime::{current_shared, RtShared};
use crate::{abort, cvt, sys, Runtime};

/// What a task produced.
enum Outcome<T> {
    Value(T),
    Panic(Box<dyn Any + Send + 'static>),
    /// Canceled before it started: the closure was dropped without running.
    NotRun,
}

/// Where a task's outcome goes, shared by the task and its handle.
struct Packet<T> {
    mu: UnsafeCell<sys::kio_mutex>,
    cv: UnsafeCell<sys::kio_cond>,
    done: AtomicBool,
    /// The kio id of the task once it runs (0 before), to detect a task
    /// joining itself.
    runner: AtomicU64,
    outcome: UnsafeCell<Option<Outcome<T>>>,
}

// SAFETY: the mutex and condition are kio's (thread-safe, never moved: the
// packet lives in an Arc); `outcome` is written once by the task before
// `done` is set (release) and taken once by the handle's owner after it has
// seen `done` (acquire).
unsafe impl<T: Send> Send for Packet<T> {}
unsafe impl<T: Send> Sync for Packet<T> {}

impl<T> Packet<T> {
    fn new() -> Packet<T> {
        Packet {
            mu: UnsafeCell::new(sys::KIO_MUTEX_INIT),
            cv: UnsafeCell::new(sys::KIO_COND_INIT),
            done: AtomicBool::new(false),
            runner: AtomicU64::new(0),
            outcome: UnsafeCell::new(None),
        }
    }

    /// Called once, by the task, at its end.
    fn complete(&self, outcome: Outcome<T>) {
        // SAFETY: nobody reads `outcome` before `done` is set.
        unsafe { *self.outcome.get() = Some(outcome) };
        // A canceled task, or one whose deadline has passed, must still be
        // able to lock: shield it and lift the deadline for the hand-over.
        // SAFETY: we are in a task; the calls have no other preconditions.
        unsafe {
            let shield = sys::kio_cancel_shield(1);
            let deadline = sys::kio_deadline_set(0);
            if sys::kio_mutex_lock(self.mu.get()) != 0 {
                abort("cannot lock a task's result packet");
            }
            self.done.store(true, Ordering::Release);
            sys::kio_cond_broadcast(self.cv.get());
            sys::kio_mutex_unlock(self.mu.get());
            sys::kio_deadline_set(deadline);
            if shield >= 0 {
                sys::kio_cancel_shield(shield);
            }
        }
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Waits until the task has completed. Fails (ECANCELED, ETIMEDOUT) only
    /// if the caller is a canceled task or reaches its deadline.
    fn wait(&self) -> io::Result<()> {
        if self.is_done() {
            return Ok(());
        }
        // SAFETY: mu and cv are valid kio objects that never move.
        unsafe {
            cvt(sys::kio_mutex_lock(self.mu.get()))?;
            while !self.is_done() {
                let r = sys::kio_cond_wait(self.cv.get(), self.mu.get());
                if r < 0 {
                    sys::kio_mutex_unlock(self.mu.get());
                    return Err(io::Error::from_raw_os_error(-r));
                }
            }
            sys::kio_mutex_unlock(self.mu.get());
        }
        Ok(())
    }

    /// Waits like `wait`, but cannot be interrupted by the caller's
    /// cancellation or deadline.
    fn wait_uninterruptible(&self) {
        if self.is_done() {
            return;
        }
        // SAFETY: no preconditions (-EPERM on plain threads, which are never
        // canceled anyway).
        let (shield, deadline) = unsafe { (sys::kio_cancel_shield(1), sys::kio_deadline_set(0)) };
        let r = self.wait();
        unsafe {
            sys::kio_deadline_set(deadline);
            if shield >= 0 {
                sys::kio_cancel_shield(shield);
            }
        }
        if let Err(e) = r {
            abort(&format!("uninterruptible wait for a task failed: {e}"));
        }
    }

    /// Takes the outcome; only after `wait` succeeded, only once.
    fn take(&self) -> Outcome<T> {
        debug_assert!(self.is_done());
        // SAFETY: done is set, so the task no longer touches `outcome`, and
        // the handle's owner (the only caller) takes it once.
        unsafe { (*self.outcome.get()).take() }.expect("kio: task outcome taken twice")
    }
}

/// The box that travels to the task.
struct TaskArg<F, T> {
    f: F,
    packet: Arc<Packet<T>>,
}

/// The task's `kio_fn`.
unsafe extern "C" fn trampoline<F, T>(arg: *mut c_void) -> *mut c_void
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: arg is the Box<TaskArg<F, T>> that spawn_with leaked for
        // this task, which kio passes to exactly one call of this function.
        let arg = unsafe { Box::from_raw(arg.cast::<TaskArg<F, T>>()) };
        let TaskArg { f, packet } = *arg;
        // SAFETY: no preconditions.
        packet.runner.store(unsafe { sys::kio_task_id() }, Ordering::Relaxed);
        // SAFETY: no preconditions.
        let outcome = if unsafe { sys::kio_check_cancel() } != 0 {
            match catch_unwind(AssertUnwindSafe(move || drop(f))) {
                Ok(()) => Outcome::NotRun,
                Err(p) => Outcome::Panic(p),
            }
        } else {
            match catch_unwind(AssertUnwindSafe(f)) {
                Ok(v) => Outcome::Value(v),
                Err(p) => Outcome::Panic(p),
            }
        };
        packet.complete(outcome);
        // Dropping `packet` may drop the value, if the handle is gone.
    }));
    if let Err(payload) = r {
        std::mem::forget(payload);
        abort("a panic escaped a kio task (from a destructor)");
    }
    ptr::null_mut()
}

/// The task's `arg_destructor`: frees the box of a task that never runs.
unsafe extern "C" fn destroy_arg<F, T>(arg: *mut c_void) {
    // SAFETY: as in trampoline; kio calls this instead of running the task.
    let r = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(arg.cast::<TaskArg<F, T>>()) })));
    if let Err(payload) = r {
        std::mem::forget(payload);
        abort("a panic escaped a closure's destructor");
    }
}

/// Options of a spawn.
#[derive(Clone)]
pub(crate) struct TaskOptions {
    pub(crate) name: Option<CString>,
    pub(crate) stack_size: usize,
    pub(crate) pinned: bool,
}

impl Default for TaskOptions {
    fn default() -> TaskOptions {
        TaskOptions { name: None, stack_size: 0, pinned: true }
    }
}

pub(crate) fn spawn_with<F, T>(rt: &Arc<RtShared>, f: F, opts: &TaskOptions) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let packet = Arc::new(Packet::new());
    let arg = Box::into_raw(Box::new(TaskArg { f, packet: packet.clone() }));
    let mut task = ptr::null_mut();
    // SAFETY: kio_spawn_options_init sets size; the name outlives the call
    // (kio copies it); from here on kio owns `arg`: it runs the trampoline
    // exactly once, or calls destroy_arg if the spawn fails.
    let r = unsafe {
        let mut so: sys::kio_spawn_options = std::mem::zeroed();
        sys::kio_spawn_options_init(&mut so);
        so.name = opts.name.as_ref().map_or(ptr::null(), |n| n.as_ptr());
        so.stack_size = opts.stack_size;
        so.pinned = opts.pinned as i32;
        so.arg_destructor = Some(destroy_arg::<F, T>);
        sys::kio_spawn_ex(rt.raw, Some(trampoline::<F, T>), arg.cast(), &so, &mut task)
    };
    cvt(r)?;
    Ok(JoinHandle { task: NonNull::new(task), packet, rt: rt.clone() })
}

/// Spawns `f` as a pinned task of the current runtime (the runtime of the
/// calling task) and returns its handle. The task runs on the worker thread
/// it starts on until it ends (see the crate documentation on pinning).
///
/// From a task, the child is queued on the caller's worker and starts when
/// the caller parks or another worker takes it.
///
/// # Panics
///
/// If called outside a task of a [`Runtime`] (use [`Runtime::spawn`] from
/// plain threads), or if kio cannot create the task.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    try_spawn(f).unwrap_or_else(|e| panic!("kio::spawn: {e}"))
}

/// [`spawn`], returning an error instead of panicking.
pub fn try_spawn<F, T>(f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_with(&current_shared()?, f, &TaskOptions::default())
}

/// Spawns `f` as a task of the current runtime that may resume on another
/// worker thread after any call that parks it.
///
/// # Safety
///
/// Nothing that `f` keeps across a parking call (any kio wait: sleep, lock,
/// join, I/O, yield) may be tied to the OS thread: no `std::sync` guard, no
/// `Rc` shared with a thread-local, no reference obtained from a
/// `thread_local!` or `std::thread::current()` that is used again afterwards,
/// no OS-level per-thread state (errno, signal masks, locale). A violation
/// is undefined behaviour that the compiler cannot catch, because the
/// closure as a whole is `Send`.
///
/// # Panics
///
/// As [`spawn`].
pub unsafe fn spawn_migratable<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let shared = current_shared().unwrap_or_else(|e| panic!("kio::spawn_migratable: {e}"));
    let opts = TaskOptions { pinned: false, ..TaskOptions::default() };
    spawn_with(&shared, f, &opts).unwrap_or_else(|e| panic!("kio::spawn_migratable: {e}"))
}

/// Spawns tasks with a name (shown by `kio_dump` and debuggers), a stack size
/// or without pinning.
#[derive(Clone, Default)]
pub struct TaskBuilder {
    opts: TaskOptions,
    bad_name: bool,
}

impl TaskBuilder {
    /// A pinned, unnamed task with the runtime's default stack.
    pub fn new() -> TaskBuilder {
        TaskBuilder::default()
    }

    /// The task's name (kio keeps the first 31 bytes).
    pub fn name(mut self, name: &str) -> TaskBuilder {
        match CString::new(name) {
            Ok(n) => self.opts.name = Some(n),
            Err(_) => self.bad_name = true,
        }
        self
    }

    /// The task's stack in bytes (at least 16 KiB; 0 = the runtime's
    /// default). Reserved at spawn, so that a failure is reported there.
    pub fn stack_size(mut self, bytes: usize) -> TaskBuilder {
        self.opts.stack_size = bytes;
        self
    }

    /// Lets the task migrate between worker threads.
    ///
    /// # Safety
    ///
    /// The closures spawned with this builder must satisfy the contract of
    /// [`spawn_migratable`].
    pub unsafe fn migratable(mut self) -> TaskBuilder {
        self.opts.pinned = false;
        self
    }

    fn check(&self) -> io::Result<()> {
        if self.bad_name {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "task name contains NUL"));
        }
        Ok(())
    }

    /// Spawns `f` into the current runtime (from a task).
    pub fn spawn<F, T>(&self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.check()?;
        spawn_with(&current_shared()?, f, &self.opts)
    }

    /// Spawns `f` into `rt` (from any thread).
    pub fn spawn_on<F, T>(&self, rt: &Runtime, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.check()?;
        spawn_with(rt.shared(), f, &self.opts)
    }
}

impl fmt::Debug for TaskBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("name", &self.opts.name)
            .field("stack_size", &self.opts.stack_size)
            .field("pinned", &self.opts.pinned)
            .finish()
    }
}

/// An owned permission to join or cancel a task. Dropping it detaches the
/// task: it runs to completion on its own and its value is dropped.
///
/// A handle may outlive its [`Runtime`]: dropping the runtime cancels and
/// finishes every task, so `join` then returns at once.
pub struct JoinHandle<T> {
    /// The kio handle, until consumed (cancel, detach).
    task: Option<NonNull<sys::kio_task>>,
    packet: Arc<Packet<T>>,
    rt: Arc<RtShared>,
}

// SAFETY: the kio handle may be used from any thread; the value crosses
// threads, hence T: Send.
unsafe impl<T: Send> Send for JoinHandle<T> {}
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    /// Waits for the task to finish and returns its value. From a task, only
    /// the fiber parks; a plain thread blocks.
    ///
    /// If the task panicked, the panic is resumed here (`resume_unwind`).
    ///
    /// Errors: the task was canceled before it started, so its closure never
    /// ran ([`JoinError::is_canceled`]); or the wait itself was interrupted,
    /// because the caller is a task that has been canceled or has reached its
    /// deadline ([`JoinError::io_error`]), in which case the task goes on,
    /// detached; or the caller is the task itself (`EDEADLK`).
    pub fn join(mut self) -> Result<T, JoinError> {
        if self.is_own_task() {
            return Err(JoinError::wait(io::Error::from_raw_os_error(crate::EDEADLK)));
        }
        self.packet.wait().map_err(JoinError::wait)?;
        self.detach_handle();
        match self.packet.take() {
            Outcome::Value(v) => Ok(v),
            Outcome::Panic(p) => resume_unwind(p),
            Outcome::NotRun => Err(JoinError::not_run()),
        }
    }

    /// Requests cancellation of the task and waits until it has finished;
    /// the wait cannot be interrupted (it is not a cancellation point).
    ///
    /// From the request on, the task's cancellation points (kio waits: sleep,
    /// lock, join, socket calls) fail with `ECANCELED` ([`crate::is_canceled`])
    /// and wake it if it is parked in one; its closure decides what to return.
    /// Returns:
    ///
    /// - `Ok(Some(value))`: the closure's value (it may also have finished
    ///   before the request, or ignored it);
    /// - `Ok(None)`: the task was canceled before it started; its closure was
    ///   dropped without running;
    /// - the task's panic, resumed here, if it panicked;
    /// - `Err` if a task calls this on its own handle (`EDEADLK`; the task is
    ///   then detached, with its cancellation not requested).
    pub fn cancel(mut self) -> Result<Option<T>, JoinError> {
        if self.is_own_task() {
            return Err(JoinError::wait(io::Error::from_raw_os_error(crate::EDEADLK)));
        }
        if let Some(task) = self.task.take() {
            // The request, then the handle is let go: neither parks, so the
            // wait below (on the task's own packet) holds nothing that a
            // runtime being dropped meanwhile would wait for; that drop
            // cancels the task itself. (kio_cancel would park with the
            // handle in use, and a drop must not destroy the runtime under
            // it, so the drop would wait for it: forever, if the task's
            // cleanup waits for a task only the drop cancels.)
            // SAFETY: unconsumed handle of a live runtime; neither call parks.
            self.rt.if_alive(|| unsafe {
                sys::kio_cancel_request(task.as_ptr());
                sys::kio_detach(task.as_ptr());
            });
        }
        self.packet.wait_uninterruptible();
        match self.packet.take() {
            Outcome::Value(v) => Ok(Some(v)),
            Outcome::Panic(p) => resume_unwind(p),
            Outcome::NotRun => Ok(None),
        }
    }

    /// True if the caller is the task itself (which would wait forever).
    fn is_own_task(&self) -> bool {
        // SAFETY: no preconditions.
        !self.packet.is_done()
            && unsafe { sys::kio_current() } == self.rt.raw
            && self.packet.runner.load(Ordering::Relaxed) == unsafe { sys::kio_task_id() }
    }

    /// True once the task has finished (its value is ready for `join`).
    pub fn is_finished(&self) -> bool {
        self.packet.is_done()
    }

    /// Detaches the task explicitly (the same as dropping the handle).
    pub fn detach(self) {}

    fn detach_handle(&mut self) {
        if let Some(task) = self.task.take() {
            // SAFETY: unconsumed handle of a live runtime; kio_detach never
            // parks. If the runtime is gone, its handles died with it.
            self.rt.if_alive(|| unsafe { sys::kio_detach(task.as_ptr()) });
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        self.detach_handle();
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
    }
}

/// Why [`JoinHandle::join`] or [`JoinHandle::cancel`] returned no value.
pub struct JoinError {
    /// None: the task was canceled before it started.
    wait: Option<io::Error>,
}

impl JoinError {
    fn not_run() -> JoinError {
        JoinError { wait: None }
    }

    fn wait(e: io::Error) -> JoinError {
        JoinError { wait: Some(e) }
    }

    /// True if the task was canceled before it started, so its closure never
    /// ran and there is no value.
    pub fn is_canceled(&self) -> bool {
        self.wait.is_none()
    }

    /// The error that interrupted the wait: `ECANCELED` (the waiting task was
    /// canceled), `TimedOut` (its deadline passed), `EDEADLK` (a task
    /// canceling itself).
    pub fn io_error(&self) -> Option<&io::Error> {
        self.wait.as_ref()
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.wait {
            None => f.write_str("JoinError::Canceled"),
            Some(e) => f.debug_tuple("JoinError::Wait").field(e).finish(),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.wait {
            None => f.write_str("task was canceled before it started"),
            Some(e) => write!(f, "waiting for the task failed: {e}"),
        }
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.wait.as_ref().map(|e| e as _)
    }
}

impl From<JoinError> for io::Error {
    fn from(e: JoinError) -> io::Error {
        match e.wait {
            Some(e) => e,
            None => io::Error::from_raw_os_error(crate::ECANCELED),
        }
    }
}

/// Runs other ready tasks before continuing (`kio_yield`); a plain thread
/// yields its time slice. In a task, a cancellation point: fails with
/// `ECANCELED` if the task has been canceled, which makes it a cancellation
/// check for CPU-bound loops.
pub fn yield_now() -> io::Result<()> {
    // SAFETY: no preconditions.
    match unsafe { sys::kio_yield() } {
        r if r == -crate::EPERM => {
            std::thread::yield_now();
            Ok(())
        }
        r => cvt(r).map(drop),
    }
}

/// Fails with `ECANCELED` if the calling task has been canceled (and is not
/// shielded); never parks. Always `Ok` on plain threads.
pub fn check_cancel() -> io::Result<()> {
    // SAFETY: no preconditions.
    cvt(unsafe { sys::kio_check_cancel() }).map(drop)
}

/// The id of the calling task, unique within its runtime, or `None` on a
/// plain thread.
pub fn task_id() -> Option<u64> {
    // SAFETY: no preconditions.
    match unsafe { sys::kio_task_id() } {
        0 => None,
        id => Some(id),
    }
}

/// Runs `f` shielded from cancellation: a request made meanwhile is
/// recorded but neither wakes the task nor fails its cancellation points
/// until `f` returns (for cleanup that must not be cut short). Nests. On a
/// plain thread, just runs `f`.
pub fn shielded<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            if self.0 >= 0 {
                // SAFETY: we are in the task that raised the shield.
                unsafe { sys::kio_cancel_shield(self.0) };
            }
        }
    }
    // SAFETY: no preconditions (-EPERM on plain threads).
    let _restore = Restore(unsafe { sys::kio_cancel_shield(1) });
    f()
}
