//! Request attribution from the trace alone: which thread served each
//! accepted connection, how long it waited to be picked up, and how long it
//! was served.
//!
//! [`Attributor`] is fed one [`Event`] at a time, in the order the tracer
//! produced them, so the same code runs live (the dashboard) and over a
//! trace file (`tracebench export --requests`, `tracebench experiment`).
//! It works for any server that accepts connections with accept(2) or
//! accept4(2); it knows nothing of tracebench's own server.
//!
//! # The method
//!
//! * A **connection** starts at the successful return of `accept`/`accept4`
//!   on the acceptor thread. It is known by (process, descriptor number)
//!   until that descriptor is closed; a later accept that returns the same
//!   number starts a new connection.
//! * A child process created by fork (or clone without `CLONE_THREAD`)
//!   inherits the parent's open connections under the same numbers. The
//!   parent closing its copy does not end the request: a connection ends
//!   only when the process that serves it closes it.
//! * The **serving task** is the first thread (of any process holding the
//!   connection) that enters a read, write, send, recv, shutdown or socket
//!   option call on the descriptor. In a pool that is a worker; in
//!   thread-per-connection the new thread; in `sync` the acceptor itself;
//!   in `fork` the child.
//! * **Pick-up** is when the serving thread starts on the connection: the
//!   return of that thread's last futex wait, if that wait returned after
//!   the accept and before its first call on the descriptor (it slept until
//!   the acceptor handed the connection over); otherwise the entry of that
//!   first call (it was already running: busy with the previous
//!   connection, or a freshly created thread or process).
//! * **Service ends** when the serving process closes the descriptor (the
//!   return of close(2)), or when it exits or execs with the descriptor
//!   still open.
//! * **Keep-alive**: a connection carries several requests when the server
//!   reads data from it after having written to it. A read that returns
//!   data after a write ends the current request at the return of the last
//!   write and starts the next one at the return of that read (which is
//!   also its pick-up: the serving thread was already there, so its queue
//!   wait is 0). A request followed by a read that brings no data (the
//!   client's FIN, a timeout) also ends at its last write, so the idle time
//!   of a kept-alive connection is never counted as service.
//!
//! Each request yields a [`RequestRecord`]; [`RequestStats`] keeps
//! HdrHistograms (ns, 1 ns..60 s, 3 significant digits, as the load
//! generator) of queue wait, service and server time, and the number of
//! requests each thread served.
//!
//! # Limits
//!
//! The trace must hold accept4 (or accept), the read and write calls the
//! server uses, close, and for the hand-off futex (the default selection
//! has them all). Descriptors handed over through other means (dup2,
//! SCM_RIGHTS, io_uring) are not followed. Memory is bounded: a connection
//! is forgotten once its last request is emitted, and at most
//! [`AttributorConfig::max_open_connections`] are tracked at once (the
//! oldest is dropped first and counted in [`AttributionCounts::evicted`]).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use std::fmt;
use std::io::{self, Write};

use hdrhistogram::Histogram;
use syscalls::Sysno;
pub use tracebench_histogram::{MAX_LATENCY_NS, latency_histogram};

use tracebench_trace::syscall::is_futex_wait;
use tracebench_trace::{Creation, Event, EventKind, EventSink};

/// How a request's service was seen to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestEnd {
    /// The serving process closed the descriptor (or, after its last
    /// write, read nothing more from it and then closed it).
    Closed,
    /// The serving thread read the next request on the same connection
    /// (keep-alive); the request ended at its last write.
    NextRequest,
    /// The serving process exited or exec'ed with the descriptor open.
    TaskExited,
}

impl RequestEnd {
    /// A short lowercase name, as written in the CSV.
    pub fn label(self) -> &'static str {
        match self {
            RequestEnd::Closed => "close",
            RequestEnd::NextRequest => "keep-alive",
            RequestEnd::TaskExited => "exit",
        }
    }
}

/// One request, from its arrival to the end of its service. Times are
/// CLOCK_MONOTONIC nanoseconds, as in [`Event::time_ns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The connection's sequence number in this trace (from 0, in order of
    /// accept).
    pub connection: u64,
    /// The request's index on its connection (0 for the first; more only
    /// with keep-alive).
    pub index_on_connection: u32,
    /// The descriptor number accept returned.
    pub fd: i32,
    /// The process that accepted the connection.
    pub acceptor_pid: i32,
    /// The thread that accepted the connection.
    pub acceptor_tid: i32,
    /// The process of the serving thread (differs from the acceptor's in
    /// fork mode).
    pub serving_pid: i32,
    /// The thread that served the request.
    pub serving_tid: i32,
    /// When the connection was accepted (accept's return).
    pub accepted_ns: u64,
    /// When this request arrived: `accepted_ns` for a connection's first
    /// request; for a later one (keep-alive), the return of the read that
    /// brought it.
    pub started_ns: u64,
    /// When the serving thread started on it (see the module docs).
    pub picked_up_ns: u64,
    /// When its service ended (see [`RequestRecord::end`]).
    pub ended_ns: u64,
    /// How the service ended.
    pub end: RequestEnd,
    /// Bytes the server read from the connection for this request.
    pub bytes_read: u64,
    /// Bytes the server wrote to the connection for this request.
    pub bytes_written: u64,
}

