//! The listening socket: bound with SO_REUSEADDR and our backlog, accepted
//! from with accept4(2) directly, and stoppable from any thread or from a
//! signal handler.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Binds `addr` with SO_REUSEADDR (so a restart right after a load run does
/// not fail on sockets in TIME_WAIT) and listens with `backlog`.
///
/// With `defer_accept`, TCP_DEFER_ACCEPT makes the kernel complete accept(2)
/// only once the client's first bytes have arrived (or `defer_accept`
/// passes), so a worker's first read finds the request waiting instead of
/// sleeping for it: one sleep and one wake-up fewer per connection.
///
/// The read timeout is not set here: Linux would copy SO_RCVTIMEO into
/// accepted sockets, but it also applies it to accept(2) itself, which
/// would then fail with EAGAIN whenever no client came for that long.
pub(crate) fn bind(
    addr: SocketAddr,
    backlog: i32,
    defer_accept: Option<Duration>,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if let Some(defer) = defer_accept {
        // Whole seconds, at least one: the kernel turns it into a number of
        // SYN-ACK retransmissions.
        let seconds = defer.as_secs_f64().ceil().clamp(1.0, i32::MAX as f64) as libc::c_int;
        // SAFETY: setsockopt reads exactly size_of::<c_int>() bytes from a
        // live local; socket2 has no wrapper for this option.
        let ret = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Shared by the server and every [`StopHandle`]: the flag, and the socket
/// whose shutdown wakes a blocked accept.
#[derive(Debug)]
pub(crate) struct StopState {
    stopping: AtomicBool,
    listener: Arc<TcpListener>,
}

/// Asks a running server to stop accepting, drain, and return its summary.
/// Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct StopHandle(pub(crate) Arc<StopState>);

impl StopHandle {
    pub(crate) fn new(listener: Arc<TcpListener>) -> Self {
        StopHandle(Arc::new(StopState {
            stopping: AtomicBool::new(false),
            listener,
        }))
    }

    /// Stops the server: no new connection is accepted; queued and
    /// in-flight ones are served.
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
        // On Linux, shutting a listening socket down makes a blocked
        // accept() return EINVAL at once. The handle keeps the socket open,
        // so this cannot hit a recycled descriptor.
        let _ = SockRef::from(&*self.0.listener).shutdown(std::net::Shutdown::Read);
    }

    /// Whether [`StopHandle::stop`] (or a signal) has been called.
    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::SeqCst) || SIGNALLED.load(Ordering::SeqCst)
    }
}

/// The descriptor the signal handler shuts down, or -1.
static SIGNAL_LISTENER_FD: AtomicI32 = AtomicI32::new(-1);
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only async-signal-safe work here: two atomics and shutdown(2).
    SIGNALLED.store(true, Ordering::SeqCst);
    let fd = SIGNAL_LISTENER_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: shutdown is async-signal-safe; errno is saved and restored
        // so the interrupted code never sees ours.
        unsafe {
            let errno = *libc::__errno_location();
            libc::shutdown(fd, libc::SHUT_RD);
            *libc::__errno_location() = errno;
        }
    }
}

/// Makes SIGINT and SIGTERM stop the server behind `handle` the way
/// [`StopHandle::stop`] does. The handler is process-wide; the last handle
/// registered wins. Call [`forget_signal_listener`] before that listener
/// is closed.
pub fn stop_on_signals(handle: &StopHandle) -> io::Result<()> {
    SIGNAL_LISTENER_FD.store(handle.0.listener.as_raw_fd(), Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        set_handler(
            signal,
            on_stop_signal as *const () as usize,
            libc::SA_RESTART,
        )?;
    }
    Ok(())
}

/// Stops the signal handler from touching the listener registered by
/// [`stop_on_signals`], which is about to be closed.
pub(crate) fn forget_signal_listener(fd: RawFd) {
    let _ = SIGNAL_LISTENER_FD.compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst);
}

/// Installs `handler` (a function address, `SIG_IGN` or `SIG_DFL`) for
/// `signal`.
pub(crate) fn set_handler(
    signal: libc::c_int,
    handler: usize,
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting point; we fill in the
    // handler, an empty mask and the flags before passing it by pointer.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Accepts the next connection, or `None` once the server is stopping.
///
/// accept4(2) is called directly rather than through std so that the
/// acceptor sees EINTR and EINVAL (our stop signal) instead of std's retry
/// loop.
pub(crate) fn accept(listener: &TcpListener, stop: &StopHandle) -> io::Result<Option<TcpStream>> {
    loop {
        if stop.is_stopping() {
            return Ok(None);
        }
        // SAFETY: a valid listening descriptor; null address pointers ask
        // the kernel not to report the peer.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: accept4 just returned this descriptor; we own it.
            return Ok(Some(unsafe { TcpStream::from_raw_fd(fd) }));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
            Some(libc::EINVAL) if stop.is_stopping() => return Ok(None),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                // Out of descriptors or memory: back off instead of spinning;
                // in-flight connections will free some.
                eprintln!("tracebench serve: accept: {error}; retrying in 10 ms");
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return Err(error),
        }
    }
}
