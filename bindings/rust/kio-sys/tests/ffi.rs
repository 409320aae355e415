//! The raw declarations link and work: the calls the safe crate builds on,
//! used directly.

use kio_sys::*;
use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn version_matches_header() {
    let v = unsafe { CStr::from_ptr(kio_version()) }.to_str().unwrap();
    let want = format!("{KIO_VERSION_MAJOR}.{KIO_VERSION_MINOR}.");
    assert!(v.starts_with(&want), "library {v}, header {want}x");
    let msg = unsafe { CStr::from_ptr(kio_strerror(-125)) }.to_str().unwrap();
    assert!(!msg.is_empty());
}

unsafe extern "C" fn add_one(arg: *mut c_void) -> *mut c_void {
    (arg as usize + 1) as *mut c_void
}

static DESTROYED: AtomicUsize = AtomicUsize::new(0);
unsafe extern "C" fn count_destroy(_arg: *mut c_void) {
    DESTROYED.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn background_runtime_spawn_await_stop() {
    unsafe {
        let mut opts: kio_options = std::mem::zeroed();
        kio_options_init(&mut opts);
        assert_eq!(opts.size, std::mem::size_of::<kio_options>());
        opts.threads = 2;
        let mut rt = ptr::null_mut();
        assert_eq!(kio_runtime_start(&opts, &mut rt), 0);
        assert!(!rt.is_null());
        // This thread is not part of the runtime.
        assert!(kio_current().is_null());
        assert_eq!(kio_task_id(), 0);

        let mut so: kio_spawn_options = std::mem::zeroed();
        kio_spawn_options_init(&mut so);
        assert_eq!(so.size, std::mem::size_of::<kio_spawn_options>());
        so.pinned = 1;
        so.name = c"ffi-test".as_ptr();
        so.arg_destructor = Some(count_destroy);
        let mut tasks = Vec::new();
        for i in 0..100usize {
            let mut t = ptr::null_mut();
            assert_eq!(kio_spawn_ex(rt, Some(add_one), i as *mut c_void, &so, &mut t), 0);
            tasks.push(t);
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let mut res = ptr::null_mut();
            assert_eq!(kio_await(t, &mut res), 0);
            assert_eq!(res as usize, i + 1);
        }
        assert_eq!(DESTROYED.load(Ordering::SeqCst), 0, "the destructor is only for failed spawns");

        // A spawn that fails (stack under 16 KiB) hands arg to the destructor.
        so.stack_size = 4096;
        let mut t = ptr::null_mut();
        assert_eq!(kio_spawn_ex(rt, Some(add_one), ptr::null_mut(), &so, &mut t), -22);
        assert_eq!(DESTROYED.load(Ordering::SeqCst), 1);

        let mut st: kio_stats = std::mem::zeroed();
        kio_stats_init(&mut st);
        assert_eq!(kio_stats(rt, &mut st), 0);
        assert!(st.workers >= 1);

        // A plain thread can use kio's mutex and clock.
        let mut m = KIO_MUTEX_INIT;
        assert_eq!(kio_mutex_lock(&mut m), 0);
        assert_eq!(kio_mutex_trylock(&mut m), -16);
        kio_mutex_unlock(&mut m);
        let t0 = kio_now();
        assert_eq!(kio_sleep(1_000_000), 0);
        assert!(kio_now() - t0 >= 1_000_000);

        assert_eq!(kio_runtime_stop(rt), 0);
    }
}
