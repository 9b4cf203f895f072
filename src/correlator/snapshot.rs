//! [`CorrelatorSnapshot`]: the correlator's whole state as a serialisable value, so that a
//! restart can continue from a checkpoint instead of replaying the whole journal.
//!
//! What is stored: every live (or in-grace) conversation with its legs and compact timeline,
//! the per-PBX memory that is not derivable from them (tombstones of completed channels, a
//! `CoreShowChannels` list being received or waiting for its gap), pending phone callbacks,
//! orphans not yet taken, the SIP Call-IDs of recently completed calls, the SIP Call-ID index,
//! and the key counter. What is not stored: the settings (they come from the configuration at
//! restore, so a restart may change them, e.g. add a phone), and the lookup indexes that follow
//! from the conversations (`Uniqueid` → leg, `Linkedid` → conversation, endpoint →
//! conversations, completion deadlines), which [`Correlator::restore`] rebuilds.
//!
//! The guarantee, checked by property tests over the recorded fixtures and generated inputs:
//! a correlator restored from the snapshot taken after any input produces exactly the outputs
//! the original would have produced for the rest of the input.
//!
//! Format: JSON ([`CorrelatorSnapshot::to_json`]), maps written as lists sorted by key so that
//! the same state always gives the same text, empty fields left out. `version` says which
//! format it is; any change to what the state holds must bump [`SNAPSHOT_VERSION`], and a
//! snapshot of another version is refused ([`SnapshotError::UnknownVersion`]); the service
//! then rebuilds from the whole journal instead.

use super::call::Conversation;
use super::channel::LegRef;
use super::phone_match::{OrphanSnap, PhoneSnap};
use super::text::Text;
use super::{Correlator, CorrelatorConfig, OrphanCallback, PbxState, Resync};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The snapshot format this build writes and reads. A snapshot of any other version is
/// refused, and the service replays the whole journal instead.
///
/// - 1: the first format.
/// - 2: legs keep the outcome of their own `Dial` (`dial_result`, from `DIALSTATUS`), and
///   `had_dial` is also set by it. A version-1 snapshot lacks both for a call that had a
///   `DIALSTATUS` before it was taken, so it could not continue like a replay would.
pub const SNAPSHOT_VERSION: u32 = 2;

/// See the module docs. Built by [`Correlator::snapshot`], turned back into a correlator by
/// [`Correlator::restore`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CorrelatorSnapshot {
    /// Format version ([`SNAPSHOT_VERSION`] when written by this build).
    pub version: u32,
    state: State,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    next_key: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pbxs: Vec<PbxSnap>,
    /// By key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    convs: Vec<(u64, Conversation)>,
    /// SIP Call-ID → conversation, by SIP Call-ID. Entries for conversations that no longer
    /// exist are left out (looking them up finds nothing either way).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sip_index: Vec<(Text, u64)>,
    #[serde(default)]
    phone: PhoneSnap,
}

/// What a PBX's state holds beyond its conversations.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PbxSnap {
    name: String,
    /// Channels of completed conversations → until when they are ignored, by `Uniqueid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tombstones: Vec<(Text, DateTime<Utc>)>,
    /// Their expiry queue, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tombstone_queue: Vec<(DateTime<Utc>, Text)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resync_building: Option<(DateTime<Utc>, BTreeSet<Text>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resync_done: Option<Resync>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gap_awaiting_resync: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Written by a build with another snapshot format.
    #[error("correlator snapshot format {found} is not the supported format {supported}")]
    UnknownVersion { found: u32, supported: u32 },
    /// Not a snapshot (bad JSON, missing fields).
    #[error("correlator snapshot does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// Decodes, but contradicts itself (duplicate keys, a key beyond the counter…).
    #[error("correlator snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

/// Just the version, read before the rest (whose shape depends on it).
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

impl CorrelatorSnapshot {
    /// The snapshot as JSON (deterministic: the same state gives the same text).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a snapshot always serialises")
    }

    /// Reads a snapshot written by [`CorrelatorSnapshot::to_json`]; the version is checked
    /// first, so a snapshot of another format is reported as such, not as bad JSON.
    pub fn from_json(json: &str) -> Result<CorrelatorSnapshot, SnapshotError> {
        let VersionOnly { version } = serde_json::from_str(json)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnknownVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        Ok(serde_json::from_str(json)?)
    }

    /// Conversations (live or waiting for their grace to run out) in the snapshot.
    pub fn live_calls(&self) -> usize {
        self.state.convs.len()
    }
}

/// Orphan callbacks (e.g. the list the API shows, kept beside the correlator) as JSON, in the
/// snapshot's form: what was received, the callback parsed again when read back.
pub fn orphans_to_json(orphans: &[OrphanCallback]) -> String {
    let list: Vec<OrphanSnap> = orphans.iter().map(OrphanSnap::of).collect();
    serde_json::to_string(&list).expect("orphans always serialise")
}

