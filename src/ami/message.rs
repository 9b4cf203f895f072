//! [`AmiMessage`]: one AMI message, kept as the exact bytes that arrived plus field offsets.
//!
//! Why offsets instead of `(String, String)` pairs: the AMI read loop handles thousands of
//! messages a second and most fields are never looked at. Keeping the message as one
//! reference-counted [`Bytes`] (a slice of the socket read buffer) and an array of small
//! offsets makes decoding allocation-light, and the raw text is what the journal stores anyway.

use bytes::Bytes;
use std::fmt;

/// Key given to the lines of a legacy `Response: Follows` command body (Asterisk ≤ 13), so that
/// consumers see the same shape as the modern `Output:` lines of Asterisk 14+.
pub const OUTPUT_KEY: &str = "Output";

/// Offsets of one `Key: Value` field inside [`AmiMessage::raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    /// Start of the key, or [`Field::SYNTHETIC_OUTPUT`] for a legacy command body line.
    pub key_start: u32,
    pub key_end: u32,
    pub value_start: u32,
    pub value_end: u32,
}

impl Field {
    pub const SYNTHETIC_OUTPUT: u32 = u32::MAX;
}

/// One AMI message: response, event, or action, in wire order, repeated keys kept.
///
/// The text is always valid UTF-8: the decoder replaces invalid sequences with U+FFFD (as
/// Asterisk 20.2+ itself does for caller names) and sets [`AmiMessage::is_lossy`].
#[derive(Clone)]
pub struct AmiMessage {
    raw: Bytes,
    fields: Vec<Field>,
    lossy: bool,
}

impl AmiMessage {
    /// Builds a message from parts the decoder has checked: `raw` is valid UTF-8 and every
    /// offset lies inside it on a character boundary.
    pub(crate) fn from_parts(raw: Bytes, fields: Vec<Field>, lossy: bool) -> Self {
        debug_assert!(std::str::from_utf8(&raw).is_ok());
        AmiMessage { raw, fields, lossy }
    }

    /// The same message flagged as repaired from invalid UTF-8.
    pub(crate) fn into_lossy(mut self) -> Self {
        self.lossy = true;
        self
    }

    /// Starts building a message to send (an action) or to serve (in simulators and tests).
    pub fn builder() -> AmiMessageBuilder {
        AmiMessageBuilder::default()
    }

    /// Shorthand for `builder().field("Action", name)`.
    pub fn action(name: &str) -> AmiMessageBuilder {
        AmiMessageBuilder::default().field("Action", name)
    }

    /// Shorthand for `builder().field("Event", name)`.
    pub fn event(name: &str) -> AmiMessageBuilder {
        AmiMessageBuilder::default().field("Event", name)
    }

    /// The message exactly as received, including its terminating blank line.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The raw text (always valid UTF-8, see the type docs).
    pub fn raw_str(&self) -> &str {
        self.slice(0, self.raw.len() as u32)
    }

    /// True when invalid UTF-8 was replaced while decoding.
    pub fn is_lossy(&self) -> bool {
        self.lossy
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the message has no field (never produced by the decoder).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn slice(&self, start: u32, end: u32) -> &str {
        let bytes = &self.raw[start as usize..end as usize];
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: `raw` is valid UTF-8 (checked once in `from_parts`' callers: the decoder
        // validates or repairs each message, the builder writes `String`s), and every field
        // offset sits next to an ASCII delimiter (`\n`, `\r`, `:`, space). An ASCII byte never
        // occurs inside a multi-byte UTF-8 sequence, so each slice is valid UTF-8 too. This
        // keeps lookups on the hot path (correlator, routing) free of repeated validation.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    fn key_of(&self, f: &Field) -> &str {
        if f.key_start == Field::SYNTHETIC_OUTPUT {
            OUTPUT_KEY
        } else {
            self.slice(f.key_start, f.key_end)
        }
    }

    /// All fields as `(key, value)` in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.fields
            .iter()
            .map(move |f| (self.key_of(f), self.slice(f.value_start, f.value_end)))
    }

    /// The first value of `key` (AMI keys are case-insensitive; Asterisk uses the first of
    /// duplicated keys too).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find_field(key)
            .map(|f| self.slice(f.value_start, f.value_end))
    }

