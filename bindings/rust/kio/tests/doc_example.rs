//! The complete program of docs/rust.md (the page includes this file): an
//! echo server and its clients as kio tasks, a total behind a kio::Mutex
//! shared with the main thread, a deadline, and cancellation.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// Serves one connection: echoes until end of file; returns the byte count.
fn echo(mut stream: kio::TcpStream) -> io::Result<usize> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf)?; // parks the task until data arrives
        if n == 0 {
            return Ok(total);
        }
        stream.write_all(&buf[..n])?;
        total += n;
    }
}

#[test]
fn doc_example() -> io::Result<()> {
    // Two worker threads of kio's own; this thread stays a plain thread.
    let rt = kio::Runtime::builder().threads(2).build()?;

    // Port 0: the system picks a free port.
    let listener = kio::TcpListener::bind("127.0.0.1", 0)?;
    let port = listener.local_addr()?.port();
    let acceptor = rt.spawn(move || -> io::Result<()> {
        loop {
            let (stream, _peer) = listener.accept()?; // fails with ECANCELED once canceled
            kio::spawn(move || echo(stream)); // dropping the JoinHandle detaches the task
        }
    });

    let total = Arc::new(kio::Mutex::new(0usize));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let total = Arc::clone(&total);
            rt.spawn(move || -> io::Result<()> {
                let msg = format!("hello from client {i}");
                let mut back = vec![0u8; msg.len()];
                // Every kio wait inside fails with TimedOut after 5 s.
                kio::with_timeout(Duration::from_secs(5), || {
                    let mut s = kio::TcpStream::connect("127.0.0.1", port)?;
                    s.write_all(msg.as_bytes())?;
                    s.read_exact(&mut back)
                })?;
                assert_eq!(back, msg.as_bytes());
                *total.lock()? += back.len(); // the task parks if the mutex is held
                Ok(())
            })
        })
        .collect();
    for client in clients {
        // join: Err(JoinError) if the task could not run; Ok(the closure's value).
        client.join()??;
    }

    // The same mutex from a plain thread: this one blocks instead of parking.
    let echoed = *total.lock()?;
    assert_eq!(echoed, (0..8).map(|i| format!("hello from client {i}").len()).sum::<usize>());

    // Cancellation is a request: the acceptor's accept() fails with ECANCELED,
    // and its closure returns that error.
    let stopped = acceptor.cancel()?.expect("the acceptor had started");
    assert!(kio::is_canceled(&stopped.unwrap_err()));

    // A task's value comes back through join; a panic would be resumed here.
    let answer = rt.spawn(|| kio::spawn(|| 6 * 7).join().map_err(io::Error::from)).join()??;
    assert_eq!(answer, 42);

    // Dropping the runtime cancels the tasks still running and waits for them.
    drop(rt);
    Ok(())
}
