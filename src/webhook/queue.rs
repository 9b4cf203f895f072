//! [`Queue`]: one target's pending deliveries in memory, scheduled for order and back-off.
//!
//! Rules:
//! - events with the same order key (a call, a phone) are delivered one at a time, in event
//!   id order: only the oldest pending event of a key (its *head*) may be in flight or due;
//!   the next one waits until the head is delivered or given up;
//! - events without a key are each their own head;
//! - a head is due at its `next_at` (back-off after a failure).
//!
//! Only a window of the target's pending deliveries is held (the oldest ones, by id); the rest
//! stays in the outbox and is loaded as the window drains. New events join the window only
//! while nothing older is still waiting in the outbox, so the window is always the oldest
//! pending events. Pure state, no I/O: the worker does the loading and delivering.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One pending delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub event_id: u64,
    pub event_type: String,
    pub order_key: Option<String>,
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_at: DateTime<Utc>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Queue {
    window: usize,
    items: BTreeMap<u64, Item>,
    /// Order key → pending event ids of that key.
    by_key: HashMap<String, BTreeSet<u64>>,
    /// Heads not in flight, by due time.
    ready: BTreeSet<(DateTime<Utc>, u64)>,
    in_flight: BTreeSet<u64>,
    /// Highest event id loaded (or offered) so far.
    loaded_upto: u64,
    /// The outbox may hold pending events above `loaded_upto` that are not in the window.
    more_in_store: bool,
}

impl Queue {
    /// An empty queue holding at most `window` events; the outbox is assumed to hold more
    /// until a load says otherwise.
    pub fn new(window: usize) -> Queue {
        Queue {
            window: window.max(1),
            items: BTreeMap::new(),
            by_key: HashMap::new(),
            ready: BTreeSet::new(),
            in_flight: BTreeSet::new(),
            loaded_upto: 0,
            more_in_store: true,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the worker should load from the outbox: events may be waiting there and the
    /// window has room for at least half of its size.
    pub fn wants_load(&self) -> Option<(u64, usize)> {
        let room = self.window - self.items.len().min(self.window);
        (self.more_in_store && room * 2 >= self.window).then_some((self.loaded_upto, room))
    }

    /// Adds what a load returned (`asked` rows were requested, ids above `loaded_upto`).
    pub fn loaded(&mut self, rows: Vec<Item>, asked: usize) {
        let complete = rows.len() < asked;
        for item in rows {
            self.loaded_upto = self.loaded_upto.max(item.event_id);
            self.insert(item);
        }
        if complete {
            self.more_in_store = false;
        }
    }

    /// A new event was written to the outbox: it joins the window if it is the oldest one not
    /// loaded yet and there is room; otherwise a later load picks it up.
    pub fn offer(&mut self, item: Item) {
        if item.event_id <= self.loaded_upto {
            return; // already loaded from the outbox
        }
        if self.more_in_store || self.items.len() >= self.window {
            self.more_in_store = true;
            return;
        }
        self.loaded_upto = item.event_id;
        self.insert(item);
    }

    fn insert(&mut self, item: Item) {
        let id = item.event_id;
        if self.items.contains_key(&id) {
            return;
        }
        let head = match &item.order_key {
            None => true,
            Some(k) => {
                let ids = self.by_key.entry(k.clone()).or_default();
                ids.insert(id);
                ids.first() == Some(&id)
            }
        };
        if head {
            self.ready.insert((item.next_at, id));
        }
        self.items.insert(id, item);
    }

    /// The earliest due head (due at or before `now`), now in flight.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Option<Item> {
        let &(at, id) = self.ready.first()?;
        if at > now {
            return None;
        }
        self.ready.pop_first();
        self.in_flight.insert(id);
        self.items.get(&id).cloned()
    }

    /// When the next head becomes due (`None`: nothing waits outside flight).
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.ready.first().map(|(at, _)| *at)
    }

