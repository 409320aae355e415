//! Raw declarations of `kio.h`, the C API of the kio fiber runtime, version 0.1.
//!
//! Every item mirrors the header one to one (same names, same layouts); the
//! header and `docs/api.md` are the documentation. Everything here is
//! `unsafe` to use: see the `kio` crate for a safe API.
//!
//! Conventions of the C API, restated because they matter to every caller:
//!
//! - functions return 0 (or a count, a descriptor) on success and a negative
//!   errno value on failure; none sets `errno`;
//! - a fiber may resume on another OS thread after any call that can park
//!   (unless its task is pinned, [`kio_spawn_options::pinned`]): do not keep
//!   thread-local state, or an OS lock, across such a call;
//! - the options structs start with `size`: fill them with their `*_init`
//!   function before setting fields.
//!
//! The library is found by `build.rs`: `KIO_LIB_DIR`, else pkg-config.
//!
//! The socket types of the header's signatures (`sockaddr`, `msghdr`, ...)
//! come from the C library; this crate declares the few it needs, for Linux
//! (glibc and musl), macOS/iOS and FreeBSD, since it may not depend on `libc`.

#![no_std]
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]

use core::ffi::{c_char, c_int, c_short, c_uint, c_void};
use core::marker::{PhantomData, PhantomPinned};

// ---------------------------------------------------------------------------
// C library types used in the signatures

/// `ssize_t`.
pub type ssize_t = isize;
/// `off_t` (64-bit everywhere kio builds: meson defines `_FILE_OFFSET_BITS=64`).
pub type off_t = i64;
/// `socklen_t`.
pub type socklen_t = u32;
/// `mode_t`.
#[cfg(any(target_vendor = "apple", target_os = "freebsd"))]
pub type mode_t = u16;
/// `mode_t`.
#[cfg(not(any(target_vendor = "apple", target_os = "freebsd")))]
pub type mode_t = u32;
/// `sa_family_t`.
#[cfg(any(target_vendor = "apple", target_os = "freebsd"))]
pub type sa_family_t = u8;
/// `sa_family_t`.
#[cfg(not(any(target_vendor = "apple", target_os = "freebsd")))]
pub type sa_family_t = u16;

/// `struct sockaddr`.
#[cfg(not(any(target_vendor = "apple", target_os = "freebsd")))]
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sockaddr {
    pub sa_family: sa_family_t,
    pub sa_data: [c_char; 14],
}

/// `struct sockaddr`.
#[cfg(any(target_vendor = "apple", target_os = "freebsd"))]
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sockaddr {
    pub sa_len: u8,
    pub sa_family: sa_family_t,
    pub sa_data: [c_char; 14],
}

/// `struct sockaddr_storage`: room for any address (128 bytes, aligned like
/// the C type's `unsigned long` member).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct sockaddr_storage {
    pub __ss_data: [usize; 128 / core::mem::size_of::<usize>()],
}

/// `struct iovec`.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct iovec {
    pub iov_base: *mut c_void,
    pub iov_len: usize,
}

/// `struct msghdr` (glibc).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct msghdr {
    pub msg_name: *mut c_void,
    pub msg_namelen: socklen_t,
    pub msg_iov: *mut iovec,
    pub msg_iovlen: usize,
    pub msg_control: *mut c_void,
    pub msg_controllen: usize,
    pub msg_flags: c_int,
}

/// `struct msghdr` (musl: int-sized lengths with explicit padding).
#[cfg(all(target_os = "linux", target_env = "musl"))]
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct msghdr {
    pub msg_name: *mut c_void,
    pub msg_namelen: socklen_t,
    pub msg_iov: *mut iovec,
    #[cfg(all(target_pointer_width = "64", target_endian = "big"))]
    pub __pad1: c_int,
    pub msg_iovlen: c_int,
    #[cfg(all(target_pointer_width = "64", target_endian = "little"))]
    pub __pad1: c_int,
    pub msg_control: *mut c_void,
    #[cfg(all(target_pointer_width = "64", target_endian = "big"))]
    pub __pad2: c_int,
    pub msg_controllen: socklen_t,
    #[cfg(all(target_pointer_width = "64", target_endian = "little"))]
    pub __pad2: c_int,
    pub msg_flags: c_int,
}

/// `struct msghdr` (BSD layout).
#[cfg(not(target_os = "linux"))]
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct msghdr {
    pub msg_name: *mut c_void,
    pub msg_namelen: socklen_t,
    pub msg_iov: *mut iovec,
    pub msg_iovlen: c_int,
    pub msg_control: *mut c_void,
    pub msg_controllen: socklen_t,
    pub msg_flags: c_int,
}

// ---------------------------------------------------------------------------
// Version and errors

pub const KIO_VERSION_MAJOR: c_int = 0;
pub const KIO_VERSION_MINOR: c_int = 1;
pub const KIO_VERSION_PATCH: c_int = 0;

// ---------------------------------------------------------------------------
// Opaque handles

