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
use crate::phone::registry::PhoneRegistry;
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

/// Publishes `phone.state` whenever a phone's entry in `registry` changes (anything but the
/// time it was last seen), until `shutdown`. Changes are coalesced: a burst of updates to one
/// phone yields one event with its latest state.
pub async fn watch_phones(registry: PhoneRegistry, hub: Hub, shutdown: CancellationToken) {
    let mut changes = registry.changes();
    let mut last: BTreeMap<String, serde_json::Value> = registry
        .list()
        .into_iter()
        .map(|p| (p.extension.clone(), comparable(&p)))
        .collect();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let now = crate::journal::truncate_to_micros(chrono::Utc::now());
        for phone in registry.list() {
            let view = comparable(&phone);
            if last.get(&phone.extension) == Some(&view) {
                continue;
            }
            let cause = phone
                .state
                .last_event
                .clone()
                .unwrap_or_else(|| "update".to_string());
            let json = serde_json::to_value(&phone).unwrap_or_default();
            hub.publish(&LiveEvent::phone_state(now, &phone.extension, json, cause));
            last.insert(phone.extension.clone(), view);
        }
    }
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

/// A phone's API view without the fields that change on every callback.
fn comparable(phone: &crate::phone::registry::PhoneInfo) -> serde_json::Value {
    let mut v = serde_json::to_value(phone).unwrap_or_default();
    if let Some(state) = v.get_mut("state").and_then(|s| s.as_object_mut()) {
        state.remove("last_seen");
    }
    v
}

#[cfg(test)]
mod tests;
