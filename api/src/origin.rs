//! Browser origins (DESIGN §6): the server's own origin and `api.cors_origins` may write, open
//! WebSockets and read answers across sites; any other origin is refused before it can act. A
//! server without tokens also checks the `Host` it is reached by: a page that points a name it
//! controls at the server (DNS rebinding) would otherwise be "the server's own origin".
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
    /// Host names an open server may be reached by (None: tokens guard it, any host will do).
    open_hosts: Option<Vec<String>>,
}

impl Origins {
    /// Checks each entry: `*`, or `scheme://host[:port]` without path (as browsers send it).
    /// `open_hosts` is `api.allowed_hosts` when no token is configured, else None.
    pub fn new(entries: &[String], open_hosts: Option<&[String]>) -> Result<Self, ApiError> {
        let mut origins = Self {
            open_hosts: open_hosts
                .map(|hosts| hosts.iter().map(|h| h.to_ascii_lowercase()).collect()),
            ..Self::default()
        };
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

    /// Refuses, on a server without tokens, a request sent to a host name other than `localhost`
    /// and `api.allowed_hosts` (IP addresses always pass: rebinding needs a name).
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(names) = &self.open_hosts else {
            return Ok(());
        };
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let name = match host.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let allowed = name.is_empty()
            || name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if allowed {
            Ok(())
        } else {
            Err(ApiError::ForbiddenHost(
                crowdpulse_dataflow::error::excerpt(name),
            ))
        }
    }

    /// Whether answers vary by `Origin` (CORS is configured).
    pub fn any_listed(&self) -> bool {
        self.any || !self.listed.is_empty()
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
    fn an_open_server_answers_only_to_its_own_names() {
        let open = Origins::new(&[], Some(&["crowdpulse.internal".into()])).unwrap();
        for host in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:8080",
            "crowdpulse.internal:80",
            "10.0.0.5",
        ] {
            assert!(open.check_host(&headers(None, host)).is_ok(), "{host}");
        }
        assert!(open
            .check_host(&headers(None, "rebound.evil.example:8080"))
            .is_err());
        let guarded = Origins::new(&[], None).unwrap();
        assert!(guarded
            .check_host(&headers(None, "rebound.evil.example:8080"))
            .is_ok());
    }

    #[test]
    fn own_and_listed_origins_pass_others_do_not() {
        let origins = Origins::new(&["https://dash.example.com".into()], None).unwrap();
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
        assert!(Origins::new(&["*".into()], None)
            .unwrap()
            .check(&headers(Some("https://evil.example"), "api:8080"))
            .is_ok());
        assert!(Origins::new(&["dash.example.com/x".into()], None).is_err());
    }
}
