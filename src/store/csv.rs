//! CSV export of call records (`GET /api/v1/calls.csv`): one row per call.
//!
//! The format is RFC 4180: comma separated, CRLF line ends, a field is quoted when it holds a
//! comma, a double quote, CR or LF, and quotes inside are doubled. Caller names come from
//! the network and can hold any of these, so quoting is not optional.
//!
//! Columns, in order (see [`COLUMNS`]):
//!
//! | column | content |
//! |---|---|
//! | `id`, `pbx`, `linkedid` | as in the record |
//! | `direction` | `internal`, `inbound`, `outbound`, `unknown` |
//! | `from_number`, `from_name`, `from_extension`, `to_number`, `to_name`, `to_extension` | the parties; empty when unknown |
//! | `started_at`, `answered_at`, `ended_at` | UTC, RFC 3339, fixed width with microseconds (`2026-11-22T10:00:00.123456Z`), the same text as the SQL columns; empty when absent |
//! | `ring_s`, `talk_s`, `hold_s` | seconds with three decimals |
//! | `disposition` | `answered`, `no_answer`, `busy`, `failed` |
//! | `missed` | `true` / `false` |
//! | `answered_by` | extension (or far end for outbound); empty when nobody answered |
//! | `transfers`, `legs` | counts |
//! | `sip_call_ids` | the legs' SIP Call-IDs, `;`-joined, first occurrence order, no duplicates |
//! | `dial_request_id` | the click-to-call request id, if any |
//!
//! Values are written as they are. Spreadsheet formula injection (a name starting with `=`)
//! is not neutralised, because the usual cure, prefixing `'`, would also corrupt numbers such
//! as `+15550100`; tools importing the file should treat columns as text.

use crate::record::CallRecord;

use super::{direction_str, disposition_str, format_timestamp};

/// The column names, in output order.
pub const COLUMNS: &[&str] = &[
    "id",
    "pbx",
    "linkedid",
    "direction",
    "from_number",
    "from_name",
    "from_extension",
    "to_number",
    "to_name",
    "to_extension",
    "started_at",
    "answered_at",
    "ended_at",
    "ring_s",
    "talk_s",
    "hold_s",
    "disposition",
    "missed",
    "answered_by",
    "transfers",
    "legs",
    "sip_call_ids",
    "dial_request_id",
];

const HEADER: &str = "id,pbx,linkedid,direction,from_number,from_name,from_extension,\
to_number,to_name,to_extension,started_at,answered_at,ended_at,ring_s,talk_s,hold_s,\
disposition,missed,answered_by,transfers,legs,sip_call_ids,dial_request_id\r\n";

/// The header line, CRLF included, so that `csv_header()` followed by `csv_row()` of every
/// record is a complete file.
pub fn csv_header() -> &'static str {
    HEADER
}

/// One record as one CSV line, CRLF included.
pub fn csv_row(r: &CallRecord) -> String {
    let ts = |t: &Option<chrono::DateTime<chrono::Utc>>| t.as_ref().map(format_timestamp);
    let mut sip_ids: Vec<&str> = Vec::new();
    for id in r.legs.iter().filter_map(|l| l.sip_call_id.as_deref()) {
        if !id.is_empty() && !sip_ids.contains(&id) {
            sip_ids.push(id);
        }
    }
    let fields: [Option<String>; 23] = [
        Some(r.id.clone()),
        Some(r.pbx.clone()),
        Some(r.linkedid.clone()),
        Some(direction_str(r.direction).to_owned()),
        r.from.number.clone(),
        r.from.name.clone(),
        r.from.extension.clone(),
        r.to.number.clone(),
        r.to.name.clone(),
        r.to.extension.clone(),
        Some(format_timestamp(&r.started_at)),
        ts(&r.answered_at),
        ts(&r.ended_at),
        Some(format!("{:.3}", r.ring_s)),
        Some(format!("{:.3}", r.talk_s)),
        Some(format!("{:.3}", r.hold_s)),
        Some(disposition_str(r.disposition).to_owned()),
        Some(r.missed.to_string()),
        r.answered_by.clone(),
        Some(r.transfers.len().to_string()),
        Some(r.legs.len().to_string()),
        Some(sip_ids.join(";")),
        r.dial_request_id.clone(),
    ];
    let mut line = String::with_capacity(256);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        push_field(&mut line, field.as_deref().unwrap_or(""));
    }
    line.push_str("\r\n");
    line
}

/// Appends `value` to `line`, quoted if RFC 4180 requires it.
fn push_field(line: &mut String, value: &str) {
    if value.contains([',', '"', '\r', '\n']) {
        line.push('"');
        for c in value.chars() {
            if c == '"' {
                line.push('"');
            }
            line.push(c);
        }
        line.push('"');
    } else {
        line.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lists_the_columns() {
        assert_eq!(HEADER, format!("{}\r\n", COLUMNS.join(",")));
    }

    #[test]
    fn quoting() {
        let mut s = String::new();
        push_field(&mut s, "plain");
        assert_eq!(s, "plain");
        for (raw, quoted) in [
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("cr\r", "\"cr\r\""),
            ("", ""),
        ] {
            let mut s = String::new();
            push_field(&mut s, raw);
            assert_eq!(s, quoted, "{raw:?}");
        }
    }
}
