//! [`AmiCodec`]: the AMI wire format as a `tokio_util` codec.
//!
//! The wire (ami.md §1): a banner line `Asterisk Call Manager/X.Y.Z\r\n` with no blank line
//! after it, then messages of `Key: Value` lines, each message ended by an empty line. What
//! real servers do, and what this decoder therefore accepts:
//! - line ends are `\r\n` or a bare `\n`;
//! - keys repeat (`ChanVariable`, `Variable`, `Output`) and are kept in wire order;
//! - values may contain `": "` (the key ends at the *first* `": "`), may be empty (`Key: `),
//!   and a line `Key:` without the space is accepted (seen from Asterisk 1.8);
//! - extra blank lines between messages are ignored;
//! - the legacy (Asterisk ≤ 13) `Response: Follows` command reply, whose raw CLI body may hold
//!   blank lines and ends with `--END COMMAND--`, is one message whose body lines become
//!   `Output` fields — the same shape as the modern (14+) reply;
//! - a message over the size limit, or one with a line that has no `:`, is *returned* as
//!   [`AmiFrame::Malformed`], skipped up to the next blank line, and decoding goes on. A
//!   `Decoder` error would end a `FramedRead` stream, so only I/O errors are errors here.
//!
//! The decoder keeps its place inside a partly received message (`scan`), so a large message
//! that arrives in many reads is scanned once, not once per read.

use super::message::{AmiMessage, Field};
use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;
use tokio_util::codec::{Decoder, Encoder};

/// Default limit for one message: large `Command` replies and `CoreShowChannels` lists are
/// single messages of tens of KiB, so 64 KiB (as some libraries use) is too small.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

const END_COMMAND: &[u8] = b"--END COMMAND--";

/// One item of the decoded stream.
#[derive(Debug)]
pub enum AmiFrame {
    /// The greeting line, without its line end (e.g. `Asterisk Call Manager/11.0.0`).
    Banner(Bytes),
    /// A complete message.
    Message(AmiMessage),
    /// Bytes that could not be a message; they have been skipped.
    Malformed(AmiDecodeError),
}

/// Why some bytes of the stream did not make a message.
#[derive(Debug, thiserror::Error)]
pub enum AmiDecodeError {
    #[error("AMI message larger than {limit} bytes: skipped up to the next blank line")]
    Oversized { limit: usize },
    #[error("AMI message line {line} has no ':' ({excerpt:?}): message skipped")]
    NoColon {
        line: usize,
        excerpt: String,
        /// The whole message as received, so a caller can still keep it.
        raw: Bytes,
    },
    #[error("AMI stream ended inside a message: {bytes} bytes discarded")]
    Truncated { bytes: usize },
}

/// Where the decoder is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first line: it may be the banner.
    Banner,
    /// Reading a message (or blank lines before one).
    Message,
    /// Dropping an oversized message up to the next blank line. `mid_line` is true when the
    /// bytes dropped so far ended inside a line, so the next `\n` does not make a blank line.
    Skip { mid_line: bool },
}

/// Progress through a legacy `Response: Follows` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Legacy {
    No,
    /// After `Response: Follows`: `Privilege`/`ActionID` headers may follow.
    Headers,
    /// Raw command output lines.
    Body,
    /// `--END COMMAND--` seen; the message ends at the next line.
    End,
}

/// Decodes AMI bytes into [`AmiFrame`]s and encodes [`AmiMessage`]s.
#[derive(Debug)]
pub struct AmiCodec {
    max_message_bytes: usize,
    state: State,
    /// Offset of the next unread line of the current message (which starts at `buf[0]`).
    scan: usize,
    fields: Vec<Field>,
    lines: usize,
    no_colon: Option<(usize, String)>,
    legacy: Legacy,
}