impl RequestRecord {
    /// The header line of [`RequestRecord::write_csv`]'s rows.
    pub const CSV_HEADER: &'static str = "connection,index,fd,acceptor_pid,acceptor_tid,serving_pid,serving_tid,\
        accepted_ns,started_ns,picked_up_ns,ended_ns,queue_wait_ns,service_ns,server_ns,\
        bytes_read,bytes_written,end";

    /// From arrival to pick-up: time spent in the server's queue (or
    /// waiting for a thread or process to start).
    pub fn queue_wait_ns(&self) -> u64 {
        self.picked_up_ns.saturating_sub(self.started_ns)
    }

    /// From pick-up to the end of service.
    pub fn service_ns(&self) -> u64 {
        self.ended_ns.saturating_sub(self.picked_up_ns)
    }

    /// From arrival to the end of service: queue wait + service.
    pub fn server_ns(&self) -> u64 {
        self.ended_ns.saturating_sub(self.started_ns)
    }

    /// Writes the record as one CSV row (without a newline), in the order
    /// of [`RequestRecord::CSV_HEADER`].
    pub fn write_csv<W: Write>(&self, out: &mut W) -> io::Result<()> {
        write!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.connection,
            self.index_on_connection,
            self.fd,
            self.acceptor_pid,
            self.acceptor_tid,
            self.serving_pid,
            self.serving_tid,
            self.accepted_ns,
            self.started_ns,
            self.picked_up_ns,
            self.ended_ns,
            self.queue_wait_ns(),
            self.service_ns(),
            self.server_ns(),
            self.bytes_read,
            self.bytes_written,
            self.end.label()
        )
    }
}

/// What one thread served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerTally {
    /// The thread's process.
    pub pid: i32,
    /// Requests it served.
    pub requests: u64,
    /// Its total service time, ns.
    pub service_ns: u64,
}

/// Histograms of every request emitted so far, and per-thread counts.
#[derive(Debug, Clone)]
pub struct RequestStats {
    queue_wait: Histogram<u64>,
    service: Histogram<u64>,
    server_time: Histogram<u64>,
    workers: BTreeMap<i32, WorkerTally>,
    requests: u64,
    bytes_read: u64,
    bytes_written: u64,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            queue_wait: latency_histogram(),
            service: latency_histogram(),
            server_time: latency_histogram(),
            workers: BTreeMap::new(),
            requests: 0,
            bytes_read: 0,
            bytes_written: 0,
        }
    }
}

impl RequestStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one request.
    pub fn record(&mut self, request: &RequestRecord) {
        self.queue_wait.saturating_record(request.queue_wait_ns());
        self.service.saturating_record(request.service_ns());
        self.server_time.saturating_record(request.server_ns());
        let worker = self.workers.entry(request.serving_tid).or_default();
        worker.pid = request.serving_pid;
        worker.requests += 1;
        worker.service_ns += request.service_ns();
        self.requests += 1;
        self.bytes_read += request.bytes_read;
        self.bytes_written += request.bytes_written;
    }

    /// Requests recorded.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Queue wait (arrival → pick-up) of every request, ns.
    pub fn queue_wait(&self) -> &Histogram<u64> {
        &self.queue_wait
    }

    /// Service time (pick-up → end) of every request, ns.
    pub fn service(&self) -> &Histogram<u64> {
        &self.service
    }

    /// Server time (arrival → end) of every request, ns.
    pub fn server_time(&self) -> &Histogram<u64> {
        &self.server_time
    }

    /// Per serving thread id: its process, requests served, service time.
    pub fn workers(&self) -> &BTreeMap<i32, WorkerTally> {
        &self.workers
    }

    /// Requests served by thread `tid` (0 if none).
    pub fn served_by(&self, tid: i32) -> u64 {
        self.workers.get(&tid).map_or(0, |w| w.requests)
    }

    /// Forgets thread `tid`'s tally (a dashboard dropping exited threads);
    /// the histograms keep its requests.
    pub fn forget_worker(&mut self, tid: i32) {
        self.workers.remove(&tid);
    }

    /// Total bytes read and written by the server over all requests.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_read, self.bytes_written)
    }
}

