//! `[pipeline.kinds.NAME]`: an event kind defined in configuration (its topic, format, event time,
//! dimensions, measures, windows and alert rules), checked at load with errors naming the
//! offending key, and the shipped presets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Span;
use crate::error::{Error, Result};
use crate::kinds::avro::{parse_schema, AvroDecoder};
use crate::kinds::condition::Condition;
use crate::rows::KindNames;
use crate::windows::MAX_SLIDES;

/// Most dimensions, measures or alert rules of one kind: rows stay a bounded size.
pub const MAX_PARTS: usize = 32;

/// How a kind's records are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindFormat {
    /// A JSON object per record.
    Json,
    /// bincode 1.3 of `Vec<(String, FieldValue)>`: (field path, value) pairs.
    Bincode,
    /// Avro binary in the Confluent wire format: byte 0, a 4-byte big-endian schema id, the
    /// datum written with that schema.
    Avro,
}

/// What a measure computes over a window's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeasureOp {
    /// Records (matching `when`, if given).
    Count,
    /// Sum of `field`.
    Sum,
    /// Mean of `field`.
    Avg,
    /// Least `field`.
    Min,
    /// Greatest `field`.
    Max,
    /// Median of `field` (from a mergeable sketch, 1% relative error).
    P50,
    /// 95th percentile of `field`.
    P95,
    /// 99th percentile of `field`.
    P99,
    /// Share of the records matching `when`, 0..1.
    Rate,
}

impl MeasureOp {
    /// Whether it reads a numeric field.
    pub fn reads_field(self) -> bool {
        !matches!(self, Self::Count | Self::Rate)
    }

    /// The quantile, for the percentiles.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Self::P50 => Some(0.5),
            Self::P95 => Some(0.95),
            Self::P99 => Some(0.99),
            _ => None,
        }
    }
}

/// `[[pipeline.kinds.NAME.measures]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureConfig {
    /// Column name in rows and the API.
    pub name: String,
    /// What it computes.
    pub op: MeasureOp,
    /// Field path of the number read (all but `count` and `rate`).
    #[serde(default)]
    pub field: Option<String>,
    /// Condition on the record (`field == "text"`, `field > 10`, ...): `rate` is the share
    /// matching it; other measures read only the records matching it.
    #[serde(default)]
    pub when: Option<String>,
}

/// `[[pipeline.kinds.NAME.alerts]]`: fires for a dimension combination's final window whose measure
/// crosses a threshold or stands out from its own history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Rule name in `alerts` rows.
    pub name: String,
    /// The measure watched.
    pub measure: String,
    /// Fires when the value is above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// Fires when the value is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Fires when the value is at least this many standard deviations above the mean of the
    /// same dimensions' final windows among the previous `history` window slots (slots without
    /// records are skipped; at least two values with some spread are needed).
    #[serde(default)]
    pub zscore: Option<f64>,
    /// Window slots (slides) of history a z-score compares with.
    #[serde(default = "default_history")]
    pub history: usize,
    /// Records a window needs before the rule looks at it (small windows are noise).
    #[serde(default)]
    pub min_count: u64,
    /// Which window label it watches (default: the kind's first).
    #[serde(default)]
    pub window: Option<String>,
}

fn default_history() -> usize {
    12
}

/// `[pipeline.kinds.NAME]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindConfig {
    /// A shipped definition filling what is not given here (`content_downloads`).
    pub preset: Option<String>,
    /// Kafka topic (default: the kind's name).
    pub topic: Option<String>,
    /// Record encoding (default json).
    pub format: Option<KindFormat>,
    /// Avro: the reader schema (`.avsc`), what records are decoded into.
    pub schema: Option<PathBuf>,
    /// Avro: writer schemas by Confluent schema id (an id not listed: the reader schema).
    pub writer_schemas: BTreeMap<String, PathBuf>,
    /// Field path of the event time (epoch ms or RFC 3339; default `ts`; absent in a record:
    /// the broker timestamp or arrival time).
    pub time: Option<String>,
    /// Field paths grouped by (a missing or null value is `unknown`).
    pub dimensions: Option<Vec<String>>,
    /// What is computed per window and dimension combination.
    pub measures: Option<Vec<MeasureConfig>>,
    /// Window sizes (`1m`, or `5m/1m` hopping; default `1m`).
    pub windows: Option<Vec<String>>,
    /// Alert rules.
    pub alerts: Option<Vec<AlertConfig>>,
}

