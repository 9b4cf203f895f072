//! [`JournalEntry`]: one input as received, and its JSON-lines encoding.
//!
//! One entry is one line of JSON (see `docs/JOURNAL.md`):
//!
//! ```text
//! {"t":"2026-11-22T10:00:00.123456Z","src":"ami","pbx":"default","raw":"Event: Newchannel\r\n\r\n"}
//! {"t":"2026-11-22T10:00:00.200000Z","src":"phone","peer":"127.0.0.1","target":"/action-url/incoming_call?call_id=1"}
//! {"t":"2026-11-22T10:05:00.000000Z","src":"gap","pbx":"default","from":"2026-11-22T10:01:00.000000Z","to":"2026-11-22T10:04:59.500000Z","reason":"connection closed by peer"}
//! ```
//!
//! Why JSON lines: a line is self-delimiting (serde_json escapes every control character, so
//! the only `\n` byte in a line is its terminator), which is what lets the reader recognise a
//! torn last line after a crash; and the files stay readable with `jq` and `grep`.
//!
//! Writing is on the hot path (every AMI event), so [`JournalEntry::write_json_line`]
//! serializes small structs of borrowed fields straight into the caller's buffer: no
//! `serde_json::Value`, no intermediate `String`s, and the timestamp is formatted on the stack.
//! Reading happens only on replay and favours simplicity.

use super::JournalError;
use crate::ami::{parse_message, AmiMessage, DEFAULT_MAX_MESSAGE_BYTES};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One input, stamped with the time the bridge received it.
///
/// `t` is stored with microsecond precision: an entry whose `t` has sub-microsecond digits
/// reads back truncated to the microsecond. [`JournalEntry::now`] truncates up front, so an
/// entry made with it reads back equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// When the input was received (for [`Input::Gap`]: when the gap entry was written).
    pub t: DateTime<Utc>,
    pub input: Input,
}

/// What was received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// One AMI message from PBX `pbx`, exactly as received (`src":"ami"`).
    Ami { pbx: Arc<str>, msg: AmiMessage },
    /// One desk-phone HTTP callback (`"src":"phone"`): the peer address and the request target
    /// (path and query) exactly as received.
    Phone { peer: String, target: String },
    /// A period `from`..`to` during which the bridge could not see PBX `pbx`'s AMI link
    /// (`"src":"gap"`), e.g. while reconnecting. Replay must not assume nothing happened then.
    Gap {
        pbx: Arc<str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reason: String,
    },
}

impl Input {
    /// The `src` value of this kind of input: `"ami"`, `"phone"` or `"gap"`.
    pub fn src(&self) -> &'static str {
        match self {
            Input::Ami { .. } => "ami",
            Input::Phone { .. } => "phone",
            Input::Gap { .. } => "gap",
        }
    }
}

impl JournalEntry {
    /// An entry stamped with `t` as given.
    pub fn new(t: DateTime<Utc>, input: Input) -> Self {
        JournalEntry { t, input }
    }

    /// An entry stamped with the current time, truncated to the microsecond so that it reads
    /// back from the journal exactly equal.
    pub fn now(input: Input) -> Self {
        JournalEntry {
            t: truncate_to_micros(Utc::now()),
            input,
        }
    }

