//! `[summarizer]`: the optional OpenAI-compatible chat-completions endpoint that turns each
//! extractive chat summary into a sentence or two. The key comes from `api_key` (e.g.
//! `CROWDPULSE__SUMMARIZER__API_KEY`) or `api_key_file`, and is never printed.

use std::fmt;
use std::path::PathBuf;

use crowdpulse_dataflow::config::Span;
use serde::{Deserialize, Serialize};

use crate::error::{ConnectorError, Result};

/// Summarizer settings; no `url`: summaries stay extractive.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummarizerConfig {
    /// Base URL of the API (`https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`);
    /// `/chat/completions` is appended. Empty: off.
    pub url: String,
    /// The model asked.
    pub model: String,
    /// Bearer key, when the endpoint wants one (never serialized, never printed).
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// File whose first line is the key (Docker/Kubernetes secrets).
    pub api_key_file: Option<PathBuf>,
    /// How long one request may take, answer included; beyond, the summary stays extractive.
    pub timeout: Span,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Summaries waiting for a request slot (besides the one taken off the queue to wait for
    /// it); more (the endpoint slower than the chat) are left extractive and counted as
    /// skipped.
    pub queue: usize,
    /// Most tokens the answer may have.
    pub max_tokens: u32,
    /// Further requests for a summary whose request was answered "try again" (408, 429, 500,
    /// 502-504): after the answer's `Retry-After` when it asks for at most `timeout`, else after
    /// 0.5 s doubling; none that would start past the run's deadline. 0: none.
    pub retries: u32,
}

impl Default for SummarizerConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            model: "gpt-4o-mini".into(),
            api_key: None,
            api_key_file: None,
            timeout: Span(20_000),
            max_concurrency: 2,
            queue: 64,
            max_tokens: 120,
            retries: 2,
        }
    }
}

/// The settings without the key.
impl fmt::Debug for SummarizerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SummarizerConfig")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("api_key_file", &self.api_key_file)
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("queue", &self.queue)
            .field("max_tokens", &self.max_tokens)
            .field("retries", &self.retries)
            .finish()
    }
}

impl SummarizerConfig {
    /// Whether an endpoint is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// Checks the settings (called at load).
    pub fn validate(&self) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let bad =
            |key: &str, why: &str| Err(ConnectorError::Config(format!("summarizer.{key} {why}")));
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad("url", "must start with http:// or https://");
        }
        if self.model.trim().is_empty() {
            return bad("model", "must name a model");
        }
        if self.timeout.0 == 0 || self.timeout.0 > 600_000 {
            return bad("timeout", "must be between 1ms and 10m");
        }
        if self.max_concurrency == 0 || self.max_concurrency > 64 {
            return bad("max_concurrency", "must be between 1 and 64");
        }
        if self.queue == 0 || self.queue > 100_000 {
            return bad("queue", "must be between 1 and 100000");
        }
        if self.max_tokens == 0 {
            return bad("max_tokens", "must be > 0");
        }
        if self.retries > 10 {
            return bad("retries", "must be at most 10");
        }
        if self.api_key.is_some() && self.api_key_file.is_some() {
            return bad("api_key_file", "and summarizer.api_key are exclusive");
        }
        if self
            .api_key
            .as_deref()
            .is_some_and(|key| key.trim().is_empty())
        {
            return bad(
                "api_key",
                "is empty (leave it out when the endpoint wants none)",
            );
        }
        Ok(())
    }

    /// The key, from `api_key` or the first line of `api_key_file`.
    pub fn key(&self) -> Result<Option<String>> {
        match (&self.api_key, &self.api_key_file) {
            (Some(key), _) => Ok(Some(key.clone())),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| ConnectorError::io(path, e))?;
                let key = text.lines().next().unwrap_or_default().trim();
                if key.is_empty() {
                    return Err(ConnectorError::Config(format!(
                        "summarizer.api_key_file {}: the first line is empty",
                        path.display()
                    )));
                }
                Ok(Some(key.to_owned()))
            }
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_never_shown() {
        let config = SummarizerConfig {
            url: "https://api.example/v1".into(),
            api_key: Some("sk-secret".into()),
            ..SummarizerConfig::default()
        };
        assert!(!format!("{config:?}").contains("sk-secret"));
        assert_eq!(config.key().unwrap().as_deref(), Some("sk-secret"));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let base = SummarizerConfig {
            url: "http://127.0.0.1:9/v1".into(),
            ..SummarizerConfig::default()
        };
        assert!(base.validate().is_ok());
        assert!(SummarizerConfig::default().validate().is_ok(), "off");
        let cases = [
            (
                "summarizer.url",
                SummarizerConfig {
                    url: "ftp://x".into(),
                    ..base.clone()
                },
            ),
            (
                "summarizer.model",
                SummarizerConfig {
                    model: " ".into(),
                    ..base.clone()
                },
            ),
            (
                "summarizer.timeout",
                SummarizerConfig {
                    timeout: Span(0),
                    ..base.clone()
                },
            ),
            (
                "summarizer.max_concurrency",
                SummarizerConfig {
                    max_concurrency: 0,
                    ..base.clone()
                },
            ),
            (
                "summarizer.queue",
                SummarizerConfig {
                    queue: 0,
                    ..base.clone()
                },
            ),
            (
                "summarizer.max_tokens",
                SummarizerConfig {
                    max_tokens: 0,
                    ..base.clone()
                },
            ),
            (
                "summarizer.retries",
                SummarizerConfig {
                    retries: 11,
                    ..base.clone()
                },
            ),
            (
                "summarizer.api_key",
                SummarizerConfig {
                    api_key: Some(" ".into()),
                    ..base.clone()
                },
            ),
        ];
        for (key, config) in cases {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }
}
