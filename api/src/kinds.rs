//! `/v1/kinds`: the configured kinds, and each kind's windows and alerts, from the view store
//! merged with Postgres (the store's rows win: they are the freshest).

use std::collections::{BTreeMap, HashMap};

use crowdpulse_dataflow::error::excerpt;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::kinds::config::{AlertConfig, KindSpec, MeasureConfig};
use crowdpulse_dataflow::rows::Row;
use serde::Serialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Rejection;

use crate::error::ApiError;
use crate::handlers::{json_reply, reject};
use crate::models::limit_within;
use crate::state::AppState;
use crate::store::row_value;

/// Most rows one answer carries.
pub const MAX_ROWS: usize = 1_000;

/// A configured kind as `GET /v1/kinds` describes it.
#[derive(Debug, Clone, Serialize)]
pub struct KindInfo {
    /// Its name.
    pub name: String,
    /// Its Kafka topic.
    pub topic: String,
    /// Its dimensions.
    pub dimensions: Vec<String>,
    /// Its measures.
    pub measures: Vec<MeasureConfig>,
    /// Its window labels, the first the default.
    pub windows: Vec<String>,
    /// Its alert rules, each with the window it watches.
    pub alerts: Vec<AlertConfig>,
}

impl From<&KindSpec> for KindInfo {
    fn from(spec: &KindSpec) -> Self {
        Self {
            name: spec.name.clone(),
            topic: spec.topic.clone(),
            dimensions: spec.dimensions.clone(),
            measures: spec.measures.iter().map(|(m, _)| m.clone()).collect(),
            windows: spec
                .windows
                .iter()
                .map(|(label, _, _)| label.clone())
                .collect(),
            alerts: spec
                .alerts
                .iter()
                .map(|(alert, _, window)| AlertConfig {
                    window: Some(spec.windows[*window].0.clone()),
                    ..alert.clone()
                })
                .collect(),
        }
    }
}

/// A query's filters: window label, `[from, to)` on window starts, the newest `limit`, and
/// dimension values (any other parameter must name a dimension).
#[derive(Debug)]
pub struct KindFilter {
    /// Window label (metrics: the kind's first unless given).
    pub window: Option<String>,
    /// Window starts from here.
    pub from: Millis,
    /// Window starts before this.
    pub to: Millis,
    /// Newest this many.
    pub limit: usize,
    /// Required dimension values, by name.
    pub dims: BTreeMap<String, String>,
}

impl KindFilter {
    fn parse(kind: &KindInfo, query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let number = |name: &str| -> Result<Option<u64>, ApiError> {
            query
                .get(name)
                .map(|v| {
                    v.parse().map_err(|_| {
                        ApiError::BadRequest(format!("{name} must be a non-negative integer"))
                    })
                })
                .transpose()
        };
        let window = query.get("window").cloned();
        if let Some(window) = window.as_ref().filter(|w| !kind.windows.contains(w)) {
            return Err(ApiError::BadRequest(format!(
                "window {} is not one of kind {}'s: {:?}",
                excerpt(window),
                kind.name,
                kind.windows
            )));
        }
        let limit = limit_within(number("limit")?.map(|n| n as usize), 100, MAX_ROWS)?;
        let mut dims = BTreeMap::new();
        for (name, value) in query {
            match name.as_str() {
                "window" | "from" | "to" | "limit" => {}
                dim if kind.dimensions.iter().any(|d| d == dim) => {
                    // No event's dimension has a NUL (the dataflow refuses one), and Postgres
                    // refuses one in a query.
                    if value.contains('\0') {
                        return Err(ApiError::BadRequest(format!(
                            "{dim} has a NUL character: no event's value does"
                        )));
                    }
                    dims.insert(dim.to_owned(), value.clone());
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "{} is neither window, from, to, limit nor a dimension of kind {} ({:?})",
                        excerpt(other),
                        kind.name,
                        kind.dimensions
                    )))
                }
            }
        }
        Ok(Self {
            window,
            from: number("from")?.unwrap_or(0),
            to: number("to")?.unwrap_or(Millis::MAX),
            limit,
            dims,
        })
    }

    /// Whether a row's object passes.
    fn passes(&self, row: &Value) -> bool {
        let start = row["window_start"].as_u64().unwrap_or(0);
        self.window
            .as_ref()
            .is_none_or(|w| row["window"] == w.as_str())
            && (self.from..self.to).contains(&start)
            && self
                .dims
                .iter()
                .all(|(name, value)| row["dims"][name] == value.as_str())
    }
}

