//! Deployment configuration: `workers.toml` overlaid by `CROWDPULSE__SECTION__KEY` environment
//! variables (e.g. `CROWDPULSE__PIPELINE__ALLOWED_LATENESS=30s`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crowdpulse_dataflow::category::Classifier;
use crowdpulse_dataflow::config::{PipelineConfig, Span};
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use serde::{Deserialize, Serialize};

use tracing::warn;

use crate::error::{ConnectorError, Result};
use crate::kafka_config::KafkaConfig;
use crate::live_input::InputCapacity;
use crate::postgres::PostgresConfig;
use crate::summarizer::SummarizerConfig;

/// Prefix of configuration environment variables; `__` separates the levels.
pub const ENV_PREFIX: &str = "CROWDPULSE__";

/// The most worker threads a process may run.
pub const MAX_WORKERS: usize = 1_024;

/// Processes and threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Worker threads per process.
    pub workers: usize,
    /// `host:port` of every process, in process-index order (empty: one process).
    pub processes: Vec<String>,
    /// How long a process waits at start for the others to connect.
    pub startup_timeout: Span,
    /// How long a connection to another process may stay silent (its host gone, the network
    /// cut) before that process counts as lost and the cluster stops.
    pub peer_timeout: Span,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            processes: Vec::new(),
            startup_timeout: Span(60_000),
            peer_timeout: Span(10_000),
        }
    }
}

/// Lexicon overrides; absent paths use the lexicons embedded in the binary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentimentConfig {
    /// VADER-format word lexicon (`token<TAB>valence...`).
    pub lexicon: Option<PathBuf>,
    /// Emoji descriptions (`emoji<TAB>description`).
    pub emoji_lexicon: Option<PathBuf>,
    /// Emote valences (`Emote<TAB>valence`), case-sensitive.
    pub emote_lexicon: Option<PathBuf>,
    /// Message categories (`category<TAB>shape<TAB>term[<TAB>weight]`).
    pub category_lexicon: Option<PathBuf>,
}

impl SentimentConfig {
    /// Builds the scorer, reading override files.
    pub fn analyzer(&self) -> Result<Arc<Analyzer>> {
        let read = |path: &Option<PathBuf>| -> Result<Option<String>> {
            path.as_ref()
                .map(|p| std::fs::read_to_string(p).map_err(|e| ConnectorError::io(p, e)))
                .transpose()
        };
        let (words, emoji, emotes) = (
            read(&self.lexicon)?,
            read(&self.emoji_lexicon)?,
            read(&self.emote_lexicon)?,
        );
        let lexicons = Lexicons::from_texts(words.as_deref(), emoji.as_deref(), emotes.as_deref())?;
        let analyzer = Analyzer::new(lexicons);
        Ok(Arc::new(match read(&self.category_lexicon)? {
            Some(text) => analyzer.with_categories(Classifier::from_text(&text)?),
            None => analyzer,
        }))
    }
}

/// The HTTP API and the live view store.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on.
    pub bind: String,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: u64,
    /// How long windows stay in the in-memory view store after they end.
    pub retention: Span,
    /// Records the live input holds per partition before ingest answers 503.
    pub input_capacity: usize,
    /// Bytes of those records (an empty queue takes a request of any size).
    pub input_capacity_bytes: u64,
    /// Bearer tokens, `scope[,scope]:token` separated by newlines or `;` (usually from
    /// `CROWDPULSE__API__TOKENS`). Never printed. None here and no `tokens_file`: open access.
    pub tokens: Option<String>,
    /// A file of tokens in the same form, one per line, `#` comments (Docker/Kubernetes secrets).
    pub tokens_file: Option<PathBuf>,
    /// Browser origins (`https://host[:port]`, or `*`) allowed besides the server's own: CORS
    /// answers, cross-site writes and WebSocket upgrades.
    pub cors_origins: Vec<String>,
    /// Host names (without port) by which a server without tokens may be reached, besides IP
    /// addresses and `localhost`: a browser page of any site could otherwise reach an open
    /// server through a name it controls (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Shortest time between two pushed updates of one stream: a stream that changes more often
    /// sends the changes in between as one update (each row key once), so the messages a
    /// client gets are bounded by this, not by how often the frontier moves. Zero: every flush.
    pub push_interval: Span,
    /// Updates a second all live clients together may be sent (0: no bound). Beyond it, every
    /// stream's push interval widens to clients / budget (at most 10 s): a large audience gets
    /// fewer, larger updates instead of a backlog that delays them all.
    pub push_budget: u64,
    /// Limits on requests and answers.
    pub limits: ApiLimits,
    /// In a cluster, the process (index in `cluster.processes`) that serves the API and hosts
    /// the sinks (Postgres, NDJSON, the view store): `run` gathers the rows there.
    pub serve_on: usize,
}

