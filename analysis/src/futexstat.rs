//! Futex insight: per futex word, how often threads slept on it and were
//! woken, how many waiters each wake started, how long a woken waiter took
//! to run, and thundering herds.
//!
//! [`FutexStats`] is fed one [`Event`] at a time (live or from a file).
//! A futex word is known by its process and address ([`FutexKey`]):
//! private futexes (`FUTEX_PRIVATE_FLAG`, what glibc and our server use)
//! live in one address space, so the same address in two processes is two
//! words. Shared futexes mapped at different addresses in two processes
//! are counted as two words, which is a limit of working from syscalls.
//!
//! # Matching wakes to waiters
//!
//! FUTEX_WAKE returns how many waiters it woke, but not which. A wait that
//! returns 0 on a word is matched to the oldest wake on the same word that
//! was entered before that return and has not yet been matched to as many
//! waiters as it woke (while the wake has not returned, its count is not
//! known and any number may match). Its **wake-to-run** time runs from the
//! wake's entry (the earliest moment the kernel can have woken it: a
//! ptrace entry stop comes before the call does anything) to the return of
//! the wait (when the woken thread runs again). Wakes that stay unmatched
//! for [`FutexConfig::match_window_ns`] are forgotten. A wait that returns
//! 0 with no wake to match (the wakes were not traced, e.g. under
//! `-e futex=wait`, or a spurious wake-up) is counted in
//! [`AddressStats::unmatched_wakeups`].
//!
//! # Thundering herds
//!
//! A woken waiter **goes straight back** to waiting when the next futex
//! wait it enters is on the same word and it enters no other syscall than
//! futex calls before it (relocking a contended mutex is allowed on the
//! way). A wake that woke at least [`FutexConfig::herd_threshold`] waiters
//! of which more than half went straight back is a herd: many threads were
//! started for work that only some of them could do.

use std::collections::{BTreeMap, VecDeque};

use foldhash::{HashMap, HashMapExt};
use std::fmt;

use hdrhistogram::Histogram;
use syscalls::Sysno;

use tracebench_histogram::latency_histogram;
use tracebench_trace::{Event, EventKind, EventSink};

/// Limits and thresholds of [`FutexStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutexConfig {
    /// A wake that starts at least this many waiters, most of which go
    /// straight back to waiting, is a thundering herd.
    pub herd_threshold: u32,
    /// Futex words tracked; calls on further words are only counted in
    /// [`FutexStats::untracked_calls`].
    pub max_addresses: usize,
    /// How long after its entry a wake can still be matched to a waiter.
    pub match_window_ns: u64,
    /// Herds kept in [`FutexStats::herds`] (the most recent).
    pub max_herds_kept: usize,
    /// Unmatched wakes kept per word.
    pub max_pending_wakes: usize,
}

impl Default for FutexConfig {
    fn default() -> Self {
        FutexConfig {
            herd_threshold: 3,
            max_addresses: 4096,
            match_window_ns: 1_000_000_000,
            max_herds_kept: 100,
            max_pending_wakes: 64,
        }
    }
}

/// A futex word: a process and an address in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FutexKey {
    /// The process (thread group) whose address space holds the word.
    pub pid: i32,
    /// The word's address.
    pub addr: u64,
}

/// Count, total, maximum and power-of-two buckets of durations: small
/// enough to keep one per futex word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSummary {
    /// Durations recorded.
    pub count: u64,
    /// Their sum, ns.
    pub total_ns: u64,
    /// The longest, ns.
    pub max_ns: u64,
    /// `buckets[i]` counts durations `d` with `2^(i-1) <= d < 2^i` ns
    /// (`buckets[0]` counts zeros).
    pub buckets: [u64; 65],
}

impl Default for DurationSummary {
    fn default() -> Self {
        DurationSummary {
            count: 0,
            total_ns: 0,
            max_ns: 0,
            buckets: [0; 65],
        }
    }
}

impl DurationSummary {
    /// Adds one duration.
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns = self.total_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
        self.buckets[(u64::BITS - ns.leading_zeros()) as usize] += 1;
    }

    /// The mean, ns (0 when empty).
    pub fn mean_ns(&self) -> u64 {
        self.total_ns.checked_div(self.count).unwrap_or(0)
    }

    /// An upper bound (the next power of two, at most the maximum) of the
    /// `quantile` (0..=1), ns; 0 when empty.
    pub fn quantile_bound_ns(&self, quantile: f64) -> u64 {
        let wanted = ((self.count as f64) * quantile.clamp(0.0, 1.0))
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= wanted && self.count > 0 {
                let bound = if i >= 64 { u64::MAX } else { (1u64 << i) - 1 };
                return bound.min(self.max_ns);
            }
        }
        0
    }

    fn add(&mut self, other: &DurationSummary) {
        self.count += other.count;
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
    }
}

/// How many entries [`AddressStats::wakes_by_woken`] has; the last counts
/// wakes that woke that many waiters or more.
pub const WOKEN_BUCKETS: usize = 8;

