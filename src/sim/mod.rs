//! Simulated peers of ctibridge, talking over real sockets.
//!
//! `ctibridge demo` and the integration tests need an Asterisk to talk to, but a real PBX with
//! phones is neither portable nor deterministic. So this module provides stand-ins that speak
//! the real wire formats over real TCP (loopback), which exercises the same code paths —
//! framing, partial reads, reconnects, torn sessions — as production:
//! - [`fixtures`]: recorded AMI traffic of real calls (embedded from `assets/demo/`) as timed
//!   scenarios that can be replayed any number of times as "new" calls;
//! - [`ami_server`]: a simulated Asterisk Manager Interface server with login (plain and MD5),
//!   the common actions, a live-channel table and fault injection (refused sessions, sessions
//!   cut mid-message).
//!
//! A desk-phone simulator (Action URLs) is meant to join these later.

pub mod ami_server;
pub mod fixtures;
pub mod phone;
