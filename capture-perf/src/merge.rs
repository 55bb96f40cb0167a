//! Ordering the ring's events by time. All CPUs write to one ring, each
//! record where it reserved room; a record stamped just after reserving
//! can land behind one that reserved later and stamped earlier, so the
//! queue is checked for order and sorted when it is not (rare), and an
//! event is handed on only once no record stamped before it can still
//! come.

use std::collections::VecDeque;

use tracebench_trace::{Event, EventSink};

use crate::decode::Pairing;

/// Events read from the ring and not yet handed on.
#[derive(Default)]
pub struct Pending {
    queue: VecDeque<Event>,
}

impl Pending {
    /// The queue, which events are decoded straight into; then
    /// [`Pending::settle`] it.
    pub fn queue(&mut self) -> &mut VecDeque<Event> {
        &mut self.queue
    }

    /// Puts the queue back in time order if what was added from position
    /// `from` on broke it.
    pub fn settle(&mut self, from: usize) {
        let queue = &mut self.queue;
        if queue.len() <= from {
            return; // nothing added
        }
        let start = from.saturating_sub(1);
        let in_order = queue
            .range(start..)
            .zip(queue.range(start + 1..))
            .all(|(a, b)| a.time_ns <= b.time_ns);
        if !in_order {
            // Stable: events of one record (a switch's two sides) keep
            // their order.
            queue.make_contiguous().sort_by_key(|e| e.time_ns);
        }
    }

    /// Hands `sink` every event older than `before`, in time order.
    pub fn emit_before(&mut self, before: u64, pairing: &mut Pairing, sink: &mut dyn EventSink) {
        while self.queue.front().is_some_and(|e| e.time_ns < before) {
            let Some(mut event) = self.queue.pop_front() else {
                break;
            };
            if pairing.keep(&mut event) {
                sink.event(&event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracebench_trace::{EventKind, Selection};

    fn event(time_ns: u64, cpu: u32) -> Event {
        Event {
            time_ns,
            pid: 1,
            tid: 1,
            kind: EventKind::Lost { cpu, count: 1 },
        }
    }

    #[test]
    fn events_are_handed_on_in_time_order_and_later_ones_wait() {
        let mut pending = Pending::default();
        pending
            .queue()
            .extend([event(10, 0), event(30, 0), event(50, 0)]);
        pending.settle(0);
        pending.settle(3); // nothing added
        // Behind the queue, and out of order among themselves; equal
        // times keep the order they came in.
        pending
            .queue()
            .extend([event(20, 1), event(5, 1), event(40, 1), event(40, 2)]);
        pending.settle(3);
        let mut pairing = Pairing::new(Selection::default());
        let mut emit = |before| {
            let mut seen = Vec::new();
            pending.emit_before(before, &mut pairing, &mut |e: &Event| {
                let EventKind::Lost { cpu, .. } = e.kind else {
                    unreachable!()
                };
                seen.push((e.time_ns, cpu))
            });
            seen
        };
        assert_eq!(emit(40), [(5, 1), (10, 0), (20, 1), (30, 0)]);
        assert_eq!(emit(u64::MAX), [(40, 1), (40, 2), (50, 0)]);
    }
}