/// What happened on one futex word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressStats {
    /// FUTEX_WAIT and FUTEX_WAIT_BITSET calls that returned.
    pub waits: u64,
    /// Waits that returned 0: woken by a wake (or spuriously).
    pub woken: u64,
    /// Waits refused with EAGAIN: the word had already changed, so the
    /// kernel did not sleep (the lost-wake-up protection at work).
    pub eagain: u64,
    /// Waits that ended with ETIMEDOUT.
    pub timeouts: u64,
    /// Waits interrupted by a signal (EINTR, ERESTARTSYS and kin).
    pub interrupted: u64,
    /// Waits that failed otherwise.
    pub other_errors: u64,
    /// Time inside the wait of every wait but the EAGAIN ones, ns.
    pub wait_time: DurationSummary,
    /// FUTEX_WAKE, FUTEX_WAKE_BITSET and FUTEX_WAKE_OP calls that returned.
    pub wakes: u64,
    /// The sum of their return values: waiters woken.
    pub waiters_woken: u64,
    /// `wakes_by_woken[n]`: wakes that woke `n` waiters (the last entry:
    /// that many or more). `wakes_by_woken[0]` are wakes that found nobody.
    pub wakes_by_woken: [u64; WOKEN_BUCKETS],
    /// From a wake's entry to the return of a waiter it woke, ns.
    pub wake_to_run: DurationSummary,
    /// With the scheduler's events (the perf backend), the first part of
    /// wake-to-run: from the wake's entry until the waiter was runnable.
    pub wake_to_runnable: DurationSummary,
    /// …and the second: from runnable until it ran on a CPU (its wait in
    /// the run queue).
    pub runnable_to_running: DurationSummary,
    /// Waits that returned 0 with no traced wake to match.
    pub unmatched_wakeups: u64,
    /// Wakes flagged as thundering herds.
    pub herds: u64,
    /// Other futex operations (requeue, PI locks, …).
    pub other_ops: u64,
}

impl AddressStats {
    /// Waits plus wakes plus other operations: how busy the word is.
    pub fn calls(&self) -> u64 {
        self.waits + self.wakes + self.other_ops
    }

    /// Mean waiters woken per wake.
    pub fn woken_per_wake(&self) -> f64 {
        if self.wakes == 0 {
            0.0
        } else {
            self.waiters_woken as f64 / self.wakes as f64
        }
    }

    fn add(&mut self, other: &AddressStats) {
        self.waits += other.waits;
        self.woken += other.woken;
        self.eagain += other.eagain;
        self.timeouts += other.timeouts;
        self.interrupted += other.interrupted;
        self.other_errors += other.other_errors;
        self.wait_time.add(&other.wait_time);
        self.wakes += other.wakes;
        self.waiters_woken += other.waiters_woken;
        for (mine, theirs) in self
            .wakes_by_woken
            .iter_mut()
            .zip(other.wakes_by_woken.iter())
        {
            *mine += theirs;
        }
        self.wake_to_run.add(&other.wake_to_run);
        self.wake_to_runnable.add(&other.wake_to_runnable);
        self.runnable_to_running.add(&other.runnable_to_running);
        self.unmatched_wakeups += other.unmatched_wakeups;
        self.herds += other.herds;
        self.other_ops += other.other_ops;
    }
}

/// One wake flagged as a thundering herd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HerdEvent {
    /// The word.
    pub key: FutexKey,
    /// The thread that called FUTEX_WAKE.
    pub waker_tid: i32,
    /// The wake's entry, CLOCK_MONOTONIC ns.
    pub wake_ns: u64,
    /// Waiters it woke (its return value).
    pub woken: u32,
    /// Of those, how many were seen to go straight back to waiting on the
    /// same word.
    pub went_back: u32,
}

/// A wake whose waiters are still being matched or watched.
#[derive(Debug, Clone)]
struct PendingWake {
    id: u64,
    tid: i32,
    entry_ns: u64,
    /// Its return value, once it returned.
    woke: Option<u32>,
    matched: u32,
    resolved: u32,
    went_back: u32,
}

#[derive(Debug, Clone, Default)]
struct Word {
    stats: AddressStats,
    pending: VecDeque<PendingWake>,
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Wait,
    Wake { id: u64 },
    Other,
}

#[derive(Debug, Clone, Default)]
struct ThreadFutex {
    /// The futex call it is inside: its word, kind and entry time.
    inside: Option<(FutexKey, Call, u64)>,
    /// A wake that woke it and whose verdict (back to waiting or not) is
    /// still open.
    woken_by: Option<(FutexKey, u64)>,
    /// While inside a wait, what the scheduler said (perf backend): when it
    /// was made runnable and by whom, and when it then got a CPU.
    scheduled: Option<Scheduled>,
}

/// A waiter's wake-up as the scheduler saw it.
#[derive(Debug, Clone, Copy)]
struct Scheduled {
    runnable_ns: u64,
    waker_tid: i32,
    /// The entry of the futex wake the waker was inside, if it was: the
    /// exact wake, even across processes (where a shared futex's words
    /// are counted apart and matching by word cannot pair them).
    wake_entry_ns: Option<u64>,
    running_ns: Option<u64>,
}

/// Wake-to-run split by the scheduler's events, all words, ns.
#[derive(Debug, Clone)]
struct SchedulerTimes {
    wake_to_runnable: Histogram<u64>,
    runnable_to_running: Histogram<u64>,
}

/// The most (waker, woken) pairs [`FutexStats::wakeups`] keeps.
const MAX_WAKEUP_PAIRS: usize = 4096;

