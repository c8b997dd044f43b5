//! Pre-aggregation of configured kinds where records are read: a batch's records become one
//! [`KindDelta`] per (kind, dimension combination, pane), timed at the latest time of its
//! members (as stream pane deltas are: still before any of its windows can be final).

use std::sync::Arc;

use crate::event::Millis;
use crate::hashing::FastMap;
use crate::kinds::aggregate::Measures;
use crate::kinds::config::KindSpec;
use crate::kinds::record::KindEvent;
use crate::kinds::windows::KindDelta;

/// Groups kind records into pane deltas.
pub struct KindPanes {
    kinds: Arc<[KindSpec]>,
    groups: FastMap<(usize, Vec<String>, Millis), (Millis, Measures)>,
}

impl KindPanes {
    /// Panes of the kinds of a plan.
    pub fn new(kinds: Arc<[KindSpec]>) -> Self {
        Self {
            kinds,
            groups: FastMap::default(),
        }
    }

    /// Adds a record of kind `kind` at event time `ts`, timely time `time`.
    pub fn add(&mut self, kind: usize, ts: Millis, event: KindEvent, time: Millis) {
        let Some(spec) = self.kinds.get(kind) else {
            return;
        };
        let pane = ts - ts % spec.pane;
        let (group_time, measures) = self
            .groups
            .entry((kind, event.dims, pane))
            .or_insert_with(|| (time, Measures::new(spec.ops())));
        *group_time = (*group_time).max(time);
        measures.observe(&event.observations);
    }

    /// Takes the deltas gathered so far, each with its time.
    pub fn drain(&mut self) -> impl Iterator<Item = (Millis, KindDelta)> + '_ {
        self.groups
            .drain()
            .map(|((kind, dims, pane), (time, measures))| {
                let delta = KindDelta {
                    kind,
                    dims: dims.into(),
                    pane,
                    measures,
                };
                (time, delta)
            })
    }
}
