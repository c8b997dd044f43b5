//! `[postgres]`: where the tables live and how the sink writes them. The password comes from
//! `password` (e.g. `CROWDPULSE__POSTGRES__PASSWORD`) or `password_file`, and is never printed.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crowdpulse_dataflow::config::Span;
use serde::{Deserialize, Serialize};

use crate::error::{ConnectorError, Result};

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// A hundred years: the partitions a retention keeps (one per day) stay countable.
const MAX_CHAT_RETENTION: u64 = 36_500 * DAY;
/// How long a connection may leave data unacknowledged, or take to connect, before it fails
/// (and the write is retried).
const SILENT_SERVER_TIMEOUT: Duration = Duration::from_secs(10);
/// tokio-postgres's keepalive idle time when the url sets none.
const TCP_KEEPALIVE_DEFAULT: Duration = Duration::from_secs(2 * 60 * 60);

/// Postgres settings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgresql://user@host:port/database` (or `host=... dbname=...`); empty: no Postgres.
    pub url: String,
    /// Password, overriding one in `url`.
    pub password: Option<String>,
    /// File whose first line is the password (Docker/Kubernetes secrets).
    pub password_file: Option<PathBuf>,
    /// Schema holding crowdpulse's tables (created by the migrations).
    pub schema: String,
    /// Connections of the API's query pool.
    pub pool_size: usize,
    /// How often a live run commits what it has computed.
    pub flush_interval: Span,
    /// How far (in event time) the sources may run ahead of what Postgres has committed. While
    /// Postgres is slow or down, reading pauses at this lead, which bounds memory.
    pub max_lead: Span,
    /// How often `run` takes a checkpoint (committed with the output it reflects); a restart
    /// resumes from the latest. 0: none, and a restart reads from `--from`/`kafka.start`.
    pub checkpoint_interval: Span,
    /// How much chat history `chat_messages` keeps, in event time: messages older than the
    /// latest message written minus this are not stored, and day partitions wholly before that
    /// are dropped.
    pub chat_retention: Span,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            password: None,
            password_file: None,
            schema: "crowdpulse".into(),
            pool_size: 4,
            flush_interval: Span(1_000),
            max_lead: Span(300_000),
            checkpoint_interval: Span(10_000),
            chat_retention: Span(30 * DAY),
        }
    }
}

/// The settings without secrets: a password in `url` or `password` shows as `***`.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field(
                "url",
                &redact_url(&self.url).unwrap_or_else(|| "<unparsable>".into()),
            )
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("flush_interval", &self.flush_interval)
            .field("max_lead", &self.max_lead)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("chat_retention", &self.chat_retention)
            .finish()
    }
}

/// `url` as it may be shown: the parsed connection settings without any password (None when it
/// does not parse; then nothing of it is shown).
pub fn redact_url(url: &str) -> Option<String> {
    let config = tokio_postgres::Config::from_str(url).ok()?;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            // A raw '@' in a url's password makes the parser take the rest for the host.
            tokio_postgres::config::Host::Tcp(name) if name.contains('@') => "***".into(),
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    Some(format!(
        "postgresql://{}@{}/{}{}",
        config.get_user().unwrap_or_default(),
        hosts.join(","),
        config.get_dbname().unwrap_or_default(),
        if config.get_password().is_some() {
            " (password ***)"
        } else {
            ""
        }
    ))
}

impl PostgresConfig {
    /// Whether a database is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// Checks the settings (called at load).
    pub fn validate(&self) -> Result<()> {
        let valid_schema = !self.schema.is_empty()
            && self.schema.len() <= 63
            && self
                .schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !self.schema.starts_with(|c: char| c.is_ascii_digit());
        if !valid_schema {
            return Err(ConnectorError::Config(format!(
                "postgres.schema {:?} must be a lowercase identifier ([a-z_][a-z0-9_]*)",
                self.schema
            )));
        }
        if self.pool_size == 0 || self.flush_interval.0 == 0 || self.max_lead.0 == 0 {
            return Err(ConnectorError::Config(
                "postgres.pool_size, flush_interval and max_lead must be > 0".into(),
            ));
        }
        if !(HOUR..=MAX_CHAT_RETENTION).contains(&self.chat_retention.0) {
            return Err(ConnectorError::Config(format!(
                "postgres.chat_retention {} must be between 1h and 36500d",
                self.chat_retention
            )));
        }
        if self.password.is_some() && self.password_file.is_some() {
            // As summarizer.api_key and api_key_file: which one was meant cannot be told.
            return Err(ConnectorError::Config(
                "postgres.password and postgres.password_file are exclusive".into(),
            ));
        }
        if self.enabled() {
            self.client_config()?;
        }
        Ok(())
    }

