//! The state every handler shares, injected into routes by `filters::with_state`.

use std::sync::{Arc, OnceLock};

use crowdpulse_connectors::config::ApiLimits;
use crowdpulse_connectors::kafka_delivery::DeliveryCounters;
use crowdpulse_connectors::kafka_progress::KafkaLag;
use crowdpulse_connectors::postgres::PostgresSinkMetrics;
use crowdpulse_connectors::summarizer::SummarizerMetrics;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::source::SourceCounters;

use crate::access::Access;
use crate::history::History;
use crate::ingest::Ingest;
use crate::kinds::KindInfo;
use crate::metrics::HttpCounters;
use crate::origin::Origins;
use crate::push::Clients;
use crate::store::ViewStore;

/// Fixed settings of the server.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Window labels the dataflow computes.
    pub windows: Vec<String>,
    /// When the process started, epoch ms (the statistics' session).
    pub started_at: Millis,
    /// `/ready` answers 200 while wall clock minus the frontier stays within this.
    pub ready_delay_ms: u64,
    /// `[api.limits]`.
    pub limits: ApiLimits,
    /// The configured kinds.
    pub kinds: Vec<KindInfo>,
}

/// Everything handlers read or write; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Set once the process cannot go on (a worker panicked, a sink failed): `/health` answers
    /// 503 with the reason while it stops.
    pub failed: Arc<OnceLock<String>>,
    /// Who may do what.
    pub access: Arc<Access>,
    /// Browser origins allowed besides the server's own.
    pub origins: Arc<Origins>,
    /// Live results.
    pub store: Arc<ViewStore>,
    /// Entry of records.
    pub ingest: Arc<Ingest>,
    /// Connected live clients.
    pub clients: Arc<Clients>,
    /// Request counters.
    pub http: Arc<HttpCounters>,
    /// The dataflow source's counters.
    pub source_counters: Arc<SourceCounters>,
    /// Kafka partitions' lag (None without Kafka).
    pub kafka_lag: Option<Arc<KafkaLag>>,
    /// Deliveries to the dead-letter topic (None without one).
    pub dead_letter_topic: Option<Arc<DeliveryCounters>>,
    /// The Postgres sink (None without a database).
    pub postgres: Option<Arc<PostgresSinkMetrics>>,
    /// The summarizer (None without an endpoint).
    pub summarizer: Option<Arc<SummarizerMetrics>>,
    /// History past the store's retention (None without a database).
    pub history: Option<History>,
    /// Settings.
    pub settings: Arc<ApiSettings>,
}
