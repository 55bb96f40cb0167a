//! The listening socket: bound with SO_REUSEADDR and our backlog, accepted
//! from with accept4(2) directly, and stoppable from any thread or from a
//! signal handler.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
///
/// With `reuse_port`, SO_REUSEPORT lets each event loop bind a socket of its
/// own to the same address, the kernel spreading new connections over them.
///
/// TCP_NODELAY is set on the listening socket, and Linux copies it into
/// every accepted one at no cost per connection. Without it, the answer to
/// a second pipelined request waits, under Nagle's rule, for the client to
/// acknowledge the first, which a client delays by up to 40 ms: pipelined
/// keep-alive ran at 1/40 of its speed. nginx sets it too (`tcp_nodelay`).
pub(crate) fn bind(addr: SocketAddr, options: &BindOptions) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let Some(defer) = options.defer_accept {
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
    socket.listen(options.backlog)?;
    Ok(socket.into())
}

/// How [`bind`] sets a listening socket up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BindOptions {
    /// The kernel's listen backlog.
    pub(crate) backlog: i32,
    /// TCP_DEFER_ACCEPT, for at most this long.
    pub(crate) defer_accept: Option<Duration>,
    /// SO_REUSEPORT.
    pub(crate) reuse_port: bool,
}

/// At most this many connections are taken from the listen backlog at a
/// signal: the handler cannot allocate, so they go into a fixed array. The
/// default backlog is 1024; connections beyond this many are reset.
const SIGNAL_STASH: usize = 4096;

/// Shared by the server and every [`StopHandle`]: the flag, the socket
/// whose shutdown wakes a blocked accept, and the connections the stopper
/// took from the backlog before that shutdown destroyed it.
#[derive(Debug)]
pub(crate) struct StopState {
    stopping: AtomicBool,
    /// Set once [`StopHandle::stop`] has emptied the backlog into `stash`.
    drained: AtomicBool,
    listener: Arc<TcpListener>,
    stash: Mutex<Vec<TcpStream>>,
    /// Connections accepted and not yet done with: queued or in flight.
    active: Arc<AtomicUsize>,
}

/// Asks a running server to stop accepting, drain, and return its summary.
/// Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct StopHandle(pub(crate) Arc<StopState>);

impl StopHandle {
    pub(crate) fn new(listener: Arc<TcpListener>) -> Self {
        StopHandle(Arc::new(StopState {
            stopping: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            listener,
            stash: Mutex::new(Vec::new()),
            active: Arc::new(AtomicUsize::new(0)),
        }))
    }

    /// Stops the server: no new connection is accepted; queued and
    /// in-flight ones are served, and so are the connections already
    /// waiting in the kernel's listen backlog.
    pub fn stop(&self) {
        if self.0.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut taken = Vec::new();
        drain_backlog(self.0.listener.as_raw_fd(), &mut |fd| {
            // SAFETY: accept4 just returned this descriptor; we own it.
            taken.push(unsafe { TcpStream::from_raw_fd(fd) });
            true
        });
        self.0
            .stash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(taken);
        // On Linux, shutting a listening socket down makes a blocked
        // accept() return EINVAL at once, and resets every connection
        // still in its backlog (hence the drain above). The handle keeps
        // the socket open, so this cannot hit a recycled descriptor.
        let _ = SockRef::from(&*self.0.listener).shutdown(std::net::Shutdown::Read);
        self.0.drained.store(true, Ordering::SeqCst);
    }

    /// Whether [`StopHandle::stop`] (or a signal) has been called.
    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::SeqCst) || SIGNALLED.load(Ordering::SeqCst)
    }

    /// The count of connections accepted and not yet done with, for the
    /// models to decrement (see [`StopHandle::done`]) from other threads.
    pub(crate) fn active(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.0.active)
    }

    /// A connection [`accept`] returned has been served (or dropped).
    pub(crate) fn done(&self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// In a forked child: closes the child's copies of the connections the
    /// stopper took from the backlog (the parent serves them).
    pub(crate) fn close_stashed_in_child(&self) {
        // The fork-mode parent is single-threaded, so no lock was held at
        // the fork.
        drop(std::mem::take(
            &mut *self.0.stash.lock().unwrap_or_else(|e| e.into_inner()),
        ));
        let from = SIGNAL_STASH_TAKEN.load(Ordering::SeqCst);
        let to = SIGNAL_STASH_LEN.load(Ordering::SeqCst);
        for slot in &SIGNAL_STASH_FDS[from..to] {
            let fd = slot.swap(-1, Ordering::SeqCst);
            if fd >= 0 {
                // SAFETY: the child's copy of a descriptor nothing in the
                // child uses.
                unsafe { libc::close(fd) };
            }
        }
    }

    /// For an event loop once the server is stopping: the next connection
    /// the stopper took from the backlog, counted active as by [`accept`].
    pub(crate) fn take_stashed(&self, listener: &TcpListener) -> Option<TcpStream> {
        let stream = self.next_stashed(listener)?;
        self.0.active.fetch_add(1, Ordering::SeqCst);
        Some(stream)
    }

    /// A connection accepted by other means than [`accept`] and
    /// [`try_accept`] (an io_uring completion) is active until
    /// [`StopHandle::done`].
    pub(crate) fn admitted(&self) {
        self.0.active.fetch_add(1, Ordering::SeqCst);
    }

    /// After a stop: the next connection the stopper took from the backlog,
    /// once it has finished taking them.
    fn next_stashed(&self, listener: &TcpListener) -> Option<TcpStream> {
        let ours = SIGNAL_LISTENER_FD.load(Ordering::SeqCst) == listener.as_raw_fd();
        // The stopper sets the flag first and drains after; a signal
        // handler does not block, so this wait is short.
        for _ in 0..2000 {
            let by_call =
                !self.0.stopping.load(Ordering::SeqCst) || self.0.drained.load(Ordering::SeqCst);
            let by_signal = !(ours && SIGNALLED.load(Ordering::SeqCst))
                || SIGNAL_DRAINED.load(Ordering::SeqCst);
            if by_call && by_signal {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(stream) = self.0.stash.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Some(stream);
        }
        if !ours {
            return None;
        }
        // Several event loops may take from the stash at once.
        let len = SIGNAL_STASH_LEN.load(Ordering::SeqCst);
        let taken = SIGNAL_STASH_TAKEN
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                (t < len).then_some(t + 1)
            })
            .ok()?;
        let fd = SIGNAL_STASH_FDS[taken].swap(-1, Ordering::SeqCst);
        // SAFETY: the handler accepted this descriptor and left it to us;
        // the swap hands it out once.
        (fd >= 0).then(|| unsafe { TcpStream::from_raw_fd(fd) })
    }
}