impl Default for AmiCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl AmiCodec {
    /// A codec for a fresh connection: the first line may be the banner.
    pub fn new() -> Self {
        Self::with_max_message_bytes(DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// A codec with a different message size limit (clamped to 1 KiB ..= 4 GiB - 1).
    pub fn with_max_message_bytes(limit: usize) -> Self {
        AmiCodec {
            max_message_bytes: limit.clamp(1024, u32::MAX as usize - 1),
            state: State::Banner,
            scan: 0,
            fields: Vec::with_capacity(24),
            lines: 0,
            no_colon: None,
            legacy: Legacy::No,
        }
    }

    /// A codec for bytes that never start with a banner (journal entries, server side).
    pub fn without_banner(mut self) -> Self {
        if self.state == State::Banner {
            self.state = State::Message;
        }
        self
    }

    /// The configured message size limit.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    fn reset_message(&mut self) {
        self.scan = 0;
        self.fields.clear();
        self.lines = 0;
        self.no_colon = None;
        self.legacy = Legacy::No;
    }

    /// Takes the first `len` bytes as the current message and returns it (or why it is not one).
    fn finish(&mut self, buf: &mut BytesMut, len: usize) -> AmiFrame {
        let raw = buf.split_to(len).freeze();
        let fields = std::mem::replace(&mut self.fields, Vec::with_capacity(24));
        let no_colon = self.no_colon.take();
        self.reset_message();
        if let Some((line, excerpt)) = no_colon {
            return AmiFrame::Malformed(AmiDecodeError::NoColon { line, excerpt, raw });
        }
        if std::str::from_utf8(&raw).is_ok() {
            AmiFrame::Message(AmiMessage::from_parts(raw, fields, false))
        } else {
            // Rare: re-parse the lossily repaired text. Line structure is ASCII, so the
            // repaired text has the same lines and fields.
            let repaired = String::from_utf8_lossy(&raw).into_owned();
            match parse_message(repaired.as_bytes(), self.max_message_bytes) {
                Ok(m) => AmiFrame::Message(m.into_lossy()),
                Err(e) => AmiFrame::Malformed(e),
            }
        }
    }

    /// Starts skipping an oversized message: drops what is buffered of it.
    fn oversized(&mut self, buf: &mut BytesMut) -> AmiFrame {
        let complete_lines = self.scan;
        let mid_line = buf.len() > complete_lines;
        buf.clear();
        self.reset_message();
        self.state = State::Skip { mid_line };
        AmiFrame::Malformed(AmiDecodeError::Oversized {
            limit: self.max_message_bytes,
        })
    }

    /// Drops lines up to and including the next blank one. Returns true once it is found.
    fn skip(&mut self, buf: &mut BytesMut, mut mid_line: bool) -> bool {
        loop {
            let Some(nl) = memchr(b'\n', buf) else {
                // Keep a lone '\r' at a line start: with the next '\n' it is a blank line.
                if !buf.is_empty() && (mid_line || buf[..] != b"\r"[..]) {
                    mid_line = true;
                    buf.clear();
                }
                self.state = State::Skip { mid_line };
                return false;
            };
            let blank = !mid_line && (nl == 0 || (nl == 1 && buf[0] == b'\r'));
            buf.advance(nl + 1);
            mid_line = false;
            if blank {
                self.state = State::Message;
                return true;
            }
        }
    }

    /// Reads lines of the current message; returns a frame when one is complete.
    fn decode_message(&mut self, buf: &mut BytesMut) -> Option<AmiFrame> {
        loop {
            let Some(rel) = memchr(b'\n', &buf[self.scan..]) else {
                // A lone '\r' may be the start of the blank line that ends the message:
                // wait for its '\n' so the outcome does not depend on where reads split.
                let lone_cr = buf.len() == self.scan + 1 && buf[self.scan] == b'\r';
                if buf.len() > self.max_message_bytes && !lone_cr {
                    return Some(self.oversized(buf));
                }
                return None;
            };
            let line_start = self.scan;
            let nl = line_start + rel;
            let line_end = if nl > line_start && buf[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            if nl + 1 > self.max_message_bytes {
                // Drop only this message's bytes up to the end of this line: what follows it
                // in the buffer (the rest of the message, later messages) is still to be read.
                let ends_message = line_end == line_start && self.legacy != Legacy::Body;
                buf.advance(nl + 1);
                self.reset_message();
                self.state = if ends_message {
                    State::Message
                } else {
                    State::Skip { mid_line: false }
                };
                return Some(AmiFrame::Malformed(AmiDecodeError::Oversized {
                    limit: self.max_message_bytes,
                }));
            }

            if self.legacy == Legacy::End {
                // The message ends here: with this blank line, or before this stray line.
                let len = if line_end == line_start {
                    nl + 1
                } else {
                    line_start
                };
                return Some(self.finish(buf, len));
            }

            self.scan = nl + 1;
            if line_end == line_start && self.legacy != Legacy::Body {
                if self.fields.is_empty() && self.no_colon.is_none() {
                    // A blank line before any field: stray separator, not a message.
                    buf.advance(self.scan);
                    self.scan = 0;
                    continue;
                }
                let len = self.scan;
                return Some(self.finish(buf, len));
            }
            self.lines += 1;
            self.read_line(buf, line_start, line_end);
        }
    }

    /// Records one non-terminating line of the current message.
    fn read_line(&mut self, buf: &[u8], start: usize, end: usize) {
        let line = &buf[start..end];
        if self.legacy == Legacy::Body {
            return self.read_body_line(start, end, line);
        }
        let Some((key_len, value_off)) = split_field(line) else {
            if self.legacy == Legacy::Headers {
                self.legacy = Legacy::Body;
                return self.read_body_line(start, end, line);
            }
            if self.no_colon.is_none() {
                let excerpt = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
                self.no_colon = Some((self.lines, excerpt));
            }
            return;
        };
        let key = &line[..key_len];
        if self.legacy == Legacy::Headers
            && !(key.eq_ignore_ascii_case(b"Privilege") || key.eq_ignore_ascii_case(b"ActionID"))
        {
            self.legacy = Legacy::Body;
            return self.read_body_line(start, end, line);
        }
        let field = Field {
            key_start: start as u32,
            key_end: (start + key_len) as u32,
            value_start: (start + value_off) as u32,
            value_end: end as u32,
        };
        self.fields.push(field);
        if self.fields.len() == 1
            && key.eq_ignore_ascii_case(b"Response")
            && line[value_off..].eq_ignore_ascii_case(b"Follows")
        {
            self.legacy = Legacy::Headers;
        }
    }

    /// A raw line of legacy command output; `--END COMMAND--` (possibly glued to the last
    /// output line, as Asterisk 1.8 does when the output lacks a final newline) ends it.
    fn read_body_line(&mut self, start: usize, mut end: usize, line: &[u8]) {
        let ends_command = line.ends_with(END_COMMAND);
        if ends_command {
            end -= END_COMMAND.len();
            self.legacy = Legacy::End;
            if end == start {
                return;
            }
        }
        self.fields.push(Field {
            key_start: Field::SYNTHETIC_OUTPUT,
            key_end: Field::SYNTHETIC_OUTPUT,
            value_start: start as u32,
            value_end: end as u32,
        });
    }

    /// Reads the banner line, if the stream has one.
    fn decode_banner(&mut self, buf: &mut BytesMut) -> Option<AmiFrame> {
        loop {
            let Some(nl) = memchr(b'\n', buf) else {
                if buf.len() > self.max_message_bytes {
                    self.state = State::Message;
                    return Some(self.oversized(buf));
                }
                return None;
            };
            let end = if nl > 0 && buf[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            if end == 0 {
                buf.advance(nl + 1);
                continue;
            }
            self.state = State::Message;
            if nl + 1 > self.max_message_bytes {
                buf.advance(nl + 1);
                self.state = State::Skip { mid_line: false };
                return Some(AmiFrame::Malformed(AmiDecodeError::Oversized {
                    limit: self.max_message_bytes,
                }));
            }
            if memchr(b':', &buf[..end]).is_some() {
                // No banner: the stream starts with a message (e.g. a saved capture).
                return None;
            }
            let line = buf.split_to(nl + 1).freeze();
            return Some(AmiFrame::Banner(line.slice(..end)));
        }
    }
}

/// Splits a line into key length and value offset: the key ends at the first `": "`; a line
/// without `": "` but with a `:` has its key end at the first `:` (value after it).
fn split_field(line: &[u8]) -> Option<(usize, usize)> {
    let first = memchr(b':', line)?;
    let mut colon = first;
    loop {
        if line.get(colon + 1) == Some(&b' ') {
            return Some((colon, colon + 2));
        }
        match memchr(b':', &line[colon + 1..]) {
            Some(next) => colon += 1 + next,
            None => return Some((first, first + 1)),
        }
    }
}

impl Decoder for AmiCodec {
    type Item = AmiFrame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<AmiFrame>, std::io::Error> {
        loop {
            match self.state {
                State::Banner => match self.decode_banner(buf) {
                    Some(frame) => return Ok(Some(frame)),
                    None if self.state == State::Banner => return Ok(None),
                    None => continue,
                },
                State::Skip { mid_line } => {
                    if !self.skip(buf, mid_line) {
                        return Ok(None);
                    }
                }
                State::Message => return Ok(self.decode_message(buf)),
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<AmiFrame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.state == State::Message && self.legacy == Legacy::End {
            let len = buf.len();
            return Ok(Some(self.finish(buf, len)));
        }
        // Whatever is left is a torn message (or blank lines / a skipped tail).
        let significant = buf.iter().any(|b| !b.is_ascii_whitespace());
        let bytes = buf.len();
        buf.clear();
        self.reset_message();
        if significant && matches!(self.state, State::Message | State::Banner) {
            return Ok(Some(AmiFrame::Malformed(AmiDecodeError::Truncated {
                bytes,
            })));
        }
        Ok(None)
    }
}

impl Encoder<&AmiMessage> for AmiCodec {
    type Error = std::io::Error;

    /// Writes the message's raw bytes: a built message is framed with CRLF already, and a
    /// decoded one goes out exactly as it came in (the simulator replays captures byte for byte).
    fn encode(&mut self, msg: &AmiMessage, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(msg.raw());
        Ok(())
    }
}

/// Parses one complete message from `raw` (e.g. a journal entry's `raw`). The text must hold
/// exactly one message; a missing final blank line is tolerated.
pub fn parse_message(raw: &[u8], max_message_bytes: usize) -> Result<AmiMessage, AmiDecodeError> {
    let mut codec = AmiCodec::with_max_message_bytes(max_message_bytes).without_banner();
    let mut buf = BytesMut::from(raw);
    let frame = match codec.decode(&mut buf) {
        Ok(Some(frame)) => Some(frame),
        // A legacy reply may end at `--END COMMAND--` with no blank line: that is complete.
        Ok(None) if codec.legacy == Legacy::End => codec.decode_eof(&mut buf).ok().flatten(),
        Ok(None) => {
            // Tolerate a missing terminator by supplying it.
            buf.extend_from_slice(b"\r\n\r\n");
            codec.decode(&mut buf).ok().flatten()
        }
        Err(_) => None,
    };
    match frame {
        Some(AmiFrame::Message(m)) => Ok(m),
        Some(AmiFrame::Malformed(e)) => Err(e),
        Some(AmiFrame::Banner(_)) | None => Err(AmiDecodeError::Truncated { bytes: raw.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::testing::arb_message;
    use proptest::prelude::*;

    fn decode_all(codec: &mut AmiCodec, input: &[u8]) -> Vec<AmiFrame> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn messages(frames: &[AmiFrame]) -> Vec<Vec<(String, String)>> {
        frames
            .iter()
            .filter_map(|f| match f {
                AmiFrame::Message(m) => Some(m.to_pairs()),
                _ => None,
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn banner_then_messages_with_crlf_and_lf() {
        let input = b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nMessage: Authentication accepted\r\n\r\nEvent: X\nA: b: c\nEmpty: \nNoSpace:\n\n";
        let frames = decode_all(&mut AmiCodec::new(), input);
        assert!(matches!(&frames[0], AmiFrame::Banner(b) if b == "Asterisk Call Manager/11.0.0"));
        assert_eq!(
            messages(&frames),
            vec![
                pairs(&[
                    ("Response", "Success"),
                    ("Message", "Authentication accepted")
                ]),
                pairs(&[
                    ("Event", "X"),
                    ("A", "b: c"),
                    ("Empty", ""),
                    ("NoSpace", "")
                ]),
            ]
        );
    }

    #[test]
    fn stream_without_banner_and_stray_blank_lines() {
        let input = b"\r\n\r\nEvent: A\r\n\r\n\r\n\nEvent: B\r\n\r\n\n";
        let frames = decode_all(&mut AmiCodec::new(), input);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(
            messages(&frames),
            vec![pairs(&[("Event", "A")]), pairs(&[("Event", "B")])]
        );
    }

    #[test]
    fn repeated_keys_and_channel_in_key() {
        let input = b"Event: OriginateResponse\r\nChanVariable(IAX2/10.0.0.1:4569-1): A=1\r\nChanVariable: B=2\r\nChanVariable: C=3\r\n\r\n";
        let frames = decode_all(&mut AmiCodec::new().without_banner(), input);
        let AmiFrame::Message(m) = &frames[0] else {
            panic!("{frames:?}")
        };
        assert_eq!(
            m.to_pairs()[1],
            (
                "ChanVariable(IAX2/10.0.0.1:4569-1)".into(),
                "A=1".to_string()
            )
        );
        assert_eq!(
            m.get_all("ChanVariable").collect::<Vec<_>>(),
            ["B=2", "C=3"]
        );
    }

    #[test]
    fn legacy_follows_body_becomes_output_fields() {
        let input = b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\nAsterisk 11.25.3 built by root: today\n\nsecond: line\n--END COMMAND--\r\n\r\nEvent: Next\r\n\r\n";
        let frames = decode_all(&mut AmiCodec::new().without_banner(), input);
        assert_eq!(
            messages(&frames),
            vec![
                pairs(&[
                    ("Response", "Follows"),
                    ("Privilege", "Command"),
                    ("ActionID", "7"),
                    ("Output", "Asterisk 11.25.3 built by root: today"),
                    ("Output", ""),
                    ("Output", "second: line"),
                ]),
                pairs(&[("Event", "Next")]),
            ]
        );
    }

    #[test]
    fn legacy_end_marker_glued_to_last_line() {
        let input = b"Response: Follows\r\nPrivilege: Command\r\nNo such command 'x'--END COMMAND--\r\n\r\n";
        let frames = decode_all(&mut AmiCodec::new().without_banner(), input);
        assert_eq!(
            messages(&frames),
            vec![pairs(&[
                ("Response", "Follows"),
                ("Privilege", "Command"),
                ("Output", "No such command 'x'"),
            ])]
        );
    }

    #[test]
    fn modern_command_output_lines_kept_in_order() {
        let input = b"Response: Success\r\nMessage: Command output follows\r\nOutput: a\r\nOutput: \r\nOutput: b: c\r\n\r\n";
        let frames = decode_all(&mut AmiCodec::new().without_banner(), input);
        let AmiFrame::Message(m) = &frames[0] else {
            panic!()
        };
        assert_eq!(m.get_all("Output").collect::<Vec<_>>(), ["a", "", "b: c"]);
    }

    #[test]
    fn oversized_message_is_skipped_and_stream_goes_on() {
        let mut input = b"Event: Big\r\n".to_vec();
        for i in 0..200 {
            input.extend_from_slice(format!("Line{i}: {}\r\n", "x".repeat(20)).as_bytes());
        }
        input.extend_from_slice(b"\r\nEvent: After\r\n\r\n");
        // Feed in small chunks to cover the partial-buffer paths too.
        for chunk in [7usize, 100, 5000] {
            let mut codec = AmiCodec::with_max_message_bytes(1024).without_banner();
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            for part in input.chunks(chunk) {
                buf.extend_from_slice(part);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    frames.push(f);
                }
            }
            assert!(
                matches!(
                    frames[0],
                    AmiFrame::Malformed(AmiDecodeError::Oversized { limit: 1024 })
                ),
                "{frames:?}"
            );
            assert_eq!(messages(&frames), vec![pairs(&[("Event", "After")])]);
            assert_eq!(frames.len(), 2);
        }
    }

    #[test]
    fn line_without_colon_is_reported_with_raw_and_stream_goes_on() {
        let input = b"Event: A\r\ngarbage line\r\n\r\nEvent: B\r\n\r\n";
        let frames = decode_all(&mut AmiCodec::new().without_banner(), input);
        match &frames[0] {
            AmiFrame::Malformed(AmiDecodeError::NoColon { line, raw, .. }) => {
                assert_eq!(*line, 2);
                assert_eq!(&raw[..], b"Event: A\r\ngarbage line\r\n\r\n");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(messages(&frames), vec![pairs(&[("Event", "B")])]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_flagged() {
        let input = b"Event: X\r\nCallerIDName: Jos\xe9\r\n\r\n";
        let frames = decode_all(&mut AmiCodec::new().without_banner(), input);
        let AmiFrame::Message(m) = &frames[0] else {
            panic!()
        };
        assert!(m.is_lossy());
        assert_eq!(m.get("CallerIDName"), Some("Jos\u{fffd}"));
    }

    #[test]
    fn truncated_message_at_eof_is_reported_not_returned() {
        let frames = decode_all(
            &mut AmiCodec::new().without_banner(),
            b"Event: A\r\n\r\nEvent: B\r\nUniq",
        );
        assert_eq!(messages(&frames), vec![pairs(&[("Event", "A")])]);
        assert!(matches!(
            frames[1],
            AmiFrame::Malformed(AmiDecodeError::Truncated { bytes: 14 })
        ));
    }

    #[test]
    fn parse_message_keeps_a_legacy_reply_without_blank_line_byte_exact() {
        let raw = b"Response: Follows\r\nPrivilege: Command\r\nout\n--END COMMAND--\r\n";
        let m = parse_message(raw, 4096).unwrap();
        assert_eq!(&m.raw()[..], &raw[..]);
        assert_eq!(m.get("Output"), Some("out"));
    }

    #[test]
    fn parse_message_tolerates_missing_terminator() {
        let m = parse_message(b"Event: A\r\nB: c", 4096).unwrap();
        assert_eq!(m.to_pairs(), pairs(&[("Event", "A"), ("B", "c")]));
    }

    proptest! {
        #[test]
        fn encode_then_decode_under_any_chunking(
            msgs in prop::collection::vec(arb_message(), 1..8),
            cuts in prop::collection::vec(1usize..64, 0..40),
        ) {
            let mut codec = AmiCodec::new().without_banner();
            let mut wire = BytesMut::new();
            for m in &msgs {
                codec.encode(m, &mut wire).unwrap();
            }
            let wire = wire.freeze();
            let mut decoder = AmiCodec::new().without_banner();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut cuts = cuts.into_iter();
            while pos < wire.len() {
                let n = cuts.next().unwrap_or(wire.len()).min(wire.len() - pos);
                buf.extend_from_slice(&wire[pos..pos + n]);
                pos += n;
                while let Some(f) = decoder.decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            let decoded: Vec<AmiMessage> = out
                .into_iter()
                .map(|f| match f {
                    AmiFrame::Message(m) => m,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            prop_assert_eq!(decoded, msgs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..4096),
            chunk in 1usize..512,
            limit in 1024usize..4096,
        ) {
            let mut codec = AmiCodec::with_max_message_bytes(limit);
            let mut buf = BytesMut::new();
            for part in data.chunks(chunk) {
                buf.extend_from_slice(part);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    if let AmiFrame::Message(m) = f {
                        // Accessors must hold on whatever was decoded.
                        prop_assert!(std::str::from_utf8(m.raw()).is_ok());
                        for (k, v) in m.iter() { let _ = (k.len(), v.len()); }
                    }
                }
            }
            while codec.decode_eof(&mut buf).unwrap().is_some() {}
        }

        #[test]
        fn arbitrary_ami_like_lines_never_panic(
            lines in prop::collection::vec(
                prop_oneof![
                    Just(String::new()), Just("\r".to_string()),
                    Just("Response: Follows".to_string()), Just("--END COMMAND--".to_string()),
                    "[A-Za-z:]{0,6}(: )?[ -~]{0,10}\r?",
                ],
                0..60),
            chunk in 1usize..64,
        ) {
            let text = lines.join("\n");
            let mut codec = AmiCodec::with_max_message_bytes(1024);
            let mut buf = BytesMut::new();
            for part in text.as_bytes().chunks(chunk) {
                buf.extend_from_slice(part);
                while codec.decode(&mut buf).unwrap().is_some() {}
            }
            while codec.decode_eof(&mut buf).unwrap().is_some() {}
        }
    }
}
