//! The load engine: a few threads, each running one mio (epoll) event loop
//! over its share of the connections. A connection is a small state
//! machine (connect, write the request, read the answer, repeat), so one
//! thread drives many connections and no thread ever blocks on a socket.
//! That is wrk's design, and for the same reason: on a 2-core machine the
//! generator must not spend the cores the server needs.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::LoadError;
use crate::config::{LoadConfig, StopAfter};
use crate::response::{Progress, progress_resuming};
use crate::stats::{ErrorKind, Stats, latency_histogram};
use crate::tls::{TlsClient, Transport, tls_failure};

/// How often workers report what they measured while the run goes on.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);

/// What the run measured in one [`SNAPSHOT_INTERVAL`], all workers merged:
/// what a live view draws.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Which interval (0 from the start of the run).
    pub index: u64,
    /// When the interval began, since the start of the run (warm-up
    /// included).
    pub start: Duration,
    /// Its length.
    pub duration: Duration,
    /// Latencies of the requests completed in it (from the planned send
    /// time in the open loop).
    pub latency: hdrhistogram::Histogram<u64>,
    /// Requests answered in it, by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests failed in it, by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Requests in flight at its end.
    pub in_flight: usize,
    /// Whether the interval lies in the warm-up (not measured).
    pub warmup: bool,
}

/// What a worker tells the collector.
enum Tick {
    /// Worker `worker` finished interval `snapshot.index`.
    Interval { worker: usize, snapshot: Snapshot },
    /// Worker `worker` has stopped and will report nothing more.
    Finished { worker: usize },
}

impl Snapshot {
    fn empty(index: u64, start: Duration, warmup: bool) -> Snapshot {
        Snapshot {
            index,
            start,
            duration: SNAPSHOT_INTERVAL,
            latency: latency_histogram(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            in_flight: 0,
            warmup,
        }
    }

    fn merge(&mut self, other: &Snapshot) {
        let _ = self.latency.add(&other.latency);
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += n;
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_insert(0) += n;
        }
        self.in_flight += other.in_flight;
    }

    /// Requests answered in the interval.
    pub fn completed(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Requests failed in the interval.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Everything measured, all workers merged.
    pub stats: Stats,
    /// Time from the end of the warm-up to the end of the run.
    pub elapsed: Duration,
    /// Whether the run was cut short (Ctrl-C).
    pub cancelled: bool,
}

/// Who may start another request: the count of `-n`, the clock of `-z`,
/// and Ctrl-C.
struct Budget {
    remaining: Option<AtomicU64>,
    deadline: Option<Instant>,
    measure_from: Instant,
    cancel: Arc<AtomicBool>,
}

impl Budget {
    fn ended(&self, now: Instant) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| now >= d)
    }

    /// Whether a `-n` budget is used up.
    fn exhausted(&self) -> bool {
        self.remaining
            .as_ref()
            .is_some_and(|r| r.load(Ordering::Relaxed) == 0)
    }

    /// Takes one request from the budget. During the warm-up requests are
    /// free (they are not measured either).
    fn take(&self, now: Instant) -> bool {
        if self.ended(now) {
            return false;
        }
        match &self.remaining {
            Some(_) if now < self.measure_from => true,
            Some(remaining) => remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
            None => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not sending: finished, or waiting for its first request.
    Idle,
    Connecting,
    Writing,
    Reading,
}

struct Conn {
    stream: Option<Transport>,
    phase: Phase,
    buf: Vec<u8>,
    /// How much of a chunked answer's body is known good (see
    /// [`progress_resuming`]).
    checked: usize,
    sent: usize,
    started: Instant,
    connect_started: Instant,
    first_byte: Option<Instant>,
    deadline: Instant,
    /// Whether the current request reuses a kept-alive connection.
    reused: bool,
    /// When the request was due: its start in the closed loop, its slot
    /// in the open loop's schedule.
    planned: Instant,
    done: bool,
}

struct Worker<'a> {
    config: &'a LoadConfig,
    /// https: what every connection's TLS shares.
    tls: Option<&'a TlsClient>,
    request: &'a [u8],
    budget: &'a Budget,
    poll: Poll,
    conns: Vec<Conn>,
    stats: Stats,
    /// Where reads land before they are appended to a connection's buffer.
    scratch: Vec<u8>,
    /// Open loop: when the next request is due, and the gap between two.
    schedule: Option<(Instant, Duration)>,
    /// Open loop: connections with no request in flight.
    free: Vec<usize>,
    /// Where this worker's interval reports go.
    ticks: mpsc::Sender<Tick>,
    /// This worker's number.
    id: usize,
    /// Whether the load is an open loop (`--rate`); the schedule itself is
    /// dropped once the budget is spent.
    open_loop: bool,
    /// Whether the request is a HEAD (its answers have no body).
    head_request: bool,
    /// Whether the method may be sent twice ([`Worker::retry_stale`]).
    idempotent: bool,
    /// The interval being filled.
    tick: Snapshot,
    /// How many event-loop threads share the connections.
    threads: usize,
    /// When the run started (interval 0).
    run_start: Instant,
}

