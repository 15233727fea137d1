//! Bearer tokens: each belongs to one workspace and carries scopes (`read`,
//! `write`, `pii`). Only a token's SHA-256 is stored. A request reaches only
//! its token's workspace; anything of another workspace is "not found".

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Api;
use super::problem::Problem;
use crate::store::tokens;

/// Prefix of every token, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "enr_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Scope {
    /// Read profiles, conversations and exports.
    Read,
    /// Change profiles, import and forget (implies read).
    Write,
    /// See visitor IP addresses and user agents (implies read).
    Pii,
}

impl Scope {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Pii => "pii",
        }
    }
}

/// A new random token (244 bits from the OS generator).
pub fn generate_token() -> String {
    format!(
        "{TOKEN_PREFIX}{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// What is stored of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The scopes stored for a token: what was asked for, with `read` implied.
pub fn stored_scopes(scopes: &[Scope]) -> Vec<String> {
    let mut names = vec![Scope::Read.as_str().to_owned()];
    for scope in scopes {
        if !names.iter().any(|n| n == scope.as_str()) {
            names.push(scope.as_str().to_owned());
        }
    }
    names
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The only workspace this request reaches.
    pub workspace_id: String,
    /// The token's name: the actor of every write.
    pub name: String,
    scopes: Vec<String>,
}

impl Caller {
    /// Whether the token has the scope.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| s == scope.as_str())
    }

    /// Refuses the request unless the token has the scope.
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this token lacks the `{}` scope",
                scope.as_str()
            )))
        }
    }
}

impl From<tokens::StoredToken> for Caller {
    fn from(stored: tokens::StoredToken) -> Caller {
        Caller {
            workspace_id: stored.workspace_id,
            name: stored.name,
            scopes: stored.scopes,
        }
    }
}

impl FromRequestParts<Api> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Caller, Problem> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("missing `Authorization: Bearer` header"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header is not a bearer token")
            })?;
        let mut conn = api.pool.acquire().await?;
        let stored = tokens::authenticate(&mut conn, &token_hash(token))
            .await?
            .ok_or_else(|| Problem::unauthorized("unknown or revoked token"))?;
        Ok(Caller::from(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(token_hash(&a).len(), 32);
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn read_is_always_granted() {
        assert_eq!(stored_scopes(&[]), vec!["read"]);
        assert_eq!(
            stored_scopes(&[Scope::Write, Scope::Pii, Scope::Write]),
            vec!["read", "write", "pii"]
        );
    }
}
