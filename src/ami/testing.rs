//! Test support shared by the unit tests of several modules (compiled for tests only).

use super::AmiMessage;
use proptest::prelude::*;

/// Any message the wire can carry: keys as AMI uses them (including `ChanVariable(…)` forms
/// and colons not followed by a space), values printable with non-ASCII, quotes, backslashes,
/// colons and spaces anywhere. Excluded: CR/LF (the builder refuses them, as does the wire)
/// and a first field `Response: Follows`, which starts a legacy command reply with its own
/// framing.
pub(crate) fn arb_message() -> impl Strategy<Value = AmiMessage> {
    let key = "[A-Za-z][A-Za-z0-9_()/:-]{0,15}"
        .prop_filter("no ': ' in keys", |k: &String| !k.contains(": "));
    let value = "[ -~\u{a0}-\u{24f}\u{4e00}-\u{4e2f}\u{1f4de}\\\"]{0,40}";
    prop::collection::vec((key, value), 1..12)
        .prop_filter("not a legacy Follows reply", |fields| {
            !(fields[0].0.eq_ignore_ascii_case("Response")
                && fields[0].1.eq_ignore_ascii_case("Follows"))
        })
        .prop_map(|fields| {
            fields
                .into_iter()
                .fold(AmiMessage::builder(), |b, (k, v)| b.field(k, v))
                .build()
                .expect("generated fields are frameable")
        })
}
