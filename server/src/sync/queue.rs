//! A bounded multi-producer, multi-consumer queue on [`FutexMutex`] and two
//! [`FutexCondvar`]s: the textbook monitor, with nothing from std's `sync`.

use std::collections::VecDeque;

use super::{FutexCondvar, FutexMutex};

/// Why [`BoundedQueue::try_push`] refused an item; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum TryPushError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// [`BoundedQueue::close`] was called.
    Closed(T),
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A FIFO queue of at most `capacity` items. Producers block while it is
/// full, consumers while it is empty; closing it lets consumers drain what is
/// left and then stop.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    state: FutexMutex<State<T>>,
    not_empty: FutexCondvar,
    not_full: FutexCondvar,
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    /// A queue for at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            state: FutexMutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            not_empty: FutexCondvar::new(),
            not_full: FutexCondvar::new(),
            capacity,
        }
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many items wait in the queue now.
    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// Whether no item waits in the queue now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `item`, sleeping while the queue is full. Gives the item back
    /// if the queue is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut state = self.state.lock();
        while state.items.len() >= self.capacity && !state.closed {
            state = self.not_full.wait(state);
        }
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        drop(state);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Appends `item` if there is room, without waiting.
    pub fn try_push(&self, item: T) -> Result<(), TryPushError<T>> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(TryPushError::Closed(item));
        }
        if state.items.len() >= self.capacity {
            return Err(TryPushError::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.not_empty.notify_one();
        Ok(())
    }

    /// Takes the oldest item, sleeping while the queue is empty. Returns
    /// `None` once the queue is closed and drained.
    pub fn pop(&self) -> Option<T> {
        let mut state = self.state.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                drop(state);
                self.not_full.notify_one();
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state = self.not_empty.wait(state);
        }
    }

    /// Takes the oldest item if there is one, without waiting. The outer
    /// `None` means the queue is closed and drained; `Some(None)` that it is
    /// only empty for now.
    pub fn try_pop(&self) -> Option<Option<T>> {
        let mut state = self.state.lock();
        match state.items.pop_front() {
            Some(item) => {
                drop(state);
                self.not_full.notify_one();
                Some(Some(item))
            }
            None if state.closed => None,
            None => Some(None),
        }
    }

    /// Refuses new items from now on and wakes every waiter: consumers drain
    /// what is left, producers get their items back.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on a thread and fails the test if it has not finished in
    /// `limit`: a deadlock becomes a failure, not a hung test run.
    fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(limit) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("did not finish within {limit:?}: lost wake-up or deadlock")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the checked code panicked"),
        }
    }

    #[test]
    fn one_million_items_through_a_capacity_one_queue_arrive_exactly_once() {
        const PRODUCERS: usize = 4;
        const CONSUMERS: usize = 4;
        const ITEMS: usize = 1_000_000;
        let seen = within(Duration::from_secs(120), || {
            let queue = Arc::new(BoundedQueue::new(1));
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let queue = Arc::clone(&queue);
                    std::thread::spawn(move || {
                        for item in (p..ITEMS).step_by(PRODUCERS) {
                            queue.push(item).expect("queue closed early");
                        }
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..CONSUMERS)
                .map(|_| {
                    let queue = Arc::clone(&queue);
                    std::thread::spawn(move || {
                        let mut got = Vec::new();
                        while let Some(item) = queue.pop() {
                            got.push(item);
                        }
                        got
                    })
                })
                .collect();
            for producer in producers {
                producer.join().unwrap();
            }
            queue.close();
            let mut seen = vec![0u8; ITEMS];
            for consumer in consumers {
                for item in consumer.join().unwrap() {
                    seen[item] += 1;
                }
            }
            seen
        });
        let missing = seen.iter().filter(|&&n| n == 0).count();
        let duplicated = seen.iter().filter(|&&n| n > 1).count();
        assert_eq!((missing, duplicated), (0, 0));
    }

    #[test]
    fn each_producer_order_is_kept() {
        let queue = BoundedQueue::new(3);
        for i in 0..3 {
            queue.push(i).unwrap();
        }
        assert_eq!(queue.try_push(3), Err(TryPushError::Full(3)));
        assert_eq!(
            (queue.pop(), queue.pop(), queue.pop()),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(queue.try_pop(), Some(None));
    }

    #[test]
    fn close_drains_then_stops_consumers_and_refuses_producers() {
        let queue = Arc::new(BoundedQueue::new(2));
        queue.push("left over").unwrap();
        let sleeper = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                // Takes the left-over item, then sleeps on the empty queue
                // until close wakes it.
                (queue.pop(), queue.pop())
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        queue.close();
        let got = within(Duration::from_secs(10), move || sleeper.join().unwrap());
        assert_eq!(got, (Some("left over"), None));
        assert_eq!(queue.push("late"), Err("late"));
        assert_eq!(queue.try_push("late"), Err(TryPushError::Closed("late")));
        assert_eq!(queue.try_pop(), None);
    }

    #[test]
    fn a_blocked_producer_resumes_when_room_appears() {
        let queue = Arc::new(BoundedQueue::new(1));
        queue.push(1).unwrap();
        let producer = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.push(2))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(queue.len(), 1, "the producer must wait for room");
        assert_eq!(queue.pop(), Some(1));
        within(Duration::from_secs(10), move || producer.join().unwrap()).unwrap();
        assert_eq!(queue.pop(), Some(2));
    }
}