/// A kind checked and filled in from its preset.
#[derive(Debug, Clone)]
pub struct KindSpec {
    /// The kind's name.
    pub name: String,
    /// The preset it started from.
    pub preset: Option<String>,
    /// Kafka topic.
    pub topic: String,
    /// Record encoding.
    pub format: KindFormat,
    /// Avro reader schema file.
    pub schema: Option<PathBuf>,
    /// Avro writer schema files by id.
    pub writer_schemas: BTreeMap<u32, PathBuf>,
    /// Event time field path.
    pub time: String,
    /// Dimension field paths.
    pub dimensions: Vec<String>,
    /// Measures, with their parsed conditions.
    pub measures: Vec<(MeasureConfig, Option<Condition>)>,
    /// Windows: (label, size ms, slide ms).
    pub windows: Vec<(String, u64, u64)>,
    /// Alert rules, with the index of their measure and window.
    pub alerts: Vec<(AlertConfig, usize, usize)>,
    /// The names its rows carry.
    pub names: Arc<KindNames>,
    /// Pane length: the greatest common divisor of the windows' sizes and slides.
    pub pane: u64,
    /// Avro: the decoder, once the schemas are loaded ([`crate::plan::Plan::with_avro_schemas`]).
    pub avro: Option<Arc<AvroDecoder>>,
}

impl KindSpec {
    /// Reads and parses the Avro schemas (nothing for other formats).
    pub fn load_avro(
        &mut self,
        read: impl Fn(&Path) -> std::result::Result<String, String>,
    ) -> Result<()> {
        let Some(path) = &self.schema else {
            return Ok(());
        };
        let key = format!("pipeline.kinds.{}", self.name);
        let parse = |at: String, path: &Path| -> Result<apache_avro::Schema> {
            let text = read(path).or_else(|e| err(at.clone(), e))?;
            parse_schema(&path.display().to_string(), &text).or_else(|e| err(at, e))
        };
        let reader = parse(format!("{key}.schema"), path)?;
        let mut writers = BTreeMap::new();
        for (id, path) in &self.writer_schemas {
            writers.insert(*id, parse(format!("{key}.writer_schemas.{id}"), path)?);
        }
        self.avro = Some(Arc::new(AvroDecoder::new(reader, writers)));
        Ok(())
    }