/// `kio_runtime` (opaque).
#[repr(C)]
pub struct kio_runtime {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `kio_task` (opaque; a task handle, consumed exactly once).
#[repr(C)]
pub struct kio_task {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `kio_cq` (opaque completion queue).
#[repr(C)]
pub struct kio_cq {
    _private: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

// ---------------------------------------------------------------------------
// Runtime

/// `kio_options`. Fill with [`kio_options_init`] first.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct kio_options {
    /// `sizeof(kio_options)`; set by `kio_options_init`.
    pub size: usize,
    /// Workers including worker 0; 0 = CPU count.
    pub threads: c_uint,
    /// Default fiber stack in bytes; 0 = library default (64 KiB).
    pub stack_size: usize,
    /// NULL or "auto", "epoll", "kqueue".
    pub backend: *const c_char,
    /// 0 = off; a signal that makes `kio_dump(rt, 2)`.
    pub dump_signal: c_int,
    /// 0 = off; report a fiber running this long without a kio call.
    pub stall_ns: u64,
    /// `KIO_DEBUG_*` bits.
    pub debug_flags: c_uint,
}

/// `debug_flags`: resume every fiber on another worker than it parked on.
pub const KIO_DEBUG_MIGRATE: c_uint = 1;

/// `kio_fn`: a task's function.
pub type kio_fn = Option<unsafe extern "C" fn(arg: *mut c_void) -> *mut c_void>;

/// `kio_spawn_options`. Fill with [`kio_spawn_options_init`] first.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct kio_spawn_options {
    /// `sizeof(kio_spawn_options)`; set by `kio_spawn_options_init`.
    pub size: usize,
    /// Copied (first 31 bytes); NULL = unnamed.
    pub name: *const c_char,
    /// 0 = the runtime's default.
    pub stack_size: usize,
    /// Nonzero: never migrates off the worker it starts on.
    pub pinned: c_int,
    /// Called with arg if the task never runs (the spawn failed).
    pub arg_destructor: Option<unsafe extern "C" fn(arg: *mut c_void)>,
}

// ---------------------------------------------------------------------------
// Mutex and condition

/// `kio_mutex`: all-zero is a valid unlocked mutex. Must not move while in use.
#[repr(C)]
#[derive(Debug)]
pub struct kio_mutex {
    pub opaque_: [usize; 4],
}

/// `KIO_MUTEX_INIT`.
pub const KIO_MUTEX_INIT: kio_mutex = kio_mutex { opaque_: [0; 4] };

/// `kio_cond`: all-zero is a valid empty condition. Must not move while in use.
#[repr(C)]
#[derive(Debug)]
pub struct kio_cond {
    pub opaque_: [usize; 3],
}

/// `KIO_COND_INIT`.
pub const KIO_COND_INIT: kio_cond = kio_cond { opaque_: [0; 3] };

// ---------------------------------------------------------------------------
// Completion queues

/// `kio_cq_event`.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct kio_cq_event {
    /// As given to `kio_cq_watch`.
    pub user_data: u64,
    /// The task's return value.
    pub result: *mut c_void,
}

// ---------------------------------------------------------------------------
// Introspection

pub const KIO_PARK_SLEEP: c_int = 0;
pub const KIO_PARK_MUTEX: c_int = 1;
pub const KIO_PARK_COND: c_int = 2;
pub const KIO_PARK_AWAIT: c_int = 3;
pub const KIO_PARK_SELECT: c_int = 4;
pub const KIO_PARK_IO: c_int = 5;
pub const KIO_PARK_BLOCKING: c_int = 6;
pub const KIO_PARK_OTHER: c_int = 7;
pub const KIO_PARK_KINDS: c_int = 8;

/// `struct kio_stats`. Fill with [`kio_stats_init`] first.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct kio_stats {
    /// `sizeof(struct kio_stats)`; set by `kio_stats_init`.
    pub size: usize,
    pub workers: c_uint,
    pub tasks_live: u64,
    pub tasks_ready: u64,
    pub switches: u64,
    pub steals: u64,
    pub parks: [u64; KIO_PARK_KINDS as usize],
    pub stack_reserved: u64,
    pub stack_committed: u64,
}

// ---------------------------------------------------------------------------
// Functions, in the header's order

