//! A fiber-aware mutex over `kio_mutex`.

use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use crate::{cvt, sys};

/// A mutual-exclusion lock over `kio_mutex`: a task that must wait parks
/// (its worker runs other tasks), a plain thread blocks; both can share one
/// mutex. The lock is FIFO with bounded (about 1 ms) overtaking.
///
/// Unlike `std::sync::Mutex`, it may be held across kio calls that park
/// (sleeps, I/O, joins): it is owned by the task, not the OS thread. It does
/// not poison: a panic while locked simply unlocks it. [`Mutex::lock`] can
/// fail: in a canceled task (`ECANCELED`), at the task's deadline, or if the
/// caller already holds it (`EDEADLK`; kio detects self-deadlock).
pub struct Mutex<T: ?Sized> {
    // Boxed so that the kio_mutex never moves, whatever happens to `self`.
    raw: Box<UnsafeCell<sys::kio_mutex>>,
    data: UnsafeCell<T>,
}

// SAFETY: as std::sync::Mutex: the lock gives exclusive access to T.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub fn new(value: T) -> Mutex<T> {
        Mutex { raw: Box::new(UnsafeCell::new(sys::KIO_MUTEX_INIT)), data: UnsafeCell::new(value) }
    }

    /// The value, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks the mutex, parking the task (or blocking the thread) while
    /// another owner holds it. In a task, a cancellation point.
    pub fn lock(&self) -> io::Result<MutexGuard<'_, T>> {
        // SAFETY: raw is a valid kio_mutex that never moves.
        cvt(unsafe { sys::kio_mutex_lock(self.raw.get()) })?;
        Ok(MutexGuard { mutex: self, _not_send: PhantomData })
    }

    /// Locks the mutex if it is free right now; never waits.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        // SAFETY: as in lock.
        if unsafe { sys::kio_mutex_trylock(self.raw.get()) } == 0 {
            Some(MutexGuard { mutex: self, _not_send: PhantomData })
        } else {
            None
        }
    }

    /// The value, through an exclusive borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Mutex<T> {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

/// Holds a [`Mutex`] locked; unlocks it when dropped. Not `Send`: kio
/// mutexes belong to the task (or thread) that locked them.
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared guard only gives &T.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: we hold the lock; unlock never parks.
        unsafe { sys::kio_mutex_unlock(self.mutex.raw.get()) };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
