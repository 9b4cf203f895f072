//! The records API query ([`CallQuery`]), its result page ([`CallPage`]), the pagination
//! cursor, and the SQL a query becomes.
//!
//! Pagination is keyset pagination over `(started_at, id)`, newest first: a page ends at some
//! row, the cursor names that row, and the next page asks for rows strictly before it,
//! `(started_at, id) < (cursor.started_at, cursor.id)`. Unlike `OFFSET`, this costs the same
//! on page 1 and page 1000 (an index range), and a record inserted or removed while a client
//! walks the pages cannot shift a row into the next page twice or out of it entirely. `id`
//! breaks ties, so records that started in the same microsecond still get one strict order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Sqlite};

use crate::record::{CallRecord, Direction, Disposition};

use super::{
    direction_str, disposition_str, format_timestamp, normalize_extension, normalize_number,
    StoreError, TIMESTAMP_LEN,
};

/// Page size when the query does not say (or says 0).
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size; larger requests are clamped to it.
pub const MAX_LIMIT: u32 = 1000;

/// Filters and paging of `GET /api/v1/calls`. All filters combine with AND.
///
/// Deserializes from the API's query string names (`since`, `until`, `ext`, `number`,
/// `direction`, `disposition`, `limit`, `cursor`); missing fields take [`Default`] values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct CallQuery {
    /// Calls that started at or after this instant (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Calls that started before this instant (exclusive), so `since=A&until=B` followed by
    /// `since=B&until=C` covers every call exactly once.
    pub until: Option<DateTime<Utc>>,
    /// Calls in which this extension took part: as the `from`/`to` extension, as
    /// `answered_by` (except outbound calls, where that is the far end), as a leg's endpoint,
    /// or as the transferring or target extension of a transfer. Exact match after trimming.
    pub ext: Option<String>,
    /// Calls whose `from` or `to` number is this number (or, for outbound calls, whose
    /// `answered_by` is). Exact match after removing all whitespace from both sides, so
    /// `+1 555 0100` finds `+15550100`; no other normalisation (a leading `+` or trunk prefix
    /// is significant).
    pub number: Option<String>,
    pub direction: Option<Direction>,
    pub disposition: Option<Disposition>,
    /// Page size: 0 means [`DEFAULT_LIMIT`], more than [`MAX_LIMIT`] means [`MAX_LIMIT`].
    pub limit: u32,
    /// [`CallPage::next_cursor`] of the previous page; `None` for the first page.
    #[param(pattern = "^([0-9a-f]{2})+$")]
    pub cursor: Option<String>,
}

impl Default for CallQuery {
    fn default() -> Self {
        CallQuery {
            since: None,
            until: None,
            ext: None,
            number: None,
            direction: None,
            disposition: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

impl CallQuery {
    /// The page size actually used.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        }
    }
}

/// One page of records, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CallPage {
    pub records: Vec<CallRecord>,
    /// Present when more records match: pass it as [`CallQuery::cursor`] (with the same
    /// filters) to get the next page. `None` on the last page, so a client never has to fetch
    /// an empty page to learn it is done.
    pub next_cursor: Option<String>,
}

/// The position of a row in list order: the `started_at` column text and the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub started_at: String,
    pub id: String,
}

