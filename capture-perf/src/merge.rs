//! Ordering the rings' events by time. Each CPU's ring is (nearly) in
//! time order, so events wait in one queue per ring and are handed on by
//! a k-way merge of the queues' heads: no event is moved more than twice,
//! where sorting one shared vector moved every waiting event every round.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use tracebench_trace::{Event, EventSink};

use crate::decode::Pairing;

/// An event and the set of the event that recorded it (see
/// [`Pairing::once_per_thread`]).
pub type FromSet = (Event, u32);

/// Events read from the rings and not yet handed on, one queue per ring.
pub struct Pending {
    queues: Vec<VecDeque<FromSet>>,
    heads: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Pending {
    /// Queues for `rings` rings.
    pub fn new(rings: usize) -> Pending {
        Pending {
            queues: (0..rings.max(1)).map(|_| VecDeque::new()).collect(),
            heads: BinaryHeap::new(),
        }
    }

    /// Ring `ring`'s queue, which its events are decoded straight into;
    /// then [`Pending::settle`] it.
    pub fn queue(&mut self, ring: usize) -> &mut VecDeque<FromSet> {
        &mut self.queues[ring]
    }

    /// Puts ring `ring`'s queue back in time order if what was added from
    /// position `from` on broke it (a ring can hold a record stamped just
    /// before the one written ahead of it, by an interrupt between stamp
    /// and write): rare, so it is checked, not sorted every time.
    pub fn settle(&mut self, ring: usize, from: usize) {
        let queue = &mut self.queues[ring];
        if queue.len() <= from {
            return; // nothing added
        }
        let start = from.saturating_sub(1);
        let in_order = queue
            .range(start..)
            .zip(queue.range(start + 1..))
            .all(|((a, _), (b, _))| a.time_ns <= b.time_ns);
        if !in_order {
            queue.make_contiguous().sort_by_key(|(e, _)| e.time_ns);
        }
    }

    /// Hands `sink` every event older than `before`, in time order (equal
    /// times: the lower ring first, each ring's in its own order).
    pub fn emit_before(&mut self, before: u64, pairing: &mut Pairing, sink: &mut dyn EventSink) {
        self.heads.clear();
        for (ring, queue) in self.queues.iter().enumerate() {
            if let Some((first, _)) = queue.front() {
                self.heads.push(Reverse((first.time_ns, ring)));
            }
        }
        while let Some(Reverse((time_ns, ring))) = self.heads.pop() {
            if time_ns >= before {
                break;
            }
            let queue = &mut self.queues[ring];
            let Some((mut event, set)) = queue.pop_front() else {
                continue;
            };
            if pairing.keep(&mut event, set) {
                sink.event(&event);
            }
            if let Some((next, _)) = queue.front() {
                self.heads.push(Reverse((next.time_ns, ring)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracebench_trace::{EventKind, Selection};

    fn event(time_ns: u64, tid: i32) -> FromSet {
        let event = Event {
            time_ns,
            pid: 1,
            tid,
            kind: EventKind::Lost { cpu: 0, count: 1 },
        };
        (event, 0)
    }

    #[test]
    fn rings_are_merged_in_time_order_and_later_events_wait() {
        let mut pending = Pending::new(2);
        pending
            .queue(0)
            .extend([event(10, 1), event(30, 1), event(50, 1)]);
        pending.settle(0, 0);
        pending.settle(1, 0); // a ring that gave nothing
        // Slightly out of order within the ring, and behind its queue.
        pending
            .queue(1)
            .extend([event(20, 2), event(5, 2), event(40, 2)]);
        pending.settle(1, 0);
        pending.queue(0).push_back(event(25, 1));
        pending.settle(0, 3);
        let mut pairing = Pairing::new(Selection::default());
        let mut emit = |before| {
            let mut seen = Vec::new();
            pending.emit_before(before, &mut pairing, &mut |e: &Event| seen.push(e.time_ns));
            seen
        };
        assert_eq!(emit(40), [5, 10, 20, 25, 30]);
        assert_eq!(emit(u64::MAX), [40, 50]);
    }
}