/// Futex statistics of a stream of events; see the module docs. Print the
/// top words and the herds with [`FutexStats::report`] or `Display`.
#[derive(Debug, Clone)]
pub struct FutexStats {
    config: FutexConfig,
    words: BTreeMap<FutexKey, Word>,
    threads: HashMap<i32, ThreadFutex>,
    herds: VecDeque<HerdEvent>,
    next_wake_id: u64,
    untracked_calls: u64,
    wait_time: Histogram<u64>,
    wake_to_run: Histogram<u64>,
    /// Made on the first woken waiter the scheduler was seen for (the
    /// perf backend): two histograms are 1 MB, and a replay keeps copies.
    scheduler: Option<Box<SchedulerTimes>>,
    /// Futex wake-ups by (waker tid, woken tid), from the scheduler.
    wakeups: BTreeMap<(i32, i32), u64>,
    first_ns: Option<u64>,
    /// The waiters matched to their wakes since the last
    /// [`FutexStats::take_matches`], kept only when asked for
    /// ([`FutexStats::keep_matches`]).
    matches: Option<Vec<WakeMatch>>,
}

/// A woken waiter matched to the wake that woke it (see "Matching wakes to
/// waiters" above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeMatch {
    /// The word.
    pub key: FutexKey,
    /// The thread that called FUTEX_WAKE, and when it entered the call.
    pub waker_tid: i32,
    /// When the wake was entered, ns.
    pub wake_entry_ns: u64,
    /// The thread whose wait it ended.
    pub waiter_tid: i32,
    /// When that wait returned, ns.
    pub wait_return_ns: u64,
}

impl Default for FutexStats {
    fn default() -> Self {
        Self::with_config(FutexConfig::default())
    }
}

/// Negated errnos a wait can end with.
const EAGAIN: i64 = -(libc::EAGAIN as i64);
const ETIMEDOUT: i64 = -(libc::ETIMEDOUT as i64);
const EINTR: i64 = -(libc::EINTR as i64);
/// The kernel-internal restart codes a tracer can see at a syscall exit
/// (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK).
const RESTARTS: [i64; 4] = [-512, -513, -514, -516];

fn classify(op: u64) -> Call {
    let command = (op as u32 as i32) & libc::FUTEX_CMD_MASK;
    match command {
        libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET => Call::Wait,
        libc::FUTEX_WAKE | libc::FUTEX_WAKE_BITSET | libc::FUTEX_WAKE_OP => Call::Wake { id: 0 },
        _ => Call::Other,
    }
}

impl FutexStats {
    /// Statistics with the default thresholds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Statistics with these thresholds and limits.
    pub fn with_config(config: FutexConfig) -> Self {
        FutexStats {
            config,
            words: BTreeMap::new(),
            threads: HashMap::new(),
            herds: VecDeque::new(),
            next_wake_id: 0,
            untracked_calls: 0,
            wait_time: latency_histogram(),
            wake_to_run: latency_histogram(),
            scheduler: None,
            wakeups: BTreeMap::new(),
            first_ns: None,
            matches: None,
        }
    }

    /// From now on, keep every match of a waiter to its wake for
    /// [`FutexStats::take_matches`] (an exporter drawing who woke whom
    /// takes them after each event, so they never pile up).
    pub fn keep_matches(&mut self) {
        self.matches.get_or_insert_with(Vec::new);
    }

