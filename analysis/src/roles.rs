//! What each thread is for, inferred from what it does, for any server:
//! our own, nginx, node, python, the JVM or one in assembly. No name or
//! program is assumed: a thread that accepts connections and hands them
//! to others is an acceptor, one that serves connections it did not
//! accept is a worker, one that waits in epoll/poll and accepts and serves
//! on the same thread is an event loop; the rest are timers (mostly
//! timed sleeps), idle (next to no syscalls) or helpers.

use foldhash::HashMap;

use syscalls::Sysno;

use crate::attribution::RequestRecord;
use tracebench_trace::{Event, EventKind};

/// A thread's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts connections and hands them to other threads.
    Acceptor,
    /// Serves connections (accepted by another thread, or by itself one at
    /// a time, as a single-threaded server does).
    Worker,
    /// Waits for readiness (epoll, poll, select, io_uring) and accepts and
    /// serves on the same thread.
    EventLoop,
    /// Mostly sleeps for set times (nanosleep, clock_nanosleep).
    Timer,
    /// Next to nothing traced.
    Idle,
    /// Anything else that is busy: a runtime's own threads.
    Helper,
}

impl Role {
    /// The table's name for it.
    pub fn label(self) -> &'static str {
        match self {
            Role::Acceptor => "acceptor",
            Role::Worker => "worker",
            Role::EventLoop => "event-loop",
            Role::Timer => "timer",
            Role::Idle => "idle",
            Role::Helper => "helper",
        }
    }
}

/// What one thread did, as far as roles go.
#[derive(Debug, Default, Clone, Copy)]
struct Behaviour {
    syscalls: u64,
    accepted: u64,
    waits_for_readiness: u64,
    timed_sleeps: u64,
    /// Requests on connections it accepted and another thread served.
    handed_off: u64,
    /// Requests on connections it accepted and served itself.
    served_own: u64,
    /// Requests on connections another thread accepted.
    served_others: u64,
}

/// Fewer completed syscalls than this, and nothing else: idle.
const IDLE_SYSCALLS: u64 = 4;

/// The roles of every thread seen, kept up to date event by event.
#[derive(Debug, Default, Clone)]
pub struct Roles {
    threads: HashMap<i32, Behaviour>,
}

impl Roles {
    /// No thread seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a syscall's return.
    pub fn feed(&mut self, event: &Event) {
        let EventKind::SyscallExit { nr, ret, .. } = event.kind else {
            return;
        };
        let thread = self.threads.entry(event.tid).or_default();
        thread.syscalls += 1;
        match Sysno::new(nr as usize) {
            Some(Sysno::accept | Sysno::accept4) if ret >= 0 => thread.accepted += 1,
            Some(
                Sysno::epoll_wait
                | Sysno::epoll_pwait
                | Sysno::epoll_pwait2
                | Sysno::poll
                | Sysno::ppoll
                | Sysno::select
                | Sysno::pselect6
                | Sysno::io_uring_enter,
            ) => thread.waits_for_readiness += 1,
            Some(Sysno::nanosleep | Sysno::clock_nanosleep) => thread.timed_sleeps += 1,
            _ => {}
        }
    }

    /// Counts who accepted and who served `request` (from the
    /// attribution).
    pub fn request(&mut self, request: &RequestRecord) {
        if request.acceptor_tid == request.serving_tid {
            self.threads
                .entry(request.serving_tid)
                .or_default()
                .served_own += 1;
        } else {
            self.threads
                .entry(request.acceptor_tid)
                .or_default()
                .handed_off += 1;
            self.threads
                .entry(request.serving_tid)
                .or_default()
                .served_others += 1;
        }
    }

    /// Thread `tid`'s role as of now.
    pub fn role(&self, tid: i32) -> Role {
        let Some(b) = self.threads.get(&tid) else {
            return Role::Idle;
        };
        if b.served_others > 0 && b.served_others >= b.served_own + b.handed_off {
            Role::Worker
        } else if b.handed_off > 0 && b.handed_off >= b.served_own {
            Role::Acceptor
        } else if b.served_own > 0 || b.accepted > 0 {
            // Accepts and serves (or has only accepted so far): a loop if
            // it waits for readiness in between, else a plain server.
            match (b.waits_for_readiness > 0, b.served_own > 0) {
                (true, _) => Role::EventLoop,
                (false, true) => Role::Worker,
                (false, false) => Role::Acceptor,
            }
        } else if b.timed_sleeps > 0 && b.timed_sleeps * 2 >= b.syscalls {
            Role::Timer
        } else if b.syscalls < IDLE_SYSCALLS {
            Role::Idle
        } else {
            Role::Helper
        }
    }

    /// Forgets a thread (a tid the kernel may give again).
    pub fn forget(&mut self, tid: i32) {
        self.threads.remove(&tid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::RequestEnd;
    use tracebench_trace::DataCapture;

    fn exit(roles: &mut Roles, tid: i32, nr: Sysno, ret: i64) {
        roles.feed(&Event {
            time_ns: 0,
            pid: 1,
            tid,
            kind: EventKind::SyscallExit {
                nr: nr.id() as u32,
                ret,
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        });
    }

    fn request(acceptor_tid: i32, serving_tid: i32) -> RequestRecord {
        RequestRecord {
            connection: 0,
            index_on_connection: 0,
            fd: 5,
            acceptor_pid: 1,
            acceptor_tid,
            serving_pid: 1,
            serving_tid,
            accepted_ns: 0,
            started_ns: 0,
            picked_up_ns: 0,
            ended_ns: 0,
            end: RequestEnd::Closed,
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    #[test]
    fn a_pool_an_event_loop_a_single_thread_and_the_rest() {
        let mut roles = Roles::new();
        // A pool: 1 accepts, 2 and 3 serve.
        for worker in [2, 3, 2] {
            exit(&mut roles, 1, Sysno::accept4, 5);
            roles.request(&request(1, worker));
        }
        // An event loop: waits, accepts, serves, on one thread.
        for _ in 0..3 {
            exit(&mut roles, 4, Sysno::epoll_wait, 1);
            exit(&mut roles, 4, Sysno::accept4, 9);
            roles.request(&request(4, 4));
        }
        // A single-threaded server: accepts and serves, no readiness wait.
        exit(&mut roles, 5, Sysno::accept4, 4);
        roles.request(&request(5, 5));
        // A timer, a busy helper, an idle thread, and one never seen.
        for _ in 0..5 {
            exit(&mut roles, 6, Sysno::clock_nanosleep, 0);
            exit(&mut roles, 7, Sysno::futex, 0);
        }
        exit(&mut roles, 8, Sysno::futex, 0);
        // An accept that failed is no accept.
        exit(&mut roles, 10, Sysno::accept4, -11);
        let role = |tid| roles.role(tid);
        assert_eq!(role(1), Role::Acceptor);
        assert_eq!(role(2), Role::Worker);
        assert_eq!(role(3), Role::Worker);
        assert_eq!(role(4), Role::EventLoop);
        assert_eq!(role(5), Role::Worker);
        assert_eq!(role(6), Role::Timer);
        assert_eq!(role(7), Role::Helper);
        assert_eq!(role(8), Role::Idle);
        assert_eq!(role(9), Role::Idle);
        assert_eq!(role(10), Role::Idle);
    }
}
