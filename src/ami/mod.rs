//! The Asterisk Manager Interface: wire codec ([`codec`]), message type ([`message`]) and the
//! long-running client ([`client`]).

pub mod codec;
pub mod message;
#[cfg(test)]
pub(crate) mod testing;

pub use codec::{parse_message, AmiCodec, AmiDecodeError, AmiFrame, DEFAULT_MAX_MESSAGE_BYTES};
pub use message::{AmiMessage, AmiMessageBuilder, FieldError, MessageKind};
pub mod backoff;
pub mod client;

pub use client::{AmiClient, AmiClientOptions, AmiError, AmiHandle, AmiResponse, LinkStatus};