/// Reads what [`orphans_to_json`] wrote.
pub fn orphans_from_json(json: &str) -> Result<Vec<OrphanCallback>, SnapshotError> {
    let list: Vec<OrphanSnap> = serde_json::from_str(json)?;
    list.into_iter()
        .map(|o| {
            o.into_orphan().map_err(|e| {
                SnapshotError::Inconsistent(format!("orphan callback target {:?}", e.0))
            })
        })
        .collect()
}

impl Correlator {
    /// The whole state, to be stored and later given to [`Correlator::restore`]. Take it
    /// between inputs (it borrows the correlator, so it cannot be taken during one).
    pub fn snapshot(&self) -> CorrelatorSnapshot {
        let mut convs: Vec<(u64, Conversation)> =
            self.convs.iter().map(|(k, c)| (*k, c.clone())).collect();
        convs.sort_unstable_by_key(|(k, _)| *k);
        let mut sip_index: Vec<(Text, u64)> = self
            .sip_index
            .iter()
            .filter(|(_, k)| self.convs.contains_key(k))
            .map(|(s, k)| (s.clone(), *k))
            .collect();
        sip_index.sort_unstable();
        let pbxs = self
            .pbxs
            .iter()
            .map(|(name, p)| {
                let mut tombstones: Vec<(Text, DateTime<Utc>)> =
                    p.tombstones.iter().map(|(u, t)| (u.clone(), *t)).collect();
                tombstones.sort_unstable();
                PbxSnap {
                    name: name.to_string(),
                    tombstones,
                    tombstone_queue: p.tombstone_queue.iter().cloned().collect(),
                    resync_building: p.resync_building.clone(),
                    resync_done: p.resync_done.clone(),
                    gap_awaiting_resync: p.gap_awaiting_resync,
                }
            })
            .collect();
        CorrelatorSnapshot {
            version: SNAPSHOT_VERSION,
            state: State {
                next_key: self.next_key,
                pbxs,
                convs,
                sip_index,
                phone: self.phone_snapshot(),
            },
        }
    }

    /// A correlator with `cfg`'s settings and `snapshot`'s state: it continues exactly where
    /// the snapshotted one was (see the module docs).
    pub fn restore(
        cfg: CorrelatorConfig,
        snapshot: CorrelatorSnapshot,
    ) -> Result<Correlator, SnapshotError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnknownVersion {
                found: snapshot.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let bad = |what: String| SnapshotError::Inconsistent(what);
        let st = snapshot.state;
        let mut c = Correlator::new(cfg);
        c.next_key = st.next_key;
        for p in st.pbxs {
            let name: Arc<str> = Arc::from(p.name.as_str());
            let state = PbxState {
                tombstones: p.tombstones.into_iter().collect(),
                tombstone_queue: p.tombstone_queue.into_iter().collect(),
                resync_building: p.resync_building,
                resync_done: p.resync_done,
                gap_awaiting_resync: p.gap_awaiting_resync,
                ..PbxState::default()
            };
            if c.pbxs.insert(name, state).is_some() {
                return Err(bad(format!("PBX {:?} listed twice", p.name)));
            }
        }
        for (key, mut conv) in st.convs {
            if key >= c.next_key {
                return Err(bad(format!(
                    "conversation key {key} is not below the counter {}",
                    c.next_key
                )));
            }
            // One shared `Arc` per PBX, as in a correlator that ran.
            let pbx = match c.pbxs.get_key_value(&*conv.pbx) {
                Some((name, _)) => name.clone(),
                None => {
                    let name = conv.pbx.clone();
                    c.pbxs.insert(name.clone(), PbxState::default());
                    name
                }
            };
            conv.pbx = pbx.clone();
            let p = c.pbxs.get_mut(&pbx).expect("inserted above");
            for (i, leg) in conv.legs.iter_mut().enumerate() {
                leg.refresh_channel();
                let r = LegRef {
                    conv: key,
                    idx: i as u32,
                };
                if p.channels.insert(leg.uniqueid.clone(), r).is_some() {
                    return Err(bad(format!("channel {} in two places", leg.uniqueid)));
                }
            }
            for lid in conv.linkedids() {
                p.linkedids.insert(lid.clone(), key);
            }
            let endpoints: Vec<Text> = conv
                .legs
                .iter()
                .filter_map(|l| l.endpoint().map(Text::from))
                .collect();
            if let Some(d) = conv.deadline {
                c.deadlines.insert((d, key));
            }
            if c.convs.insert(key, conv).is_some() {
                return Err(bad(format!("conversation key {key} listed twice")));
            }
            for ep in endpoints {
                c.index_endpoint(&ep, key);
            }
        }
        for (sip, key) in st.sip_index {
            c.sip_index.insert(sip, key);
        }
        c.restore_phone(st.phone)
            .map_err(|e| bad(format!("pending or orphan callback target {:?}", e.0)))?;
        Ok(c)
    }
}