fn kind_of<'a>(state: &'a AppState, kind: &str) -> Result<&'a KindInfo, Rejection> {
    state
        .settings
        .kinds
        .iter()
        .find(|k| k.name == kind)
        .ok_or_else(|| {
            reject(ApiError::NotFound(format!(
                "unknown kind {}",
                excerpt(kind)
            )))
        })
}

/// Orders and identifies rows: (window start, the rest of the key as JSON text).
fn identity(row: &Value) -> (u64, String) {
    let rest = json!([row["window"], row["rule"], row["dims"]]).to_string();
    (row["window_start"].as_u64().unwrap_or(0), rest)
}

/// Newest `limit` of the store's rows over Postgres's, oldest first.
fn merged(store: Vec<Value>, postgres: Vec<Value>, limit: usize) -> Vec<Value> {
    let mut rows: BTreeMap<(u64, String), Value> = BTreeMap::new();
    for row in postgres.into_iter().chain(store) {
        rows.insert(identity(&row), row);
    }
    let skip = rows.len().saturating_sub(limit);
    rows.into_values().skip(skip).collect()
}

/// `GET /v1/kinds`.
pub async fn list_kinds(state: AppState) -> Result<Response, Rejection> {
    Ok(json_reply(
        &json!({"kinds": state.settings.kinds}),
        StatusCode::OK,
    ))
}

/// Which rows of a kind a request lists.
#[derive(Debug, Clone, Copy)]
enum Listing {
    /// `custom_metrics` of one window label (the kind's first unless given).
    Metrics,
    /// `alerts`.
    Alerts,
}

/// The newest rows of a listing passing the query's filters, oldest first.
async fn listed(
    listing: Listing,
    kind: &str,
    query: &HashMap<String, String>,
    state: &AppState,
) -> Result<(KindFilter, Vec<Value>), Rejection> {
    let info = kind_of(state, kind)?;
    let mut filter = KindFilter::parse(info, query).map_err(reject)?;
    if let Listing::Metrics = listing {
        filter.window.get_or_insert_with(|| info.windows[0].clone());
    }
    let store: Vec<Value> = {
        let store = state.store.read();
        store.kinds.kinds.get(kind).map_or_else(Vec::new, |view| {
            let rows: Box<dyn Iterator<Item = &Row>> = match listing {
                Listing::Metrics => Box::new(view.windows.values()),
                Listing::Alerts => Box::new(view.alerts.values()),
            };
            rows.map(row_value).filter(|r| filter.passes(r)).collect()
        })
    };
    let postgres = match (&state.history, listing) {
        (Some(history), Listing::Metrics) => history.custom_metrics(kind, &filter).await,
        (Some(history), Listing::Alerts) => history.alerts(kind, &filter).await,
        (None, _) => Ok(Vec::new()),
    }
    .map_err(reject)?;
    let rows = merged(store, postgres, filter.limit);
    Ok((filter, rows))
}

/// `GET /v1/kinds/{kind}/metrics`: `custom_metrics` rows of one window label, oldest first.
pub async fn kind_metrics(
    kind: String,
    query: HashMap<String, String>,
    state: AppState,
) -> Result<Response, Rejection> {
    let (filter, rows) = listed(Listing::Metrics, &kind, &query, &state).await?;
    Ok(json_reply(
        &json!({"kind": kind, "window": filter.window, "rows": rows}),
        StatusCode::OK,
    ))
}

/// `GET /v1/kinds/{kind}/alerts`: fired alerts, oldest first.
pub async fn kind_alerts(
    kind: String,
    query: HashMap<String, String>,
    state: AppState,
) -> Result<Response, Rejection> {
    let (_, rows) = listed(Listing::Alerts, &kind, &query, &state).await?;
    Ok(json_reply(
        &json!({"kind": kind, "alerts": rows}),
        StatusCode::OK,
    ))
}