    /// Appends this entry as one JSON line, `'\n'` included, to `out`.
    ///
    /// Field order is fixed (`t`, `src`, then the kind's fields) so that lines are stable and
    /// diffable. An AMI message repaired from invalid UTF-8 gets an extra `"lossy":true` after
    /// `raw` (omitted otherwise), so that the flag survives a replay.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let t = TimeText::new(&self.t);
        let result = match &self.input {
            Input::Ami { pbx, msg } => serde_json::to_writer(
                &mut *out,
                &AmiOut {
                    t: t.as_str(),
                    src: "ami",
                    pbx,
                    raw: msg.raw_str(),
                    lossy: msg.is_lossy(),
                },
            ),
            Input::Phone { peer, target } => serde_json::to_writer(
                &mut *out,
                &PhoneOut {
                    t: t.as_str(),
                    src: "phone",
                    peer,
                    target,
                },
            ),
            Input::Gap {
                pbx,
                from,
                to,
                reason,
            } => serde_json::to_writer(
                &mut *out,
                &GapOut {
                    t: t.as_str(),
                    src: "gap",
                    pbx,
                    from: TimeText::new(from).as_str(),
                    to: TimeText::new(to).as_str(),
                    reason,
                },
            ),
        };
        match result {
            Ok(()) => out.push(b'\n'),
            Err(e) => {
                // Unreachable in practice: these structs hold only strings and a bool, and a
                // Vec never fails to grow. Never leave half a line behind, though.
                out.truncate(start);
                tracing::error!(error = %e, "journal: could not serialize entry; dropped");
                debug_assert!(false, "journal entry serialization failed: {e}");
            }
        }
    }

    /// The entry as a JSON line (convenience for tests and tools; the writer uses
    /// [`JournalEntry::write_json_line`] into a reused buffer).
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_json_line(&mut out);
        out
    }

    /// Parses one journal line (a trailing `\n` or `\r\n` is allowed). Unknown fields are
    /// ignored, so that later versions can add fields without breaking older readers.
    ///
    /// The AMI `raw` text is decoded again with [`parse_message`]; the size limit is
    /// [`DEFAULT_MAX_MESSAGE_BYTES`] or the text's own length, whichever is larger, because a
    /// message the live client accepted (perhaps with a larger configured limit) must replay.
    pub fn from_json_line(line: &[u8]) -> Result<JournalEntry, JournalError> {
        let line: LineIn =
            serde_json::from_slice(line).map_err(|e| JournalError::bad_line(e.to_string()))?;
        let t = parse_time("t", &line.t)?;
        let input = match line.src.as_str() {
            "ami" => {
                let pbx = required("pbx", line.pbx)?;
                let raw = required("raw", line.raw)?;
                let limit = DEFAULT_MAX_MESSAGE_BYTES.max(raw.len());
                let msg = parse_message(raw.as_bytes(), limit)
                    .map_err(|e| JournalError::bad_line(format!("bad AMI raw text: {e}")))?;
                let msg = if line.lossy { msg.into_lossy() } else { msg };
                Input::Ami {
                    pbx: pbx.into(),
                    msg,
                }
            }
            "phone" => Input::Phone {
                peer: required("peer", line.peer)?,
                target: required("target", line.target)?,
            },
            "gap" => Input::Gap {
                pbx: required("pbx", line.pbx)?.into(),
                from: parse_time("from", &required("from", line.from)?)?,
                to: parse_time("to", &required("to", line.to)?)?,
                reason: line.reason.unwrap_or_default(),
            },
            other => {
                return Err(JournalError::bad_line(format!(
                    "unknown src {other:?} (expected \"ami\", \"phone\" or \"gap\")"
                )))
            }
        };
        Ok(JournalEntry { t, input })
    }
}

/// `t` without its sub-microsecond digits (what the journal keeps).
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond();
    t.with_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

#[derive(Serialize)]
struct AmiOut<'a> {
    t: &'a str,
    src: &'static str,
    pbx: &'a str,
    raw: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    lossy: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct PhoneOut<'a> {
    t: &'a str,
    src: &'static str,
    peer: &'a str,
    target: &'a str,
}

#[derive(Serialize)]
struct GapOut<'a> {
    t: &'a str,
    src: &'static str,
    pbx: &'a str,
    from: &'a str,
    to: &'a str,
    reason: &'a str,
}

/// Every field any kind of line may have; which ones are required depends on `src`.
#[derive(Deserialize)]
struct LineIn {
    t: String,
    src: String,
    pbx: Option<String>,
    raw: Option<String>,
    #[serde(default)]
    lossy: bool,
    peer: Option<String>,
    target: Option<String>,
    from: Option<String>,
    to: Option<String>,
    reason: Option<String>,
}

fn required(name: &str, value: Option<String>) -> Result<String, JournalError> {
    value.ok_or_else(|| JournalError::bad_line(format!("missing field {name:?}")))
}

fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, JournalError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| JournalError::bad_line(format!("bad time in {name:?} ({text:?}): {e}")))
}

/// A timestamp as RFC 3339 UTC text with exactly six fractional digits and `Z`, e.g.
/// `2026-11-22T10:00:00.123456Z`, formatted without allocating for ordinary dates.
enum TimeText {
    Fast([u8; 27]),
    /// Years outside 0000..=9999 and leap seconds: rare enough to let chrono do it.
    Slow(String),
}

