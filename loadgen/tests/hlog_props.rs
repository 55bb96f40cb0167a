//! The interval log reader against hostile input (issue 14): random bytes,
//! random cuts and random damage give an error or an early end that is
//! reported, never a panic, and never more intervals than were written.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tracebench_loadgen::hlog::{Interval, for_each_interval, write_log};

/// A log of `n` 100 ms intervals, interval i holding i + 1 values.
fn log_of(n: u64) -> Vec<u8> {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let intervals: Vec<Interval> = (0..n)
        .map(|i| {
            let mut histogram = tracebench_loadgen::stats::latency_histogram();
            histogram.record_n(1_000_000 + i, i + 1).unwrap();
            Interval {
                start: Duration::from_secs(1_700_000_000) + Duration::from_millis(100 * i),
                duration: Duration::from_millis(100),
                histogram,
            }
        })
        .collect();
    let mut bytes = Vec::new();
    write_log(&mut bytes, base, &intervals).unwrap();
    bytes
}

fn count(bytes: &[u8]) -> (usize, bool) {
    let mut n = 0;
    match for_each_interval(bytes, |_| n += 1) {
        Ok(damage) => (n, damage.is_some()),
        Err(_) => (n, true),
    }
}

#[test]
fn newlines_turned_to_nuls_are_damage_said_not_intervals_lost_quietly() {
    let whole = log_of(10);
    assert_eq!(count(&whole), (10, false));
    let nuls: Vec<u8> = whole
        .iter()
        .map(|&b| if b == b'\n' { 0 } else { b })
        .collect();
    let (read, damaged) = count(&nuls);
    assert!(damaged, "{read} intervals read and no damage said");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = count(&bytes);
    }

    #[test]
    fn a_cut_reads_a_prefix_and_says_so(n in 1u64..12, cut in 0.0f64..1.0) {
        let whole = log_of(n);
        let at = ((whole.len() as f64) * cut) as usize;
        let (read, damaged) = count(&whole[..at]);
        prop_assert!(read as u64 <= n);
        // A cut inside a line is always said; at a line's end it may not be.
        if at > 0 && whole[at - 1] != b'\n' {
            prop_assert!(damaged, "cut at {} of {} not said", at, whole.len());
        }
    }

    #[test]
    fn a_flipped_byte_never_panics_nor_invents(n in 1u64..8, at in 0.0f64..1.0, bit in 0u8..8) {
        let mut bytes = log_of(n);
        let at = ((bytes.len() as f64) * at) as usize % bytes.len();
        bytes[at] ^= 1 << bit;
        let (read, _) = count(&bytes);
        prop_assert!(read as u64 <= n);
    }
}
