//! Everything ctibridge does with desk phones.
//!
//! - [`action_url`]: the phone → bridge callbacks (Action URL), parsed into typed events;
//! - [`registry`]: the phones we know (from config, and learned from callbacks) and their state;
//! - [`command`], [`number`], [`vendor`]: what we can ask a phone to do, and the exact request
//!   each vendor expects for it (Active URI);
//! - [`client`]: sends those requests safely (allowed networks, auth, one at a time per phone,
//!   timeouts), over HTTP or as a SIP NOTIFY through Asterisk.

pub mod action_url;
pub mod client;
pub mod command;
pub mod number;
pub mod provisioning;
pub mod registry;
pub mod vendor;
