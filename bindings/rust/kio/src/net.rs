//! TCP over kio descriptors: waits park the task, or block a plain thread.

use std::ffi::{c_int, c_void, CString};
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::time::Duration;

use crate::{cvt, cvt_size, now, sys};

// The few C library calls that kio does not wrap (none of them waits).
extern "C" {
    fn getsockname(fd: c_int, addr: *mut sys::sockaddr, len: *mut sys::socklen_t) -> c_int;
    fn getpeername(fd: c_int, addr: *mut sys::sockaddr, len: *mut sys::socklen_t) -> c_int;
    fn shutdown(fd: c_int, how: c_int) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: sys::socklen_t) -> c_int;
    fn getsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        value: *mut c_void,
        len: *mut sys::socklen_t,
    ) -> c_int;
}

const AF_INET: i32 = 2;
#[cfg(target_os = "linux")]
const AF_INET6: i32 = 10;
#[cfg(target_vendor = "apple")]
const AF_INET6: i32 = 30;
#[cfg(target_os = "freebsd")]
const AF_INET6: i32 = 28;
#[cfg(not(any(target_os = "linux", target_vendor = "apple", target_os = "freebsd")))]
const AF_INET6: i32 = 10;

#[cfg(target_os = "linux")]
const SOCK_CLOEXEC: c_int = 0o2000000;
#[cfg(target_os = "freebsd")]
const SOCK_CLOEXEC: c_int = 0x10000000;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
const SOCK_CLOEXEC: c_int = 0;

const IPPROTO_TCP: c_int = 6;
const TCP_NODELAY: c_int = 1;
/// kio never reports more than this many buffers per vectored call.
const MAX_IOV: usize = 1024;

/// A descriptor closed with kio_close (which wakes tasks parked on it).
struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { sys::kio_close(self.0) };
    }
}

fn c_host(host: &str) -> io::Result<CString> {
    CString::new(host).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "host name contains NUL"))
}

fn last_os_error(r: c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// getsockname / getpeername as a SocketAddr.
fn socket_addr(
    fd: c_int,
    get: unsafe extern "C" fn(c_int, *mut sys::sockaddr, *mut sys::socklen_t) -> c_int,
) -> io::Result<SocketAddr> {
    // SAFETY: zeroed storage is valid; its size is passed along.
    let mut ss: sys::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<sys::sockaddr_storage>() as sys::socklen_t;
    // SAFETY: ss has room for len bytes.
    last_os_error(unsafe { get(fd, (&mut ss as *mut sys::sockaddr_storage).cast(), &mut len) })?;
    parse_sockaddr(&ss, len as usize)
}

/// A sockaddr_in / sockaddr_in6 as a SocketAddr (the two layouts are the
/// same on every supported platform apart from where the family sits).
fn parse_sockaddr(ss: &sys::sockaddr_storage, len: usize) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is 128 plain bytes.
    let b: &[u8; 128] = unsafe { &*(ss as *const sys::sockaddr_storage).cast() };
    // SAFETY: sockaddr_storage starts like sockaddr.
    let family = unsafe { (*(ss as *const sys::sockaddr_storage).cast::<sys::sockaddr>()).sa_family } as i32;
    let port = u16::from_be_bytes([b[2], b[3]]);
    match family {
        AF_INET if len >= 16 => {
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        AF_INET6 if len >= 28 => {
            let flowinfo = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[8..24]);
            let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            Ok(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flowinfo, scope)))
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "not an IPv4 or IPv6 address")),
    }
}

/// A listening TCP socket.
pub struct TcpListener {
    fd: Fd,
}

impl TcpListener {
    /// Listens on `host:port` (`kio_listen_tcp`, SO_REUSEADDR, backlog 1024):
    /// `host` is a name or a numeric IPv4/IPv6 address, "" for any address;
    /// port 0 picks a free port (see [`TcpListener::local_addr`]).
    pub fn bind(host: &str, port: u16) -> io::Result<TcpListener> {
        TcpListener::bind_with_backlog(host, port, 1024)
    }

    /// [`TcpListener::bind`] with a listen backlog.
    pub fn bind_with_backlog(host: &str, port: u16, backlog: i32) -> io::Result<TcpListener> {
        let host = c_host(host)?;
        // SAFETY: host is a valid C string.
        let fd = cvt(unsafe { sys::kio_listen_tcp(host.as_ptr(), c_int::from(port), backlog) })?;
        Ok(TcpListener { fd: Fd(fd) })
    }

    /// Waits for a connection (`kio_accept`; the new descriptor is
    /// close-on-exec). A cancellation point; honours the deadline.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        // SAFETY: zeroed storage is valid; its size is passed along.
        let mut ss: sys::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<sys::sockaddr_storage>() as sys::socklen_t;
        // SAFETY: ss has room for len bytes.
        let fd = cvt(unsafe {
            sys::kio_accept(self.fd.0, (&mut ss as *mut sys::sockaddr_storage).cast(), &mut len, SOCK_CLOEXEC)
        })?;
        let stream = TcpStream { fd: Fd(fd) };
        let addr = parse_sockaddr(&ss, len as usize)?;
        Ok((stream, addr))
    }

    /// An endless iterator of accepted connections.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(self.fd.0, getsockname)
    }
}

