//! The one histogram shape tracebench records every latency in, whether
//! the load generator measured it or an analysis derived it from a trace:
//! HdrHistogram of nanoseconds, 1 ns to 60 s, 3 significant digits. One
//! shape means any two can be added, compared and exported alike.

use hdrhistogram::Histogram;

/// The largest value a latency histogram holds: 60 s in nanoseconds.
/// Longer values are recorded as this.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// An empty latency histogram: 1 ns..60 s, 3 significant digits, values
/// in nanoseconds.
pub fn latency_histogram() -> Histogram<u64> {
    // Constant bounds hdrhistogram accepts (low >= 1, high >= 2 * low,
    // 3 significant digits): this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant, valid histogram bounds")
}

/// Records `ns` into `histogram`, clamped to [1, [`MAX_LATENCY_NS`]].
pub fn record_clamped(histogram: &mut Histogram<u64>, ns: u64) {
    // In range after the clamp, so recording cannot fail.
    let _ = histogram.record(ns.clamp(1, MAX_LATENCY_NS));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut histogram = latency_histogram();
        record_clamped(&mut histogram, 0);
        record_clamped(&mut histogram, 3 * MAX_LATENCY_NS);
        assert_eq!(histogram.len(), 2);
        assert_eq!(histogram.min(), 1);
        assert!(histogram.max() >= MAX_LATENCY_NS);
    }
}
