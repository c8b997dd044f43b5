//! The real PostgreSQL the tests use (`scripts/postgres.sh` prepares it): a fresh schema per
//! test, and the comparison of its tables with NDJSON rows, done in SQL.

#![allow(dead_code)] // each test file uses its own subset

use crowdpulse_connectors::postgres::PostgresConfig;
use tokio_postgres::{Client, NoTls};

/// The test database (override with CROWDPULSE_TEST_POSTGRES).
pub fn url() -> String {
    std::env::var("CROWDPULSE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/crowdpulse".into())
}

/// A `[postgres]` section writing to a schema of its own, named after `test`.
pub fn fresh_config(test: &str) -> PostgresConfig {
    let schema = format!(
        "t_{test}_{}_{}",
        std::process::id(),
        crowdpulse_connectors::live_input::wall_clock_ms() % 1_000_000
    );
    PostgresConfig {
        url: url(),
        schema,
        flush_interval: crowdpulse_dataflow::config::Span(50),
        ..PostgresConfig::default()
    }
}

/// A blocking client.
pub struct Db {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Db {
    /// Connects to the test database.
    pub fn connect() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url(), NoTls)
                .await
                .expect("postgres is up (bash scripts/postgres.sh)");
            tokio::spawn(connection);
            client
        });
        Self { runtime, client }
    }

    /// Runs statements.
    pub fn execute(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// The first column of every row, as text.
    pub fn column(&self, sql: &str) -> Vec<String> {
        self.try_column(sql)
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// The first column of every row as text, or the database's error.
    pub fn try_column(&self, sql: &str) -> Result<Vec<String>, String> {
        self.runtime
            .block_on(
                self.client
                    .query(&format!("SELECT q::text FROM ({sql}) AS s(q)"), &[]),
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
                    .collect()
            })
            .map_err(|e| {
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |db| db.message().to_owned())
            })
    }

    /// Waits (up to 60 s: the shared broker, serving every test at once, has left a run's
    /// metadata requests unanswered for over 10 s) until a run has committed rows to `schema`'s
    /// `window_metrics`.
    pub fn wait_for_rows(&self, schema: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let tables = format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' \
             AND tablename = 'window_metrics'"
        );
        let rows = format!("SELECT count(*) FROM \"{schema}\".window_metrics");
        while self.value(&tables) == "0" || self.value(&rows) == "0" {
            assert!(
                std::time::Instant::now() < deadline,
                "no rows in {schema} within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// One value as text.
    pub fn value(&self, sql: &str) -> String {
        self.column(sql).into_iter().next().unwrap_or_default()
    }

    /// Every table of `schema` against the NDJSON `lines` (as `process` and `replay` write
    /// them), compared in SQL as JSON values; returns the differences (empty when equal).
    /// [`Self::differences`] once there are none, or after `timeout` (a live run catching up).
    pub fn differences_within(
        &self,
        schema: &str,
        lines: &[String],
        timeout: std::time::Duration,
    ) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let differences = self.differences(schema, lines);
            if differences.is_empty() || std::time::Instant::now() > deadline {
                return differences;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    pub fn differences(&self, schema: &str, lines: &[String]) -> Vec<String> {
        self.execute(
            "DROP TABLE IF EXISTS pg_temp.expected; CREATE TEMP TABLE expected (line jsonb)",
        );
        self.runtime
            .block_on(async {
                let copy = self
                    .client
                    .copy_in("COPY pg_temp.expected (line) FROM STDIN (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')")
                    .await?;
                let mut data = String::new();
                for line in lines {
                    data.push_str(line);
                    data.push('\n');
                }
                use futures_util::SinkExt;
                let mut copy = Box::pin(copy);
                copy.send(bytes::Bytes::from(data)).await?;
                copy.as_mut().finish().await
            })
            .expect("loading the expected rows");
        // The dead letters' payload is compared as bytes separately; generated columns and
        // write times are not part of the row contract.
        let actual = format!(
            "SELECT to_jsonb(t) - 'updated_at' || jsonb_build_object('table', 'window_metrics') FROM \"{schema}\".window_metrics t
             UNION ALL SELECT to_jsonb(t) - 'updated_at' || jsonb_build_object('table', 'window_emojis') FROM \"{schema}\".window_emojis t
             UNION ALL SELECT to_jsonb(t) - 'updated_at' - (CASE WHEN t.truncated THEN '' ELSE 'truncated' END) || jsonb_build_object('table', 'window_top_emojis') FROM \"{schema}\".window_top_emojis t
             UNION ALL SELECT to_jsonb(t) - 'updated_at' - 'amount_units' || jsonb_build_object('table', 'window_revenue') FROM \"{schema}\".window_revenue t
             UNION ALL SELECT to_jsonb(t) - 'updated_at' || jsonb_build_object('table', 'moments') FROM \"{schema}\".moments t
             UNION ALL SELECT to_jsonb(t) - 'updated_at' || jsonb_build_object('table', 'stream_totals') FROM \"{schema}\".stream_totals t
             UNION ALL SELECT to_jsonb(t) - 'created_at' - 'payload' || jsonb_build_object('table', 'dead_letters', 'final', true) FROM \"{schema}\".dead_letters t
             UNION ALL SELECT to_jsonb(t) - 'created_at' || jsonb_build_object('table', 'chat_messages', 'final', true) FROM \"{schema}\".chat_messages t
             UNION ALL SELECT to_jsonb(t) - 'created_at' || jsonb_build_object('table', 'chat_summaries', 'final', true) FROM \"{schema}\".chat_summaries t
             UNION ALL SELECT jsonb_build_object('table', 'custom_metrics', 'kind', kind, 'window', \"window\", 'window_start', window_start, 'window_end', window_end, 'dims', dims, 'records', records, 'values', measures, 'final', final) FROM \"{schema}\".custom_metrics
             UNION ALL SELECT to_jsonb(t) - 'created_at' || jsonb_build_object('table', 'alerts', 'final', true) FROM \"{schema}\".alerts t"
        );
        let expected = "SELECT CASE WHEN line->>'table' = 'dead_letters' THEN line - 'payload' ELSE line END FROM pg_temp.expected";
        let mut differences: Vec<String> = self
            .column(&format!(
                "SELECT 'missing ' || l::text FROM (({expected}) EXCEPT ALL ({actual})) AS m(l)"
            ))
            .into_iter()
            .chain(self.column(&format!(
                "SELECT 'extra ' || l::text FROM (({actual}) EXCEPT ALL ({expected})) AS m(l)"
            )))
            .collect();
        // Payloads: the NDJSON shows them as (lossy) UTF-8 text.
        differences.extend(self.column(&format!(
            "SELECT 'payload ' || e.line::text FROM pg_temp.expected e
             JOIN \"{schema}\".dead_letters d ON d.source = e.line->>'source'
              AND d.partition = (e.line->>'partition')::int AND d.\"offset\" = (e.line->>'offset')::bigint
             WHERE e.line->>'table' = 'dead_letters' AND convert_from(d.payload, 'UTF8') <> e.line->>'payload'"
        )));
        differences.sort();
        differences
    }
}

/// Fails with the first few `differences` (from [`Db::differences`]) when there are any.
pub fn assert_no_differences(differences: &[String], what: &str) {
    assert!(
        differences.is_empty(),
        "{what}: {} differences, e.g. {:#?}",
        differences.len(),
        &differences[..differences.len().min(6)]
    );
}
