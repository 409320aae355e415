//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::num::NonZeroUsize;

/// Worker threads for the tests: one per CPU, as the brief of each test says.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(NonZeroUsize::get).unwrap_or(2)
}

/// A runtime with one worker per CPU.
pub fn runtime() -> kio::Runtime {
    kio::Runtime::builder().threads(cpus()).build().expect("start a kio runtime")
}

extern "C" {
    fn syscall(number: std::ffi::c_long, ...) -> std::ffi::c_long;
}

/// The OS thread id (gettid), read fresh from the kernel: unlike
/// std::thread::current(), it cannot be a stale thread-local.
pub fn gettid() -> i64 {
    #[cfg(target_arch = "x86_64")]
    const SYS_GETTID: std::ffi::c_long = 186;
    #[cfg(target_arch = "aarch64")]
    const SYS_GETTID: std::ffi::c_long = 178;
    #[cfg(target_arch = "riscv64")]
    const SYS_GETTID: std::ffi::c_long = 178;
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { syscall(SYS_GETTID) as i64 }
}