    /// The matches made since the last call (none unless
    /// [`FutexStats::keep_matches`] was called).
    pub fn take_matches(&mut self) -> Vec<WakeMatch> {
        self.matches
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The statistics of one word, if it was seen.
    pub fn get(&self, pid: i32, addr: u64) -> Option<&AddressStats> {
        self.words.get(&FutexKey { pid, addr }).map(|w| &w.stats)
    }

    /// Every word seen, in (pid, address) order.
    pub fn addresses(&self) -> impl Iterator<Item = (FutexKey, &AddressStats)> {
        self.words.iter().map(|(k, w)| (*k, &w.stats))
    }

    /// The `n` busiest words (most calls first).
    pub fn top(&self, n: usize) -> Vec<(FutexKey, &AddressStats)> {
        let mut all: Vec<_> = self.addresses().collect();
        all.sort_by(|a, b| b.1.calls().cmp(&a.1.calls()).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Every word's statistics added up.
    pub fn totals(&self) -> AddressStats {
        let mut total = AddressStats::default();
        for word in self.words.values() {
            total.add(&word.stats);
        }
        total
    }

    /// The most recent herds, oldest first.
    pub fn herds(&self) -> impl Iterator<Item = &HerdEvent> {
        self.herds.iter()
    }

    /// Futex calls on words beyond [`FutexConfig::max_addresses`].
    pub fn untracked_calls(&self) -> u64 {
        self.untracked_calls
    }

    /// Time inside every wait but EAGAIN ones, all words, ns.
    pub fn wait_time(&self) -> &Histogram<u64> {
        &self.wait_time
    }

    /// Wake-to-run time of every matched waiter, all words, ns.
    pub fn wake_to_run(&self) -> &Histogram<u64> {
        &self.wake_to_run
    }

    /// From a wake's entry until its waiter was runnable, every matched
    /// waiter the scheduler was seen for (perf backend), ns.
    pub fn wake_to_runnable(&self) -> Option<&Histogram<u64>> {
        self.scheduler.as_ref().map(|s| &s.wake_to_runnable)
    }

    /// From runnable until on a CPU, the same waiters, ns.
    pub fn runnable_to_running(&self) -> Option<&Histogram<u64>> {
        self.scheduler.as_ref().map(|s| &s.runnable_to_running)
    }

    /// Who woke whom out of a futex wait: (waker tid, woken tid) and how
    /// often, from the scheduler's wake-up events (perf backend; empty
    /// otherwise). A waker tid of 0 is an interrupt or the idle task.
    pub fn wakeups(&self) -> &BTreeMap<(i32, i32), u64> {
        &self.wakeups
    }

    /// A printable table of the `top` busiest words and the herds.
    pub fn report(&self, top: usize) -> FutexReport<'_> {
        FutexReport { stats: self, top }
    }

    /// Feeds one event.
    pub fn feed(&mut self, event: &Event) {
        self.first_ns.get_or_insert(event.time_ns);
        let (pid, tid, at) = (event.pid, event.tid, event.time_ns);
        match &event.kind {
            EventKind::SyscallEntry { nr, args, .. } => {
                let futex = *nr as usize == Sysno::futex.id() as usize;
                let key = FutexKey { pid, addr: args[0] };
                let call = futex.then(|| classify(args[1]));
                self.settle_verdict(tid, call.map(|c| (key, c)));
                let thread = self.threads.entry(tid).or_default();
                thread.inside = None;
                thread.scheduled = None;
                let Some(call) = call else {
                    return;
                };
                if !self.words.contains_key(&key) && self.words.len() >= self.config.max_addresses {
                    self.untracked_calls += 1;
                    return;
                }
                let word = self.words.entry(key).or_default();
                let call = match call {
                    Call::Wake { .. } => {
                        let id = self.next_wake_id;
                        self.next_wake_id += 1;
                        word.pending.push_back(PendingWake {
                            id,
                            tid,
                            entry_ns: at,
                            woke: None,
                            matched: 0,
                            resolved: 0,
                            went_back: 0,
                        });
                        Call::Wake { id }
                    }
                    other => other,
                };
                self.threads.entry(tid).or_default().inside = Some((key, call, at));
                self.forget_stale(key, at);
            }
            EventKind::SyscallExit { nr, ret, .. } => {
                let inside = self.threads.get_mut(&tid).and_then(|t| t.inside.take());
                if *nr as usize != Sysno::futex.id() as usize {
                    return;
                }
                let Some((key, call, entered)) = inside else {
                    return;
                };
                self.returned(key, call, tid, entered, at, *ret);
            }
            EventKind::Exited { .. } => {
                self.settle_verdict(tid, None);
                self.threads.remove(&tid);
            }
            EventKind::Woken { waker_tid, .. } => self.scheduler_woke(tid, *waker_tid, at),
            EventKind::OnCpu { .. } => {
                if let Some(scheduled) = self
                    .threads
                    .get_mut(&tid)
                    .and_then(|t| t.scheduled.as_mut())
                {
                    scheduled.running_ns.get_or_insert(at);
                }
            }
            _ => {}
        }
    }

    /// The scheduler made `tid` runnable: if it sleeps in a futex wait,
    /// remember when and by whom, for the wait's return.
    fn scheduler_woke(&mut self, tid: i32, waker_tid: i32, at: u64) {
        let wake_entry_ns = match self.threads.get(&waker_tid).and_then(|t| t.inside) {
            Some((_, Call::Wake { .. }, entered)) => Some(entered),
            _ => None,
        };
        let Some(thread) = self.threads.get_mut(&tid) else {
            return;
        };
        if matches!(thread.inside, Some((_, Call::Wait, _))) && thread.scheduled.is_none() {
            thread.scheduled = Some(Scheduled {
                runnable_ns: at,
                waker_tid,
                wake_entry_ns,
                running_ns: None,
            });
        }
    }

    /// A woken waiter's wake-to-run split by the scheduler's events: from
    /// the wake (`wake_ns`, if known) to runnable, and runnable to running.
    fn record_scheduled(
        &mut self,
        key: FutexKey,
        tid: i32,
        scheduled: Scheduled,
        wake_ns: Option<u64>,
    ) {
        let running_ns = scheduled.running_ns.unwrap_or(scheduled.runnable_ns);
        let queued = running_ns.saturating_sub(scheduled.runnable_ns);
        let to_runnable = wake_ns.map(|w| scheduled.runnable_ns.saturating_sub(w));
        if let Some(word) = self.words.get_mut(&key) {
            if let Some(ns) = to_runnable {
                word.stats.wake_to_runnable.record(ns);
            }
            word.stats.runnable_to_running.record(queued);
        }
        let times = self.scheduler.get_or_insert_with(|| {
            Box::new(SchedulerTimes {
                wake_to_runnable: latency_histogram(),
                runnable_to_running: latency_histogram(),
            })
        });
        if let Some(ns) = to_runnable {
            times.wake_to_runnable.saturating_record(ns);
        }
        times.runnable_to_running.saturating_record(queued);
        let pair = (scheduled.waker_tid, tid);
        if self.wakeups.contains_key(&pair) || self.wakeups.len() < MAX_WAKEUP_PAIRS {
            *self.wakeups.entry(pair).or_insert(0) += 1;
        }
    }

    fn returned(&mut self, key: FutexKey, call: Call, tid: i32, entered: u64, at: u64, ret: i64) {
        let Some(word) = self.words.get_mut(&key) else {
            return;
        };
        let stats = &mut word.stats;
        match call {
            Call::Wait => {
                stats.waits += 1;
                match ret {
                    0 => stats.woken += 1,
                    EAGAIN => stats.eagain += 1,
                    ETIMEDOUT => stats.timeouts += 1,
                    EINTR => stats.interrupted += 1,
                    r if RESTARTS.contains(&r) => stats.interrupted += 1,
                    _ => stats.other_errors += 1,
                }
                if ret != EAGAIN {
                    let slept = at.saturating_sub(entered);
                    stats.wait_time.record(slept);
                    self.wait_time.saturating_record(slept);
                }
                if ret == 0 {
                    let scheduled = self.threads.get_mut(&tid).and_then(|t| t.scheduled.take());
                    // The scheduler names the exact wake, even across
                    // processes; without it, matching by word does.
                    let matched = self.match_waiter(key, tid, at);
                    let exact = scheduled.and_then(|s| s.wake_entry_ns);
                    if let Some(wake_ns) = exact.or(matched) {
                        self.record_wake_to_run(key, at.saturating_sub(wake_ns));
                    }
                    if let Some(scheduled) = scheduled {
                        self.record_scheduled(key, tid, scheduled, exact.or(matched));
                    }
                }
            }
            Call::Wake { id } => {
                let woke = if ret >= 0 {
                    stats.wakes += 1;
                    stats.waiters_woken += ret as u64;
                    stats.wakes_by_woken[(ret as usize).min(WOKEN_BUCKETS - 1)] += 1;
                    u32::try_from(ret).unwrap_or(u32::MAX)
                } else {
                    stats.other_ops += 1;
                    0
                };
                if let Some(wake) = word.pending.iter_mut().find(|w| w.id == id) {
                    wake.woke = Some(woke);
                }
                self.try_complete(key, id);
            }
            Call::Other => stats.other_ops += 1,
        }
    }

    /// A waiter on `key` returned 0 at `at`: find the wake that woke it.
    /// Returns the matched wake's entry time.
    fn match_waiter(&mut self, key: FutexKey, tid: i32, at: u64) -> Option<u64> {
        let word = self.words.get_mut(&key)?;
        let candidate = word
            .pending
            .iter_mut()
            .find(|w| w.entry_ns <= at && w.woke.is_none_or(|n| w.matched < n));
        let Some(wake) = candidate else {
            word.stats.unmatched_wakeups += 1;
            return None;
        };
        wake.matched += 1;
        let (id, wake_entry_ns) = (wake.id, wake.entry_ns);
        if let Some(matches) = &mut self.matches {
            matches.push(WakeMatch {
                key,
                waker_tid: wake.tid,
                wake_entry_ns,
                waiter_tid: tid,
                wait_return_ns: at,
            });
        }
        self.threads.entry(tid).or_default().woken_by = Some((key, id));
        self.try_complete(key, id);
        Some(wake_entry_ns)
    }

    fn record_wake_to_run(&mut self, key: FutexKey, latency: u64) {
        if let Some(word) = self.words.get_mut(&key) {
            word.stats.wake_to_run.record(latency);
        }
        self.wake_to_run.saturating_record(latency);
    }

    /// Thread `tid` enters a syscall (`call`: a futex call on a word) or
    /// exits (`None`): decide whether it went straight back to waiting on
    /// the word it was woken from.
    fn settle_verdict(&mut self, tid: i32, call: Option<(FutexKey, Call)>) {
        let Some(thread) = self.threads.get_mut(&tid) else {
            return;
        };
        let Some((key, id)) = thread.woken_by else {
            return;
        };
        let went_back = match call {
            Some((k, Call::Wait)) if k == key => true,
            // Other futex calls (a contended relock) on the way back are
            // part of going back.
            Some(_) => return,
            None => false,
        };
        thread.woken_by = None;
        if let Some(wake) = self
            .words
            .get_mut(&key)
            .and_then(|w| w.pending.iter_mut().find(|w| w.id == id))
        {
            wake.resolved += 1;
            wake.went_back += u32::from(went_back);
        }
        self.try_complete(key, id);
    }

    /// Forgets wake `id` once every waiter it woke is matched and settled,
    /// flagging it as a herd if it was one.
    fn try_complete(&mut self, key: FutexKey, id: u64) {
        let Some(word) = self.words.get_mut(&key) else {
            return;
        };
        let Some(index) = word.pending.iter().position(|w| w.id == id) else {
            return;
        };
        let wake = &word.pending[index];
        let done = wake
            .woke
            .is_some_and(|n| wake.matched >= n && wake.resolved >= wake.matched);
        if done && let Some(wake) = word.pending.remove(index) {
            self.judge(key, &wake);
        }
    }

    /// Drops wakes of `key` older than the match window (and beyond the
    /// per-word limit), judging them on what was seen.
    fn forget_stale(&mut self, key: FutexKey, now: u64) {
        let Some(word) = self.words.get_mut(&key) else {
            return;
        };
        let mut stale = Vec::new();
        while let Some(oldest) = word.pending.front() {
            let too_old = oldest.entry_ns.saturating_add(self.config.match_window_ns) < now;
            if !too_old && word.pending.len() <= self.config.max_pending_wakes {
                break;
            }
            stale.extend(word.pending.pop_front());
        }
        for wake in stale {
            self.judge(key, &wake);
        }
    }

    fn judge(&mut self, key: FutexKey, wake: &PendingWake) {
        let Some(woke) = wake.woke else {
            return;
        };
        if woke >= self.config.herd_threshold && u64::from(wake.went_back) * 2 > u64::from(woke) {
            if let Some(word) = self.words.get_mut(&key) {
                word.stats.herds += 1;
            }
            if self.herds.len() >= self.config.max_herds_kept {
                self.herds.pop_front();
            }
            if self.config.max_herds_kept > 0 {
                self.herds.push_back(HerdEvent {
                    key,
                    waker_tid: wake.tid,
                    wake_ns: wake.entry_ns,
                    woken: woke,
                    went_back: wake.went_back,
                });
            }
        }
    }
}

impl EventSink for FutexStats {
    fn event(&mut self, event: &Event) {
        self.feed(event);
    }
}

impl fmt::Display for FutexStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.report(10))
    }
}

