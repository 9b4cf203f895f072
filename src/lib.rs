//! ctibridge: joins Asterisk's AMI view and the desk phones' Action URL view of every call.
//!
//! The crate is laid out as *sources → journal → consumers* (see `docs/ARCHITECTURE.md`):
//! - [`ami`]: the AMI wire codec and the long-running AMI client (a source);
//! - [`journal`]: the durable, append-only input log every source writes before anything
//!   else looks at its input;
//! - [`ingest`]: the single funnel that journals an input and forwards it, in journal order;
//! - [`service`]: wires sources and consumers together for `ctibridge serve`;
//! - [`live`], [`webhook`]: live events (SSE, WebSocket) and their durable delivery to
//!   webhook targets;
//! - [`sim`]: simulated peers (an AMI server) for the demo and for tests over real sockets;
//! - [`config`], [`telemetry`]: settings and logs.

pub mod ami;
pub mod config;
pub mod control;
pub mod correlator;
pub mod demo;
pub mod http;
pub mod ingest;
pub mod journal;
pub mod live;
pub mod metrics;
pub mod phone;
pub mod record;
pub mod replay;
pub mod service;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod webhook;
