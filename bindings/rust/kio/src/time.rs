//! Time: kio's monotonic clock, sleeps and deadlines.

use std::fmt;
use std::io;
use std::ops::{Add, Sub};
use std::time::Duration;

use crate::{cvt, nanos, sys};

/// A point in time on kio's clock (`CLOCK_MONOTONIC`, the time base of
/// `kio_now`, deadlines and timed waits).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The current time (`kio_now`).
    pub fn now() -> Instant {
        now()
    }
    /// An instant from kio's raw nanoseconds.
    pub const fn from_nanos(ns: u64) -> Instant {
        Instant(ns)
    }
    /// kio's raw nanoseconds (for the C API).
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Time since `earlier`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
    /// Time elapsed since this instant.
    pub fn elapsed(self) -> Duration {
        now().saturating_duration_since(self)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at the end of time rather than overflowing.
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(nanos(d)))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instant({}ns)", self.0)
    }
}

/// The current time on kio's monotonic clock.
pub fn now() -> Instant {
    // SAFETY: no preconditions.
    Instant(unsafe { sys::kio_now() })
}

/// Sleeps for at least `d`: parks the task (a plain thread sleeps).
/// `sleep(Duration::ZERO)` yields. In a task, a cancellation point: fails
/// with `ECANCELED` once the task is canceled, and with `TimedOut` at the
/// task's deadline.
pub fn sleep(d: Duration) -> io::Result<()> {
    // SAFETY: no preconditions.
    cvt(unsafe { sys::kio_sleep(nanos(d)) }).map(drop)
}

/// Sleeps until `deadline` (returns at once if it has passed). Errors as
/// [`sleep`].
pub fn sleep_until(deadline: Instant) -> io::Result<()> {
    // SAFETY: no preconditions.
    cvt(unsafe { sys::kio_sleep_until(deadline.0) }).map(drop)
}

/// The deadline of the calling task (or plain thread), if any: every kio
/// wait fails with `TimedOut` once it passes.
pub fn deadline() -> Option<Instant> {
    // SAFETY: no preconditions.
    match unsafe { sys::kio_deadline_get() } {
        0 => None,
        ns => Some(Instant(ns)),
    }
}

/// Restores the previous deadline when dropped (also on unwinding).
struct DeadlineScope(u64);

impl Drop for DeadlineScope {
    fn drop(&mut self) {
        // SAFETY: no preconditions.
        unsafe { sys::kio_deadline_set(self.0) };
    }
}

/// Runs `f` with the calling task's (or thread's) deadline set to `at`, or
/// kept if an enclosing scope's deadline is earlier (scopes only tighten),
/// then restores the previous deadline. Inside `f`, every kio call that
/// waits (I/O, sleeps, locks, joins) fails with `ErrorKind::TimedOut` once
/// the deadline has passed.
pub fn with_deadline<R>(at: Instant, f: impl FnOnce() -> R) -> R {
    let at = at.0.max(1); // 0 means "none" to kio
                          // SAFETY: no preconditions.
    let prev = unsafe { sys::kio_deadline_get() };
    let effective = if prev != 0 { prev.min(at) } else { at };
    // SAFETY: no preconditions.
    let _scope = DeadlineScope(unsafe { sys::kio_deadline_set(effective) });
    f()
}

/// [`with_deadline`] at `now() + timeout`.
pub fn with_timeout<R>(timeout: Duration, f: impl FnOnce() -> R) -> R {
    with_deadline(now() + timeout, f)
}