/// The futex table of `-c`: the busiest words, then the herds.
#[derive(Debug)]
pub struct FutexReport<'a> {
    stats: &'a FutexStats,
    top: usize,
}

impl FutexReport<'_> {
    /// What the scheduler's events add (perf backend), or that they are
    /// missing.
    fn scheduler(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats;
        let us = |ns: u64| ns as f64 / 1e3;
        let Some(times) = &stats.scheduler else {
            return writeln!(
                f,
                "wake->runnable, runnable->running (run-queue wait), who woke whom: needs --backend perf"
            );
        };
        {
            writeln!(
                f,
                "of which wake->runnable p50 {:.1} p99 {:.1}, runnable->running p50 {:.1} p99 {:.1} usecs over {} woken waiters the scheduler was seen for",
                us(times.wake_to_runnable.value_at_quantile(0.5)),
                us(times.wake_to_runnable.value_at_quantile(0.99)),
                us(times.runnable_to_running.value_at_quantile(0.5)),
                us(times.runnable_to_running.value_at_quantile(0.99)),
                times.runnable_to_running.len()
            )?;
            let mut pairs: Vec<_> = stats.wakeups.iter().collect();
            pairs.sort_by(|a, b| b.1.cmp(a.1));
            let shown: Vec<String> = pairs
                .iter()
                .take(self.top)
                .map(|((waker, woken), n)| format!("{waker}->{woken} x{n}"))
                .collect();
            writeln!(f, "who woke whom (waker->woken): {}", shown.join(", "))?;
        }
        Ok(())
    }

    /// The thundering herds, the latest `top` of them.
    fn herds(&self, f: &mut fmt::Formatter<'_>, herds: u64) -> fmt::Result {
        let stats = self.stats;
        if herds == 0 {
            writeln!(
                f,
                "thundering herds: none (no wake started >= {} waiters that mostly went back to sleep)",
                stats.config.herd_threshold
            )?;
        } else {
            writeln!(f, "thundering herds: {herds}")?;
            let start = stats.first_ns.unwrap_or(0);
            for herd in stats.herds.iter().rev().take(self.top).rev() {
                writeln!(
                    f,
                    "  HERD at +{:.6}s pid {} {:#x}: one wake by tid {} woke {}, {} went straight back to waiting",
                    herd.wake_ns.saturating_sub(start) as f64 / 1e9,
                    herd.key.pid,
                    herd.key.addr,
                    herd.waker_tid,
                    herd.woken,
                    herd.went_back
                )?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for FutexReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats;
        if stats.words.is_empty() {
            return writeln!(f, "futex: no futex calls traced");
        }
        let us = |ns: u64| ns as f64 / 1e3;
        writeln!(
            f,
            "futex words: {} (top {} by calls); times in usecs",
            stats.words.len(),
            self.top.min(stats.words.len())
        )?;
        writeln!(
            f,
            "{:>7} {:>18} {:>8} {:>8} {:>7} {:>7} {:>5} {:>8} {:>9} {:>10} {:>10} {:>10} {:>5}",
            "pid",
            "address",
            "waits",
            "woken",
            "eagain",
            "timeout",
            "intr",
            "wakes",
            "woke/wake",
            "wait avg",
            "wait max",
            "wake->run",
            "herds"
        )?;
        for (key, s) in stats.top(self.top) {
            writeln!(
                f,
                "{:>7} {:>18} {:>8} {:>8} {:>7} {:>7} {:>5} {:>8} {:>9.2} {:>10.1} {:>10.1} {:>10.1} {:>5}",
                key.pid,
                format!("{:#x}", key.addr),
                s.waits,
                s.woken,
                s.eagain,
                s.timeouts,
                s.interrupted,
                s.wakes,
                s.woken_per_wake(),
                us(s.wait_time.mean_ns()),
                us(s.wait_time.max_ns),
                us(s.wake_to_run.mean_ns()),
                s.herds
            )?;
        }
        let total = stats.totals();
        let empty_wakes = total.wakes_by_woken[0];
        writeln!(
            f,
            "total: {} waits ({} EAGAIN, {} timed out), {} wakes ({} woke nobody), wake->run p50 {:.1} p99 {:.1} usecs over {} matched waiters{}",
            total.waits,
            total.eagain,
            total.timeouts,
            total.wakes,
            empty_wakes,
            us(stats.wake_to_run.value_at_quantile(0.5)),
            us(stats.wake_to_run.value_at_quantile(0.99)),
            stats.wake_to_run.len(),
            if total.unmatched_wakeups > 0 {
                format!("; {} wake-ups with no traced wake", total.unmatched_wakeups)
            } else {
                String::new()
            }
        )?;
        self.scheduler(f)?;
        if stats.untracked_calls > 0 {
            writeln!(
                f,
                "{} calls on words beyond the first {} not tracked",
                stats.untracked_calls, stats.config.max_addresses
            )?;
        }
        self.herds(f, total.herds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracebench_trace::{DataCapture, ExitStatus, OffCpuReason};

    const A: u64 = 0x100;
    const B: u64 = 0x200;
    const PID: i32 = 1;

    fn futex() -> u32 {
        Sysno::futex.id() as u32
    }

    struct Fixture(Vec<Event>);

    impl Fixture {
        fn push(&mut self, time_ns: u64, tid: i32, kind: EventKind) -> &mut Self {
            self.0.push(Event {
                time_ns,
                pid: PID,
                tid,
                kind,
            });
            self
        }
        fn enter(&mut self, at: u64, tid: i32, addr: u64, op: i32) -> &mut Self {
            let op = (op | libc::FUTEX_PRIVATE_FLAG) as u64;
            self.push(
                at,
                tid,
                EventKind::SyscallEntry {
                    nr: futex(),
                    args: [addr, op, 0, 0, 0, 0],
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            )
        }
        fn leave(&mut self, at: u64, tid: i32, ret: i64) -> &mut Self {
            self.push(
                at,
                tid,
                EventKind::SyscallExit {
                    nr: futex(),
                    ret,
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            )
        }
        fn wait(&mut self, at: u64, tid: i32, addr: u64) -> &mut Self {
            self.enter(at, tid, addr, libc::FUTEX_WAIT)
        }
        fn wake(&mut self, at: u64, until: u64, tid: i32, addr: u64, woke: i64) -> &mut Self {
            self.enter(at, tid, addr, libc::FUTEX_WAKE)
                .leave(until, tid, woke)
        }
        fn other_call(&mut self, at: u64, tid: i32) -> &mut Self {
            self.push(
                at,
                tid,
                EventKind::SyscallEntry {
                    nr: Sysno::recvfrom.id() as u32,
                    args: [4, 0, 0, 0, 0, 0],
                    data: vec![],
                    data_capture: DataCapture::Captured,
                },
            )
        }
    }

    #[test]
    fn the_schedulers_events_split_wake_to_run_and_say_who_woke_whom() {
        let mut f = Fixture(Vec::new());
        f.wait(0, 2, A)
            .push(
                5,
                2,
                EventKind::OffCpu {
                    reason: OffCpuReason::Sleep,
                },
            )
            .enter(40, 3, A, libc::FUTEX_WAKE)
            .push(
                50,
                2,
                EventKind::Woken {
                    waker_tid: 3,
                    waker_pid: PID,
                },
            )
            .leave(60, 3, 1)
            .push(70, 2, EventKind::OnCpu { cpu: 1 })
            .leave(80, 2, 0);
        let mut stats = FutexStats::new();
        for event in &f.0 {
            stats.feed(event);
        }
        let word = stats.get(PID, A).unwrap();
        assert_eq!(word.wake_to_run.total_ns, 40);
        assert_eq!(word.wake_to_runnable.total_ns, 10);
        assert_eq!(word.runnable_to_running.total_ns, 20);
        assert_eq!(stats.wakeups().get(&(3, 2)), Some(&1));
        let report = stats.report(5).to_string();
        assert!(
            report.contains("who woke whom (waker->woken): 3->2 x1"),
            "{report}"
        );
        // Without the scheduler's events the report says what is missing.
        let mut plain = FutexStats::new();
        for event in f.0.iter().filter(|e| {
            matches!(
                e.kind,
                EventKind::SyscallEntry { .. } | EventKind::SyscallExit { .. }
            )
        }) {
            plain.feed(event);
        }
        assert!(plain.report(5).to_string().contains("needs --backend perf"));
        assert!(plain.wakeups().is_empty());
    }

    /// A notify_all that wakes three waiters, two of which go straight back
    /// to sleep (a herd); a timeout; an EAGAIN; a wake that finds nobody; a
    /// one-waiter hand-off whose waiter relocks elsewhere before working;
    /// a wake-up with no traced wake; an interrupted wait.
    fn fixture() -> Vec<Event> {
        let mut f = Fixture(Vec::new());
        f.wait(0, 2, A)
            .wait(5, 3, A)
            .wait(6, 4, A)
            .wake(100, 110, 1, A, 3)
            .leave(120, 2, 0)
            .leave(130, 3, 0)
            .leave(150, 4, 0)
            .other_call(160, 2)
            .wait(170, 3, A)
            .wait(180, 4, A)
            .wait(200, 5, A)
            .leave(201, 5, -(libc::EAGAIN as i64))
            .wake(300, 305, 1, A, 0)
            .wake(400, 410, 1, A, 1)
            .leave(420, 4, 0)
            .wait(430, 4, B)
            .leave(440, 4, 0)
            .other_call(500, 4)
            .wait(600, 6, B)
            .leave(610, 6, -(libc::EINTR as i64))
            .leave(1170, 3, -(libc::ETIMEDOUT as i64))
            .push(
                1200,
                3,
                EventKind::Exited {
                    status: ExitStatus::Code(0),
                },
            );
        f.0
    }

    #[test]
    fn statistics_equal_hand_computed_values() {
        let mut stats = FutexStats::new();
        for event in fixture() {
            stats.feed(&event);
        }
        let a = *stats.get(PID, A).expect("word A");
        assert_eq!(a.waits, 6);
        assert_eq!(a.woken, 4);
        assert_eq!(a.eagain, 1);
        assert_eq!(a.timeouts, 1);
        assert_eq!(a.interrupted, 0);
        // Slept: 120, 125, 144, 240 (woken) and 1000 (timed out).
        assert_eq!(a.wait_time.count, 5);
        assert_eq!(a.wait_time.total_ns, 120 + 125 + 144 + 240 + 1000);
        assert_eq!(a.wait_time.max_ns, 1000);
        assert_eq!(a.wakes, 3);
        assert_eq!(a.waiters_woken, 4);
        assert_eq!(a.wakes_by_woken, [1, 1, 0, 1, 0, 0, 0, 0]);
        assert!((a.woken_per_wake() - 4.0 / 3.0).abs() < 1e-9);
        // From each wake's entry to the waiter's return: 20, 30, 50; 20.
        assert_eq!(a.wake_to_run.count, 4);
        assert_eq!(a.wake_to_run.total_ns, 120);
        assert_eq!(a.wake_to_run.max_ns, 50);
        assert_eq!(a.unmatched_wakeups, 0);
        assert_eq!(a.herds, 1);

        let b = *stats.get(PID, B).expect("word B");
        assert_eq!((b.waits, b.woken, b.interrupted), (2, 1, 1));
        assert_eq!(b.unmatched_wakeups, 1);
        assert_eq!((b.wait_time.count, b.wait_time.total_ns), (2, 20));
        assert_eq!(b.wakes, 0);

        let herds: Vec<_> = stats.herds().copied().collect();
        assert_eq!(
            herds,
            vec![HerdEvent {
                key: FutexKey { pid: PID, addr: A },
                waker_tid: 1,
                wake_ns: 100,
                woken: 3,
                went_back: 2,
            }]
        );
        assert_eq!(stats.wake_to_run().len(), 4);
        assert_eq!(stats.wait_time().len(), 7);
        let total = stats.totals();
        assert_eq!((total.waits, total.wakes, total.herds), (8, 3, 1));
        assert_eq!(stats.top(1)[0].0.addr, A);

        let text = stats.report(5).to_string();
        assert!(text.contains("HERD at +0.000000s pid 1 0x100"), "{text}");
        assert!(text.contains("woke 3, 2 went straight back"), "{text}");
    }

    #[test]
    fn a_higher_threshold_flags_no_herd_and_one_back_of_three_is_no_herd() {
        let mut strict = FutexStats::with_config(FutexConfig {
            herd_threshold: 4,
            ..FutexConfig::default()
        });
        for event in fixture() {
            strict.feed(&event);
        }
        assert_eq!(strict.totals().herds, 0);

        // Three woken, only one goes back.
        let mut f = Fixture(Vec::new());
        f.wait(0, 2, A)
            .wait(1, 3, A)
            .wait(2, 4, A)
            .wake(10, 20, 1, A, 3)
            .leave(30, 2, 0)
            .leave(31, 3, 0)
            .leave(32, 4, 0)
            .wait(40, 2, A)
            .other_call(41, 3)
            .other_call(42, 4);
        let mut stats = FutexStats::new();
        for event in f.0 {
            stats.feed(&event);
        }
        assert_eq!(stats.totals().herds, 0);
        assert_eq!(stats.get(PID, A).unwrap().wake_to_run.count, 3);
    }

    #[test]
    fn a_waiter_seen_returning_before_its_wake_returns_is_still_matched() {
        let mut f = Fixture(Vec::new());
        f.wait(0, 2, A)
            .enter(10, 1, A, libc::FUTEX_WAKE)
            .leave(15, 2, 0)
            .leave(20, 1, 1);
        let mut stats = FutexStats::new();
        for event in f.0 {
            stats.feed(&event);
        }
        let a = stats.get(PID, A).unwrap();
        assert_eq!((a.wake_to_run.count, a.wake_to_run.total_ns), (1, 5));
        assert_eq!(a.unmatched_wakeups, 0);
    }

    #[test]
    fn duration_summary_bounds_quantiles_by_powers_of_two() {
        let mut d = DurationSummary::default();
        for ns in [0, 1, 3, 100, 1000] {
            d.record(ns);
        }
        assert_eq!(d.mean_ns(), 1104 / 5);
        assert_eq!(d.quantile_bound_ns(0.5), 3);
        assert_eq!(d.quantile_bound_ns(0.8), 127);
        assert_eq!(d.quantile_bound_ns(1.0), 1000);
        d.record(u64::MAX);
        assert_eq!(d.quantile_bound_ns(1.0), u64::MAX);
    }

    #[test]
    fn words_beyond_the_limit_are_counted_not_tracked() {
        let mut stats = FutexStats::with_config(FutexConfig {
            max_addresses: 1,
            ..FutexConfig::default()
        });
        let mut f = Fixture(Vec::new());
        f.wake(0, 1, 1, A, 0).wake(2, 3, 1, B, 0);
        for event in f.0 {
            stats.feed(&event);
        }
        assert_eq!(stats.addresses().count(), 1);
        assert_eq!(stats.untracked_calls(), 1);
    }
}