/// The iterator of [`TcpListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

/// A connected TCP socket. Reads and writes wait for readiness by parking
/// the task (or blocking a plain thread); every one is a cancellation point
/// and honours the deadline ([`crate::with_deadline`]).
///
/// `&TcpStream` also implements `Read` and `Write`, so one task can read
/// while another writes (share it in an `Arc`). Dropping the stream closes
/// it with `kio_close`, which wakes any task still parked on it (`EBADF`).
pub struct TcpStream {
    fd: Fd,
}

impl TcpStream {
    /// Connects to `host:port` (`kio_dial_tcp`), trying each address the
    /// name resolves to; name resolution runs on kio's blocking pool.
    pub fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
        TcpStream::dial(host, port, 0)
    }

    /// [`TcpStream::connect`] giving up after `timeout` (`TimedOut`).
    pub fn connect_timeout(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
        TcpStream::dial(host, port, (now() + timeout).as_nanos().max(1))
    }

    fn dial(host: &str, port: u16, deadline: u64) -> io::Result<TcpStream> {
        let host = c_host(host)?;
        // SAFETY: host is a valid C string.
        let fd = cvt(unsafe { sys::kio_dial_tcp(host.as_ptr(), c_int::from(port), deadline) })?;
        Ok(TcpStream { fd: Fd(fd) })
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(self.fd.0, getpeername)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(self.fd.0, getsockname)
    }

    /// Shuts down the read half, the write half or both (`shutdown(2)`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => 0,
            Shutdown::Write => 1,
            Shutdown::Both => 2,
        };
        // SAFETY: plain system call on our descriptor.
        last_os_error(unsafe { shutdown(self.fd.0, how) })
    }

    /// Sets TCP_NODELAY (disables Nagle's algorithm).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        let v: c_int = on.into();
        // SAFETY: v outlives the call; its size is passed along.
        last_os_error(unsafe {
            setsockopt(self.fd.0, IPPROTO_TCP, TCP_NODELAY, (&v as *const c_int).cast(), 4)
        })
    }

    /// Whether TCP_NODELAY is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        let mut v: c_int = 0;
        let mut len: sys::socklen_t = 4;
        // SAFETY: v has room for len bytes.
        last_os_error(unsafe {
            getsockopt(self.fd.0, IPPROTO_TCP, TCP_NODELAY, (&mut v as *mut c_int).cast(), &mut len)
        })?;
        Ok(v != 0)
    }

    fn read_impl(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes.
        cvt_size(unsafe { sys::kio_read(self.fd.0, buf.as_mut_ptr().cast(), buf.len()) })
    }

    fn read_vectored_impl(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let n = bufs.len().min(MAX_IOV);
        // SAFETY: IoSliceMut is ABI-compatible with struct iovec on Unix.
        cvt_size(unsafe { sys::kio_readv(self.fd.0, bufs.as_ptr().cast(), n as c_int) })
    }

    // Writes use kio_send / kio_sendmsg rather than kio_write / kio_writev:
    // the same call plus MSG_NOSIGNAL, so a peer that has gone away gives
    // EPIPE rather than SIGPIPE, even where SIGPIPE is not ignored (a Rust
    // library loaded by a C program).
    fn write_impl(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes.
        cvt_size(unsafe { sys::kio_send(self.fd.0, buf.as_ptr().cast(), buf.len(), 0) })
    }

    fn write_vectored_impl(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: a zeroed msghdr is valid; IoSlice is ABI-compatible with
        // struct iovec on Unix, and kio only reads the buffers.
        unsafe {
            let mut msg: sys::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut sys::iovec;
            msg.msg_iovlen = bufs.len().min(MAX_IOV) as _;
            cvt_size(sys::kio_sendmsg(self.fd.0, &msg, 0))
        }
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_impl(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_vectored_impl(bufs)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_impl(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_vectored_impl(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_impl(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored_impl(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_impl(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored_impl(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! fd_traits {
    ($t:ident) => {
        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.0
            }
        }
        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                // SAFETY: the descriptor is open while self lives.
                unsafe { BorrowedFd::borrow_raw(self.fd.0) }
            }
        }
        impl IntoRawFd for $t {
            /// The descriptor, no longer closed by `self`; close it with
            /// `kio_close`.
            fn into_raw_fd(self) -> RawFd {
                let fd = self.fd.0;
                std::mem::forget(self);
                fd
            }
        }
        impl FromRawFd for $t {
            /// Takes ownership of a socket descriptor of the right kind (kio
            /// switches it to non-blocking mode on first use).
            unsafe fn from_raw_fd(fd: RawFd) -> $t {
                $t { fd: Fd(fd) }
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut d = f.debug_struct(stringify!($t));
                if let Ok(a) = self.local_addr() {
                    d.field("addr", &a);
                }
                d.field("fd", &self.fd.0).finish()
            }
        }
    };
}

fd_traits!(TcpListener);
fd_traits!(TcpStream);