/// Accepts every connection waiting in the backlog of `fd` without
/// blocking, handing each to `keep` until it returns false. Only
/// async-signal-safe calls (fcntl, accept4): the signal handler uses it.
fn drain_backlog(fd: RawFd, keep: &mut dyn FnMut(RawFd) -> bool) {
    // SAFETY: fcntl and accept4 on a descriptor the caller keeps open; the
    // listener is being stopped, so making it non-blocking for good is
    // harmless, and a blocked acceptor keeps the mode it entered with.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return;
        }
        loop {
            let conn = libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            );
            if conn >= 0 {
                if !keep(conn) {
                    return;
                }
                continue;
            }
            match *libc::__errno_location() {
                libc::EINTR | libc::ECONNABORTED | libc::EPROTO => {}
                _ => return,
            }
        }
    }
}

/// The descriptor the signal handler shuts down, or -1.
static SIGNAL_LISTENER_FD: AtomicI32 = AtomicI32::new(-1);
static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// The connections the handler took from the backlog, for the acceptor.
static SIGNAL_STASH_FDS: [AtomicI32; SIGNAL_STASH] = [const { AtomicI32::new(-1) }; SIGNAL_STASH];
static SIGNAL_STASH_LEN: AtomicUsize = AtomicUsize::new(0);
static SIGNAL_STASH_TAKEN: AtomicUsize = AtomicUsize::new(0);
static SIGNAL_DRAINED: AtomicBool = AtomicBool::new(false);
/// The registered server's count of active connections (a leaked `Arc`,
/// so the handler can never read freed memory), or null.
static SIGNAL_ACTIVE: AtomicPtr<AtomicUsize> = AtomicPtr::new(std::ptr::null_mut());

/// Writes `parts` to standard error with write(2): no allocation, no lock.
fn write_stderr(parts: &[&[u8]]) {
    for part in parts {
        // SAFETY: write(2) from a live slice; a short or failed write only
        // loses the message.
        unsafe {
            libc::write(2, part.as_ptr().cast(), part.len());
        }
    }
}

/// `n` in decimal, in `buf`, without allocating.
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

extern "C" fn on_stop_signal(signal: libc::c_int) {
    // Only async-signal-safe work here: atomics, fcntl, accept4,
    // shutdown, write and _exit.
    // SAFETY: errno is saved and restored so the interrupted code never
    // sees ours.
    let errno = unsafe { *libc::__errno_location() };
    let active = SIGNAL_ACTIVE.load(Ordering::SeqCst);
    // SAFETY: the pointer, if set, is a leaked Arc's: valid for ever.
    let active = unsafe { active.as_ref() }.map_or(0, |a| a.load(Ordering::SeqCst));
    let mut digits = [0u8; 20];
    if SIGNALLED.swap(true, Ordering::SeqCst) {
        // A second signal while draining: the user does not want to wait.
        write_stderr(&[
            b"tracebench serve: second signal: exiting now, dropping ",
            decimal(active, &mut digits),
            b" connections\n",
        ]);
        // SAFETY: _exit is async-signal-safe and runs nothing of ours.
        unsafe { libc::_exit(128 + signal) };
    }
    let fd = SIGNAL_LISTENER_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let start = SIGNAL_STASH_LEN.load(Ordering::SeqCst);
        let mut len = start;
        drain_backlog(fd, &mut |conn| {
            SIGNAL_STASH_FDS[len].store(conn, Ordering::SeqCst);
            len += 1;
            len < SIGNAL_STASH
        });
        SIGNAL_STASH_LEN.store(len, Ordering::SeqCst);
        // SAFETY: shutdown is async-signal-safe.
        unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        write_stderr(&[
            b"tracebench serve: stopping; serving ",
            decimal(active + len - start, &mut digits),
            b" queued and in-flight connections first (signal again to exit at once)\n",
        ]);
    }
    SIGNAL_DRAINED.store(true, Ordering::SeqCst);
    // SAFETY: see above.
    unsafe { *libc::__errno_location() = errno };
}