/// Longest `api.push_interval`, and longest that `api.push_budget` widens it to: a live view is
/// worth little older than this.
pub const MAX_PUSH_INTERVAL_MS: u64 = 10_000;

impl ApiConfig {
    /// What each partition of the demo's input holds.
    pub fn input_capacity(&self) -> InputCapacity {
        InputCapacity {
            records: self.input_capacity,
            bytes: usize::try_from(self.input_capacity_bytes).unwrap_or(usize::MAX),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            max_body_bytes: 1 << 20,
            retention: Span(3_600_000),
            input_capacity: 1_000_000,
            input_capacity_bytes: 64 << 20,
            tokens: None,
            tokens_file: None,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            push_interval: Span(100),
            push_budget: 40_000,
            limits: ApiLimits::default(),
            serve_on: 0,
        }
    }
}

/// The settings without secrets: tokens show as `***`.
impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("bind", &self.bind)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("retention", &self.retention)
            .field("input_capacity", &self.input_capacity)
            .field("input_capacity_bytes", &self.input_capacity_bytes)
            .field("tokens", &self.tokens.as_ref().map(|_| "***"))
            .field("tokens_file", &self.tokens_file)
            .field("cors_origins", &self.cors_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("push_interval", &self.push_interval)
            .field("push_budget", &self.push_budget)
            .field("limits", &self.limits)
            .field("serve_on", &self.serve_on)
            .finish()
    }
}

/// `[api.limits]`: how much one request or answer may hold (DESIGN §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// Records in one ingest request (413 beyond).
    pub max_events_per_request: usize,
    /// Refused records listed in an ingest answer; the rest are only counted.
    pub max_rejections_listed: usize,
    /// Open connections; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connected WebSocket and SSE clients; more are answered 503.
    pub max_live_clients: usize,
    /// Time for a request's headers to arrive, and for an idle keep-alive connection to send
    /// its next request.
    pub header_timeout: Span,
    /// Time for a request's whole body to arrive (408 beyond).
    pub body_timeout: Span,
    /// Time a peer may take nothing of an answer or a push before its connection is dropped.
    pub send_timeout: Span,
    /// Largest message a WebSocket client may send (the protocol needs none; pings are small).
    pub max_websocket_message_bytes: usize,
    /// Time a WebSocket client may send nothing, not even the pong to the pings the server sends
    /// every third of it, before its connection is dropped: its network went away without
    /// closing the connection, and a quiet stream's follower would otherwise hold its slot for
    /// ever (nothing is written to it, so `send_timeout` never fires).
    pub websocket_silence: Span,
    /// How long open requests may finish after a stop signal.
    pub shutdown_grace: Span,
}

