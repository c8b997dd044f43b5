//! Bearer tokens with scopes (DESIGN §6): `write` may ingest, `read` may query and follow
//! streams, `admin` may do both and read `/metrics` and `/v1/clients`. No token configured means
//! open access, as before tokens existed.

use std::fmt;

use crowdpulse_connectors::config::ApiConfig;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::error::ApiError;

/// Shortest accepted token: a guessable one would make the check decorative.
const MIN_TOKEN_BYTES: usize = 16;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Queries and live push.
    Read,
    /// Ingest.
    Write,
    /// Operations: metrics and connected clients; implies read and write.
    Admin,
}

impl Scope {
    fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Read => 1,
            Self::Write => 2,
            Self::Admin => 4,
        }
    }

    /// The name used in configuration and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

struct Grant {
    token: Box<[u8]>,
    scopes: u8,
}

/// The configured tokens. Its debug form shows only how many there are.
#[derive(Default)]
pub struct Access {
    grants: Vec<Grant>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("tokens", &self.grants.len())
            .finish()
    }
}

impl Access {
    /// Tokens from `api.tokens` and `api.tokens_file`.
    pub fn from_config(config: &ApiConfig) -> Result<Self, ApiError> {
        let mut access = Self::default();
        if let Some(text) = &config.tokens {
            access.add(text, "api.tokens")?;
        }
        if let Some(path) = &config.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ApiError::AccessConfig(format!("reading api.tokens_file {}: {e}", path.display()))
            })?;
            access.add(&text, &path.display().to_string())?;
        }
        // Tokens were asked for: an empty variable or a file of comments must not mean "open".
        if access.is_open() && (config.tokens.is_some() || config.tokens_file.is_some()) {
            return Err(ApiError::AccessConfig(
                "api.tokens or api.tokens_file is set but holds no token".into(),
            ));
        }
        Ok(access)
    }

    /// Parses `scope[,scope]:token` entries separated by newlines or `;`; messages name the
    /// entry by position, never by its token.
    fn add(&mut self, text: &str, origin: &str) -> Result<(), ApiError> {
        let entries = text
            .split(['\n', ';'])
            .map(str::trim)
            .filter(|entry| !entry.is_empty() && !entry.starts_with('#'));
        for (index, entry) in entries.enumerate() {
            let at = || format!("{origin}, entry {}", index + 1);
            let (scopes, token) = entry.split_once(':').ok_or_else(|| {
                ApiError::AccessConfig(format!("{}: expected scope[,scope]:token", at()))
            })?;
            let mut bits = 0;
            for name in scopes.split(',') {
                let scope = Scope::parse(name).ok_or_else(|| {
                    ApiError::AccessConfig(format!("{}: scopes are read, write and admin", at()))
                })?;
                bits |= scope.bit();
            }
            let token = token.trim();
            if token.len() < MIN_TOKEN_BYTES || token.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(ApiError::AccessConfig(format!(
                    "{}: a token is at least {MIN_TOKEN_BYTES} printable ASCII characters",
                    at()
                )));
            }
            self.grants.push(Grant {
                token: token.as_bytes().into(),
                scopes: bits,
            });
        }
        Ok(())
    }

    /// Whether every request is allowed (no token configured).
    pub fn is_open(&self) -> bool {
        self.grants.is_empty()
    }

    /// Checks a presented token for `needed`. Every configured token is compared, in constant
    /// time, so the answer's timing does not tell how much of a token was right.
    pub fn check(&self, presented: Option<&str>, needed: Scope) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let presented = presented.ok_or(ApiError::Unauthorized {
            invalid_token: false,
        })?;
        let granted = self.grants.iter().fold(0u8, |granted, grant| {
            let same = grant.token.as_ref().ct_eq(presented.as_bytes());
            granted | u8::conditional_select(&0, &grant.scopes, same)
        });
        if granted == 0 {
            return Err(ApiError::Unauthorized {
                invalid_token: true,
            });
        }
        if granted & (needed.bit() | Scope::Admin.bit()) == 0 {
            return Err(ApiError::Forbidden(format!(
                "this token lacks the {} scope",
                needed.name()
            )));
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tokens: &str) -> Result<Access, ApiError> {
        Access::from_config(&ApiConfig {
            tokens: Some(tokens.into()),
            ..ApiConfig::default()
        })
    }

    #[test]
    fn scopes_grant_what_they_name_and_admin_grants_all() {
        let access = access(
            "read:rrrrrrrrrrrrrrrr; write:wwwwwwwwwwwwwwww\n# ops\nadmin:aaaaaaaaaaaaaaaa;read,write:bbbbbbbbbbbbbbbb",
        )
        .unwrap();
        let ok = |token: &str, scope| access.check(Some(token), scope).is_ok();
        assert!(ok("rrrrrrrrrrrrrrrr", Scope::Read) && !ok("rrrrrrrrrrrrrrrr", Scope::Write));
        assert!(ok("wwwwwwwwwwwwwwww", Scope::Write) && !ok("wwwwwwwwwwwwwwww", Scope::Read));
        assert!(!ok("bbbbbbbbbbbbbbbb", Scope::Admin) && ok("bbbbbbbbbbbbbbbb", Scope::Write));
        for scope in [Scope::Read, Scope::Write, Scope::Admin] {
            assert!(ok("aaaaaaaaaaaaaaaa", scope));
            assert!(!ok("aaaaaaaaaaaaaaab", scope));
            assert!(!ok("aaaaaaaaaaaaaaa", scope));
        }
        assert!(matches!(
            access.check(None, Scope::Read),
            Err(ApiError::Unauthorized {
                invalid_token: false
            })
        ));
        assert!(Access::default().check(None, Scope::Admin).is_ok());
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_the_token() {
        for (bad, secret) in [
            ("read:short", "short"),
            ("reader:xxxxxxxxxxxxxxxxxxxx", "xxxx"),
            ("xxxxxxxxxxxxxxxxxxxx", "xxxx"),
        ] {
            let message = access(bad).unwrap_err().to_string();
            assert!(
                message.contains("entry 1") && !message.contains(secret),
                "{message}"
            );
        }
        for empty in ["", " ; ", "# nothing yet"] {
            assert!(
                access(empty).is_err(),
                "{empty:?} must not mean open access"
            );
        }
        let debug = format!("{:?}", access("read:secretsecretsecret").unwrap());
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn only_bearer_headers_carry_tokens() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