impl TimeText {
    fn new(t: &DateTime<Utc>) -> Self {
        let year = t.year();
        let nanos = t.nanosecond();
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return TimeText::Slow(t.to_rfc3339_opts(SecondsFormat::Micros, true));
        }
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut b[0..4], year as u32);
        put_digits(&mut b[5..7], t.month());
        put_digits(&mut b[8..10], t.day());
        put_digits(&mut b[11..13], t.hour());
        put_digits(&mut b[14..16], t.minute());
        put_digits(&mut b[17..19], t.second());
        put_digits(&mut b[20..26], nanos / 1_000);
        TimeText::Fast(b)
    }

    fn as_str(&self) -> &str {
        match self {
            // Only ASCII digits and punctuation were written.
            TimeText::Fast(b) => std::str::from_utf8(b).unwrap_or(""),
            TimeText::Slow(s) => s,
        }
    }
}

/// Writes `value` as decimal digits right-aligned into `out` (which is pre-filled with '0').
fn put_digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ami_entry() -> JournalEntry {
        JournalEntry::new(
            t("2026-11-22T10:00:00.123456Z"),
            Input::Ami {
                pbx: "default".into(),
                msg: AmiMessage::event("Newchannel").build().unwrap(),
            },
        )
    }

    fn round_trip(entry: &JournalEntry) -> JournalEntry {
        let line = entry.to_json_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(
            line.iter().filter(|&&b| b == b'\n').count(),
            1,
            "exactly one newline, at the end: {}",
            String::from_utf8_lossy(&line)
        );
        JournalEntry::from_json_line(&line).unwrap()
    }

    #[test]
    fn ami_entry_matches_the_brief_byte_for_byte() {
        let line = ami_entry().to_json_line();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            concat!(
                r#"{"t":"2026-11-22T10:00:00.123456Z","src":"ami","pbx":"default","#,
                r#""raw":"Event: Newchannel\r\n\r\n"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn phone_and_gap_entries_match_the_documented_shape() {
        let phone = JournalEntry::new(
            t("2026-11-22T10:00:00Z"),
            Input::Phone {
                peer: "127.0.0.1".into(),
                target: "/action-url/incoming_call?call_id=1&name=\"A\\B\"".into(),
            },
        );
        assert_eq!(
            std::str::from_utf8(&phone.to_json_line()).unwrap(),
            concat!(
                r#"{"t":"2026-11-22T10:00:00.000000Z","src":"phone","peer":"127.0.0.1","#,
                r#""target":"/action-url/incoming_call?call_id=1&name=\"A\\B\""}"#,
                "\n"
            )
        );
        let gap = JournalEntry::new(
            t("2026-11-22T10:05:00.5Z"),
            Input::Gap {
                pbx: "default".into(),
                from: t("2026-11-22T10:01:00.000001Z"),
                to: t("2026-11-22T10:04:59.999999Z"),
                reason: "connection closed by peer".into(),
            },
        );
        assert_eq!(
            std::str::from_utf8(&gap.to_json_line()).unwrap(),
            concat!(
                r#"{"t":"2026-11-22T10:05:00.500000Z","src":"gap","pbx":"default","#,
                r#""from":"2026-11-22T10:01:00.000001Z","to":"2026-11-22T10:04:59.999999Z","#,
                r#""reason":"connection closed by peer"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn all_three_kinds_round_trip_exactly() {
        let ami = ami_entry();
        let back = round_trip(&ami);
        assert_eq!(back, ami);
        match (&back.input, &ami.input) {
            (Input::Ami { msg: a, .. }, Input::Ami { msg: b, .. }) => {
                assert_eq!(a.raw_str(), b.raw_str());
                assert_eq!(a.raw(), b.raw());
            }
            _ => panic!("kind changed"),
        }

        let phone = JournalEntry::new(
            t("2026-11-22T10:00:00.000001Z"),
            Input::Phone {
                peer: "[::1]:5060".into(),
                target: "/action-url/incoming_call?call_id=%20é\u{1F4DE}".into(),
            },
        );
        assert_eq!(round_trip(&phone), phone);

        let gap = JournalEntry::new(
            t("2026-11-22T10:05:00Z"),
            Input::Gap {
                pbx: "pbx-2".into(),
                from: t("2026-11-22T10:01:00.250000Z"),
                to: t("2026-11-22T10:04:59.999999Z"),
                reason: "connect: Connection refused (os error 111)".into(),
            },
        );
        assert_eq!(round_trip(&gap), gap);
    }

    #[test]
    fn raw_framing_and_lossy_flag_survive() {
        // LF-only framing and a legacy command reply keep their exact bytes.
        for raw in [
            "Event: X\nA: b: c\nEmpty: \n\n",
            "Response: Follows\r\nPrivilege: Command\r\nline one\r\n\r\nline three\r\n--END COMMAND--\r\n\r\n",
        ] {
            let msg = parse_message(raw.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
            let e = JournalEntry::new(
                t("2026-11-22T10:00:00Z"),
                Input::Ami {
                    pbx: "default".into(),
                    msg,
                },
            );
            let back = round_trip(&e);
            assert_eq!(back, e);
            let Input::Ami { msg, .. } = &back.input else {
                panic!("kind changed")
            };
            assert_eq!(msg.raw_str(), raw);
        }

        let msg = parse_message(b"Event: X\r\nName: a\xffb\r\n\r\n", 4096).unwrap();
        assert!(msg.is_lossy());
        let e = JournalEntry::new(
            t("2026-11-22T10:00:00Z"),
            Input::Ami {
                pbx: "default".into(),
                msg,
            },
        );
        let line = e.to_json_line();
        assert!(std::str::from_utf8(&line)
            .unwrap()
            .contains(r#","lossy":true}"#));
        let Input::Ami { msg, .. } = JournalEntry::from_json_line(&line).unwrap().input else {
            panic!("kind changed")
        };
        assert!(msg.is_lossy());
        assert_eq!(msg.get("Name"), Some("a\u{FFFD}b"));
    }

    #[test]
    fn time_is_kept_to_the_microsecond() {
        let precise = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        let e = JournalEntry::new(
            precise,
            Input::Phone {
                peer: "p".into(),
                target: "/".into(),
            },
        );
        let back = round_trip(&e);
        assert_eq!(back.t, truncate_to_micros(precise));
        assert_eq!(back.t.nanosecond(), 123_456_000);

        let now = JournalEntry::now(Input::Phone {
            peer: "p".into(),
            target: "/".into(),
        });
        assert_eq!(now.t.nanosecond() % 1_000, 0);
        assert_eq!(round_trip(&now), now);
    }

    #[test]
    fn odd_timestamps_fall_back_and_still_round_trip() {
        // Before year 1000 (zero padding) and a leap second.
        for text in ["0987-06-05T04:03:02.000007Z", "2016-12-31T23:59:60.500000Z"] {
            let e = JournalEntry::new(
                t(text),
                Input::Phone {
                    peer: "p".into(),
                    target: "/".into(),
                },
            );
            let line = String::from_utf8(e.to_json_line()).unwrap();
            assert!(line.contains(text), "{line}");
            assert_eq!(round_trip(&e), e);
        }
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        for (line, why) in [
            (&br#"{"t":"2026-11-22T10:00:00Z","src":"ami","pbx":"d""#[..], "EOF"),
            (br#"not json"#, "expected"),
            (
                br#"{"t":"2026-11-22T10:00:00Z","src":"fax","pbx":"d"}"#,
                "unknown src",
            ),
            (br#"{"t":"yesterday","src":"phone","peer":"p","target":"/"}"#, "bad time"),
            (br#"{"t":"2026-11-22T10:00:00Z","src":"phone","peer":"p"}"#, "target"),
            (
                br#"{"t":"2026-11-22T10:00:00Z","src":"ami","pbx":"d","raw":"no colon here\r\n\r\n"}"#,
                "bad AMI raw",
            ),
            (
                br#"{"t":"2026-11-22T10:00:00Z","src":"ami","pbx":"d","raw":""}"#,
                "bad AMI raw",
            ),
        ] {
            match JournalEntry::from_json_line(line) {
                Err(JournalError::BadLine { reason }) => {
                    assert!(reason.contains(why), "{reason:?} should mention {why:?}")
                }
                other => panic!("{}: expected BadLine, got {other:?}", String::from_utf8_lossy(line)),
            }
        }
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let line = br#"{"t":"2026-11-22T10:00:00Z","src":"phone","peer":"p","target":"/x","v":2}"#;
        let e = JournalEntry::from_json_line(line).unwrap();
        assert_eq!(
            e.input,
            Input::Phone {
                peer: "p".into(),
                target: "/x".into()
            }
        );
    }
}