    /// The measures' operations, in order.
    pub fn ops(&self) -> impl Iterator<Item = MeasureOp> + '_ {
        self.measures.iter().map(|(m, _)| m.op)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The content-download preset (StreamPulse): records like
/// `{"ts": 1796110000000, "region": "eu-west", "device": "tv", "status": "ok",
/// "duration_ms": 5200, "bytes": 48000000, "speed_kbps": 73846}`.
pub fn content_downloads() -> KindConfig {
    let measure = |name: &str, op, field: Option<&str>, when: Option<&str>| MeasureConfig {
        name: name.into(),
        op,
        field: field.map(Into::into),
        when: when.map(Into::into),
    };
    KindConfig {
        preset: None,
        topic: Some("downloads".into()),
        format: Some(KindFormat::Json),
        schema: None,
        writer_schemas: BTreeMap::new(),
        time: Some("ts".into()),
        dimensions: Some(vec!["region".into(), "device".into()]),
        measures: Some(vec![
            measure("downloads", MeasureOp::Count, None, None),
            measure("errors", MeasureOp::Count, None, Some("status != \"ok\"")),
            measure(
                "success_rate",
                MeasureOp::Rate,
                None,
                Some("status == \"ok\""),
            ),
            measure("duration_avg_ms", MeasureOp::Avg, Some("duration_ms"), None),
            measure("duration_p50_ms", MeasureOp::P50, Some("duration_ms"), None),
            measure("duration_p95_ms", MeasureOp::P95, Some("duration_ms"), None),
            measure("duration_p99_ms", MeasureOp::P99, Some("duration_ms"), None),
            measure(
                "speed_avg_kbps",
                MeasureOp::Avg,
                Some("speed_kbps"),
                Some("status == \"ok\""),
            ),
            measure(
                "speed_min_kbps",
                MeasureOp::Min,
                Some("speed_kbps"),
                Some("status == \"ok\""),
            ),
            measure("bytes", MeasureOp::Sum, Some("bytes"), None),
        ]),
        windows: Some(vec!["1m".into()]),
        alerts: Some(vec![
            AlertConfig {
                name: "high_error_rate".into(),
                measure: "success_rate".into(),
                above: None,
                below: Some(0.9),
                zscore: None,
                history: default_history(),
                min_count: 20,
                window: None,
            },
            AlertConfig {
                name: "slow_downloads".into(),
                measure: "duration_p95_ms".into(),
                above: Some(20_000.0),
                below: None,
                zscore: None,
                history: default_history(),
                min_count: 20,
                window: None,
            },
            AlertConfig {
                name: "error_spike".into(),
                measure: "errors".into(),
                above: None,
                below: None,
                zscore: Some(3.0),
                history: default_history(),
                min_count: 0,
                window: None,
            },
        ]),
    }
}

fn err<T>(key: String, why: impl std::fmt::Display) -> Result<T> {
    Err(Error::Config(format!("{key}: {why}")))
}

/// A name usable as a column, a path segment and a label: `[a-z][a-z0-9_]*`, 1..=63 bytes.
fn check_name(key: String, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        err(
            key,
            format!("{name:?} must match [a-z][a-z0-9_]* (at most 63 bytes)"),
        )
    }
}

fn check_path(key: String, path: &str) -> Result<()> {
    if path.is_empty() || path.len() > 256 || path.split('.').any(str::is_empty) {
        return err(key, format!("{path:?} is not a field path (a.b.c)"));
    }
    Ok(())
}

fn parse_window(key: String, text: &str) -> Result<(String, u64, u64)> {
    let (size, slide) = match text.split_once('/') {
        Some((size, slide)) => (size, Some(slide)),
        None => (text, None),
    };
    let size = Span::parse(size).or_else(|e| err(key.clone(), e))?.0;
    let slide = match slide {
        Some(slide) => Span::parse(slide).or_else(|e| err(key.clone(), e))?.0,
        None => size,
    };
    if size == 0 || slide == 0 || size % slide != 0 || size / slide > MAX_SLIDES {
        return err(
            key,
            format!("{text:?}: size and slide must be > 0, the size a multiple of the slide, at most {MAX_SLIDES} slides"),
        );
    }
    Ok((text.to_owned(), size, slide))
}

impl KindConfig {
    /// This configuration over its preset's (keys given here win).
    fn over_preset(self, key: &str) -> Result<KindConfig> {
        let Some(preset) = &self.preset else {
            return Ok(self);
        };
        let base = match preset.as_str() {
            "content_downloads" => content_downloads(),
            other => {
                return err(
                    format!("{key}.preset"),
                    format!("unknown preset {other:?} (known: content_downloads)"),
                )
            }
        };
        Ok(KindConfig {
            preset: None,
            topic: self.topic.or(base.topic),
            format: self.format.or(base.format),
            schema: self.schema.or(base.schema),
            writer_schemas: if self.writer_schemas.is_empty() {
                base.writer_schemas
            } else {
                self.writer_schemas
            },
            time: self.time.or(base.time),
            dimensions: self.dimensions.or(base.dimensions),
            measures: self.measures.or(base.measures),
            windows: self.windows.or(base.windows),
            alerts: self.alerts.or(base.alerts),
        })
    }