/// Runs the load described by `config` until it is done or `cancel` is
/// set (Ctrl-C), and returns what was measured.
pub fn run(config: &LoadConfig, cancel: Arc<AtomicBool>) -> Result<Report, LoadError> {
    run_observed(config, cancel, |_| {})
}

/// Descriptors a run needs besides one per connection: the threads'
/// epoll instances and wakers, the standard streams, an output or two.
const SPARE_FILES: u64 = 64;

/// Raises the soft open-file limit to the hard one, as wrk and nginx users
/// expect, and refuses at once a `-c` that still cannot fit, rather than
/// counting EMFILE as thousands of failed requests.
fn make_room_for(connections: usize) -> Result<(), LoadError> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let needed = connections as u64 + SPARE_FILES;
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return Ok(());
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let raised = Rlimit {
        current: Some(hard.min(needed.max(soft))),
        maximum: limit.maximum,
    };
    if hard >= needed && setrlimit(Resource::Nofile, raised).is_ok() {
        return Ok(());
    }
    Err(LoadError::BadConfig(format!(
        "-c {connections} needs about {needed} open files, and this process may have at most \
         {hard} (ulimit -n; the hard limit): use fewer connections or raise the limit"
    )))
}

/// Like [`run`], and calls `observe` on the calling thread with a merged
/// [`Snapshot`] about every [`SNAPSHOT_INTERVAL`], in order: the feed of a
/// progress bar, a dashboard or an interval log.
pub fn run_observed(
    config: &LoadConfig,
    cancel: Arc<AtomicBool>,
    mut observe: impl FnMut(&Snapshot),
) -> Result<Report, LoadError> {
    config.validate()?;
    let tls = config
        .target
        .tls
        .then(|| {
            TlsClient::new(
                &config.target.host,
                config.ca_file.as_deref(),
                config.insecure,
            )
        })
        .transpose()?;
    make_room_for(config.effective_connections())?;
    let request = config.request_bytes();
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let budget = Budget {
        remaining: match config.stop {
            StopAfter::Requests(n) => Some(AtomicU64::new(n)),
            StopAfter::Duration(_) => None,
        },
        deadline: match config.stop {
            StopAfter::Duration(d) => Some(measure_from + d),
            StopAfter::Requests(_) => None,
        },
        measure_from,
        cancel: Arc::clone(&cancel),
    };
    let threads = config.effective_threads();
    let connections = config.effective_connections();
    let (ticks, reports) = mpsc::channel::<Tick>();
    let results: Vec<Result<Stats, LoadError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let ticks = ticks.clone();
                // Connections are dealt out as evenly as they go.
                let share = connections / threads + usize::from(index < connections % threads);
                let (request, budget, tls) = (&request, &budget, tls.as_ref());
                std::thread::Builder::new()
                    .name(format!("load-{index}"))
                    .spawn_scoped(scope, move || {
                        let mut worker = Worker::new(
                            config, tls, request, budget, share, ticks, start, index, threads,
                        )?;
                        if let Some(rate) = config.rate {
                            // Each worker keeps its share of the rate, its
                            // slots staggered against the other workers'.
                            let gap = Duration::from_secs_f64(threads as f64 / rate);
                            let offset = gap.mul_f64(index as f64 / threads as f64);
                            worker.schedule = Some((start + offset, gap));
                        }
                        worker.run()
                    })
                    .map_err(|e| LoadError::Io("starting a load thread", e))
            })
            .collect();
        drop(ticks);
        // Merge the workers' intervals (they all tick on the same
        // boundaries, in order) and hand interval k on once every worker
        // has either reported it or stopped.
        let mut pending: BTreeMap<u64, Snapshot> = BTreeMap::new();
        let mut reported: Vec<Option<u64>> = vec![None; threads];
        let mut finished = vec![false; threads];
        for tick in reports.iter() {
            match tick {
                Tick::Interval { worker, snapshot } => {
                    reported[worker] = Some(snapshot.index);
                    pending
                        .entry(snapshot.index)
                        .or_insert_with(|| {
                            Snapshot::empty(snapshot.index, snapshot.start, snapshot.warmup)
                        })
                        .merge(&snapshot);
                }
                Tick::Finished { worker } => finished[worker] = true,
            }
            while let Some(entry) = pending.first_entry() {
                let index = *entry.key();
                let complete =
                    (0..threads).all(|w| finished[w] || reported[w].is_some_and(|r| r >= index));
                if !complete {
                    break;
                }
                observe(&entry.remove());
            }
        }
        for (_, snapshot) in std::mem::take(&mut pending) {
            observe(&snapshot);
        }
        handles
            .into_iter()
            .map(|h| h.and_then(|h| h.join().unwrap_or(Err(LoadError::WorkerPanicked))))
            .collect()
    });
    let mut stats = Stats::default();
    for result in results {
        stats.merge(&result?);
    }
    let end = Instant::now();
    Ok(Report {
        stats,
        elapsed: end.saturating_duration_since(measure_from.min(end)),
        cancelled: cancel.load(Ordering::Relaxed),
    })
}

