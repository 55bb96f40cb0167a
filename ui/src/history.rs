//! What each thread has been doing, in bounded memory: the state at the
//! start of every millisecond for the last ~8 s, and of every 16 ms for the
//! last ~65 s. The timeline samples a state per cell, so this keeps exactly
//! what it can draw, however many syscalls a thread makes: a busy server
//! makes millions of transitions a minute, and a list of them would not fit
//! the dashboard's memory budget (nor be cheap to copy for replay's
//! checkpoints).

use std::collections::VecDeque;

use tracebench_analysis::states::ThreadState;

/// The kinds of state the timeline colours, in the order of their codes.
pub const KINDS: [ThreadState; 10] = [
    ThreadState::Running,
    ThreadState::FutexWait(0),
    ThreadState::Accept,
    ThreadState::Sleep,
    ThreadState::Io,
    ThreadState::Syscall(0),
    ThreadState::Exited,
    ThreadState::Runnable,
    ThreadState::Blocked,
    ThreadState::EventWait,
];

/// The one-byte code of a state's kind (an index into [`KINDS`]).
pub fn kind_code(state: ThreadState) -> u8 {
    match state {
        ThreadState::Running => 0,
        ThreadState::FutexWait(_) => 1,
        ThreadState::Accept => 2,
        ThreadState::Sleep => 3,
        ThreadState::Io => 4,
        ThreadState::Syscall(_) => 5,
        ThreadState::Exited => 6,
        ThreadState::Runnable => 7,
        ThreadState::Blocked => 8,
        ThreadState::EventWait => 9,
    }
}

/// The fine resolution: 1 ms.
pub const FINE_NS: u64 = 1_000_000;
/// Fine samples kept: about 8 s.
pub const FINE_SAMPLES: usize = 8192;
/// The coarse resolution: 16 ms.
pub const COARSE_NS: u64 = 16_000_000;
/// Coarse samples kept: about 65 s.
pub const COARSE_SAMPLES: usize = 4096;

/// States sampled every `resolution_ns`, the newest `capacity` kept.
#[derive(Debug, Clone)]
struct Samples {
    resolution_ns: u64,
    capacity: usize,
    /// The slot (time / resolution) of `codes[0]`.
    first_slot: u64,
    codes: VecDeque<u8>,
}

impl Samples {
    fn new(resolution_ns: u64, capacity: usize) -> Samples {
        Samples {
            resolution_ns,
            capacity,
            first_slot: 0,
            codes: VecDeque::new(),
        }
    }

    /// The thread was in `code` from `from_ns` until `to_ns`: every slot
    /// starting in between samples it.
    fn fill(&mut self, code: u8, from_ns: u64, to_ns: u64) {
        // The first slot starting at or after from_ns.
        let first = from_ns.div_ceil(self.resolution_ns);
        let end = to_ns.div_ceil(self.resolution_ns);
        if first >= end {
            return;
        }
        if self.codes.is_empty() {
            self.first_slot = first;
        }
        // Only the newest `capacity` slots matter.
        let from = first
            .max(self.first_slot + self.codes.len() as u64)
            .max(end.saturating_sub(self.capacity as u64));
        if from > self.first_slot + self.codes.len() as u64 {
            // A gap before (only after a long stretch skipped): restart.
            self.codes.clear();
            self.first_slot = from;
        }
        for _ in from..end {
            if self.codes.len() == self.capacity {
                self.codes.pop_front();
                self.first_slot += 1;
            }
            self.codes.push_back(code);
        }
    }

    fn at(&self, at_ns: u64) -> Option<u8> {
        let slot = at_ns / self.resolution_ns;
        let index = slot.checked_sub(self.first_slot)?;
        self.codes.get(index as usize).copied()
    }

    /// The earliest time it still knows.
    fn oldest_ns(&self) -> Option<u64> {
        (!self.codes.is_empty()).then_some(self.first_slot * self.resolution_ns)
    }
}

/// One thread's current state and sampled past.
#[derive(Debug, Clone)]
pub struct StateHistory {
    state: ThreadState,
    since_ns: u64,
    /// When the thread was first seen.
    born_ns: u64,
    fine: Samples,
    coarse: Samples,
}

impl StateHistory {
    /// A thread first seen at `at_ns`, in `state`.
    pub fn new(state: ThreadState, at_ns: u64) -> StateHistory {
        StateHistory {
            state,
            since_ns: at_ns,
            born_ns: at_ns,
            fine: Samples::new(FINE_NS, FINE_SAMPLES),
            coarse: Samples::new(COARSE_NS, COARSE_SAMPLES),
        }
    }