    /// The first field whose key equals `key` ignoring ASCII case; compares bytes so that the
    /// hot path (correlator lookups) does no UTF-8 work on keys.
    fn find_field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| {
            if f.key_start == Field::SYNTHETIC_OUTPUT {
                OUTPUT_KEY.eq_ignore_ascii_case(key)
            } else {
                self.raw[f.key_start as usize..f.key_end as usize]
                    .eq_ignore_ascii_case(key.as_bytes())
            }
        })
    }

    /// Every value of a repeatable key (`ChanVariable`, `Variable`, `Output`), in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// A value as a zero-copy [`Bytes`] slice of the received buffer.
    pub fn get_bytes(&self, key: &str) -> Option<Bytes> {
        self.find_field(key)
            .map(|f| self.raw.slice(f.value_start as usize..f.value_end as usize))
    }

    /// `Event` header, if this is an event.
    pub fn event_name(&self) -> Option<&str> {
        self.get("Event")
    }

    /// `Response` header, if present. Note that `OriginateResponse` is an *event* that also
    /// carries `Response:`; classify by [`AmiMessage::kind`].
    pub fn response(&self) -> Option<&str> {
        self.get("Response")
    }

    /// `ActionID` header, if present.
    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    /// What kind of message this is, classified by `Event` first (see ami.md §0).
    pub fn kind(&self) -> MessageKind {
        if self.get("Event").is_some() {
            MessageKind::Event
        } else if self.get("Response").is_some() {
            MessageKind::Response
        } else if self.get("Action").is_some() {
            MessageKind::Action
        } else {
            MessageKind::Other
        }
    }

    /// The fields as owned pairs (for JSON output and tests).
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl PartialEq for AmiMessage {
    /// Two messages are equal when their fields are equal in order (raw framing, e.g. CRLF vs
    /// LF, does not matter).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for AmiMessage {}

impl fmt::Debug for AmiMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Whether a message is an event, a response, an action (client → server) or neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Event,
    Response,
    Action,
    Other,
}

/// Builds an [`AmiMessage`] field by field; [`AmiMessageBuilder::build`] checks that every
/// field can be framed (no CR/LF, keys without `": "`).
#[derive(Clone, Debug, Default)]
pub struct AmiMessageBuilder {
    fields: Vec<(String, String)>,
}

/// A field that cannot be put on the AMI wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldError {
    #[error("AMI message has no field")]
    Empty,
    #[error("AMI key {0:?} is empty or contains \": \", CR or LF")]
    BadKey(String),
    #[error("AMI value for key {key:?} contains CR or LF")]
    BadValue { key: String },
}

impl AmiMessageBuilder {
    /// Appends a field (keys may repeat).
    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push((key.into(), value.into()));
        self
    }

    /// Appends a field when `value` is `Some`.
    pub fn field_opt(self, key: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.field(key, v),
            None => self,
        }
    }

    /// Frames the fields as `Key: Value\r\n…\r\n` and returns the message.
    pub fn build(self) -> Result<AmiMessage, FieldError> {
        if self.fields.is_empty() {
            return Err(FieldError::Empty);
        }
        let mut raw = String::with_capacity(
            self.fields
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
                + 2,
        );
        let mut fields = Vec::with_capacity(self.fields.len());
        for (key, value) in &self.fields {
            if key.is_empty() || key.contains(": ") || key.contains(['\r', '\n']) {
                return Err(FieldError::BadKey(key.clone()));
            }
            if value.contains(['\r', '\n']) {
                return Err(FieldError::BadValue { key: key.clone() });
            }
            let key_start = raw.len() as u32;
            raw.push_str(key);
            let key_end = raw.len() as u32;
            raw.push_str(": ");
            let value_start = raw.len() as u32;
            raw.push_str(value);
            let value_end = raw.len() as u32;
            raw.push_str("\r\n");
            fields.push(Field {
                key_start,
                key_end,
                value_start,
                value_end,
            });
        }
        raw.push_str("\r\n");
        Ok(AmiMessage::from_parts(Bytes::from(raw), fields, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_frames_and_accessors_read_back() {
        let m = AmiMessage::event("Newchannel")
            .field("ChanVariable", "A=1")
            .field("ChanVariable", "B=2")
            .field("Empty", "")
            .build()
            .unwrap();
        assert_eq!(
            m.raw_str(),
            "Event: Newchannel\r\nChanVariable: A=1\r\nChanVariable: B=2\r\nEmpty: \r\n\r\n"
        );
        assert_eq!(m.get("event"), Some("Newchannel"));
        assert_eq!(
            m.get_all("chanvariable").collect::<Vec<_>>(),
            ["A=1", "B=2"]
        );
        assert_eq!(m.get("Empty"), Some(""));
        assert_eq!(m.get_bytes("ChanVariable").unwrap(), "A=1");
        assert_eq!(m.kind(), MessageKind::Event);
    }

    #[test]
    fn builder_refuses_unframeable_fields() {
        assert_eq!(
            AmiMessage::builder().build().unwrap_err(),
            FieldError::Empty
        );
        assert!(matches!(
            AmiMessage::action("Login")
                .field("Secret", "a\r\nAction: Logoff")
                .build(),
            Err(FieldError::BadValue { .. })
        ));
        assert!(matches!(
            AmiMessage::action("X").field("A: B", "c").build(),
            Err(FieldError::BadKey(_))
        ));
    }

    #[test]
    fn originate_response_is_an_event() {
        let m = AmiMessage::builder()
            .field("Response", "Success")
            .field("ActionID", "1")
            .build()
            .unwrap();
        assert_eq!(m.kind(), MessageKind::Response);
        let m = AmiMessage::event("OriginateResponse")
            .field("Response", "Success")
            .build()
            .unwrap();
        assert_eq!(m.kind(), MessageKind::Event);
    }
}