/// The cursor is `<started_at>|<id>` in lowercase hex: opaque to clients, safe in a URL
/// without escaping, and any id text survives it.
pub(crate) fn encode_cursor(p: &Position) -> String {
    let mut out = String::with_capacity(2 * (p.started_at.len() + 1 + p.id.len()));
    for b in p
        .started_at
        .bytes()
        .chain(std::iter::once(b'|'))
        .chain(p.id.bytes())
    {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Decodes a cursor made by [`encode_cursor`]. Anything else is [`StoreError::BadCursor`]:
/// a cursor is only ever produced by the store, so a malformed one is a client bug to report,
/// not something to guess around.
pub(crate) fn decode_cursor(cursor: &str) -> Result<Position, StoreError> {
    let bad = || {
        let shown: String = cursor.chars().take(80).collect();
        StoreError::BadCursor(shown)
    };
    let digits = cursor.as_bytes();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err(bad());
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = digits
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (started_at, id) = text.split_once('|').ok_or_else(bad)?;
    // The timestamp must be one the store wrote: fixed width and valid RFC 3339. Comparing
    // anything else against the column would silently return the wrong rows.
    let parsed = DateTime::parse_from_rfc3339(started_at).map_err(|_| bad())?;
    if started_at.len() != TIMESTAMP_LEN
        || format_timestamp(&parsed.with_timezone(&Utc)) != started_at
    {
        return Err(bad());
    }
    Ok(Position {
        started_at: started_at.to_owned(),
        id: id.to_owned(),
    })
}

/// Builds `<prefix>SELECT record_json, started_at, id … ORDER BY started_at DESC, id DESC LIMIT n`
/// for `q`, resuming after `after`.
///
/// When the query names an extension or a number, the scan is driven by `call_parties`,
/// whose index `(value, kind, started_at, call_id)` holds exactly that party's calls already
/// in list order: a page is then an index range of `limit` entries however many calls the
/// party has, rather than "collect all of the party's calls, sort, take `limit`". Otherwise
/// the scan runs on `calls` itself, where `(started_at, id)` and the
/// `(direction|disposition, started_at, id)` indexes give the same property.
pub(crate) fn build_list_sql(
    prefix: &str,
    q: &CallQuery,
    after: Option<Position>,
    limit: u32,
) -> QueryBuilder<'static, Sqlite> {
    // (kind, value) of the party that drives the scan, if any.
    let ext = q
        .ext
        .as_deref()
        .map(normalize_extension)
        .map(|v| ("ext", v));
    let number = q
        .number
        .as_deref()
        .map(normalize_number)
        .map(|v| ("number", v));
    let (driver, extra_party) = match (ext, number) {
        (Some(e), n) => (Some(e), n),
        (None, Some(n)) => (Some(n), None),
        (None, None) => (None, None),
    };

    let mut qb = QueryBuilder::new(format!(
        "{prefix}SELECT c.record_json, c.started_at, c.id FROM "
    ));
    // `k_at`/`k_id`: the columns that define list order for this scan.
    let (k_at, k_id) = match &driver {
        Some((kind, value)) => {
            qb.push("call_parties d JOIN calls c ON c.id = d.call_id WHERE d.value = ");
            qb.push_bind(value.clone());
            qb.push(" AND d.kind = ");
            qb.push_bind(*kind);
            ("d.started_at", "d.call_id")
        }
        None => {
            qb.push("calls c WHERE 1 = 1");
            ("c.started_at", "c.id")
        }
    };
    if let Some(since) = &q.since {
        qb.push(format_args!(" AND {k_at} >= "));
        qb.push_bind(format_timestamp(since));
    }
    if let Some(until) = &q.until {
        qb.push(format_args!(" AND {k_at} < "));
        qb.push_bind(format_timestamp(until));
    }
    if let Some(p) = after {
        qb.push(format_args!(" AND ({k_at}, {k_id}) < ("));
        qb.push_bind(p.started_at);
        qb.push(", ");
        qb.push_bind(p.id);
        qb.push(")");
    }
    if let Some(d) = q.direction {
        qb.push(" AND c.direction = ");
        qb.push_bind(direction_str(d));
    }
    if let Some(d) = q.disposition {
        qb.push(" AND c.disposition = ");
        qb.push_bind(disposition_str(d));
    }
    if let Some((kind, value)) = extra_party {
        qb.push(" AND c.id IN (SELECT n.call_id FROM call_parties n WHERE n.value = ");
        qb.push_bind(value);
        qb.push(" AND n.kind = ");
        qb.push_bind(kind);
        qb.push(")");
    }
    qb.push(format_args!(" ORDER BY {k_at} DESC, {k_id} DESC LIMIT "));
    // One extra row tells whether another page exists.
    qb.push_bind(i64::from(limit) + 1);
    qb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let p = Position {
            started_at: "2026-11-22T10:00:00.123456Z".into(),
            id: "default:1700000000.1|odd id ✓".into(),
        };
        let c = encode_cursor(&p);
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode_cursor(&c).unwrap(), p);
        assert_eq!(decode_cursor(&c.to_uppercase()).unwrap(), p);
    }

    #[test]
    fn bad_cursors() {
        let good = encode_cursor(&Position {
            started_at: "2026-11-22T10:00:00.123456Z".into(),
            id: "x".into(),
        });
        let no_bar = "2026-11-22T10:00:00.123456Z"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let short_ts = encode_cursor(&Position {
            started_at: "2026-11-22T10:00:00Z".into(),
            id: "x".into(),
        });
        for c in [
            "",
            "zz",
            "abc",
            &good[1..],
            &no_bar,
            &short_ts,
            "ff",
            "7c78", // "|x": empty timestamp
        ] {
            assert!(
                matches!(decode_cursor(c), Err(StoreError::BadCursor(_))),
                "{c:?}"
            );
        }
    }

    #[test]
    fn limits() {
        let q = |limit| CallQuery {
            limit,
            ..CallQuery::default()
        };
        assert_eq!(q(0).effective_limit(), DEFAULT_LIMIT);
        assert_eq!(q(7).effective_limit(), 7);
        assert_eq!(q(5000).effective_limit(), MAX_LIMIT);
        assert_eq!(CallQuery::default().limit, 50);
    }
}
