//! What each mode's model predicts for a batch of N concurrent requests
//! that each take d seconds of (sleeping) work on the server.
//!
//! The work is a sleep, not computation, so the cores are not the limit:
//! the only limit is how many requests a mode serves at once. A mode that
//! serves k at a time finishes the batch in ⌈N/k⌉ waves of d:
//!
//! | mode | serves at once | batch time |
//! |---|---|---|
//! | sync | 1 | N·d |
//! | pool-* (W workers) | W | ⌈N/W⌉·d |
//! | thread, fork | N (one thread or process each) | d |
//! | epoll (one event loop) | N (timers, not sleeps) | d |

use std::time::Duration;

use tracebench_server::Mode;

/// How many requests `mode` serves at once, with `workers` in a pool and
/// `requests` arriving together.
pub fn concurrency(mode: Mode, requests: usize, workers: usize) -> usize {
    match mode {
        Mode::Sync => 1,
        Mode::Fork | Mode::Thread | Mode::Epoll | Mode::IoUring => requests,
        Mode::PoolSpin | Mode::PoolFutex | Mode::PoolStd => workers,
    }
    .max(1)
}

/// How many back-to-back waves of `delay` the batch takes: ⌈N/k⌉ with k
/// from [`concurrency`].
pub fn waves(mode: Mode, requests: usize, workers: usize) -> u64 {
    requests.div_ceil(concurrency(mode, requests, workers)) as u64
}

/// The model's batch time: [`waves`] × `delay`.
pub fn theoretical_time(mode: Mode, requests: usize, workers: usize, delay: Duration) -> Duration {
    Duration::from_nanos((delay.as_nanos() as u64).saturating_mul(waves(mode, requests, workers)))
}

/// `(measured − theory) / theory`, in percent; 0 when theory is 0.
pub fn deviation_percent(measured: Duration, theory: Duration) -> f64 {
    if theory.is_zero() {
        return 0.0;
    }
    (measured.as_secs_f64() - theory.as_secs_f64()) / theory.as_secs_f64() * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(1);

    #[test]
    fn the_article_numbers() {
        let t = |mode| theoretical_time(mode, 10, 5, D);
        assert_eq!(t(Mode::Sync), Duration::from_secs(10));
        assert_eq!(t(Mode::Fork), Duration::from_secs(1));
        assert_eq!(t(Mode::Thread), Duration::from_secs(1));
        for pool in [Mode::PoolSpin, Mode::PoolFutex, Mode::PoolStd] {
            assert_eq!(t(pool), Duration::from_secs(2), "{pool}");
        }
    }

    #[test]
    fn pools_round_partial_waves_up() {
        assert_eq!(waves(Mode::PoolFutex, 11, 5), 3);
        assert_eq!(waves(Mode::PoolFutex, 4, 5), 1);
        assert_eq!(waves(Mode::PoolStd, 1, 1), 1);
        assert_eq!(waves(Mode::PoolSpin, 7, 1), 7);
        assert_eq!(
            theoretical_time(Mode::PoolStd, 7, 3, Duration::from_millis(100)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn one_request_is_one_wave_everywhere() {
        for mode in Mode::ALL {
            assert_eq!(waves(mode, 1, 5), 1, "{mode}");
        }
    }

    #[test]
    fn deviation_is_relative_to_theory() {
        let ms = Duration::from_millis;
        assert!((deviation_percent(ms(1050), ms(1000)) - 5.0).abs() < 1e-9);
        assert!((deviation_percent(ms(950), ms(1000)) + 5.0).abs() < 1e-9);
        assert_eq!(deviation_percent(ms(5), Duration::ZERO), 0.0);
    }
}