impl ApiLimits {
    /// Refuses zeros: each would refuse every request or, for timeouts, mean none.
    pub fn validate(&self) -> Result<()> {
        let counts = [
            ("max_events_per_request", self.max_events_per_request),
            ("max_connections", self.max_connections),
            ("max_live_clients", self.max_live_clients),
            (
                "max_websocket_message_bytes",
                self.max_websocket_message_bytes,
            ),
        ];
        let spans = [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("send_timeout", self.send_timeout),
            ("websocket_silence", self.websocket_silence),
        ];
        let zero = counts
            .iter()
            .find(|(_, n)| *n == 0)
            .map(|(name, _)| *name)
            .or_else(|| spans.iter().find(|(_, s)| s.0 == 0).map(|(name, _)| *name));
        match zero {
            Some(name) => Err(ConnectorError::Config(format!(
                "api.limits.{name} must be > 0"
            ))),
            None => Ok(()),
        }
    }
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_events_per_request: 10_000,
            max_rejections_listed: 100,
            max_connections: 10_000,
            max_live_clients: 10_000,
            header_timeout: Span(10_000),
            body_timeout: Span(30_000),
            send_timeout: Span(10_000),
            max_websocket_message_bytes: 4_096,
            websocket_silence: Span(45_000),
            shutdown_grace: Span(5_000),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Process layout.
    pub cluster: ClusterConfig,
    /// Event time, windows, lateness, moments.
    pub pipeline: PipelineConfig,
    /// Sentiment lexicons.
    pub sentiment: SentimentConfig,
    /// HTTP API.
    pub api: ApiConfig,
    /// Kafka source, dead-letter topic and producer.
    pub kafka: KafkaConfig,
    /// The database the tables are kept in.
    pub postgres: PostgresConfig,
    /// The optional endpoint writing chat summaries' text.
    pub summarizer: SummarizerConfig,
}

/// Keys whose values are secrets: taken from the environment as written (never parsed as TOML,
/// which would turn an all-digit password into a number, and `"..."` into its content), and
/// never quoted in an error.
const SECRET_KEYS: [(&str, &str); 4] = [
    ("api", "tokens"),
    ("postgres", "password"),
    ("postgres", "url"),
    ("summarizer", "api_key"),
];

/// Parses an override value as TOML (numbers, booleans, arrays) or, failing that, as a string.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn overlay(table: &mut toml::Table, name: &str, raw: &str) -> Result<()> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(ConnectorError::Config(format!(
            "{name}: empty section or key"
        )));
    }
    // Every top-level entry is a section: a value there would be quoted back in the error.
    if path.len() < 2 {
        return Err(ConnectorError::Config(format!(
            "{name} names a section, not a key (e.g. {name}__URL); its value is not shown"
        )));
    }
    let (key, sections) = path.split_last().expect("split yields at least one part");
    let mut current = table;
    for section in sections {
        let entry = current
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| ConnectorError::Config(format!("{name}: {section} is not a section")))?;
    }
    let secret = SECRET_KEYS.iter().any(|(s, k)| path == [*s, *k]);
    let value = match secret {
        true => toml::Value::String(raw.to_owned()),
        false => env_value(raw),
    };
    current.insert(key.clone(), value);
    Ok(())
}

/// A variable that was most likely meant as a setting (`CROWDPULSE_API__TOKENS`): one underscore
/// after the prefix. `CROWDPULSE_PROCESS` is the process index, read by the command line.
fn looks_like_a_setting(name: &str) -> bool {
    name.starts_with("CROWDPULSE_") && !name.starts_with(ENV_PREFIX) && name.contains("__")
}

/// A secret given as something else than a string (`password = 84629173` unquoted) is refused
/// by name, before the settings' own error would quote it.
fn check_secret_types(table: &toml::Table) -> Result<()> {
    for (section, key) in SECRET_KEYS {
        // A section given a value (`postgres = "postgresql://..."`) would be quoted too.
        if table.get(section).is_some_and(|s| !s.is_table()) {
            return Err(ConnectorError::Config(format!(
                "{section} must be a section ([{section}]); its value is not shown"
            )));
        }
        let value = table
            .get(section)
            .and_then(toml::Value::as_table)
            .and_then(|s| s.get(key));
        if value.is_some_and(|v| !v.is_str()) {
            return Err(ConnectorError::Config(format!(
                "{section}.{key} must be a string (quote it); its value is not shown"
            )));
        }
    }
    Ok(())
}