/// Makes SIGINT and SIGTERM stop the server behind `handle` the way
/// [`StopHandle::stop`] does, saying so on standard error with the number
/// of connections it still serves; a second signal while it does exits
/// the process at once with status 128 + the signal. The handler is
/// process-wide; the last handle registered wins. Call
/// `forget_signal_listener` before that listener is closed.
pub fn stop_on_signals(handle: &StopHandle) -> io::Result<()> {
    SIGNAL_LISTENER_FD.store(handle.0.listener.as_raw_fd(), Ordering::SeqCst);
    // Leaked on purpose: a handler on another thread may still read the
    // previous one, so none is ever freed (one counter per registration).
    let active = Arc::into_raw(handle.active()).cast_mut();
    SIGNAL_ACTIVE.store(active, Ordering::SeqCst);
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
///
/// Once the server is stopping it returns, one by one, the connections the
/// stopper took from the listen backlog (they were queued before the stop,
/// so they are served), then `None`. Every connection it returns counts as
/// active until the model calls [`StopHandle::done`].
pub(crate) fn accept(listener: &TcpListener, stop: &StopHandle) -> io::Result<Option<TcpStream>> {
    let stream = accept_one(listener, stop)?;
    if stream.is_some() {
        stop.0.active.fetch_add(1, Ordering::SeqCst);
    }
    Ok(stream)
}

/// A log line said at most once a second, with how many were held back:
/// an accept failing every 10 ms must not flood the log (as nginx's
/// "accept() failed" does not).
struct RateLimitedLog {
    /// When the last line was said, and how many were held back since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RateLimitedLog {
    const EVERY: Duration = Duration::from_secs(1);

    fn say(&self, error: &io::Error) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held_back) = &mut *state;
        if last.is_some_and(|at| at.elapsed() < Self::EVERY) {
            *held_back += 1;
            return;
        }
        let more = match *held_back {
            0 => String::new(),
            n => format!(" ({n} more since the last line)"),
        };
        eprintln!("tracebench serve: accept: {error}; retrying every 10 ms{more}");
        *last = Some(std::time::Instant::now());
        *held_back = 0;
    }
}

static ACCEPT_ERRORS: RateLimitedLog = RateLimitedLog {
    state: std::sync::Mutex::new((None, 0)),
};

/// Says that accepting failed for want of descriptors or memory, at most
/// once a second.
pub(crate) fn say_accept_error(error: &io::Error) {
    ACCEPT_ERRORS.say(error);
}

fn accept_one(listener: &TcpListener, stop: &StopHandle) -> io::Result<Option<TcpStream>> {
    loop {
        if stop.is_stopping() {
            return Ok(stop.next_stashed(listener));
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
            Some(libc::EINVAL) if stop.is_stopping() => continue,
            // The stopper made the listener non-blocking to drain it.
            Some(libc::EAGAIN) if stop.is_stopping() => continue,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                // Out of descriptors or memory: back off instead of spinning;
                // in-flight connections will free some.
                ACCEPT_ERRORS.say(&error);
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return Err(error),
        }
    }
}

/// What a non-blocking accept found, for the event loops.
pub(crate) enum Accepted {
    /// A connection, non-blocking, counted active until
    /// [`StopHandle::done`].
    Connection(TcpStream),
    /// The backlog is empty.
    Empty,
    /// The server is stopping: take what is left with
    /// [`StopHandle::take_stashed`].
    Stopping,
    /// Out of descriptors or memory (said on stderr, at most once a
    /// second): try again a little later.
    Exhausted,
}

/// Takes the next connection from a non-blocking `listener` with one
/// accept4(2), its result non-blocking too (no fcntl per connection).
pub(crate) fn try_accept(listener: &TcpListener, stop: &StopHandle) -> io::Result<Accepted> {
    use rustix::io::Errno;
    use rustix::net::SocketFlags;
    loop {
        if stop.is_stopping() {
            return Ok(Accepted::Stopping);
        }
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(fd) => {
                stop.0.active.fetch_add(1, Ordering::SeqCst);
                return Ok(Accepted::Connection(TcpStream::from(fd)));
            }
            Err(Errno::INTR | Errno::CONNABORTED | Errno::PROTO) => {}
            Err(Errno::AGAIN) => return Ok(Accepted::Empty),
            Err(Errno::INVAL) if stop.is_stopping() => return Ok(Accepted::Stopping),
            Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)) => {
                ACCEPT_ERRORS.say(&e.into());
                return Ok(Accepted::Exhausted);
            }
            Err(e) => return Err(e.into()),
        }
    }
}