    /// The thread entered `state` at `at_ns`.
    pub fn enter(&mut self, state: ThreadState, at_ns: u64) {
        if state == self.state {
            return;
        }
        let at_ns = at_ns.max(self.since_ns);
        let code = kind_code(self.state);
        self.fine.fill(code, self.since_ns, at_ns);
        self.coarse.fill(code, self.since_ns, at_ns);
        self.state = state;
        self.since_ns = at_ns;
    }

    /// The state it is in.
    pub fn current(&self) -> ThreadState {
        self.state
    }

    /// When the thread was first seen.
    pub fn born_ns(&self) -> u64 {
        self.born_ns
    }

    /// Since when.
    pub fn since_ns(&self) -> u64 {
        self.since_ns
    }

    /// The kind of state it was in at `at_ns`, sampled at `resolution_ns`
    /// or finer; `None` before it was seen, or when that is forgotten.
    pub fn kind_at(&self, at_ns: u64, resolution_ns: u64) -> Option<ThreadState> {
        if at_ns < self.born_ns {
            return None;
        }
        if at_ns >= self.since_ns {
            return Some(self.state);
        }
        let fine_enough = resolution_ns < COARSE_NS
            && self.fine.oldest_ns().is_some_and(|oldest| at_ns >= oldest);
        let code = if fine_enough {
            self.fine.at(at_ns)
        } else {
            self.coarse.at(at_ns).or_else(|| self.fine.at(at_ns))
        };
        code.map(|c| KINDS[c as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn samples_say_what_the_thread_did_at_each_time() {
        let mut history = StateHistory::new(ThreadState::Running, 10 * MS);
        history.enter(ThreadState::Accept, 12 * MS + 500);
        history.enter(ThreadState::Running, 20 * MS);
        history.enter(ThreadState::FutexWait(0x10), 20 * MS + 10);
        history.enter(ThreadState::Sleep, 30 * MS);
        assert_eq!(history.kind_at(5 * MS, MS), None, "before it was seen");
        assert_eq!(history.kind_at(11 * MS, MS), Some(ThreadState::Running));
        assert_eq!(history.kind_at(15 * MS, MS), Some(ThreadState::Accept));
        assert_eq!(
            history.kind_at(25 * MS, MS),
            Some(ThreadState::FutexWait(0)),
            "the kind, not the address"
        );
        assert_eq!(history.kind_at(31 * MS, MS), Some(ThreadState::Sleep));
        assert_eq!(history.current(), ThreadState::Sleep);
        assert_eq!(history.since_ns(), 30 * MS);
        // 16 ms samples at 16 and 32 ms: accept at 16, futex-wait at 32?
        // No: at 32 ms the thread sleeps (since 30 ms).
        assert_eq!(
            history.kind_at(16 * MS, COARSE_NS),
            Some(ThreadState::Accept)
        );
    }

    #[test]
    fn memory_is_bounded_however_long_the_thread_lives() {
        let mut history = StateHistory::new(ThreadState::Running, 0);
        let mut at = 0;
        for i in 0..200_000u64 {
            at += 700_000; // 0.7 ms per state
            let state = if i % 2 == 0 {
                ThreadState::Io
            } else {
                ThreadState::Running
            };
            history.enter(state, at);
        }
        assert!(history.fine.codes.len() <= FINE_SAMPLES);
        assert!(history.coarse.codes.len() <= COARSE_SAMPLES);
        // The last 8 s are known finely; 60 s ago coarsely; 100 s ago not.
        assert!(history.kind_at(at - 5_000 * MS, MS).is_some());
        assert!(history.kind_at(at - 60_000 * MS, COARSE_NS).is_some());
        assert_eq!(history.kind_at(at - 100_000 * MS, COARSE_NS), None);
    }

    #[test]
    fn a_long_sleep_fills_only_what_is_kept() {
        let mut history = StateHistory::new(ThreadState::Sleep, 0);
        // An hour asleep.
        history.enter(ThreadState::Running, 3_600_000 * MS);
        assert_eq!(history.fine.codes.len(), FINE_SAMPLES);
        assert_eq!(
            history.kind_at(3_600_000 * MS - 2 * MS, MS),
            Some(ThreadState::Sleep)
        );
    }
}