    /// Where checkpoints are kept: the database and the schema (not the host, which processes
    /// of a cluster may reach by different names; never the credentials).
    pub fn checkpoint_store(&self) -> Result<String> {
        let config = self.client_config()?;
        let database = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or_default();
        Ok(format!("database {database:?} schema {:?}", self.schema))
    }

    /// The connection settings, with the password from `password` or `password_file`.
    pub fn client_config(&self) -> Result<tokio_postgres::Config> {
        // The url may hold a password: errors never echo it.
        let mut config = tokio_postgres::Config::from_str(&self.url).map_err(|_| {
            ConnectorError::Config(
                "postgres.url is not a connection string (postgresql://user@host:port/database \
                 or host=... dbname=...)"
                    .into(),
            )
        })?;
        if let Some(password) = &self.password {
            config.password(password);
        } else if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| ConnectorError::io(path, e))?;
            config.password(text.lines().next().unwrap_or_default());
        }
        if config.get_application_name().is_none() {
            config.application_name("crowdpulse");
        }
        // A server gone without closing its connections (its host down, the network cut) would
        // otherwise hold a write for TCP's retransmission timeout, about 15 minutes, a wait for
        // its answer for TCP keepalive's two idle hours, and a connection attempt for about 2
        // minutes; the url's own settings win.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(SILENT_SERVER_TIMEOUT);
        }
        // (A url asking for tokio-postgres's default idle time explicitly gets ours too.)
        if config.get_keepalives_idle() == TCP_KEEPALIVE_DEFAULT {
            config.keepalives_idle(SILENT_SERVER_TIMEOUT / 2);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(SILENT_SERVER_TIMEOUT / 10);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(SILENT_SERVER_TIMEOUT);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_server_times_out_unless_the_url_says_otherwise() {
        let timeouts = |url: &str| {
            let config = PostgresConfig {
                url: url.into(),
                ..PostgresConfig::default()
            }
            .client_config()
            .unwrap();
            (
                config.get_tcp_user_timeout().copied(),
                config.get_connect_timeout().copied(),
                config.get_keepalives_idle(),
            )
        };
        let ten = Some(Duration::from_secs(10));
        assert_eq!(
            timeouts("postgresql://ann@db/x"),
            (ten, ten, Duration::from_secs(5))
        );
        assert_eq!(
            timeouts(
                "postgresql://ann@db/x?tcp_user_timeout=60&connect_timeout=3&keepalives_idle=30"
            ),
            (
                Some(Duration::from_secs(60)),
                Some(Duration::from_secs(3)),
                Duration::from_secs(30)
            )
        );
    }

    #[test]
    fn secrets_are_never_printed() {
        let config = PostgresConfig {
            url: "postgresql://ann:hunter2@db:5432/crowdpulse".into(),
            password: Some("s3cret".into()),
            ..PostgresConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(
            shown.contains("ann@db:5432/crowdpulse (password ***)"),
            "{shown}"
        );
        for url in [
            "host=db user=ann password=hunter2",
            "postgresql://ann:hun@ter2@db/x",
            "postgresql://ann@db/x?password=hunter2",
        ] {
            let shown = redact_url(url).unwrap_or_default();
            assert!(
                !shown.contains("hunter2") && !shown.contains("ter2"),
                "{shown}"
            );
        }
        let broken = PostgresConfig {
            url: "postgresql://ann:hunter2@db:notaport/x".into(),
            ..PostgresConfig::default()
        };
        let error = broken.validate().unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn schema_names_are_identifiers() {
        for bad in ["", "Crowd", "a-b", "1x", "x;drop"] {
            let config = PostgresConfig {
                schema: bad.into(),
                ..PostgresConfig::default()
            };
            assert!(config.validate().is_err(), "{bad:?}");
        }
        assert!(PostgresConfig::default().validate().is_ok());
    }

    #[test]
    fn chat_retention_is_bounded() {
        for (retention, valid) in [
            (0, false),
            (HOUR - 1, false),
            (HOUR, true),
            (36_501 * DAY, false),
        ] {
            let config = PostgresConfig {
                chat_retention: Span(retention),
                ..PostgresConfig::default()
            };
            assert_eq!(config.validate().is_ok(), valid, "{retention}");
        }
    }

    #[test]
    fn password_file_overrides_the_url() {
        let path = std::env::temp_dir().join(format!("crowdpulse-pw-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").unwrap();
        let config = PostgresConfig {
            url: "postgresql://ann:in-url@localhost/db".into(),
            password_file: Some(path.clone()),
            ..PostgresConfig::default()
        };
        let client = config.client_config().unwrap();
        assert_eq!(client.get_password(), Some(&b"from-file"[..]));
        // Both a password and a file: refused (the password won in silence).
        let both = PostgresConfig {
            password: Some("from-env".into()),
            ..config
        };
        let error = both.validate().unwrap_err().to_string();
        assert!(error.contains("exclusive"), "{error}");
        let _ = std::fs::remove_file(path);
    }
}