impl fmt::Display for RequestStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
        writeln!(
            f,
            "{} requests attributed, served by {} threads",
            self.requests,
            self.workers.len()
        )?;
        if self.requests == 0 {
            return Ok(());
        }
        writeln!(
            f,
            "                 p50 usecs   p90 usecs   p99 usecs   max usecs"
        )?;
        for (name, h) in [
            ("queue wait", &self.queue_wait),
            ("service", &self.service),
            ("server time", &self.server_time),
        ] {
            writeln!(
                f,
                "{name:<12} {:>13.1} {:>11.1} {:>11.1} {:>11.1}",
                us(h, 0.5),
                us(h, 0.9),
                us(h, 0.99),
                h.max() as f64 / 1e3
            )?;
        }
        let served: Vec<String> = self
            .workers
            .iter()
            .map(|(tid, w)| format!("{tid}:{}", w.requests))
            .collect();
        writeln!(
            f,
            "requests served per thread (tid:count): {}",
            served.join(" ")
        )
    }
}

/// Limits of an [`Attributor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributorConfig {
    /// Connections tracked at once; beyond this the oldest is forgotten.
    pub max_open_connections: usize,
}

impl Default for AttributorConfig {
    fn default() -> Self {
        AttributorConfig {
            max_open_connections: 65_536,
        }
    }
}

/// Connections the attributor saw but could not turn into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttributionCounts {
    /// Connections accepted.
    pub connections: u64,
    /// Requests emitted.
    pub requests: u64,
    /// Connections closed (or whose holders all exited) before any thread
    /// read or wrote them.
    pub unserved: u64,
    /// Connections whose descriptor number came back from another accept
    /// before their close was seen (the close was not traced).
    pub reused_unclosed: u64,
    /// Connections forgotten because too many were open.
    pub evicted: u64,
}

/// The request in progress on a connection.
#[derive(Debug, Clone)]
struct Segment {
    started_ns: u64,
    picked_up_ns: Option<u64>,
    bytes_read: u64,
    bytes_written: u64,
    /// Return of the last write, once the server has answered.
    last_write_ns: Option<u64>,
    /// The server read (and got nothing) after its last write.
    read_after_write: bool,
}

impl Segment {
    fn new(started_ns: u64) -> Self {
        Segment {
            started_ns,
            picked_up_ns: None,
            bytes_read: 0,
            bytes_written: 0,
            last_write_ns: None,
            read_after_write: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Connection {
    fd: i32,
    acceptor_pid: i32,
    acceptor_tid: i32,
    accepted_ns: u64,
    /// How many (process, fd) entries name this connection.
    holders: u32,
    serving: Option<(i32, i32)>,
    requests_done: u32,
    segment: Segment,
}

/// What a descriptor call does to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FdUse {
    Read,
    Write,
    /// Touches the connection without moving data (shutdown, socket
    /// options): enough to say who serves it.
    Touch,
}

fn fd_use(nr: u32) -> Option<FdUse> {
    match Sysno::new(nr as usize)? {
        Sysno::read
        | Sysno::readv
        | Sysno::pread64
        | Sysno::preadv
        | Sysno::preadv2
        | Sysno::recvfrom
        | Sysno::recvmsg
        | Sysno::recvmmsg => Some(FdUse::Read),
        Sysno::write
        | Sysno::writev
        | Sysno::pwrite64
        | Sysno::pwritev
        | Sysno::pwritev2
        | Sysno::sendto
        | Sysno::sendmsg
        | Sysno::sendmmsg
        | Sysno::sendfile => Some(FdUse::Write),
        Sysno::shutdown | Sysno::setsockopt | Sysno::getsockopt => Some(FdUse::Touch),
        _ => None,
    }
}

/// What a thread is inside of, from entry to exit.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Accept,
    FutexWait,
    Io { connection: u64, how: FdUse },
    Close { connection: u64 },
}

#[derive(Debug, Clone, Default)]
struct ThreadState {
    pending: Option<(u32, Pending)>,
    last_wait_return_ns: Option<u64>,
}

/// Follows accepted connections through a stream of events and emits one
/// [`RequestRecord`] per request. See the module docs for the method.
#[derive(Debug, Clone)]
pub struct Attributor {
    config: AttributorConfig,
    /// (process, descriptor) → connection id.
    descriptors: BTreeMap<(i32, i32), u64>,
    /// Open connections by id; ids grow with accept order, so the first is
    /// the oldest.
    connections: BTreeMap<u64, Connection>,
    threads: HashMap<i32, ThreadState>,
    next_connection: u64,
    counts: AttributionCounts,
    stats: RequestStats,
    /// Requests finished by the current event, handed to the caller at the
    /// end of [`Attributor::feed`].
    finished: Vec<RequestRecord>,
}

impl Default for Attributor {
    fn default() -> Self {
        Self::with_config(AttributorConfig::default())
    }
}

impl Attributor {
    /// An attributor with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An attributor with these limits.
    pub fn with_config(config: AttributorConfig) -> Self {
        Attributor {
            config,
            descriptors: BTreeMap::new(),
            connections: BTreeMap::new(),
            threads: HashMap::new(),
            next_connection: 0,
            counts: AttributionCounts::default(),
            stats: RequestStats::new(),
            finished: Vec::new(),
        }
    }

