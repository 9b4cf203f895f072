//! The webhook signature (the scheme is documented for receivers in `docs/EVENTS.md`).
//!
//! `X-Ctibridge-Signature: v1=<hex>` where `<hex>` is the lowercase hex HMAC-SHA256, keyed
//! with the target's `secret` (its UTF-8 bytes), of `<timestamp>.<body>`: the decimal Unix
//! time of `X-Ctibridge-Timestamp`, a full stop, and the raw request body. The timestamp is
//! signed so a captured request cannot be replayed later than the receiver's tolerance; it is
//! taken fresh for every attempt.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The event id; the same for every attempt of one event to one target.
pub const HEADER_ID: &str = "x-ctibridge-event-id";
/// The same id under the name idempotency-aware receivers look for.
pub const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The event type.
pub const HEADER_TYPE: &str = "x-ctibridge-event-type";
/// 1 for the first attempt, 2 for the first retry, …
pub const HEADER_ATTEMPT: &str = "x-ctibridge-attempt";
/// Unix time (seconds) at which this attempt was signed.
pub const HEADER_TIMESTAMP: &str = "x-ctibridge-timestamp";
/// `v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`; absent when the target has no secret.
pub const HEADER_SIGNATURE: &str = "x-ctibridge-signature";

/// `v1=<hex>` for `timestamp` and `body` under `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + tag.len() * 2);
    out.push_str("v1=");
    for b in tag {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Checks a received `X-Ctibridge-Signature` (what a Rust receiver would do), in constant
/// time. The header may carry several comma-separated `v1=` values (during a secret
/// rotation); one match is enough.
pub fn verify(secret: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let expected = signature(secret, timestamp, body);
    header.split(',').map(str::trim).any(|candidate| {
        crate::http::auth::constant_time_eq(candidate.as_bytes(), expected.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // echo -n '1700000000.{"id":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"id":1}"#),
            "v1=2f441ba4b3b2d50d28a9ab9d9fd8880376ecd1eb5d0435401553f5d8d0a5dcf8"
        );
    }

    #[test]
    fn verify_accepts_the_signature_and_rejects_changes() {
        let sig = signature("s", 42, b"body");
        assert!(verify("s", 42, b"body", &sig));
        assert!(verify("s", 42, b"body", &format!("v1=00, {sig}")));
        assert!(!verify("s", 43, b"body", &sig));
        assert!(!verify("s", 42, b"body!", &sig));
        assert!(!verify("t", 42, b"body", &sig));
    }
}
