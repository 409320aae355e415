//! TCP: echo round trips between tasks, and between a plain thread and a task.

mod common;

use common::runtime;
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// Serves one connection: echoes everything until EOF; returns the bytes.
fn echo_one(listener: &kio::TcpListener) -> std::io::Result<usize> {
    let (mut s, peer) = listener.accept()?;
    assert!(peer.ip().is_loopback());
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        s.write_all(&buf[..n])?;
        total += n;
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn echo_round_trip_inside_tasks() {
    let rt = runtime();
    let (sent, echoed) = rt.block_on(|| {
        let listener = kio::TcpListener::bind("127.0.0.1", 0).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = kio::spawn(move || echo_one(&listener).unwrap());
        let client = kio::spawn(move || {
            let mut c = kio::TcpStream::connect("127.0.0.1", port).unwrap();
            c.set_nodelay(true).unwrap();
            assert!(c.nodelay().unwrap());
            assert_eq!(c.peer_addr().unwrap().port(), port);
            // A small round trip first.
            c.write_all(b"hello, kio").unwrap();
            let mut back = [0u8; 10];
            c.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"hello, kio");
            // Then 4 MiB, written by one task while this one reads (one task
            // writing it all before reading would fill both socket buffers).
            let c = Arc::new(c);
            let data = pattern(4 << 20);
            let writer = {
                let (c, data) = (c.clone(), data.clone());
                kio::spawn(move || {
                    (&*c).write_all(&data).unwrap();
                    c.shutdown(std::net::Shutdown::Write).unwrap();
                })
            };
            let mut got = Vec::with_capacity(data.len());
            (&*c).read_to_end(&mut got).unwrap();
            writer.join().unwrap();
            assert!(got == data, "echoed bytes differ");
            (10 + data.len(), got.len())
        });
        let (sent, got) = client.join().unwrap();
        let echoed = server.join().unwrap();
        assert_eq!(got + 10, sent);
        (sent, echoed)
    });
    assert_eq!(sent, echoed);
}

#[test]
fn plain_thread_client_and_task_server() {
    let rt = runtime();
    let listener = kio::TcpListener::bind("localhost", 0).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rt.spawn(move || echo_one(&listener).unwrap());
    // This thread blocks in kio's calls.
    let mut c = kio::TcpStream::connect(&addr.ip().to_string(), addr.port()).unwrap();
    let data = pattern(100_000);
    let writer = {
        let c = c.try_clone_for_test();
        let data = data.clone();
        std::thread::spawn(move || {
            let mut c = c;
            c.write_all(&data).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            std::mem::forget(c); // the other handle closes it
        })
    };
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == data);
    assert_eq!(server.join().unwrap(), data.len());
}

/// A second handle on the same descriptor (not closed by us: forgotten).
trait TryCloneForTest {
    fn try_clone_for_test(&self) -> kio::TcpStream;
}
impl TryCloneForTest for kio::TcpStream {
    fn try_clone_for_test(&self) -> kio::TcpStream {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: the copy is forgotten, never closed (see its use).
        unsafe { kio::TcpStream::from_raw_fd(self.as_raw_fd()) }
    }
}

#[test]
fn errors_and_deadlines() {
    let rt = runtime();
    rt.block_on(|| {
        let listener = kio::TcpListener::bind("127.0.0.1", 0).unwrap();
        let port = listener.local_addr().unwrap().port();
        // accept with nobody connecting: the deadline ends it.
        let e = kio::with_timeout(Duration::from_millis(20), || listener.accept()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        // Nobody listening: ECONNREFUSED.
        drop(listener);
        let e = kio::TcpStream::connect("127.0.0.1", port).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        // Bad input is reported, not a crash.
        assert_eq!(kio::TcpStream::connect("a\0b", 1).unwrap_err().kind(), ErrorKind::InvalidInput);
    });
}

#[test]
fn closing_wakes_a_parked_reader() {
    let rt = runtime();
    rt.block_on(|| {
        let listener = kio::TcpListener::bind("127.0.0.1", 0).unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = kio::TcpStream::connect("127.0.0.1", port).unwrap();
        let (_s, _) = listener.accept().unwrap();
        // A reader parks; canceling it wakes it with ECANCELED.
        let c = Arc::new(c);
        let c2 = c.clone();
        let reader = kio::spawn(move || (&*c2).read(&mut [0u8; 16]));
        kio::sleep(Duration::from_millis(10)).unwrap();
        let r = reader.cancel().unwrap().unwrap();
        assert!(kio::is_canceled(&r.unwrap_err()));
    });
}
