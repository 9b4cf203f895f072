//! Fuzzes `AmiCodec` as a `FramedRead` would drive it: the input arrives in reads whose sizes
//! come from the first input bytes, then `decode_eof` runs.
//!
//! Input layout: byte 0 = flags (bits 0..=2: number of size bytes - 1; bit 3: no banner),
//! then that many size bytes (read sizes, used in turn), then the AMI bytes.
//!
//! Invariants: decoding never returns an error and always ends; the frames do not depend on
//! how the input was split into reads; every message's raw text is UTF-8 and `iter()` yields
//! `len()` fields without line breaks; a message re-encoded and decoded again is equal to
//! itself (except legacy `Response: Follows` replies, whose body is not `Key: Value`).
#![no_main]

use bytes::BytesMut;
use ctibridge::ami::{AmiCodec, AmiFrame, AmiMessage};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

/// The smallest limit the codec accepts, so that inputs of a few KiB reach the oversize path.
const MAX_MESSAGE_BYTES: usize = 1024;

/// A frame in comparable form.
#[derive(Debug, PartialEq)]
enum Seen {
    Banner(Vec<u8>),
    Message(Vec<u8>, Vec<(String, String)>),
    Malformed(String),
}

fn codec(banner: bool) -> AmiCodec {
    let codec = AmiCodec::with_max_message_bytes(MAX_MESSAGE_BYTES);
    if banner {
        codec
    } else {
        codec.without_banner()
    }
}

/// Decodes `data` in reads of the given sizes (cycled); checks each message on the way.
fn decode(data: &[u8], sizes: &[usize], banner: bool) -> Vec<Seen> {
    let mut codec = codec(banner);
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    // Every frame consumes at least one byte, so more frames than bytes means a loop.
    let limit = data.len() + 1;
    let mut on_frame = |frame: AmiFrame| {
        assert!(
            seen.len() < limit,
            "decoder produced more frames than input bytes"
        );
        seen.push(match frame {
            AmiFrame::Banner(b) => Seen::Banner(b.to_vec()),
            AmiFrame::Message(m) => {
                check_message(&m);
                Seen::Message(m.raw().to_vec(), m.to_pairs())
            }
            AmiFrame::Malformed(e) => Seen::Malformed(e.to_string()),
        });
    };
    let mut rest = data;
    let mut turn = 0;
    while !rest.is_empty() {
        let n = sizes[turn % sizes.len()].min(rest.len());
        turn += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(frame) = codec.decode(&mut buf).expect("decode never fails on bytes") {
            on_frame(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        on_frame(frame);
    }
    seen
}

fn is_legacy_follows(m: &AmiMessage) -> bool {
    m.iter().next().is_some_and(|(k, v)| {
        k.eq_ignore_ascii_case("Response") && v.eq_ignore_ascii_case("Follows")
    })
}

fn check_message(m: &AmiMessage) {
    let raw = m.raw();
    assert!(
        std::str::from_utf8(raw).is_ok(),
        "raw is not UTF-8: {raw:?}"
    );
    assert!(!m.is_empty(), "decoded message without fields");
    assert!(
        raw.len() <= MAX_MESSAGE_BYTES,
        "message over the limit: {}",
        raw.len()
    );
    let mut fields = 0;
    for (key, value) in m.iter() {
        fields += 1;
        assert!(
            !key.contains('\n') && !value.contains('\n'),
            "{key:?}: {value:?}"
        );
    }
    assert_eq!(fields, m.len());
    if let Some((key, value)) = m.iter().next() {
        assert_eq!(m.get(key), Some(value), "get() of the first key");
    }

    if is_legacy_follows(m) {
        return;
    }
    let mut encoded = BytesMut::new();
    codec(false).encode(m, &mut encoded).expect("encode");
    let mut again = codec(false);
    let mut frames = Vec::new();
    while let Some(frame) = again.decode_eof(&mut encoded).expect("re-decode") {
        frames.push(frame);
    }
    match frames.as_slice() {
        [AmiFrame::Message(m2)] => {
            assert_eq!(m2, m, "re-decoded message differs");
            assert_eq!(m2.raw(), m.raw(), "re-decoded raw differs");
        }
        other => panic!("re-encoding {m:?} decoded as {other:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let n_sizes = usize::from(flags & 7) + 1;
    if rest.len() < n_sizes {
        return;
    }
    let (size_bytes, data) = rest.split_at(n_sizes);
    let banner = flags & 8 == 0;
    // 1..=255 bytes per read, or a large 4 KiB read for a size byte of 0.
    let sizes: Vec<usize> = size_bytes
        .iter()
        .map(|&b| if b == 0 { 4096 } else { usize::from(b) })
        .collect();

    let chunked = decode(data, &sizes, banner);
    let whole = decode(data, &[data.len().max(1)], banner);
    assert_eq!(chunked, whole, "frames depend on how the input was split");
});