    /// Checks the kind `name` (errors name the key, `pipeline.kinds.NAME.…`) and fills in
    /// defaults.
    pub fn resolve(&self, name: &str) -> Result<KindSpec> {
        let key = format!("pipeline.kinds.{name}");
        check_name(key.clone(), name)?;
        let preset = self.preset.clone();
        let config = self.clone().over_preset(&key)?;
        let format = config.format.unwrap_or(KindFormat::Json);
        let topic = config.topic.unwrap_or_else(|| name.to_owned());
        if topic.is_empty() || topic.len() > 249 {
            return err(format!("{key}.topic"), "must be 1..=249 bytes");
        }
        if format == KindFormat::Avro && config.schema.is_none() {
            return err(
                format!("{key}.schema"),
                "format = \"avro\" needs the reader schema file",
            );
        }
        if format != KindFormat::Avro
            && (config.schema.is_some() || !config.writer_schemas.is_empty())
        {
            return err(format!("{key}.schema"), "only for format = \"avro\"");
        }
        let mut writer_schemas = BTreeMap::new();
        for (id, path) in config.writer_schemas {
            let parsed: u32 = id.parse().or_else(|_| {
                err(
                    format!("{key}.writer_schemas.{id}"),
                    "schema ids are numbers",
                )
            })?;
            writer_schemas.insert(parsed, path);
        }
        let time = config.time.unwrap_or_else(|| "ts".into());
        check_path(format!("{key}.time"), &time)?;
        let dimensions = config.dimensions.unwrap_or_default();
        if dimensions.len() > MAX_PARTS {
            return err(format!("{key}.dimensions"), format!("at most {MAX_PARTS}"));
        }
        for (i, path) in dimensions.iter().enumerate() {
            check_path(format!("{key}.dimensions[{i}]"), path)?;
            // The API's query parameters: a dimension of that name could not be filtered on.
            if ["window", "from", "to", "limit"].contains(&path.as_str()) {
                return err(
                    format!("{key}.dimensions[{i}]"),
                    format!("{path:?} is a query parameter of /v1/kinds; name the field by another path"),
                );
            }
            if dimensions[..i].contains(path) {
                return err(
                    format!("{key}.dimensions[{i}]"),
                    format!("{path:?} is listed twice"),
                );
            }
        }
        let measures_config = config.measures.unwrap_or_default();
        if measures_config.is_empty() || measures_config.len() > MAX_PARTS {
            return err(
                format!("{key}.measures"),
                format!("1 to {MAX_PARTS} measures"),
            );
        }
        let mut measures = Vec::new();
        for (i, measure) in measures_config.into_iter().enumerate() {
            let at = format!("{key}.measures[{i}]");
            check_name(format!("{at}.name"), &measure.name)?;
            if measures
                .iter()
                .any(|(m, _): &(MeasureConfig, _)| m.name == measure.name)
            {
                return err(
                    format!("{at}.name"),
                    format!("{:?} is used twice", measure.name),
                );
            }
            match (&measure.field, measure.op.reads_field()) {
                (None, true) => {
                    return err(
                        format!("{at}.field"),
                        format!("required by op = {:?}", measure.op),
                    )
                }
                (Some(_), false) => {
                    return err(
                        format!("{at}.field"),
                        format!("not read by op = {:?}", measure.op),
                    )
                }
                (Some(path), true) => check_path(format!("{at}.field"), path)?,
                (None, false) => {}
            }
            if measure.op == MeasureOp::Rate && measure.when.is_none() {
                return err(format!("{at}.when"), "required by op = \"rate\"");
            }
            let condition = measure
                .when
                .as_deref()
                .map(|text| Condition::parse(text).or_else(|e| err(format!("{at}.when"), e)))
                .transpose()?;
            measures.push((measure, condition));
        }
        let window_texts = config.windows.unwrap_or_else(|| vec!["1m".into()]);
        if window_texts.is_empty() || window_texts.len() > 8 {
            return err(format!("{key}.windows"), "1 to 8 windows");
        }
        let mut windows = Vec::new();
        for (i, text) in window_texts.iter().enumerate() {
            let window = parse_window(format!("{key}.windows[{i}]"), text)?;
            if windows
                .iter()
                .any(|(label, _, _): &(String, u64, u64)| *label == window.0)
            {
                return err(
                    format!("{key}.windows[{i}]"),
                    format!("{text:?} is listed twice"),
                );
            }
            windows.push(window);
        }
        let mut alerts = Vec::new();
        for (i, alert) in config.alerts.unwrap_or_default().into_iter().enumerate() {
            let at = format!("{key}.alerts[{i}]");
            check_name(format!("{at}.name"), &alert.name)?;
            if alerts
                .iter()
                .any(|(a, _, _): &(AlertConfig, _, _)| a.name == alert.name)
            {
                return err(
                    format!("{at}.name"),
                    format!("{:?} is used twice", alert.name),
                );
            }
            let Some(measure) = measures.iter().position(|(m, _)| m.name == alert.measure) else {
                return err(
                    format!("{at}.measure"),
                    format!(
                        "{:?} is not a measure of pipeline.kinds.{name}",
                        alert.measure
                    ),
                );
            };
            let rules = [
                alert.above.is_some(),
                alert.below.is_some(),
                alert.zscore.is_some(),
            ];
            if rules.iter().filter(|r| **r).count() != 1 {
                return err(at, "exactly one of above, below, zscore");
            }
            if [alert.above, alert.below, alert.zscore]
                .iter()
                .flatten()
                .any(|v| !v.is_finite())
            {
                return err(at, "thresholds must be finite numbers");
            }
            if alert.zscore.is_some() && !(2..=1_000).contains(&alert.history) {
                return err(format!("{at}.history"), "2 to 1000 windows");
            }
            let window = match &alert.window {
                None => 0,
                Some(label) => windows
                    .iter()
                    .position(|(l, _, _)| l == label)
                    .map_or_else(
                        || {
                            err(
                                format!("{at}.window"),
                                format!("{label:?} is not a window of pipeline.kinds.{name}"),
                            )
                        },
                        Ok,
                    )?,
            };
            alerts.push((alert, measure, window));
        }
        let names = Arc::new(KindNames {
            kind: name.to_owned(),
            dimensions: dimensions.clone(),
            measures: measures.iter().map(|(m, _)| m.name.clone()).collect(),
        });
        let pane = windows
            .iter()
            .fold(0, |pane, (_, size, slide)| gcd(gcd(pane, *size), *slide));
        Ok(KindSpec {
            names,
            pane,
            avro: None,
            preset,
            name: name.to_owned(),
            topic,
            format,
            schema: config.schema,
            writer_schemas,
            time,
            dimensions,
            measures,
            windows,
            alerts,
        })
    }
}