    /// The delivery of `id` is over (delivered or given up): the next event of its key
    /// becomes the head.
    pub fn finish(&mut self, id: u64) {
        self.in_flight.remove(&id);
        let Some(item) = self.items.remove(&id) else {
            return;
        };
        if let Some(k) = item.order_key {
            if let Some(ids) = self.by_key.get_mut(&k) {
                ids.remove(&id);
                match ids.first() {
                    Some(&next) => {
                        let at = self
                            .items
                            .get(&next)
                            .map(|i| i.next_at)
                            .unwrap_or(item.next_at);
                        if !self.in_flight.contains(&next) {
                            self.ready.insert((at, next));
                        }
                    }
                    None => {
                        self.by_key.remove(&k);
                    }
                }
            }
        }
    }

    /// The attempt on `id` failed: it stays the head of its key, due again at `next_at`.
    pub fn retry(&mut self, id: u64, attempts: u32, next_at: DateTime<Utc>) {
        self.in_flight.remove(&id);
        if let Some(item) = self.items.get_mut(&id) {
            item.attempts = attempts;
            item.next_at = next_at;
            self.ready.insert((next_at, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000 + s, 0).unwrap()
    }

    fn item(id: u64, key: Option<&str>) -> Item {
        Item {
            event_id: id,
            event_type: "call.started".into(),
            order_key: key.map(Into::into),
            body: format!("{{\"id\":{id}}}"),
            attempts: 0,
            next_at: t(0),
        }
    }

    fn drain_due(q: &mut Queue, now: DateTime<Utc>) -> Vec<u64> {
        std::iter::from_fn(|| q.take_due(now).map(|i| i.event_id)).collect()
    }

    #[test]
    fn one_call_is_delivered_in_order_others_in_parallel() {
        let mut q = Queue::new(100);
        q.loaded(Vec::new(), 100);
        for (id, key) in [
            (1, Some("A")),
            (2, Some("B")),
            (3, Some("A")),
            (4, None),
            (5, None),
        ] {
            q.offer(item(id, key));
        }
        assert_eq!(drain_due(&mut q, t(0)), [1, 2, 4, 5], "heads only");
        // A's head fails: 3 keeps waiting behind it, even when due.
        q.retry(1, 1, t(10));
        assert_eq!(drain_due(&mut q, t(5)), Vec::<u64>::new());
        assert_eq!(q.next_due(), Some(t(10)));
        assert_eq!(drain_due(&mut q, t(10)), [1]);
        q.finish(1);
        assert_eq!(drain_due(&mut q, t(10)), [3]);
        for id in [2, 3, 4, 5] {
            q.finish(id);
        }
        assert!(q.is_empty() && q.next_due().is_none() && q.in_flight() == 0);
    }

    #[test]
    fn the_window_keeps_the_oldest_and_loads_the_rest_later() {
        let mut q = Queue::new(4);
        assert_eq!(q.wants_load(), Some((0, 4)));
        q.loaded(vec![item(10, Some("A")), item(11, Some("B"))], 4);
        assert_eq!(q.wants_load(), None, "the outbox had nothing more");
        q.offer(item(12, None));
        q.offer(item(13, None));
        q.offer(item(14, None)); // window full: stays in the outbox
        q.offer(item(15, None)); // must not overtake 14
        assert_eq!(q.len(), 4);
        assert_eq!(drain_due(&mut q, t(0)), [10, 11, 12, 13]);
        for id in [10, 11, 12] {
            q.finish(id);
        }
        assert_eq!(q.wants_load(), Some((13, 3)));
        q.loaded(vec![item(14, None), item(15, None)], 3);
        q.offer(item(15, None)); // a late notification of something already loaded
        q.offer(item(16, None));
        assert_eq!(drain_due(&mut q, t(0)), [14, 15, 16]);
    }

    #[test]
    fn retries_are_scheduled_by_due_time() {
        let mut q = Queue::new(10);
        q.loaded(Vec::new(), 10);
        q.offer(item(1, None));
        q.offer(item(2, None));
        assert_eq!(drain_due(&mut q, t(0)), [1, 2]);
        q.retry(1, 1, t(0) + TimeDelta::seconds(30));
        q.retry(2, 1, t(0) + TimeDelta::seconds(5));
        assert_eq!(q.next_due(), Some(t(5)));
        assert_eq!(drain_due(&mut q, t(30)), [2, 1]);
    }
}
