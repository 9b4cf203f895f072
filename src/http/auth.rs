//! Bearer tokens with scopes (`read`, `dial`, `admin`) from `[[api.tokens]]`.
//!
//! Every API route names the scope it needs; a request without a known token gets 401, one
//! whose token lacks the scope gets 403. Tokens are compared in constant time so response
//! timing does not reveal how much of a guessed token was right.

use super::error::ApiError;
use crate::config::{ApiToken, Scope};
use axum::http::{header, HeaderMap};

/// The configured tokens.
#[derive(Clone, Debug, Default)]
pub struct TokenSet {
    tokens: Vec<ApiToken>,
}

impl TokenSet {
    pub fn new(tokens: &[ApiToken]) -> Self {
        TokenSet {
            tokens: tokens.to_vec(),
        }
    }

    /// Checks the request's `Authorization: Bearer …` for `scope`.
    pub fn require(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (kind, token) = v.trim().split_once(' ')?;
                kind.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let token = self
            .tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()))
            .ok_or(ApiError::Unauthorized)?;
        if token.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope_name(scope)))
        }
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Dial => "dial",
        Scope::Admin => "admin",
    }
}

/// Equality whose time does not depend on where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn scopes_are_enforced() {
        let set = TokenSet::new(&[ApiToken {
            token: "reader".into(),
            scopes: vec![Scope::Read],
        }]);
        assert!(set.require(&headers("Bearer reader"), Scope::Read).is_ok());
        assert!(matches!(
            set.require(&headers("Bearer reader"), Scope::Dial),
            Err(ApiError::Forbidden("dial"))
        ));
        assert!(matches!(
            set.require(&headers("Bearer other"), Scope::Read),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            set.require(&HeaderMap::new(), Scope::Read),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            set.require(&headers("Basic reader"), Scope::Read),
            Err(ApiError::Unauthorized)
        ));
    }
}
