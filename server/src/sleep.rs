//! The simulated work of a request: the nanosleep(2) system call itself.
//!
//! std's `thread::sleep` (and glibc's `nanosleep()`) enter the kernel as
//! clock_nanosleep(2). The server calls nanosleep(2) by number so that a
//! trace shows exactly the call the classic assembly server made.

use std::time::Duration;

/// Sleeps for `duration` in nanosleep(2), resuming after signal handlers
/// with the time that was left.
pub fn nanosleep(duration: Duration) {
    let mut request = libc::timespec {
        tv_sec: duration.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: duration.subsec_nanos() as libc::c_long,
    };
    loop {
        let mut remaining = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both pointers are to live timespecs on our stack.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_nanosleep,
                &request as *const libc::timespec,
                &mut remaining as *mut libc::timespec,
            )
        };
        if ret == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
        request = remaining;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn sleeps_at_least_the_duration() {
        let start = Instant::now();
        nanosleep(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
