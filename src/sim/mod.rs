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
//! - [`phone`]: a simulated desk phone of each vendor (Active URI server, Action URL callbacks);
//! - [`pbx`]: a simulated telephone system that makes calls between those phones and a trunk,
//!   reported over the AMI server and by the phones (what `ctibridge demo` runs).

pub mod ami_server;
pub mod fixtures;
pub mod pbx;
pub mod phone;
