//! Live events: what happens to calls and phones, as it happens, for CRMs and the dashboard.
//!
//! - [`event`]: the event types and their JSON (catalogue in `docs/EVENTS.md`);
//! - [`deriver`]: correlator outputs → call events (ringing, answered, held, …);
//! - [`hub`]: numbering, the resume buffer, fan-out to stream clients and durable sinks.
//!
//! Sources: the consumer task of the service feeds [`Publisher`] with every correlator output
//! and every gap input (journal order), [`watch_phones`] turns phone registry changes into
//! `phone.state`, and click-to-call publishes `dial.status` through the hub. Sinks: the SSE
//! and WebSocket handlers (`http::events`) and the webhook outbox (`crate::webhook`).

pub mod deriver;
pub mod event;
pub mod hub;

pub use deriver::Deriver;
pub use event::{EventData, EventType, LiveEvent};
pub use hub::{Filter, Hub, HubOptions, Published, Subscription};

use crate::correlator::Output;
use crate::journal::{Input, JournalEntry};
use crate::phone::registry::{PhoneInfo, PhoneRegistry};
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// The consumer task's side of the hub: derives and publishes, in journal order.
pub struct Publisher {
    hub: Hub,
    deriver: Deriver,
    scratch: Vec<LiveEvent>,
}

impl Publisher {
    pub fn new(hub: Hub) -> Self {
        Publisher {
            hub,
            deriver: Deriver::new(),
            scratch: Vec::new(),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// An input reached the consumer: a gap is published as `gap`.
    pub fn input(&mut self, entry: &JournalEntry) {
        if let Input::Gap {
            pbx,
            from,
            to,
            reason,
        } = &entry.input
        {
            self.hub
                .publish(&LiveEvent::gap(entry.t, pbx, *from, *to, reason));
        }
    }

    /// The correlator's outputs for one input (or tick), published in order.
    pub fn outputs(&mut self, outputs: &[Output]) {
        for output in outputs {
            self.deriver.derive(output, &mut self.scratch);
        }
        for event in self.scratch.drain(..) {
            self.hub.publish(&event);
        }
    }
}

/// How long `watch_phones` lets changes gather before it compares the phones again. Every
/// accepted phone callback writes to the registry (at least its `last_seen`), so without a
/// pause a flood of callbacks would make the watcher compare every phone once per callback;
/// with it the comparing costs at most 1/window passes per second, whatever the callback
/// rate, and a `phone.state` event comes at most this much later.
pub const PHONE_STATE_COALESCE: std::time::Duration = std::time::Duration::from_millis(50);

/// Publishes `phone.state` whenever a phone's entry in `registry` changes (anything but the
/// time it was last seen), until `shutdown`. Changes are coalesced over
/// [`PHONE_STATE_COALESCE`]: a burst of updates to one phone yields one event with its latest
/// state.
pub async fn watch_phones(registry: PhoneRegistry, hub: Hub, shutdown: CancellationToken) {
    let mut changes = registry.changes();
    let mut last: BTreeMap<String, PhoneInfo> = registry
        .list()
        .into_iter()
        .map(|p| (p.extension.clone(), p))
        .collect();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PHONE_STATE_COALESCE) => {}
        }
        // Everything signalled so far is covered by the pass below.
        changes.borrow_and_update();
        let now = crate::journal::truncate_to_micros(chrono::Utc::now());
        for phone in registry.list() {
            if last
                .get(&phone.extension)
                .is_some_and(|before| same_but_last_seen(before, &phone))
            {
                continue;
            }
            let cause = phone
                .state
                .last_event
                .clone()
                .unwrap_or_else(|| "update".to_string());
            let json = serde_json::to_value(&phone).unwrap_or_default();
            hub.publish(&LiveEvent::phone_state(now, &phone.extension, json, cause));
            last.insert(phone.extension.clone(), phone);
        }
    }
}

/// Whether two views of a phone differ in nothing but `state.last_seen` (which every
/// callback moves, and which alone is not worth an event).
fn same_but_last_seen(before: &PhoneInfo, now: &PhoneInfo) -> bool {
    if before.state.last_seen == now.state.last_seen {
        return before == now;
    }
    let mut masked = now.clone();
    masked.state.last_seen = before.state.last_seen;
    *before == masked
}

