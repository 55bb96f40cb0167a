//! The one clock of a trace: CLOCK_MONOTONIC in nanoseconds, which every
//! capture backend stamps its events with (the perf backend asks the kernel
//! for it with `use_clockid`), and CLOCK_REALTIME only to anchor a file to
//! the wall clock.

/// Reads `clock` in nanoseconds.
fn read_ns(clock: libc::clockid_t) -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only to our local timespec.
    unsafe { libc::clock_gettime(clock, &mut now) };
    now.tv_sec * 1_000_000_000 + now.tv_nsec
}

/// CLOCK_MONOTONIC in nanoseconds: the time of every event.
pub fn monotonic_ns() -> u64 {
    read_ns(libc::CLOCK_MONOTONIC) as u64
}

/// CLOCK_REALTIME in nanoseconds since the epoch.
pub fn realtime_ns() -> i64 {
    read_ns(libc::CLOCK_REALTIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_never_goes_back() {
        let first = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = monotonic_ns();
        assert!(second >= first + 2_000_000, "{first} then {second}");
        assert!(realtime_ns() > 1_600_000_000_000_000_000);
    }
}
