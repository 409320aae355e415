//! kio::Mutex from tasks and plain threads.

mod common;

use common::runtime;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn eight_tasks_increment_a_hundred_thousand_times_each() {
    const TASKS: u64 = 8;
    const ITERS: u64 = 100_000;
    let rt = runtime();
    let m = Arc::new(kio::Mutex::new(0u64));
    let hs: Vec<_> = (0..TASKS)
        .map(|_| {
            let m = m.clone();
            rt.spawn(move || {
                for i in 0..ITERS {
                    *m.lock().unwrap() += 1;
                    if i % 1024 == 0 {
                        kio::yield_now().unwrap(); // mix in parks and resumes
                    }
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(*m.lock().unwrap(), TASKS * ITERS);
    assert_eq!(Arc::try_unwrap(m).unwrap().into_inner(), TASKS * ITERS);
}

#[test]
fn tasks_and_plain_threads_share_a_mutex() {
    let rt = runtime();
    let m = Arc::new(kio::Mutex::new(Vec::new()));
    let hs: Vec<_> = (0..4u32)
        .map(|t| {
            let m = m.clone();
            rt.spawn(move || {
                for i in 0..1000 {
                    m.lock().unwrap().push(t * 10_000 + i);
                }
            })
        })
        .collect();
    std::thread::scope(|s| {
        for t in 4..6u32 {
            let m = &m;
            s.spawn(move || {
                for i in 0..1000 {
                    m.lock().unwrap().push(t * 10_000 + i);
                }
            });
        }
    });
    hs.into_iter().for_each(|h| h.join().unwrap());
    let mut v = m.lock().unwrap().clone();
    assert_eq!(v.len(), 6000);
    v.sort();
    v.dedup();
    assert_eq!(v.len(), 6000);
}

#[test]
fn held_across_a_sleep_and_owned_by_the_task() {
    let rt = runtime();
    let m = Arc::new(kio::Mutex::new(0));
    let locked = Arc::new(AtomicBool::new(false));
    let (m2, l2) = (m.clone(), locked.clone());
    let holder = rt.spawn(move || {
        let mut g = m2.lock().unwrap();
        l2.store(true, Ordering::SeqCst);
        kio::sleep(Duration::from_millis(30)).unwrap(); // parks holding the lock
        *g = 1;
        // The owner locking again is reported, not a deadlock.
        let again = m2.lock().err().map(|e| e.raw_os_error());
        drop(g);
        again
    });
    while !locked.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(m.try_lock().is_none());
    let waiter = {
        let m = m.clone();
        rt.spawn(move || *m.lock().unwrap())
    };
    assert_eq!(waiter.join().unwrap(), 1, "the waiter got the lock after the holder's write");
    assert_eq!(holder.join().unwrap(), Some(Some(35)), "EDEADLK");
}

#[test]
fn lock_is_a_cancellation_point() {
    let rt = runtime();
    let m = Arc::new(kio::Mutex::new(()));
    let g = m.lock().unwrap(); // held by this plain thread
    let m2 = m.clone();
    let h = rt.spawn(move || m2.lock().map(drop));
    std::thread::sleep(Duration::from_millis(20));
    let r = h.cancel().unwrap().unwrap();
    assert!(kio::is_canceled(&r.unwrap_err()));
    drop(g);
    assert!(m.try_lock().is_some());
}