extern "C" {
    // Version and errors
    pub fn kio_version() -> *const c_char;
    pub fn kio_strerror(err: c_int) -> *const c_char;

    // Runtime
    pub fn kio_options_init(opts: *mut kio_options);
    pub fn kio_runtime_create(opts: *const kio_options, out: *mut *mut kio_runtime) -> c_int;
    pub fn kio_runtime_destroy(rt: *mut kio_runtime) -> c_int;
    pub fn kio_runtime_start(opts: *const kio_options, out: *mut *mut kio_runtime) -> c_int;
    pub fn kio_runtime_stop(rt: *mut kio_runtime) -> c_int;
    pub fn kio_current() -> *mut kio_runtime;

    // Tasks
    pub fn kio_spawn_options_init(opts: *mut kio_spawn_options);
    pub fn kio_spawn(rt: *mut kio_runtime, fn_: kio_fn, arg: *mut c_void, out: *mut *mut kio_task) -> c_int;
    pub fn kio_spawn_ex(
        rt: *mut kio_runtime,
        fn_: kio_fn,
        arg: *mut c_void,
        opts: *const kio_spawn_options,
        out: *mut *mut kio_task,
    ) -> c_int;
    pub fn kio_await(task: *mut kio_task, result: *mut *mut c_void) -> c_int;
    pub fn kio_cancel(task: *mut kio_task, result: *mut *mut c_void) -> c_int;
    pub fn kio_cancel_request(task: *mut kio_task) -> c_int;
    pub fn kio_detach(task: *mut kio_task) -> c_int;
    pub fn kio_select(tasks: *const *mut kio_task, count: usize, index: *mut usize) -> c_int;
    pub fn kio_yield() -> c_int;
    pub fn kio_task_id() -> u64;
    pub fn kio_task_get_id(task: *mut kio_task) -> u64;

    // Cancellation
    pub fn kio_cancel_shield(enable: c_int) -> c_int;
    pub fn kio_check_cancel() -> c_int;
    pub fn kio_cancel_self() -> c_int;

    // Time
    pub fn kio_now() -> u64;
    pub fn kio_sleep(ns: u64) -> c_int;
    pub fn kio_sleep_until(deadline: u64) -> c_int;

    // Mutex and condition
    pub fn kio_mutex_init(m: *mut kio_mutex);
    pub fn kio_mutex_lock(m: *mut kio_mutex) -> c_int;
    pub fn kio_mutex_trylock(m: *mut kio_mutex) -> c_int;
    pub fn kio_mutex_unlock(m: *mut kio_mutex);
    pub fn kio_cond_init(c: *mut kio_cond);
    pub fn kio_cond_wait(c: *mut kio_cond, m: *mut kio_mutex) -> c_int;
    pub fn kio_cond_wait_until(c: *mut kio_cond, m: *mut kio_mutex, deadline: u64) -> c_int;
    pub fn kio_cond_signal(c: *mut kio_cond);
    pub fn kio_cond_broadcast(c: *mut kio_cond);

    // Deadlines
    pub fn kio_deadline_set(deadline: u64) -> u64;
    pub fn kio_deadline_get() -> u64;

    // Sockets and file descriptors
    pub fn kio_read(fd: c_int, buf: *mut c_void, len: usize) -> ssize_t;
    pub fn kio_write(fd: c_int, buf: *const c_void, len: usize) -> ssize_t;
    pub fn kio_readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t;
    pub fn kio_writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t;
    pub fn kio_recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> ssize_t;
    pub fn kio_send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> ssize_t;
    pub fn kio_recvfrom(
        fd: c_int,
        buf: *mut c_void,
        len: usize,
        flags: c_int,
        addr: *mut sockaddr,
        addrlen: *mut socklen_t,
    ) -> ssize_t;
    pub fn kio_sendto(
        fd: c_int,
        buf: *const c_void,
        len: usize,
        flags: c_int,
        addr: *const sockaddr,
        addrlen: socklen_t,
    ) -> ssize_t;
    pub fn kio_recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    pub fn kio_sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    pub fn kio_accept(fd: c_int, addr: *mut sockaddr, addrlen: *mut socklen_t, flags: c_int) -> c_int;
    pub fn kio_connect(fd: c_int, addr: *const sockaddr, addrlen: socklen_t) -> c_int;
    pub fn kio_poll(fd: c_int, events: c_short, deadline: u64) -> c_int;
    pub fn kio_socket(domain: c_int, type_: c_int, protocol: c_int) -> c_int;
    pub fn kio_close(fd: c_int) -> c_int;
    pub fn kio_listen_tcp(host: *const c_char, port: c_int, backlog: c_int) -> c_int;
    pub fn kio_dial_tcp(host: *const c_char, port: c_int, deadline: u64) -> c_int;

    // Files and blocking work
    pub fn kio_open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int;
    pub fn kio_pread(fd: c_int, buf: *mut c_void, len: usize, offset: off_t) -> ssize_t;
    pub fn kio_pwrite(fd: c_int, buf: *const c_void, len: usize, offset: off_t) -> ssize_t;
    pub fn kio_fsync(fd: c_int) -> c_int;
    pub fn kio_blocking(fn_: kio_fn, arg: *mut c_void, result: *mut *mut c_void) -> c_int;

    // Completion queues
    pub fn kio_cq_create(out: *mut *mut kio_cq) -> c_int;
    pub fn kio_cq_fd(cq: *mut kio_cq) -> c_int;
    pub fn kio_cq_watch(cq: *mut kio_cq, task: *mut kio_task, user_data: u64) -> c_int;
    pub fn kio_cq_poll(cq: *mut kio_cq, events: *mut kio_cq_event, max: usize) -> c_int;
    pub fn kio_cq_destroy(cq: *mut kio_cq) -> c_int;

    // Introspection and debugging
    pub fn kio_stats_init(out: *mut kio_stats);
    pub fn kio_stats(rt: *mut kio_runtime, out: *mut kio_stats) -> c_int;
    pub fn kio_backtrace(task: *mut kio_task, frames: *mut *mut c_void, max: usize) -> c_int;
    pub fn kio_dump(rt: *mut kio_runtime, fd: c_int) -> c_int;
}