impl<'a> Worker<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: &'a LoadConfig,
        tls: Option<&'a TlsClient>,
        request: &'a [u8],
        budget: &'a Budget,
        connections: usize,
        ticks: mpsc::Sender<Tick>,
        run_start: Instant,
        id: usize,
        threads: usize,
    ) -> Result<Self, LoadError> {
        let now = Instant::now();
        let conns = (0..connections)
            .map(|_| Conn {
                stream: None,
                phase: Phase::Idle,
                // Grown by the first answer: reserving up front would cost
                // every connection, used or not, before the first request.
                buf: Vec::new(),
                checked: 0,
                sent: 0,
                started: now,
                connect_started: now,
                first_byte: None,
                deadline: now,
                reused: false,
                planned: now,
                done: false,
            })
            .collect();
        Ok(Worker {
            config,
            tls,
            request,
            budget,
            poll: Poll::new().map_err(|e| LoadError::Io("creating an epoll instance", e))?,
            conns,
            stats: Stats::default(),
            scratch: vec![0; 16 * 1024],
            schedule: None,
            free: Vec::new(),
            ticks,
            id,
            open_loop: config.rate.is_some(),
            head_request: config.method.eq_ignore_ascii_case("HEAD"),
            idempotent: ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"]
                .iter()
                .any(|m| config.method.eq_ignore_ascii_case(m)),
            tick: Snapshot::empty(0, Duration::ZERO, run_start < budget.measure_from),
            run_start,
            threads,
        })
    }

    /// How many of this worker's connections may carry requests now: all
    /// of them, or this worker's share of the live limit.
    fn active(&self) -> usize {
        match &self.config.live_limit {
            Some(limit) => {
                let limit = limit
                    .load(Ordering::Relaxed)
                    .min(self.config.effective_connections());
                let share = limit / self.threads + usize::from(self.id < limit % self.threads);
                share.min(self.conns.len())
            }
            None => self.conns.len(),
        }
    }

    /// With a live limit: starts the connections it lets in that wait, and
    /// retires the waiting ones once no more requests will be sent.
    fn follow_live_limit(&mut self) {
        if self.config.live_limit.is_none() {
            return;
        }
        if self.budget.exhausted() || self.budget.ended(Instant::now()) {
            for conn in &mut self.conns {
                if conn.phase == Phase::Idle && (!self.open_loop || self.schedule.is_none()) {
                    conn.done = true;
                    conn.stream = None;
                }
            }
            return;
        }
        if self.open_loop {
            return;
        }
        for index in 0..self.active() {
            let conn = &self.conns[index];
            if conn.phase == Phase::Idle && !conn.done {
                self.start_next(index);
            }
        }
    }

    fn run(mut self) -> Result<Stats, LoadError> {
        if self.schedule.is_some() {
            self.free = (0..self.conns.len()).rev().collect();
            self.dispatch();
        } else {
            for index in 0..self.active() {
                self.start_next(index);
            }
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if self.budget.ended(now) {
                // Requests still in flight at the end are neither answered
                // nor failed, only counted: the run is over. In the open
                // loop they, and
                // the requests due but never sent, still waited: that
                // wait goes into the planned-time histogram.
                self.count_unanswered_at_end(now);
                break;
            }
            if self.conns.iter().all(|c| c.done) {
                break;
            }
            // Open loop with -n: every request was sent and has ended.
            if self.open_loop
                && self.budget.exhausted()
                && self.conns.iter().all(|c| c.phase == Phase::Idle)
            {
                break;
            }
            let mut next_deadline = self
                .conns
                .iter()
                .filter(|c| c.phase != Phase::Idle)
                .map(|c| c.deadline)
                .min()
                .unwrap_or(now + Duration::from_millis(100));
            if let Some((due, _)) = self.schedule
                && self.next_free().is_some()
            {
                next_deadline = next_deadline.min(due);
            }
            if let Some(end) = self.budget.deadline {
                next_deadline = next_deadline.min(end);
            }
            // Wake at least every 100 ms to notice -z's end and Ctrl-C.
            let wait = next_deadline
                .saturating_duration_since(now)
                .min(Duration::from_millis(100));
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LoadError::Io("epoll_wait", e));
            }
            for event in events.iter() {
                let index = event.token().0;
                if event.is_writable() || event.is_error() || event.is_write_closed() {
                    self.on_writable(index);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(index);
                }
            }
            let now = Instant::now();
            for index in 0..self.conns.len() {
                let conn = &self.conns[index];
                if conn.phase != Phase::Idle && conn.deadline <= now {
                    self.fail(index, ErrorKind::Timeout);
                }
            }
            self.dispatch();
            self.follow_live_limit();
            self.report_ticks(false);
        }
        self.report_ticks(true);
        Ok(self.stats)
    }

    /// Sends every finished interval (and, at the end, the current one).
    fn report_ticks(&mut self, last: bool) {
        let now = Instant::now();
        loop {
            let end = self.run_start + SNAPSHOT_INTERVAL * (self.tick.index as u32 + 1);
            if !last && now < end {
                return;
            }
            let index = self.tick.index + 1;
            let start = SNAPSHOT_INTERVAL * index as u32;
            let next = Snapshot::empty(
                index,
                start,
                self.run_start + start < self.budget.measure_from,
            );
            let mut done = std::mem::replace(&mut self.tick, next);
            done.in_flight = self.conns.iter().filter(|c| c.phase != Phase::Idle).count();
            // The collector only goes away when the run is over.
            let _ = self.ticks.send(Tick::Interval {
                worker: self.id,
                snapshot: done,
            });
            if last {
                let _ = self.ticks.send(Tick::Finished { worker: self.id });
                return;
            }
        }
    }

    /// After a request on connection `index` ended: in the closed loop,
    /// begin the next one at once (or retire the connection when the budget
    /// is spent); in the open loop, hand the connection back to the
    /// schedule.
    fn start_next(&mut self, index: usize) {
        if self.open_loop {
            let conn = &mut self.conns[index];
            conn.phase = Phase::Idle;
            if !self.config.keep_alive {
                conn.stream = None;
            }
            if self.schedule.is_none() {
                // The budget is spent: nothing more will be sent.
                conn.stream = None;
                conn.done = true;
                return;
            }
            self.free.push(index);
            self.dispatch();
            return;
        }
        if index >= self.active() {
            // Above the live limit: wait, closed, until it grows.
            let conn = &mut self.conns[index];
            conn.stream = None;
            conn.phase = Phase::Idle;
            return;
        }
        // A refused connect fails at once; loop rather than recurse.
        loop {
            let now = Instant::now();
            if !self.budget.take(now) {
                let conn = &mut self.conns[index];
                conn.stream = None;
                conn.phase = Phase::Idle;
                conn.done = true;
                return;
            }
            if self.begin(index, now) {
                return;
            }
            // Avoid spinning on a target that refuses instantly.
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Open loop: starts every request whose slot has come, on free
    /// connections. A request that finds no free connection waits for one,
    /// and the wait counts in its latency (measured from its slot): a
    /// stalled server cannot hide the requests it delayed.
    fn dispatch(&mut self) {
        loop {
            let Some((due, gap)) = self.schedule else {
                return;
            };
            let now = Instant::now();
            let Some(position) = self.next_free() else {
                return;
            };
            if due > now {
                return;
            }
            if !self.budget.take(now) {
                if self.budget.ended(now) {
                    // The clock (or Ctrl-C) ended the run: the loop counts
                    // the backlog of the schedule as unanswered, so the
                    // schedule stays for it (dropping it here lost a random
                    // share of the backlog).
                    return;
                }
                // Spent (-n): drop the schedule, so it no longer wakes the
                // loop, and retire the idle connections.
                self.schedule = None;
                for index in self.free.drain(..) {
                    self.conns[index].stream = None;
                    self.conns[index].done = true;
                }
                return;
            }
            let index = self.free.remove(position);
            // The slot is taken before the request starts: starting it can
            // fail and come back here, which must see the next slot.
            self.schedule = Some((due + gap, gap));
            if !self.begin(index, due) {
                self.free.push(index);
            }
        }
    }

    /// Open loop, at the end of the run: every request in flight, and every
    /// slot of the schedule that came and found no free connection, counts
    /// as unanswered after the wait it had so far. Closed loop: the
    /// requests in flight are counted as such.
    fn count_unanswered_at_end(&mut self, now: Instant) {
        if now < self.budget.measure_from {
            return;
        }
        if !self.open_loop {
            // Closed loop: no schedule says when they should have ended, so
            // they are only counted, for the summary to name.
            self.stats.in_flight_at_end += self
                .conns
                .iter()
                .filter(|c| c.phase != Phase::Idle && c.planned >= self.budget.measure_from)
                .count() as u64;
            return;
        }
        let end = self.budget.deadline.map_or(now, |d| d.min(now));
        for conn in &self.conns {
            if conn.phase != Phase::Idle && conn.planned >= self.budget.measure_from {
                self.stats
                    .record_unanswered(end.saturating_duration_since(conn.planned));
            }
        }
        if let Some((due, gap)) = self.schedule.take() {
            // The first slot of the schedule at or after the measured
            // stretch's start (the grid does not move).
            let mut due = due;
            if due < self.budget.measure_from {
                let behind = (self.budget.measure_from - due).as_nanos();
                let steps = behind.div_ceil(gap.as_nanos().max(1));
                due += gap.saturating_mul(steps.min(u32::MAX as u128) as u32);
            }
            // Slots at due, due + gap, … before the end.
            let mut slots = end
                .saturating_duration_since(due)
                .as_nanos()
                .div_ceil(gap.as_nanos().max(1)) as u64;
            if let Some(remaining) = &self.budget.remaining {
                // A -n run stopped early: only what the budget had left,
                // taken from it so the workers do not count it twice.
                slots = remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n - n.min(slots))
                    })
                    .map_or(0, |before| before.min(slots));
            }
            // Slots one gap apart waited end - due, end - due - gap, …: a
            // huge backlog (a high rate, a long stall) is recorded in at
            // most 10 000 strides of equal counts.
            let stride = slots.div_ceil(10_000).max(1);
            let mut slot = 0;
            while slot < slots {
                let n = stride.min(slots - slot);
                let at = due + gap.saturating_mul(slot.min(u32::MAX as u64) as u32);
                self.stats
                    .record_unanswered_n(end.saturating_duration_since(at), n);
                slot += n;
            }
        }
    }

    /// Open loop: where in the free list the next connection to use is
    /// (the oldest free one the live limit lets in).
    fn next_free(&self) -> Option<usize> {
        let active = self.active();
        self.free.iter().position(|&index| index < active)
    }

    /// Starts a request due at `planned` on connection `index`; false if
    /// the connect failed at once (the error is counted).
    fn begin(&mut self, index: usize, planned: Instant) -> bool {
        let now = Instant::now();
        let conn = &mut self.conns[index];
        conn.started = now;
        conn.planned = planned;
        conn.deadline = now + self.config.timeout;
        conn.buf.clear();
        conn.checked = 0;
        conn.sent = 0;
        conn.first_byte = None;
        conn.reused = conn.stream.is_some();
        if conn.stream.is_some() {
            conn.phase = Phase::Writing;
            self.on_writable(index);
            return true;
        }
        let addr = self.config.target.addrs[0];
        let result = TcpStream::connect(addr).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let _ = stream.set_nodelay(true);
            match self.tls {
                Some(tls) => tls.connect(stream),
                None => Ok(Transport::Plain(stream)),
            }
        });
        match result {
            Ok(stream) => {
                let conn = &mut self.conns[index];
                conn.stream = Some(stream);
                conn.connect_started = now;
                conn.phase = Phase::Connecting;
                true
            }
            Err(e) => {
                self.record_error(ErrorKind::of_read(&e));
                false
            }
        }
    }

    /// A kept-alive connection that fails before any byte of the answer
    /// came was most likely closed by the server while idle (its keep-alive
    /// timeout): not the request's fault. Sends the request again, once, on
    /// a fresh connection with the same planned time. False if this was
    /// not such a case (the caller counts the failure).
    fn retry_stale(&mut self, index: usize) -> bool {
        let conn = &mut self.conns[index];
        // A POST the server may have acted on is never sent twice (RFC 9110
        // §9.2.2: only idempotent methods may be retried automatically).
        if !(conn.reused && conn.buf.is_empty() && self.idempotent) {
            return false;
        }
        if Instant::now() >= self.budget.measure_from {
            self.stats.retries += 1;
        }
        let conn = &mut self.conns[index];
        conn.stream = None;
        conn.phase = Phase::Idle;
        let planned = conn.planned;
        if !self.begin(index, planned) {
            self.start_next(index);
        }
        true
    }

    /// Counts a failed request, in the totals and in the current interval,
    /// unless it belongs to the warm-up.
    fn record_error(&mut self, kind: ErrorKind) {
        if Instant::now() >= self.budget.measure_from {
            self.stats.record_error(kind);
            *self.tick.errors.entry(kind).or_insert(0) += 1;
        }
    }

    fn fail(&mut self, index: usize, kind: ErrorKind) {
        self.record_error(kind);
        let conn = &self.conns[index];
        if self.open_loop && kind == ErrorKind::Timeout && conn.planned >= self.budget.measure_from
        {
            self.stats.record_unanswered(conn.planned.elapsed());
        }
        let conn = &mut self.conns[index];
        conn.stream = None;
        conn.phase = Phase::Idle;
        self.start_next(index);
    }

    /// [`Worker::fail`] for an I/O error, keeping what the first TLS
    /// failure said.
    fn fail_with(&mut self, index: usize, error: &io::Error, kind: ErrorKind) {
        if self.stats.first_tls_error.is_none() {
            self.stats.first_tls_error = tls_failure(error);
        }
        self.fail(index, kind);
    }

    fn on_writable(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        if conn.phase == Phase::Reading {
            // https: the rest of what TLS queued (a handshake message the
            // socket did not take at once).
            if let Some(Err(e)) = conn.stream.as_mut().map(Transport::send_queued) {
                self.fail_with(index, &e, ErrorKind::of_write(&e));
            }
            return;
        }
        if conn.phase == Phase::Connecting {
            let Some(stream) = conn.stream.as_ref().map(Transport::tcp) else {
                return;
            };
            // mio's recipe: a writable socket has connected, unless it
            // carries an error or has no peer yet.
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(index, ErrorKind::of_read(&e)),
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(index, ErrorKind::of_read(&e)),
            }
            let took = conn.connect_started.elapsed();
            conn.phase = Phase::Writing;
            if Instant::now() >= self.budget.measure_from {
                self.stats.record_connect(took);
            }
        }
        let conn = &mut self.conns[index];
        if conn.phase != Phase::Writing {
            return;
        }
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        while conn.sent < self.request.len() {
            match stream.write(&self.request[conn.sent..]) {
                Ok(0) => return self.fail(index, ErrorKind::Write),
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if !self.retry_stale(index) {
                        self.fail_with(index, &e, ErrorKind::of_write(&e));
                    }
                    return;
                }
            }
        }
        conn.phase = Phase::Reading;
    }

    fn on_readable(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        if conn.phase == Phase::Writing {
            // https: a request TLS could not take whole before the
            // handshake was done goes on once the server's part is read.
            if let Some(Err(e)) = conn.stream.as_mut().map(Transport::advance_handshake) {
                return self.fail_with(index, &e, ErrorKind::of_read(&e));
            }
            return self.on_writable(index);
        }
        if conn.phase != Phase::Reading {
            return;
        }
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        let scratch = &mut self.scratch;
        let mut closed = false;
        loop {
            match stream.read(scratch) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    conn.buf.extend_from_slice(&scratch[..n]);
                    conn.first_byte.get_or_insert_with(Instant::now);
                    if conn.buf.len() > crate::response::MAX_RESPONSE {
                        // Past the cap the answer is refused anyway: stop
                        // reading, so a server that writes faster than we
                        // read can neither grow the buffer nor hold this
                        // loop (and the timers) for long.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A whole answer (by its length or chunks) then a reset: the
                // server closed with our bytes unread, after answering. An
                // answer, as curl counts it, not a reset.
                Err(_) if answered_before_close(&conn.buf, self.head_request) => {
                    closed = true;
                    break;
                }
                Err(e) => {
                    if !self.retry_stale(index) {
                        self.fail_with(index, &e, ErrorKind::of_read(&e));
                    }
                    return;
                }
            }
        }
        match progress_resuming(&conn.buf, closed, self.head_request, &mut conn.checked) {
            Progress::Complete { head, len } => {
                let now = Instant::now();
                if conn.planned >= self.budget.measure_from {
                    let first_byte = conn.first_byte.unwrap_or(now) - conn.started;
                    self.stats
                        .record_response(head.status, now - conn.started, first_byte, len);
                    let shown = if self.open_loop {
                        self.stats
                            .record_schedule(now - conn.planned, conn.started - conn.planned);
                        now - conn.planned
                    } else {
                        now - conn.started
                    };
                    self.tick
                        .latency
                        .saturating_record(crate::stats::nanos(shown));
                    *self.tick.statuses.entry(head.status).or_insert(0) += 1;
                }
                let reuse =
                    self.config.keep_alive && head.keep_alive && !closed && len == conn.buf.len();
                if !reuse {
                    conn.stream = None;
                }
                conn.phase = Phase::Idle;
                self.start_next(index);
            }
            Progress::Invalid => self.fail(index, ErrorKind::BadResponse),
            Progress::TooLarge => self.fail(index, ErrorKind::TooLarge),
            Progress::Incomplete if closed => {
                // A close before a whole answer is a bad response, unless
                // it is a kept-alive connection the server had dropped.
                if !self.retry_stale(index) {
                    self.fail(index, ErrorKind::BadResponse);
                }
            }
            Progress::Incomplete => {}
        }
    }
}

/// Whether `buf` holds a whole answer whose end does not depend on the
/// server closing (a Content-Length or chunked body, or none).
fn answered_before_close(buf: &[u8], head_request: bool) -> bool {
    matches!(
        progress_resuming(buf, false, head_request, &mut 0),
        Progress::Complete { .. }
    )
}
