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

/// Key prefixes of the channel snapshot blocks an event may carry (ami.md §2): `""` is the
/// event's own channel; multi-channel events repeat the whole block with a prefix, e.g.
/// `DestUniqueid`, `TransfererChannel`, `DestChanVariable`. Order matters to users that index
/// into it (the correlator uses the first nine).
pub const SNAPSHOT_PREFIXES: [&str; 11] = [
    "",
    "Dest",
    "Transferer",
    "Transferee",
    "OrigTransferer",
    "SecondTransferer",
    "TransferTarget",
    "LocalOne",
    "LocalTwo",
    "Spyer",
    "Spyee",
];