    /// The statistics of every request emitted so far.
    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    /// Mutable statistics (to forget exited workers).
    pub fn stats_mut(&mut self) -> &mut RequestStats {
        &mut self.stats
    }

    /// Counts of connections and of what could not be attributed.
    pub fn counts(&self) -> AttributionCounts {
        self.counts
    }

    /// Connections accepted and not yet closed.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Feeds one event; calls `on_request` for every request it completes
    /// (none, one, or several when a process exits holding connections).
    pub fn feed(&mut self, event: &Event, mut on_request: impl FnMut(&RequestRecord)) {
        self.apply(event);
        for request in self.finished.drain(..) {
            self.stats.record(&request);
            self.counts.requests += 1;
            on_request(&request);
        }
    }

    fn apply(&mut self, event: &Event) {
        let (pid, tid, at) = (event.pid, event.tid, event.time_ns);
        match &event.kind {
            EventKind::SyscallEntry { nr, args, .. } => self.entry(pid, tid, at, *nr, args),
            EventKind::SyscallExit { nr, ret, .. } => self.exit(pid, tid, at, *nr, *ret),
            EventKind::Spawned {
                child_pid,
                creation: Creation::Process | Creation::Vfork,
                ..
            } => self.inherit(pid, *child_pid),
            EventKind::Spawned { .. }
            | EventKind::Signal { .. }
            | EventKind::GroupStop { .. }
            // A sample or the scheduler shows a state, never a request's
            // start or end.
            | EventKind::Sampled { .. }
            | EventKind::OffCpu { .. }
            | EventKind::OnCpu { .. }
            | EventKind::Woken { .. }
            | EventKind::Lost { .. } => {}
            EventKind::Exited { .. } => {
                self.threads.remove(&tid);
                // The leader's exit is the process's: its descriptors close.
                if tid == pid {
                    self.release_process(pid, at);
                }
            }
            // Connections are accepted with SOCK_CLOEXEC by most servers;
            // either way the program that ran is gone.
            EventKind::Exec { .. } => self.release_process(pid, at),
        }
    }

    fn entry(&mut self, pid: i32, tid: i32, at: u64, nr: u32, args: &[u64; 6]) {
        let pending = match Sysno::new(nr as usize) {
            Some(Sysno::accept | Sysno::accept4) => Some(Pending::Accept),
            Some(Sysno::futex) if is_futex_wait(args[1]) => Some(Pending::FutexWait),
            Some(Sysno::close) => {
                let fd = args[0] as i32;
                // Forget the number now: once close has begun, another
                // thread's accept may get the same number back before we
                // see this close return.
                self.descriptors
                    .remove(&(pid, fd))
                    .map(|connection| Pending::Close { connection })
            }
            _ => fd_use(nr).and_then(|how| {
                let connection = *self.descriptors.get(&(pid, args[0] as i32))?;
                self.touch(connection, pid, tid, at);
                Some(Pending::Io { connection, how })
            }),
        };
        self.threads.entry(tid).or_default().pending = pending.map(|p| (nr, p));
    }

    /// A thread enters a call on a connection: the first one names the
    /// serving thread and fixes the pick-up time.
    fn touch(&mut self, connection: u64, pid: i32, tid: i32, at: u64) {
        let last_wait = self.threads.get(&tid).and_then(|t| t.last_wait_return_ns);
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        if conn.serving.is_none() {
            conn.serving = Some((pid, tid));
        }
        if conn.serving == Some((pid, tid)) && conn.segment.picked_up_ns.is_none() {
            let woke_for_it = last_wait.filter(|&w| w >= conn.segment.started_ns && w <= at);
            conn.segment.picked_up_ns = Some(woke_for_it.unwrap_or(at));
            if woke_for_it.is_some() {
                // One wake-up hands over one connection: the next one this
                // worker takes without waiting again was popped later, when
                // it first touches it.
                if let Some(thread) = self.threads.get_mut(&tid) {
                    thread.last_wait_return_ns = None;
                }
            }
        }
    }

    fn exit(&mut self, pid: i32, tid: i32, at: u64, nr: u32, ret: i64) {
        let thread = self.threads.entry(tid).or_default();
        let pending = match thread.pending.take() {
            Some((entered, pending)) if entered == nr => pending,
            _ => return,
        };
        match pending {
            Pending::Accept if ret >= 0 => self.accepted(pid, tid, at, ret as i32),
            Pending::Accept => {}
            Pending::FutexWait => thread.last_wait_return_ns = Some(at),
            Pending::Io { connection, how } => self.io_done(connection, tid, at, how, ret),
            Pending::Close { connection } => self.closed(connection, pid, at, RequestEnd::Closed),
        }
    }

