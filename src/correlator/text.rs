//! [`Text`]: an immutable string that keeps up to 22 bytes inline and only longer ones on the
//! heap.
//!
//! Why: the correlator keeps a dozen short strings per channel (`Uniqueid` `1795347643.12`,
//! channel `PJSIP/101-0000000a`, caller ID `101`, context `internal`…) plus copies of some as
//! index keys. As `Box<str>` each was one heap allocation, and allocating and freeing them was
//! the largest single cost of following a call (the benchmark's profile: ~10 allocations per
//! event). Inline, a short value is copied into the struct: no allocation, no pointer to chase,
//! and the same 24 bytes a `String` takes. Long values (SIP Call-IDs are often 36+ bytes) fall
//! back to a `Box<str>`.
//!
//! It hashes, compares and orders exactly like the `str` it holds, and borrows as one, so
//! `HashMap<Text, _>` is looked up with a `&str`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Bytes stored inline: what fits beside the length and the variant tag in 24 bytes.
const INLINE: usize = 22;

/// See the module docs.
#[derive(Clone)]
pub(crate) struct Text(Repr);

#[derive(Clone)]
enum Repr {
    /// Length, then the bytes of a `str` (only the first `len` are meaningful).
    Inline(u8, [u8; INLINE]),
    Heap(Box<str>),
}

const _: () = assert!(std::mem::size_of::<Text>() == 24);
const _: () = assert!(std::mem::size_of::<Option<Text>>() == 24);

impl Text {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(len, bytes) => {
                let bytes = &bytes[..*len as usize];
                debug_assert!(std::str::from_utf8(bytes).is_ok());
                // SAFETY: `Inline` is only built by `From<&str>` below, which copies all the
                // bytes of a `str` (valid UTF-8, ending on a character boundary) and records
                // their number; the bytes are never modified afterwards.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text(Repr::Inline(s.len() as u8, bytes))
        } else {
            Text(Repr::Heap(s.into()))
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        if s.len() <= INLINE {
            Text::from(s.as_str())
        } else {
            Text(Repr::Heap(s.into_boxed_str()))
        }
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        match t.0 {
            Repr::Heap(s) => s.into_string(),
            Repr::Inline(..) => t.as_str().to_owned(),
        }
    }
}

impl Default for Text {
    fn default() -> Text {
        Text(Repr::Inline(0, [0; INLINE]))
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for Text {
    /// Exactly `str`'s hash, as [`Borrow<str>`] requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        String::deserialize(d).map(Text::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_and_long_strings_round_trip_and_behave_like_str() {
        for s in [
            "",
            "101",
            "1795347643.12",
            "exactly-22-bytes-long!",
            "exactly-23-bytes-long!!",
            "7bee591f-570f-4b8a-a3f4-b89db5319736",
            "Grüße, 日本",
        ] {
            let t = Text::from(s);
            assert_eq!(t.as_str(), s);
            assert_eq!(Text::from(s.to_string()), t);
            assert_eq!(&*t, s);
            assert_eq!(format!("{t}"), s);
            assert_eq!(format!("{t:?}"), format!("{s:?}"));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, serde_json::to_string(s).unwrap());
            assert_eq!(serde_json::from_str::<Text>(&json).unwrap(), t);
        }
        assert!(matches!(
            Text::from("x".repeat(22).as_str()).0,
            Repr::Inline(..)
        ));
        assert!(matches!(
            Text::from("x".repeat(23).as_str()).0,
            Repr::Heap(_)
        ));
        let (a, b) = (Text::from("a"), Text::from("b"));
        assert!(a < b);
        assert_eq!(Text::default().as_str(), "");
    }

    #[test]
    fn a_map_of_texts_is_looked_up_with_str() {
        let mut m: HashMap<Text, u32> = HashMap::new();
        m.insert("1795347643.12".into(), 1);
        m.insert("7bee591f-570f-4b8a-a3f4-b89db5319736".into(), 2);
        assert_eq!(m.get("1795347643.12"), Some(&1));
        assert_eq!(m.get("7bee591f-570f-4b8a-a3f4-b89db5319736"), Some(&2));
        assert_eq!(m.get("nope"), None);
    }
}