/// A syntax error by its line and column, without the line itself, which may hold a secret
/// written without quotes.
fn syntax_error(origin: &str, text: &str, error: &toml::de::Error) -> ConnectorError {
    let place = error.span().map_or_else(String::new, |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
        format!(" line {line}, column {column}:")
    });
    ConnectorError::Config(format!("{origin}:{place} {}", error.message()))
}

impl Config {
    /// The pipeline plan, with the Avro schemas of configured kinds read from their files.
    pub fn plan(&self) -> Result<Plan> {
        let plan = Plan::new(self.pipeline.clone())?;
        Ok(plan.with_avro_schemas(|path| {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
        })?)
    }

    /// Loads `path` (or defaults when None) and applies `CROWDPULSE__...` overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConnectorError::io(p, e))?;
                Self::from_toml(&text, &p.display().to_string(), env)
            }
            None => Self::from_toml("", "defaults", env),
        }
    }

    /// Parses configuration text (`origin` names it in errors) and applies the overrides.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut table =
            toml::from_str::<toml::Table>(text).map_err(|e| syntax_error(origin, text, &e))?;
        let mut overrides = Vec::new();
        for (name, value) in env {
            if name.starts_with(ENV_PREFIX) {
                overrides.push((name, value));
            } else if looks_like_a_setting(&name) {
                warn!(variable = %name, "ignored: settings are CROWDPULSE__SECTION__KEY, with two underscores after each part");
            }
        }
        overrides.sort();
        for (name, value) in &overrides {
            overlay(&mut table, name, value)?;
        }
        check_secret_types(&table)?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConnectorError::Config(e.to_string()))?;
        let plan = config.plan()?;
        for kind in plan.kinds() {
            if config.kafka.topics.iter().any(|t| t.name == kind.topic) {
                return Err(ConnectorError::Config(format!(
                    "pipeline.kinds.{}.topic: {:?} is also in kafka.topics",
                    kind.name, kind.topic
                )));
            }
        }
        config.kafka.validate()?;
        config.api.limits.validate()?;
        // Held-back changes are kept per stream until the interval passes.
        if config.api.push_interval.0 > MAX_PUSH_INTERVAL_MS {
            return Err(ConnectorError::Config(format!(
                "api.push_interval must be at most {} s",
                MAX_PUSH_INTERVAL_MS / 1_000
            )));
        }
        // A request the queue can never take whole would be answered "busy, retry" for ever.
        // (In bytes, the demo's input takes any request when it is empty.)
        let request = config.api.limits.max_events_per_request;
        let queues = [
            ("api.input_capacity", config.api.input_capacity),
            (
                "kafka.producer_queue_messages",
                config.kafka.producer_queue_messages as usize,
            ),
        ];
        if let Some((name, capacity)) = queues.iter().find(|(_, c)| *c < request) {
            return Err(ConnectorError::Config(format!(
                "{name} ({capacity}) must be at least api.limits.max_events_per_request ({request}): \
                 a request that never fits would be answered busy for ever"
            )));
        }
        config.postgres.validate()?;
        config.summarizer.validate()?;
        if !(1..=MAX_WORKERS).contains(&config.cluster.workers) {
            return Err(ConnectorError::Config(format!(
                "cluster.workers must be 1..={MAX_WORKERS}"
            )));
        }
        let spans = [
            ("api.retention", config.api.retention),
            ("cluster.startup_timeout", config.cluster.startup_timeout),
        ];
        if let Some((name, _)) = spans.iter().find(|(_, span)| span.0 == 0) {
            return Err(ConnectorError::Config(format!("{name} must be > 0")));
        }
        if config.api.max_body_bytes == 0 {
            // Every POST would be refused as too large.
            return Err(ConnectorError::Config(
                "api.max_body_bytes must be >= 1".into(),
            ));
        }
        // The connections' keepalive idle time is half of it, in whole seconds, which Linux
        // takes from 1 s to about 9 h.
        if !(2_000..=3_600_000).contains(&config.cluster.peer_timeout.0) {
            return Err(ConnectorError::Config(format!(
                "cluster.peer_timeout must be between 2s and 1h, not {}",
                config.cluster.peer_timeout
            )));
        }
        if config.api.serve_on >= config.cluster.processes.len().max(1) {
            return Err(ConnectorError::Config(format!(
                "api.serve_on = {} names no process: cluster.processes lists {} (indexes from 0)",
                config.api.serve_on,
                config.cluster.processes.len().max(1)
            )));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdpulse_dataflow::config::Span;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The `workers.toml` blocks of the deployment examples (a README's here-document, a
    /// ConfigMap's literal block) load, with the layout they describe.
    #[test]
    fn the_deployment_examples_load() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy");
        let readme = std::fs::read_to_string(docs.join("README.md")).unwrap();
        let systemd = readme
            .split("<<'TOML'\n")
            .nth(1)
            .and_then(|rest| rest.split("TOML\n").next())
            .expect("the README's workers.toml");
        let manifest = std::fs::read_to_string(docs.join("kubernetes/crowdpulse.yaml")).unwrap();
        let kubernetes: String = manifest
            .split("workers.toml: |\n")
            .nth(1)
            .and_then(|rest| rest.split("---").next())
            .expect("the ConfigMap's workers.toml")
            .lines()
            .map(|line| line.strip_prefix("    ").unwrap_or(line).to_owned() + "\n")
            .collect();
        for (origin, text) in [("systemd", systemd), ("kubernetes", &kubernetes)] {
            let config = Config::from_toml(text, origin, env(&[])).unwrap();
            assert_eq!(config.cluster.processes.len(), 2, "{origin}");
            assert_eq!(config.api.serve_on, 0, "{origin}");
            assert!(
                config.postgres.enabled() && config.kafka.enabled(),
                "{origin}"
            );
        }
    }

    /// The README shows the content-download preset in full: it is the preset.
    #[test]
    fn the_readme_shows_the_download_preset_as_it_is() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        let shown = readme
            .split("## Configured event kinds")
            .nth(1)
            .and_then(|rest| rest.split("```toml\n").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("the README's preset");
        let config = Config::from_toml(shown, "README", env(&[])).unwrap();
        let plan = config.plan().unwrap();
        let preset = Config::from_toml(
            "[pipeline.kinds.downloads]\npreset = \"content_downloads\"\n",
            "preset",
            env(&[]),
        )
        .unwrap()
        .plan()
        .unwrap();
        let (a, b) = (&plan.kinds()[0], &preset.kinds()[0]);
        assert_eq!(
            (
                &a.topic,
                a.format,
                &a.time,
                &a.dimensions,
                &a.windows,
                &a.names
            ),
            (
                &b.topic,
                b.format,
                &b.time,
                &b.dimensions,
                &b.windows,
                &b.names
            )
        );
        let measures = |k: &crowdpulse_dataflow::kinds::config::KindSpec| -> Vec<_> {
            k.measures.iter().map(|(m, _)| m.clone()).collect()
        };
        assert_eq!(measures(a), measures(b));
        let alerts = |k: &crowdpulse_dataflow::kinds::config::KindSpec| -> Vec<_> {
            k.alerts.iter().map(|(rule, ..)| rule.clone()).collect()
        };
        assert_eq!(alerts(a), alerts(b));
    }

    #[test]
    fn serve_on_must_name_a_process() {
        let text = "[cluster]\nprocesses = [\"a:1\", \"b:1\"]\n[api]\nserve_on = 2\n";
        let error = Config::from_toml(text, "test", env(&[])).unwrap_err();
        assert!(error.to_string().contains("serve_on = 2"), "{error}");
    }

    #[test]
    fn push_interval_is_at_most_ten_seconds() {
        let config = Config::from_toml("[api]\npush_interval = \"10s\"\n", "test", env(&[]));
        assert_eq!(config.unwrap().api.push_interval, Span(10_000));
        let text = "[api]\npush_interval = \"11s\"\n";
        let error = Config::from_toml(text, "test", env(&[])).unwrap_err();
        assert!(error.to_string().contains("push_interval"), "{error}");
    }

    #[test]
    fn the_example_file_loads_and_env_overrides_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workers.toml");
        let config = Config::load(
            Some(&path),
            env(&[
                ("CROWDPULSE__PIPELINE__ALLOWED_LATENESS", "30s"),
                ("CROWDPULSE__PIPELINE__MOMENTS__MIN_ZSCORE", "2.5"),
                ("CROWDPULSE__CLUSTER__WORKERS", "4"),
                ("CROWDPULSE__API__PUSH_BUDGET", "100000"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.pipeline.allowed_lateness, Span(30_000));
        assert_eq!(config.api.push_budget, 100_000);
        let file_only = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(file_only.api.push_budget, ApiConfig::default().push_budget);
        assert_eq!(config.api.push_interval, ApiConfig::default().push_interval);
        assert_eq!(config.pipeline.moments.min_zscore, 2.5);
        assert_eq!(config.cluster.workers, 4);
        assert_eq!(config.pipeline.windows.len(), 3);
        assert!(config.kafka.enabled());
        assert_eq!(config.kafka.topics, KafkaConfig::default().topics);
    }

    /// The whole configuration's debug form (what a log line would show) holds no token and no
    /// password, from the environment or a file.
    #[test]
    fn tokens_and_passwords_never_show_in_the_debug_form() {
        let config = Config::load(
            None,
            env(&[
                (
                    "CROWDPULSE__API__TOKENS",
                    "read:tok-r3ad-s3cret;admin:tok-adm1n",
                ),
                ("CROWDPULSE__API__TOKENS_FILE", "/run/secrets/tokens"),
                (
                    "CROWDPULSE__POSTGRES__URL",
                    "postgresql://app:pw-in-url@db.example/crowdpulse",
                ),
                ("CROWDPULSE__POSTGRES__PASSWORD", "pw-from-env"),
            ]),
        )
        .unwrap();
        assert!(config.api.tokens.is_some());
        let shown = format!("{config:?} {config:#?}");
        for secret in ["tok-r3ad-s3cret", "tok-adm1n", "pw-in-url", "pw-from-env"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("***"), "{shown}");
        assert!(shown.contains("/run/secrets/tokens"), "{shown}");
    }

    /// Secrets are taken from the environment as written, and no error quotes one: an all-digit
    /// password read as a number was refused with its value; a section given a value (the key
    /// forgotten) quoted it; a secret in the file written as a number, or without quotes (a
    /// syntax error quoting its line), likewise.
    #[test]
    fn secrets_are_taken_as_written_and_never_quoted_in_errors() {
        let config = Config::load(
            None,
            env(&[
                ("CROWDPULSE__POSTGRES__PASSWORD", "84629173"),
                ("CROWDPULSE__SUMMARIZER__API_KEY", "\"quoted\""),
            ]),
        )
        .unwrap();
        assert_eq!(config.postgres.password.as_deref(), Some("84629173"));
        assert_eq!(config.summarizer.api_key.as_deref(), Some("\"quoted\""));
        let refusals = [
            Config::load(
                None,
                env(&[("CROWDPULSE__POSTGRES", "postgresql://ann:hunter2@db/x")]),
            ),
            Config::from_toml("[postgres]\npassword = 8462917\n", "file", env(&[])),
            Config::from_toml("[postgres]\npassword = hunter2\n", "file", env(&[])),
            Config::from_toml(
                "postgres = \"postgresql://ann:hunter2@db/x\"\n",
                "file",
                env(&[]),
            ),
        ];
        for refusal in refusals {
            let error = refusal.unwrap_err().to_string();
            assert!(
                !error.contains("hunter2") && !error.contains("8462917"),
                "{error}"
            );
            let named = error.to_lowercase().contains("postgres") || error.contains("line 2");
            assert!(named, "{error}");
        }
    }

    /// A setting with one underscore after the prefix is ignored, with a warning (tokens meant
    /// for `CROWDPULSE__API__TOKENS` left the API open without a word).
    #[test]
    fn settings_misspelt_with_one_underscore_are_told_apart() {
        for name in ["CROWDPULSE_API__TOKENS", "CROWDPULSE_POSTGRES__URL"] {
            assert!(looks_like_a_setting(name), "{name}");
        }
        for name in [
            "CROWDPULSE_PROCESS",
            "CROWDPULSE_HOME",
            "CROWDPULSE__API__TOKENS",
        ] {
            assert!(!looks_like_a_setting(name), "{name}");
        }
        let config = Config::load(None, env(&[("CROWDPULSE_API__TOKENS", "read:t")])).unwrap();
        assert!(config.api.tokens.is_none());
    }

    #[test]
    fn lexicon_paths_override_the_embedded_lexicons() {
        let dir = std::env::temp_dir().join(format!("crowdpulse-lexicon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let emotes = dir.join("emotes.txt");
        std::fs::write(&emotes, "# house emotes\nBigW\t3.0\n").unwrap();
        let config = Config::load(
            None,
            env(&[(
                "CROWDPULSE__SENTIMENT__EMOTE_LEXICON",
                emotes.to_str().unwrap(),
            )]),
        )
        .unwrap();
        let analyzer = config.sentiment.analyzer().unwrap();
        assert!(analyzer.polarity_scores("BigW").compound > 0.5);
        assert_eq!(
            analyzer.polarity_scores("PogChamp").compound,
            0.0,
            "the built-in emotes are replaced"
        );
        std::fs::write(&emotes, "BigW three\n").unwrap();
        let err = config.sentiment.analyzer().unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let err = Config::load(
            None,
            env(&[("CROWDPULSE__PIPELINE__ALLOWED_LATENES", "30s")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = Config::load(None, env(&[("CROWDPULSE__PIPELINE__TICK", "fast")])).unwrap_err();
        assert!(err.to_string().contains("tick"), "{err}");
        assert!(Config::load(None, env(&[("CROWDPULSE__CLUSTER__WORKERS", "0")])).is_err());
        // Accepted before, each refusing every record or request, or spawning without bound.
        for (name, value) in [
            ("CROWDPULSE__CLUSTER__WORKERS", "1025"),
            ("CROWDPULSE__PIPELINE__LIMITS__ID_BYTES", "0"),
            ("CROWDPULSE__PIPELINE__LIMITS__TEXT_BYTES", "0"),
            ("CROWDPULSE__API__MAX_BODY_BYTES", "0"),
            ("CROWDPULSE__API__RETENTION", "\"0s\""),
            ("CROWDPULSE__CLUSTER__STARTUP_TIMEOUT", "\"0s\""),
        ] {
            assert!(Config::load(None, env(&[(name, value)])).is_err(), "{name}");
        }
        for timeout in ["\"0s\"", "\"1s\"", "\"2h\""] {
            let err = Config::load(None, env(&[("CROWDPULSE__CLUSTER__PEER_TIMEOUT", timeout)]))
                .unwrap_err();
            assert!(err.to_string().contains("between 2s and 1h"), "{err}");
        }
        assert!(Config::load(Some(Path::new("/nonexistent/workers.toml")), env(&[])).is_err());
        // A queue smaller than the largest request answered that request "busy" for ever.
        for queue in [
            "CROWDPULSE__API__INPUT_CAPACITY",
            "CROWDPULSE__KAFKA__PRODUCER_QUEUE_MESSAGES",
        ] {
            let err = Config::load(
                None,
                env(&[
                    (queue, "2"),
                    ("CROWDPULSE__API__LIMITS__MAX_EVENTS_PER_REQUEST", "3"),
                ]),
            )
            .unwrap_err();
            assert!(err.to_string().contains("at least api.limits"), "{err}");
        }
        // A body limit above the demo queue's byte budget is accepted (an empty queue takes any
        // request).
        let config = Config::load(
            None,
            env(&[("CROWDPULSE__API__MAX_BODY_BYTES", "134217728")]),
        );
        assert!(config.is_ok());
    }
}
