//! The live rows of configured kinds in the view store: each kind's windows per dimension
//! combination (kept for the store's retention) and its latest alerts.

use std::collections::BTreeMap;
use std::sync::Arc;

use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::rows::Row;

/// Alerts kept per kind (the latest); older ones are Postgres's.
pub const ALERTS_KEPT: usize = 1_000;

/// A window of a combination: (window label, start, dimension values).
pub type KindWindowKey = (Arc<str>, Millis, Arc<[String]>);

/// An alert: (window start, rule, window label, dimension values).
pub type AlertKey = (Millis, String, Arc<str>, Arc<[String]>);

/// One kind's rows.
#[derive(Debug, Default)]
pub struct KindView {
    /// `custom_metrics` rows.
    pub windows: BTreeMap<KindWindowKey, Row>,
    /// The latest [`ALERTS_KEPT`] `alerts` rows.
    pub alerts: BTreeMap<AlertKey, Row>,
}

/// Every kind's rows, by kind name.
#[derive(Debug, Default)]
pub struct KindViews {
    /// By kind.
    pub kinds: BTreeMap<String, KindView>,
}

impl KindViews {
    /// Applies a row change; other tables' rows are ignored.
    pub fn apply(&mut self, row: &Row, diff: isize) {
        match row {
            Row::CustomMetrics { key, .. } => {
                let view = self.kinds.entry(key.kind.kind.clone()).or_default();
                let id = (Arc::clone(&key.window), key.start, Arc::clone(&key.dims));
                if diff > 0 {
                    view.windows.insert(id, row.clone());
                } else if view.windows.get(&id) == Some(row) {
                    view.windows.remove(&id);
                }
            }
            Row::Alert(alert) if diff > 0 => {
                let view = self.kinds.entry(alert.key.kind.kind.clone()).or_default();
                let id = (
                    alert.key.start,
                    alert.rule.clone(),
                    Arc::clone(&alert.key.window),
                    Arc::clone(&alert.key.dims),
                );
                view.alerts.insert(id, row.clone());
                if view.alerts.len() > ALERTS_KEPT {
                    view.alerts.pop_first();
                }
            }
            _ => {}
        }
    }

    /// Drops windows that ended before `cutoff`, and alerts of such windows.
    pub fn evict(&mut self, cutoff: Millis) {
        for view in self.kinds.values_mut() {
            view.windows.retain(|_, row| match row {
                Row::CustomMetrics { key, .. } => key.end > cutoff,
                _ => false,
            });
            view.alerts.retain(|_, row| match row {
                Row::Alert(alert) => alert.key.end > cutoff,
                _ => false,
            });
        }
        self.kinds
            .retain(|_, view| !view.windows.is_empty() || !view.alerts.is_empty());
    }
}