    fn accepted(&mut self, pid: i32, tid: i32, at: u64, fd: i32) {
        if let Some(stale) = self.descriptors.remove(&(pid, fd)) {
            // Its close was not traced; what we know of it is unreliable.
            if self.drop_holder(stale) {
                self.counts.reused_unclosed += 1;
            }
        }
        while self.connections.len() >= self.config.max_open_connections.max(1) {
            let Some((oldest, _)) = self.connections.pop_first() else {
                break;
            };
            self.descriptors.retain(|_, id| *id != oldest);
            self.counts.evicted += 1;
        }
        let id = self.next_connection;
        self.next_connection += 1;
        self.counts.connections += 1;
        self.descriptors.insert((pid, fd), id);
        self.connections.insert(
            id,
            Connection {
                fd,
                acceptor_pid: pid,
                acceptor_tid: tid,
                accepted_ns: at,
                holders: 1,
                serving: None,
                requests_done: 0,
                segment: Segment::new(at),
            },
        );
    }

    /// Removes one holder of `connection` without finishing it; true if that
    /// was the last and the connection is gone.
    fn drop_holder(&mut self, connection: u64) -> bool {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return false;
        };
        conn.holders = conn.holders.saturating_sub(1);
        if conn.holders == 0 {
            self.connections.remove(&connection);
            return true;
        }
        false
    }

    fn io_done(&mut self, connection: u64, tid: i32, at: u64, how: FdUse, ret: i64) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        let by_server = conn.serving.is_some_and(|(_, serving)| serving == tid);
        match how {
            FdUse::Read if ret > 0 => {
                if by_server && conn.segment.last_write_ns.is_some() {
                    // Keep-alive: data after an answer is the next request.
                    let next = Segment {
                        picked_up_ns: Some(at),
                        ..Segment::new(at)
                    };
                    let done = std::mem::replace(&mut conn.segment, next);
                    let record = Self::record(
                        connection,
                        conn,
                        &done,
                        done.last_write_ns.unwrap_or(at),
                        RequestEnd::NextRequest,
                    );
                    conn.requests_done += 1;
                    self.finished.extend(record);
                }
                conn.segment.bytes_read += ret as u64;
            }
            FdUse::Read => {
                if conn.segment.last_write_ns.is_some() {
                    conn.segment.read_after_write = true;
                }
            }
            FdUse::Write if ret >= 0 => {
                conn.segment.bytes_written += ret as u64;
                conn.segment.last_write_ns = Some(at);
                conn.segment.read_after_write = false;
            }
            FdUse::Write | FdUse::Touch => {}
        }
    }

    /// Process `pid` no longer holds `connection` (close returned, or the
    /// process is gone). If `pid` served it, the request ends at `at`.
    fn closed(&mut self, connection: u64, pid: i32, at: u64, end: RequestEnd) {
        let Some(conn) = self.connections.get(&connection) else {
            return;
        };
        let served_here = conn
            .serving
            .is_some_and(|(serving_pid, _)| serving_pid == pid);
        if !served_here {
            let never_served = conn.serving.is_none();
            if self.drop_holder(connection) && never_served {
                self.counts.unserved += 1;
            }
            return;
        }
        let Some(conn) = self.connections.remove(&connection) else {
            return;
        };
        // Other holders (a forked parent that never closed its copy) keep
        // numbers that now name nothing we track.
        if conn.holders > 1 {
            self.descriptors.retain(|_, id| *id != connection);
        }
        let segment = &conn.segment;
        let ended = match segment.last_write_ns {
            Some(last_write) if segment.read_after_write => last_write,
            _ => at,
        };
        // A kept-alive connection's last segment that was opened by no
        // read (the client went away) is not a request.
        if conn.requests_done > 0 && segment.bytes_read == 0 && segment.bytes_written == 0 {
            return;
        }
        self.finished
            .extend(Self::record(connection, &conn, segment, ended, end));
    }

    fn release_process(&mut self, pid: i32, at: u64) {
        let held: Vec<(i32, u64)> = self
            .descriptors
            .range((pid, i32::MIN)..=(pid, i32::MAX))
            .map(|(&(_, fd), &id)| (fd, id))
            .collect();
        for (fd, connection) in held {
            self.descriptors.remove(&(pid, fd));
            self.closed(connection, pid, at, RequestEnd::TaskExited);
        }
    }

    /// A new process starts with copies of its parent's descriptors.
    fn inherit(&mut self, parent: i32, child: i32) {
        let held: Vec<(i32, u64)> = self
            .descriptors
            .range((parent, i32::MIN)..=(parent, i32::MAX))
            .map(|(&(_, fd), &id)| (fd, id))
            .collect();
        for (fd, connection) in held {
            if let Some(conn) = self.connections.get_mut(&connection) {
                conn.holders += 1;
                self.descriptors.insert((child, fd), connection);
            }
        }
    }

    fn record(
        connection: u64,
        conn: &Connection,
        segment: &Segment,
        ended_ns: u64,
        end: RequestEnd,
    ) -> Option<RequestRecord> {
        let (serving_pid, serving_tid) = conn.serving?;
        let picked_up_ns = segment.picked_up_ns.unwrap_or(ended_ns);
        Some(RequestRecord {
            connection,
            index_on_connection: conn.requests_done,
            fd: conn.fd,
            acceptor_pid: conn.acceptor_pid,
            acceptor_tid: conn.acceptor_tid,
            serving_pid,
            serving_tid,
            accepted_ns: conn.accepted_ns,
            started_ns: segment.started_ns,
            picked_up_ns,
            ended_ns: ended_ns.max(picked_up_ns),
            end,
            bytes_read: segment.bytes_read,
            bytes_written: segment.bytes_written,
        })
    }
}