/// Resolves every kind; topics must differ from each other.
pub fn resolve_kinds(kinds: &BTreeMap<String, KindConfig>) -> Result<Vec<KindSpec>> {
    let mut specs: Vec<KindSpec> = Vec::new();
    for (name, config) in kinds {
        let spec = config.resolve(name)?;
        if let Some(other) = specs.iter().find(|s| s.topic == spec.topic) {
            return err(
                format!("pipeline.kinds.{name}.topic"),
                format!(
                    "{:?} is also pipeline.kinds.{}'s topic",
                    spec.topic, other.name
                ),
            );
        }
        specs.push(spec);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(toml_text: &str) -> Result<Vec<KindSpec>> {
        #[derive(Deserialize)]
        struct File {
            kinds: BTreeMap<String, KindConfig>,
        }
        let file: File = toml::from_str(toml_text).map_err(|e| Error::Config(e.to_string()))?;
        resolve_kinds(&file.kinds)
    }

    #[test]
    fn the_preset_fills_what_is_not_given() {
        let specs =
            kinds("[kinds.downloads]\npreset = \"content_downloads\"\nwindows = [\"5m/1m\"]\n")
                .unwrap();
        let spec = &specs[0];
        assert_eq!(spec.topic, "downloads");
        assert_eq!(spec.dimensions, ["region", "device"]);
        assert_eq!(spec.windows, [("5m/1m".to_owned(), 300_000, 60_000)]);
        assert_eq!(spec.measures.len(), 10);
        assert_eq!(spec.alerts.len(), 3);
        assert_eq!(
            spec.alerts[1].1, 5,
            "slow_downloads watches duration_p95_ms"
        );
    }

    #[test]
    fn bad_kinds_are_refused_naming_the_key() {
        let base = "[kinds.dl]\ndimensions = [\"region\"]\n[[kinds.dl.measures]]\nname = \"n\"\nop = \"count\"\n";
        assert!(kinds(base).is_ok());
        let cases = [
            ("[kinds.Bad]\npreset = \"content_downloads\"\n", "kinds.Bad"),
            ("[kinds.dl]\npreset = \"nope\"\n", "kinds.dl.preset"),
            ("[kinds.dl]\nformat = \"avro\"\npreset = \"content_downloads\"\n", "kinds.dl.schema"),
            ("[kinds.dl]\ndimensions = [\"a..b\"]\n[[kinds.dl.measures]]\nname = \"n\"\nop = \"count\"\n", "kinds.dl.dimensions[0]"),
            ("[kinds.dl]\n[[kinds.dl.measures]]\nname = \"p\"\nop = \"p95\"\n", "kinds.dl.measures[0].field"),
            ("[kinds.dl]\n[[kinds.dl.measures]]\nname = \"r\"\nop = \"rate\"\n", "kinds.dl.measures[0].when"),
            ("[kinds.dl]\n[[kinds.dl.measures]]\nname = \"r\"\nop = \"rate\"\nwhen = \"status ~ 1\"\n", "kinds.dl.measures[0].when"),
            ("[kinds.dl]\nwindows = [\"1m/7s\"]\n[[kinds.dl.measures]]\nname = \"n\"\nop = \"count\"\n", "kinds.dl.windows[0]"),
            ("[kinds.dl]\n[[kinds.dl.measures]]\nname = \"n\"\nop = \"count\"\n[[kinds.dl.alerts]]\nname = \"a\"\nmeasure = \"m\"\nabove = 1\n", "kinds.dl.alerts[0].measure"),
            ("[kinds.dl]\ndimensions = [\"limit\"]\n[[kinds.dl.measures]]\nname = \"n\"\nop = \"count\"\n", "kinds.dl.dimensions[0]"),
            ("[kinds.dl]\n[[kinds.dl.measures]]\nname = \"n\"\nop = \"count\"\n[[kinds.dl.alerts]]\nname = \"a\"\nmeasure = \"n\"\n", "kinds.dl.alerts[0]"),
            ("[kinds.dl]\npreset = \"content_downloads\"\n[kinds.other]\npreset = \"content_downloads\"\n", "kinds.other.topic"),
        ];
        for (text, key) in cases {
            let error = kinds(text).unwrap_err().to_string();
            assert!(error.contains(&format!("{key}:")), "{key}: {error}");
        }
        let error = kinds(
            "[kinds.dl]\n[[kinds.dl.measures]]\nname = \"n\"\nop = \"count\"\nfeild = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("unknown field `feild`"), "{error}");
    }
}
