//! Safe Rust API of kio, an M:N fiber runtime.
//!
//! A [`Runtime`] runs its workers on threads of its own (`kio_runtime_start`),
//! so the Rust thread that creates it stays a plain thread. Closures spawned
//! into it run as kio tasks, on fibers:
//!
//! ```
//! let rt = kio::Runtime::builder().threads(2).build().unwrap();
//! let h = rt.spawn(|| {
//!     // Inside a task: blocking kio calls park only this fiber.
//!     kio::sleep(std::time::Duration::from_millis(1)).unwrap();
//!     let child = kio::spawn(|| 20 + 1);
//!     child.join().unwrap() * 2
//! });
//! assert_eq!(h.join().unwrap(), 42);
//! ```
//!
//! Everything that waits ([`JoinHandle::join`], [`Mutex::lock`], [`sleep`],
//! the socket calls) parks only the fiber when called from a kio task, and
//! blocks the thread when called from a plain thread; the same objects work
//! from both.
//!
//! # Pinned tasks
//!
//! A kio fiber may resume on another OS thread after any call that parks.
//! Rust cannot see what a closure keeps on its stack across such a call: a
//! `std::sync::MutexGuard`, a pointer into a `thread_local!`, the cached
//! `std::thread::current()`, a `!Send` value of any kind. So tasks are
//! *pinned* by default: each runs on the worker thread it starts on until it
//! ends. [`spawn_migratable`] (unsafe) lets the scheduler move a task between
//! threads, for code known to keep nothing thread-bound across a park.
//!
//! # Cancellation
//!
//! Cancellation is a request ([`JoinHandle::cancel`], or the runtime being
//! dropped): the task's cancellation points (sleeps, lock waits, joins, socket
//! calls) then fail with `ECANCELED` (see [`is_canceled`]) and the closure
//! decides what to return. A task canceled before it started does not run its
//! closure at all.
//!
//! # Errors
//!
//! kio's negative errno results become `std::io::Error::from_raw_os_error`.

#![warn(missing_docs)]

use std::ffi::c_int;
use std::io;

pub use kio_sys as sys;

mod net;
mod runtime;
mod sync;
mod task;
mod time;

pub use net::{Incoming, TcpListener, TcpStream};
pub use runtime::{Builder, Runtime};
pub use sync::{Mutex, MutexGuard};
pub use task::{
    check_cancel, shielded, spawn, spawn_migratable, task_id, try_spawn, yield_now, JoinError, JoinHandle,
    TaskBuilder,
};
pub use time::{deadline, now, sleep, sleep_until, with_deadline, with_timeout, Instant};

/// The errno value kio uses for canceled operations.
#[cfg(target_os = "linux")]
pub(crate) const ECANCELED: i32 = 125;
#[cfg(target_vendor = "apple")]
pub(crate) const ECANCELED: i32 = 89;
#[cfg(target_os = "freebsd")]
pub(crate) const ECANCELED: i32 = 85;
#[cfg(not(any(target_os = "linux", target_vendor = "apple", target_os = "freebsd")))]
pub(crate) const ECANCELED: i32 = 125;

pub(crate) const EPERM: i32 = 1;
#[cfg(target_os = "linux")]
pub(crate) const EDEADLK: i32 = 35;
#[cfg(not(target_os = "linux"))]
pub(crate) const EDEADLK: i32 = 11;

/// True if `err` is kio's "operation canceled" (`ECANCELED`): the calling
/// task has been canceled and should wind down.
pub fn is_canceled(err: &io::Error) -> bool {
    err.raw_os_error() == Some(ECANCELED)
}

/// The version of the loaded libkio ("MAJOR.MINOR.PATCH").
pub fn version() -> &'static str {
    // SAFETY: kio_version returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(sys::kio_version()) }.to_str().unwrap_or("?")
}

/// A kio return value (0 or a count, or a negative errno) as a Result.
pub(crate) fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::from_raw_os_error(-r))
    } else {
        Ok(r)
    }
}

/// `cvt` for `ssize_t` results.
pub(crate) fn cvt_size(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::from_raw_os_error(-r as i32))
    } else {
        Ok(r as usize)
    }
}

/// Nanoseconds of a Duration for kio, saturating at u64::MAX.
pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Aborts the process after a message: for panics that must not cross the
/// C boundary and have nowhere else to go.
pub(crate) fn abort(msg: &str) -> ! {
    eprintln!("kio: {msg}; aborting");
    std::process::abort()
}
