//! Browser origins (DESIGN §6): the server's own origin and `api.cors_origins` may write, open
//! WebSockets and read answers across sites; any other origin is refused before it can act.
//!
//! Written here rather than with `warp::cors`: that filter refuses every origin not listed,
//! including the server's own (browsers send `Origin` on same-origin POSTs and WebSockets), and
//! it cannot see the `Host` a request was sent to.

use warp::http::header::{HeaderMap, HeaderValue};

use crate::error::ApiError;

/// Methods and request headers a cross-site caller may use.
pub const ALLOWED_METHODS: &str = "GET, POST";
/// Headers a preflight may ask for.
pub const ALLOWED_HEADERS: &str = "authorization, content-type";

/// The allow-list.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    any: bool,
    listed: Vec<String>,
}

impl Origins {
    /// Checks each entry: `*`, or `scheme://host[:port]` without path (as browsers send it).
    pub fn new(entries: &[String]) -> Result<Self, ApiError> {
        let mut origins = Self::default();
        for entry in entries {
            if entry == "*" {
                origins.any = true;
                continue;
            }
            let well_formed = entry.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
            });
            if !well_formed {
                return Err(ApiError::AccessConfig(format!(
                    "api.cors_origins entry {entry:?} is not * or scheme://host[:port]"
                )));
            }
            origins.listed.push(entry.to_ascii_lowercase());
        }
        Ok(origins)
    }

    /// Whether `origin` is listed (or everything is).
    pub fn lists(&self, origin: &str) -> bool {
        self.any || self.listed.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Refuses a request whose `Origin` is neither the server's own (the `Host` it was sent to)
    /// nor listed. Requests without `Origin` come from non-browser clients and pass.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(origin) = headers.get("origin") else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or_default();
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let same_site = origin
            .split_once("://")
            .is_some_and(|(_, authority)| !host.is_empty() && authority.eq_ignore_ascii_case(host));
        if same_site || self.lists(origin) {
            Ok(())
        } else {
            Err(ApiError::ForbiddenOrigin(
                crowdpulse_dataflow::error::excerpt(origin),
            ))
        }
    }

    /// The `Access-Control-Allow-Origin` value for a listed request origin.
    pub fn allow_header(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get("origin")?;
        self.lists(origin.to_str().ok()?).then(|| origin.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert("origin", origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn own_and_listed_origins_pass_others_do_not() {
        let origins = Origins::new(&["https://dash.example.com".into()]).unwrap();
        assert!(origins.check(&headers(None, "api:8080")).is_ok());
        assert!(origins
            .check(&headers(Some("http://api:8080"), "api:8080"))
            .is_ok());
        assert!(origins
            .check(&headers(Some("https://dash.example.com"), "api:8080"))
            .is_ok());
        assert!(origins
            .check(&headers(Some("https://evil.example"), "api:8080"))
            .is_err());
        assert!(origins.check(&headers(Some("null"), "api:8080")).is_err());
        assert!(Origins::new(&["*".into()])
            .unwrap()
            .check(&headers(Some("https://evil.example"), "api:8080"))
            .is_ok());
        assert!(Origins::new(&["dash.example.com/x".into()]).is_err());
    }
}
