//! Ways to pass events on: to several sinks at once, and to another
//! thread without ever making the tracer wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::event::{Event, EventSink};

/// Hands every event to each sink in turn.
pub struct Tee<'a>(pub Vec<&'a mut dyn EventSink>);

impl EventSink for Tee<'_> {
    fn event(&mut self, event: &Event) {
        for sink in &mut self.0 {
            sink.event(event);
        }
    }

    fn idle(&mut self, now_ns: u64) {
        for sink in &mut self.0 {
            sink.idle(now_ns);
        }
    }
}

/// Sends events to a bounded channel for a live consumer (the dashboard).
/// When the consumer falls behind, events are dropped and counted instead
/// of stalling the tracer, and with it the traced program.
pub struct ChannelSink {
    sender: SyncSender<Event>,
    dropped: Arc<AtomicU64>,
}

/// The receiving end of a [`ChannelSink`].
pub struct ChannelSource {
    /// The events, in order, minus the dropped ones.
    pub receiver: Receiver<Event>,
    /// How many events the consumer missed so far.
    pub dropped: Arc<AtomicU64>,
}

/// A channel holding at most `capacity` undelivered events.
pub fn channel(capacity: usize) -> (ChannelSink, ChannelSource) {
    let (sender, receiver) = sync_channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        ChannelSink {
            sender,
            dropped: Arc::clone(&dropped),
        },
        ChannelSource { receiver, dropped },
    )
}

impl EventSink for ChannelSink {
    fn event(&mut self, event: &Event) {
        match self.sender.try_send(event.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn a_slow_consumer_loses_events_but_never_blocks() {
        let (mut sink, source) = channel(2);
        let mut seen = Vec::new();
        let mut record = |e: &Event| seen.push(e.time_ns);
        let mut tee = Tee(vec![&mut sink, &mut record]);
        for time_ns in 0..5 {
            tee.event(&Event {
                time_ns,
                pid: 1,
                tid: 1,
                kind: EventKind::Signal {
                    signal: 1,
                    info: Vec::new(),
                },
            });
        }
        drop(tee);
        assert_eq!(seen, vec![0, 1, 2, 3, 4], "the other sink gets everything");
        assert_eq!(
            source
                .receiver
                .try_iter()
                .map(|e| e.time_ns)
                .collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(source.dropped.load(Ordering::Relaxed), 3);
    }
}