/// What a dial status says about itself, for the `dial.status` envelope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DialMeta {
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// The extension that dials.
    pub extension: Option<String>,
    /// The call record, once the call has one.
    pub call_id: Option<String>,
}

/// Publishes `dial.status` for every click-to-call status change received on `changes`
/// (the click-to-call service's broadcast), until `shutdown` or the sender goes away.
/// `describe` tells the envelope fields; the payload is the status as the dial API shows it.
pub async fn forward_dial_status<T, F>(
    mut changes: tokio::sync::broadcast::Receiver<T>,
    hub: Hub,
    shutdown: CancellationToken,
    describe: F,
) where
    T: serde::Serialize + Clone,
    F: Fn(&T) -> DialMeta,
{
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let status = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.recv() => match r {
                Ok(s) => s,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "dial.status events missed (the event hub fell behind)");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
        };
        let meta = describe(&status);
        let at = meta
            .at
            .unwrap_or_else(|| crate::journal::truncate_to_micros(chrono::Utc::now()));
        let payload = serde_json::to_value(&status).unwrap_or_default();
        hub.publish(&LiveEvent::dial_status(
            at,
            meta.extension.as_deref(),
            meta.call_id,
            payload,
        ));
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod watch_phones_tests {
    use super::*;
    use crate::config::{PhoneSettings, PhoneVendor};
    use crate::live::hub::{Filter, HubOptions, Next, Subscription};
    use crate::phone::action_url::parse_callback;
    use std::sync::Arc;
    use std::time::Duration;

    fn registry() -> PhoneRegistry {
        PhoneRegistry::from_settings(&[PhoneSettings {
            extension: "101".into(),
            address: "127.0.0.1:18101".into(),
            vendor: PhoneVendor::Yealink,
            mac: Some("001565aabb01".into()),
            ..PhoneSettings::default()
        }])
    }

    fn callback(registry: &PhoneRegistry, event: &str) {
        let cb = parse_callback(event, b"mac=001565aabb01&active_user=101");
        registry.apply_callback("127.0.0.1".parse().unwrap(), &cb, chrono::Utc::now());
    }

    /// Events published within `wait`.
    async fn drain(sub: &mut Subscription, wait: Duration) -> Vec<Arc<hub::Published>> {
        let mut got = Vec::new();
        while let Ok(next) = tokio::time::timeout(wait, sub.next()).await {
            match next {
                Next::Event(p) => got.push(p),
                Next::Closed(_) => break,
            }
        }
        got
    }

    #[tokio::test]
    async fn one_event_per_real_change_and_none_for_last_seen_alone() {
        let registry = registry();
        let hub = Hub::new(HubOptions::default());
        let mut sub = hub.subscribe(Filter::all(), None).unwrap();
        let shutdown = CancellationToken::new();
        let watcher = tokio::spawn(watch_phones(
            registry.clone(),
            hub.clone(),
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;

        // DND on: one phone.state with the new state.
        callback(&registry, "dnd_on");
        let got = drain(&mut sub, Duration::from_millis(500)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].kind, EventType::PhoneState);
        let json = String::from_utf8_lossy(&got[0].json);
        assert!(json.contains(r#""dnd":true"#), "{json}");

        // The same callback again only moves last_seen: no event.
        callback(&registry, "dnd_on");
        assert!(drain(&mut sub, Duration::from_millis(300)).await.is_empty());

        // A burst of changes within the coalescing window: far fewer events than changes,
        // and the last one carries the final state.
        for i in 0..200 {
            callback(&registry, if i % 2 == 0 { "dnd_off" } else { "dnd_on" });
        }
        callback(&registry, "dnd_off");
        let got = drain(&mut sub, Duration::from_millis(500)).await;
        assert!(!got.is_empty() && got.len() < 20, "{} events", got.len());
        let last = String::from_utf8_lossy(&got.last().unwrap().json).into_owned();
        assert!(last.contains(r#""dnd":false"#), "{last}");

        shutdown.cancel();
        watcher.await.unwrap();
    }
}