impl EventSink for Attributor {
    fn event(&mut self, event: &Event) {
        self.feed(event, |_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracebench_trace::DataCapture;
    use tracebench_trace::ExitStatus;

    fn nr(sysno: Sysno) -> u32 {
        sysno.id() as u32
    }

    /// Builds event sequences by hand: one call is an entry and an exit.
    #[derive(Default)]
    struct Script {
        events: Vec<Event>,
    }

    impl Script {
        fn push(&mut self, time_ns: u64, pid: i32, tid: i32, kind: EventKind) -> &mut Self {
            self.events.push(Event {
                time_ns,
                pid,
                tid,
                kind,
            });
            self
        }
        fn enter(
            &mut self,
            at: u64,
            pid: i32,
            tid: i32,
            sysno: Sysno,
            args: [u64; 6],
        ) -> &mut Self {
            self.push(
                at,
                pid,
                tid,
                EventKind::SyscallEntry {
                    nr: nr(sysno),
                    args,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            )
        }
        fn leave(&mut self, at: u64, pid: i32, tid: i32, sysno: Sysno, ret: i64) -> &mut Self {
            self.push(
                at,
                pid,
                tid,
                EventKind::SyscallExit {
                    nr: nr(sysno),
                    ret,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            )
        }
        /// A whole call on `fd` (read, write, close…) from `at` to `until`.
        #[allow(clippy::too_many_arguments)]
        fn call(
            &mut self,
            at: u64,
            until: u64,
            pid: i32,
            tid: i32,
            sysno: Sysno,
            fd: i32,
            ret: i64,
        ) -> &mut Self {
            self.enter(at, pid, tid, sysno, [fd as u64, 0, 0, 0, 0, 0])
                .leave(until, pid, tid, sysno, ret)
        }
        fn accept(&mut self, at: u64, until: u64, pid: i32, tid: i32, fd: i64) -> &mut Self {
            self.call(at, until, pid, tid, Sysno::accept4, 3, fd)
        }
        fn wait_enter(&mut self, at: u64, pid: i32, tid: i32) -> &mut Self {
            let op = (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64;
            self.enter(at, pid, tid, Sysno::futex, [0x1000, op, 0, 0, 0, 0])
        }
        fn run(&self, config: AttributorConfig) -> (Vec<RequestRecord>, Attributor) {
            let mut attributor = Attributor::with_config(config);
            let mut records = Vec::new();
            for event in &self.events {
                attributor.feed(event, |r| records.push(r.clone()));
            }
            (records, attributor)
        }
    }

    #[test]
    fn a_pool_hand_off_is_picked_up_at_the_workers_futex_return() {
        let (acceptor, worker, other) = (10, 11, 12);
        let mut s = Script::default();
        s.wait_enter(0, 10, worker)
            .accept(1, 100, 10, acceptor, 4)
            .wait_enter(105, 10, other)
            .leave(130, 10, worker, Sysno::futex, 0)
            .call(140, 150, 10, worker, Sysno::recvfrom, 4, 79)
            .call(160, 170, 10, worker, Sysno::sendto, 4, 125)
            .call(180, 190, 10, worker, Sysno::close, 4, 0)
            // The same number again: a new connection. This worker was
            // busy (its wait returned before this accept): pick-up is its
            // first read.
            .accept(195, 200, 10, acceptor, 4)
            .call(210, 220, 10, worker, Sysno::read, 4, 10)
            .call(230, 240, 10, worker, Sysno::write, 4, 20)
            .call(250, 260, 10, worker, Sysno::close, 4, 0);
        let (records, attributor) = s.run(AttributorConfig::default());
        assert_eq!(records.len(), 2, "{records:?}");
        let first = &records[0];
        assert_eq!(
            (
                first.connection,
                first.acceptor_tid,
                first.serving_tid,
                first.serving_pid
            ),
            (0, acceptor, worker, 10)
        );
        assert_eq!(
            (first.accepted_ns, first.picked_up_ns, first.ended_ns),
            (100, 130, 190)
        );
        assert_eq!((first.queue_wait_ns(), first.service_ns()), (30, 60));
        assert_eq!((first.bytes_read, first.bytes_written), (79, 125));
        assert_eq!(first.end, RequestEnd::Closed);
        let second = &records[1];
        assert_eq!(
            (second.connection, second.picked_up_ns, second.ended_ns),
            (1, 210, 260)
        );
        assert_eq!(attributor.stats().served_by(worker), 2);
        assert_eq!(attributor.stats().served_by(acceptor), 0);
        assert_eq!(attributor.stats().queue_wait().len(), 2);
        assert_eq!(attributor.open_connections(), 0);
        assert_eq!(attributor.counts().connections, 2);
    }

    #[test]
    fn one_wake_up_is_the_pick_up_of_one_connection_only() {
        // Two connections wait in the queue when the worker wakes; it
        // serves the first, then pops the second without waiting again.
        let (acceptor, worker) = (10, 11);
        let mut s = Script::default();
        s.wait_enter(0, 10, worker)
            .accept(1, 100, 10, acceptor, 4)
            .accept(101, 110, 10, acceptor, 5)
            .leave(130, 10, worker, Sysno::futex, 0)
            .call(140, 150, 10, worker, Sysno::recvfrom, 4, 79)
            .call(160, 170, 10, worker, Sysno::sendto, 4, 125)
            .call(180, 190, 10, worker, Sysno::close, 4, 0)
            .call(200, 210, 10, worker, Sysno::recvfrom, 5, 79)
            .call(220, 230, 10, worker, Sysno::sendto, 5, 125)
            .call(240, 250, 10, worker, Sysno::close, 5, 0);
        let (records, _) = s.run(AttributorConfig::default());
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(
            records[0].picked_up_ns, 130,
            "the wake-up was for the first"
        );
        assert_eq!(
            (records[1].picked_up_ns, records[1].service_ns()),
            (200, 50),
            "the second was picked up at its first read, not at the old wake-up"
        );
        assert_eq!(records[1].queue_wait_ns(), 90);
    }

    #[test]
    fn sync_mode_is_served_by_the_acceptor_itself() {
        let mut s = Script::default();
        s.accept(0, 100, 7, 7, 4)
            .call(110, 120, 7, 7, Sysno::recvfrom, 4, 79)
            .call(130, 140, 7, 7, Sysno::sendto, 4, 125)
            .call(150, 160, 7, 7, Sysno::close, 4, 0);
        let (records, _) = s.run(AttributorConfig::default());
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.acceptor_tid, r.serving_tid), (7, 7));
        assert_eq!(
            (r.queue_wait_ns(), r.service_ns(), r.server_ns()),
            (10, 50, 60)
        );
    }

    #[test]
    fn a_thread_per_connection_serves_it() {
        let mut s = Script::default();
        s.accept(0, 100, 7, 7, 4)
            .push(
                105,
                7,
                7,
                EventKind::Spawned {
                    child_tid: 8,
                    child_pid: 7,
                    creation: Creation::Thread,
                },
            )
            .accept(110, 500, 7, 7, 5)
            .call(150, 160, 7, 8, Sysno::recvfrom, 4, 10)
            .call(170, 180, 7, 8, Sysno::sendto, 4, 10)
            .call(190, 200, 7, 8, Sysno::close, 4, 0);
        let (records, _) = s.run(AttributorConfig::default());
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].serving_tid, records[0].picked_up_ns), (8, 150));
    }

