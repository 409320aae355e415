//! Tasks: spawning many, results, panics, cancellation, detaching, pinning.

mod common;

use common::{cpus, gettid, runtime};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const N: u64 = 100_000;

fn f(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40
}

#[test]
fn hundred_thousand_closures_from_a_plain_thread() {
    let rt = runtime();
    let handles: Vec<_> = (0..N).map(|i| rt.spawn(move || (i, f(i), gettid()))).collect();
    let mut sum = 0u64;
    let mut tids = HashSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (j, v, tid) = h.join().unwrap();
        assert_eq!(j, i as u64);
        assert_eq!(v, f(j));
        sum += v;
        tids.insert(tid);
    }
    assert_eq!(sum, (0..N).map(f).sum::<u64>());
    let st = rt.stats().unwrap();
    eprintln!(
        "100k tasks ran on {} threads; {} workers started (threads = {})",
        tids.len(),
        st.workers,
        cpus()
    );
    assert!(!tids.is_empty() && tids.len() <= cpus());
}

#[test]
fn hundred_thousand_closures_from_a_task() {
    let rt = runtime();
    let sum = rt.block_on(|| {
        let handles: Vec<_> = (0..N).map(|i| kio::spawn(move || f(i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, (0..N).map(f).sum::<u64>());
}

#[test]
fn nested_spawns_and_values_of_any_type() {
    let rt = runtime();
    let v = rt.block_on(|| {
        let a = kio::spawn(|| String::from("kio"));
        let b = kio::spawn(|| vec![1u8, 2, 3]);
        let c = kio::spawn(|| kio::spawn(|| 40).join().unwrap() + 2);
        format!("{}{:?}{}", a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert_eq!(v, "kio[1, 2, 3]42");
}

#[test]
fn panics_propagate_to_join() {
    let rt = runtime();
    let n = std::hint::black_box(7);
    let h = rt.spawn(move || -> u32 { panic!("boom {n}") });
    let err = catch_unwind(AssertUnwindSafe(|| h.join())).expect_err("join must re-raise the panic");
    assert_eq!(err.downcast_ref::<String>().map(String::as_str), Some("boom 7"));
    let h = rt.spawn(|| -> u32 { panic!("static boom") });
    let err = catch_unwind(AssertUnwindSafe(|| h.join())).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"static boom"));

    // Through two levels: a task joining a panicking child panics in turn.
    let h = rt.spawn(|| {
        let child = kio::spawn(|| -> () { std::panic::panic_any(1234u32) });
        child.join().unwrap();
        "unreachable"
    });
    let err = catch_unwind(AssertUnwindSafe(|| h.join())).unwrap_err();
    assert_eq!(err.downcast_ref::<u32>(), Some(&1234));

    // The runtime is fine afterwards.
    assert_eq!(rt.spawn(|| 5).join().unwrap(), 5);
}

#[test]
fn cancel_of_a_task_sleeping_for_an_hour_returns_promptly() {
    let rt = runtime();
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let h = rt.spawn(move || {
        s.store(true, Ordering::SeqCst);
        kio::sleep(Duration::from_secs(3600))
    });
    while !started.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(10)); // let it park
    let t0 = Instant::now();
    let r = h.cancel().expect("cancel");
    let took = t0.elapsed();
    let err = r.expect("the closure ran").expect_err("the sleep was canceled");
    assert!(kio::is_canceled(&err), "{err}");
    assert!(took < Duration::from_secs(2), "cancel took {took:?}");
    eprintln!("cancel of an hour-long sleep took {took:?}");
}

#[test]
fn cancel_before_start_drops_the_closure_unrun() {
    // One worker: the child is queued behind its parent, which cancels it
    // before it can start.
    let rt = kio::Runtime::builder().threads(1).build().unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let (r, d) = (ran.clone(), SetOnDrop(dropped.clone()));
    let out = rt.block_on(move || {
        let child = kio::spawn(move || {
            let _d = d;
            r.store(true, Ordering::SeqCst);
            5
        });
        child.cancel().unwrap()
    });
    assert_eq!(out, None);
    assert!(!ran.load(Ordering::SeqCst));
    assert!(dropped.load(Ordering::SeqCst), "the unrun closure must be dropped");
}

#[test]
fn cancel_of_a_finished_task_returns_its_value() {
    let rt = runtime();
    let h = rt.spawn(|| 99);
    while !h.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h.cancel().unwrap(), Some(99));
}

#[test]
fn dropped_handle_detaches_and_the_task_still_runs() {
    let rt = runtime();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    drop(rt.spawn(move || {
        kio::sleep(Duration::from_millis(20)).unwrap();
        tx.send("from a detached task").unwrap();
    }));
    // A detached child whose parent ends first.
    rt.spawn(move || {
        kio::spawn(move || {
            kio::sleep(Duration::from_millis(20)).unwrap();
            tx2.send("from a detached child").unwrap();
        })
        .detach();
    })
    .join()
    .unwrap();
    let mut got = vec![
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
    ];
    got.sort();
    assert_eq!(got, ["from a detached child", "from a detached task"]);
}

#[test]
fn pinned_tasks_stay_on_one_thread_across_sleeps() {
    // Force migration on every resume: pinned tasks must still not move.
    let threads = cpus().max(2);
    let rt = kio::Runtime::builder().threads(threads).debug_migrate(true).build().unwrap();
    let handles: Vec<_> = (0..64)
        .map(|_| {
            rt.spawn(|| {
                let (tid, id) = (gettid(), std::thread::current().id());
                for i in 0..20 {
                    if i % 2 == 0 {
                        kio::sleep(Duration::from_millis(1)).unwrap();
                    } else {
                        kio::yield_now().unwrap();
                    }
                    assert_eq!(gettid(), tid, "a pinned task moved to another OS thread");
                    assert_eq!(std::thread::current().id(), id);
                }
                tid
            })
        })
        .collect();
    let tids: HashSet<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!("pinned tasks ran on {} threads", tids.len());

    // Control: with the same settings, a migratable task does move, so the
    // check above can fail.
    let moved = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let moved = moved.clone();
            // SAFETY: the closure keeps nothing thread-bound across a park.
            unsafe {
                rt.spawn_migratable(move || {
                    let mut tid = gettid();
                    for _ in 0..20 {
                        kio::sleep(Duration::from_millis(1)).unwrap();
                        let now = gettid();
                        if now != tid {
                            moved.fetch_add(1, Ordering::Relaxed);
                        }
                        tid = now;
                    }
                })
            }
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    eprintln!("migratable tasks changed threads {} times", moved.load(Ordering::Relaxed));
    assert!(moved.load(Ordering::Relaxed) > 0, "debug_migrate never moved a migratable task");
}

#[test]
fn handles_outlive_the_runtime() {
    let rt = runtime();
    let h = rt.spawn(|| kio::sleep(Duration::from_secs(3600)));
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    drop(rt); // cancels the sleeper and waits for it
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(h.is_finished());
    let err = h.join().unwrap().unwrap_err();
    assert!(kio::is_canceled(&err));
}

#[test]
fn spawn_outside_a_task_is_an_error() {
    let err = kio::try_spawn(|| 1).unwrap_err();
    assert!(err.to_string().contains("not inside a kio task"), "{err}");
    assert!(kio::task_id().is_none());
    let rt = runtime();
    let id = rt.block_on(kio::task_id);
    assert!(id.is_some());
}

#[test]
fn spawning_from_many_plain_threads() {
    let rt = runtime();
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let rt = &rt;
                s.spawn(move || {
                    let hs: Vec<_> = (0..1000u64).map(|i| rt.spawn(move || t * 1000 + i)).collect();
                    hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(total, (0..4000u64).sum());
}

#[test]
fn named_tasks_with_their_own_stack() {
    let rt = runtime();
    let h = kio::TaskBuilder::new()
        .name("deep")
        .stack_size(1 << 20)
        .spawn_on(&rt, || {
            // Uses ~256 KiB of stack: too much for the 64 KiB default.
            fn recurse(n: u32) -> u64 {
                let buf = std::hint::black_box([n as u8; 1024]);
                if n == 0 {
                    buf[0] as u64
                } else {
                    recurse(n - 1) + buf[1] as u64
                }
            }
            recurse(256)
        })
        .unwrap();
    assert_eq!(h.join().unwrap(), (1..=256u64).map(|n| n as u8 as u64).sum::<u64>());
    assert!(kio::TaskBuilder::new().name("a\0b").spawn_on(&rt, || ()).is_err());
    assert!(kio::TaskBuilder::new().stack_size(4096).spawn_on(&rt, || ()).is_err());
}

#[test]
fn deadlines_and_shields() {
    let rt = runtime();
    rt.block_on(|| {
        let t0 = kio::now();
        let r = kio::with_timeout(Duration::from_millis(20), || kio::sleep(Duration::from_secs(3600)));
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert!(kio::deadline().is_none(), "the scope restores the deadline");

        // A join that reaches the deadline leaves the task running, detached.
        let slow = kio::spawn(|| kio::sleep(Duration::from_millis(50)).map(|_| 1));
        let e = kio::with_timeout(Duration::from_millis(5), || slow.join()).unwrap_err();
        assert_eq!(e.io_error().unwrap().kind(), std::io::ErrorKind::TimedOut);
    });
}

#[test]
fn runtime_dropped_by_its_own_task() {
    let slot = Arc::new(std::sync::Mutex::new(Some(runtime())));
    let (tx, rx) = mpsc::channel();
    let s = slot.clone();
    let h = slot.lock().unwrap().as_ref().unwrap().spawn(move || {
        let rt = s.lock().unwrap().take();
        assert!(rt.is_some());
        drop(rt); // hands the shutdown to another thread
        tx.send(()).unwrap();
        kio::sleep(Duration::from_secs(3600)) // canceled by that shutdown
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let t0 = Instant::now();
    let err = h.join().unwrap().unwrap_err();
    assert!(kio::is_canceled(&err));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_task_joining_or_canceling_its_own_handle_gets_edeadlk() {
    let rt = runtime();
    for cancel in [false, true] {
        let slot = Arc::new(std::sync::Mutex::new(None::<kio::JoinHandle<()>>));
        let (tx, rx) = mpsc::channel();
        let s = slot.clone();
        let h = rt.spawn(move || {
            let own = loop {
                if let Some(h) = s.lock().unwrap().take() {
                    break h;
                }
                kio::sleep(Duration::from_millis(1)).unwrap();
            };
            let e = if cancel { own.cancel().map(drop).unwrap_err() } else { own.join().unwrap_err() };
            tx.send(e.io_error().and_then(std::io::Error::raw_os_error)).unwrap();
        });
        *slot.lock().unwrap() = Some(h);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Some(35), "cancel: {cancel}");
    }
}

// A runtime dropped while a plain thread is inside `cancel()` of a task
// whose shielded cleanup waits for another task that ends only when
// canceled: the drop cancels that other task, and both calls return. (The
// drop used to wait for the cancel before stopping the runtime: forever.)
#[test]
fn drop_while_a_cancel_waits_for_a_task_only_the_drop_cancels() {
    let rt = runtime();
    let other = rt.spawn(|| kio::sleep(Duration::from_secs(3600)).is_err());
    let t = rt.spawn(move || kio::shielded(|| other.join().ok()));
    std::thread::sleep(Duration::from_millis(50));
    let (tx, rx) = mpsc::channel();
    let canceler = std::thread::spawn(move || {
        let r = t.cancel().ok();
        tx.send(()).unwrap();
        r
    });
    std::thread::sleep(Duration::from_millis(50));
    // Dropped on a thread of its own, so that a hang fails the test.
    let (dropped_tx, dropped_rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(rt);
        dropped_tx.send(()).unwrap();
    });
    dropped_rx.recv_timeout(Duration::from_secs(10)).expect("the runtime's drop hung");
    rx.recv_timeout(Duration::from_secs(5)).expect("cancel() did not return after the drop");
    // The other task's sleep was canceled, so it returned true; the shielded
    // cleanup returned that.
    assert_eq!(canceler.join().unwrap(), Some(Some(Some(true))));
}