    #[test]
    fn a_forked_child_serves_and_the_parents_close_does_not_end_it() {
        let (parent, child) = (20, 21);
        let mut s = Script::default();
        s.accept(0, 100, parent, parent, 5)
            .push(
                110,
                parent,
                parent,
                EventKind::Spawned {
                    child_tid: child,
                    child_pid: child,
                    creation: Creation::Process,
                },
            )
            .call(115, 120, parent, parent, Sysno::close, 5, 0)
            .call(122, 124, child, child, Sysno::close, 3, 0)
            .call(130, 140, child, child, Sysno::recvfrom, 5, 79)
            .call(150, 160, child, child, Sysno::sendto, 5, 125)
            .call(165, 170, child, child, Sysno::close, 5, 0)
            .push(
                180,
                child,
                child,
                EventKind::Exited {
                    status: ExitStatus::Code(0),
                },
            )
            // A second child that exits without closing its copy.
            .accept(200, 300, parent, parent, 5)
            .push(
                310,
                parent,
                parent,
                EventKind::Spawned {
                    child_tid: 22,
                    child_pid: 22,
                    creation: Creation::Process,
                },
            )
            .call(315, 320, parent, parent, Sysno::close, 5, 0)
            .call(330, 340, 22, 22, Sysno::recvfrom, 5, 79)
            .call(350, 360, 22, 22, Sysno::sendto, 5, 125)
            .push(
                400,
                22,
                22,
                EventKind::Exited {
                    status: ExitStatus::Code(0),
                },
            );
        let (records, attributor) = s.run(AttributorConfig::default());
        assert_eq!(records.len(), 2, "{records:?}");
        let r = &records[0];
        assert_eq!(
            (r.acceptor_pid, r.serving_pid, r.serving_tid),
            (parent, child, child)
        );
        assert_eq!(
            (r.picked_up_ns, r.ended_ns, r.end),
            (130, 170, RequestEnd::Closed)
        );
        let r = &records[1];
        assert_eq!(
            (r.serving_pid, r.ended_ns, r.end),
            (22, 400, RequestEnd::TaskExited)
        );
        assert_eq!(attributor.open_connections(), 0);
        assert_eq!(attributor.counts().unserved, 0);
    }

    #[test]
    fn keep_alive_connections_split_at_each_read_after_a_write() {
        let mut s = Script::default();
        s.accept(0, 100, 7, 7, 4)
            .call(110, 120, 7, 7, Sysno::recvfrom, 4, 50)
            .call(130, 140, 7, 7, Sysno::sendto, 4, 100)
            // Idle until the client's next request arrives at 300.
            .call(150, 300, 7, 7, Sysno::recvfrom, 4, 60)
            .call(310, 320, 7, 7, Sysno::sendto, 4, 110)
            // The client leaves: a read of 0, then close.
            .call(330, 900, 7, 7, Sysno::recvfrom, 4, 0)
            .call(910, 920, 7, 7, Sysno::close, 4, 0);
        let (records, attributor) = s.run(AttributorConfig::default());
        assert_eq!(records.len(), 2, "{records:?}");
        let (a, b) = (&records[0], &records[1]);
        assert_eq!(
            (
                a.index_on_connection,
                a.started_ns,
                a.picked_up_ns,
                a.ended_ns,
                a.end
            ),
            (0, 100, 110, 140, RequestEnd::NextRequest)
        );
        assert_eq!((a.bytes_read, a.bytes_written), (50, 100));
        assert_eq!(
            (
                b.index_on_connection,
                b.started_ns,
                b.picked_up_ns,
                b.ended_ns,
                b.end
            ),
            (1, 300, 300, 320, RequestEnd::Closed)
        );
        assert_eq!((b.bytes_read, b.bytes_written), (60, 110));
        assert_eq!(attributor.stats().served_by(7), 2);
    }

    #[test]
    fn unserved_reused_and_evicted_connections_are_counted_not_emitted() {
        let mut s = Script::default();
        s.accept(0, 100, 7, 7, 4)
            .call(110, 120, 7, 7, Sysno::close, 4, 0)
            // fd 5's close is never seen: the next accept of 5 replaces it.
            .accept(130, 140, 7, 7, 5)
            .accept(150, 160, 7, 7, 5)
            .accept(170, 180, 7, 7, 6)
            .accept(190, 200, 7, 7, 8);
        let (records, attributor) = s.run(AttributorConfig {
            max_open_connections: 2,
        });
        assert!(records.is_empty());
        let counts = attributor.counts();
        assert_eq!(counts.connections, 5);
        assert_eq!(counts.unserved, 1);
        assert_eq!(counts.reused_unclosed, 1);
        assert_eq!(counts.evicted, 1);
        assert_eq!(attributor.open_connections(), 2);
    }

    #[test]
    fn garbage_never_panics() {
        let mut attributor = Attributor::new();
        for (i, kind) in [
            EventKind::SyscallExit {
                nr: nr(Sysno::close),
                ret: -9,
                data: vec![],
                data_capture: DataCapture::Captured,
            },
            EventKind::SyscallEntry {
                nr: u32::MAX,
                args: [u64::MAX; 6],
                data: vec![],
                data_capture: DataCapture::Captured,
            },
            EventKind::SyscallExit {
                nr: nr(Sysno::accept4),
                ret: i64::MAX,
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ]
        .into_iter()
        .enumerate()
        {
            attributor.event(&Event {
                time_ns: u64::MAX - i as u64,
                pid: -1,
                tid: i32::MIN,
                kind,
            });
        }
        assert_eq!(attributor.counts().requests, 0);
    }
}
