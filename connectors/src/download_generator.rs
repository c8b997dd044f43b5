//! `crowdpulse generate --kind NAME`: content-download records (StreamPulse) for a configured
//! kind, as the `content_downloads` preset reads them: region and device, status, duration,
//! size and speed; now and then a region's downloads fail often and slowly for a minute, so the
//! preset's alerts have something to find.

use crowdpulse_dataflow::event::Millis;
use serde_json::{json, Value};

use crate::generator::Rng;

const REGIONS: [&str; 5] = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"];
const DEVICES: [&str; 4] = ["tv", "phone", "tablet", "web"];

/// Downloads at `rate` per second of event time from `start`.
#[derive(Debug, Clone)]
pub struct DownloadGenerator {
    rng: Rng,
    events: u64,
    emitted: u64,
    rate: f64,
    start: Millis,
    /// (region, end) of the incident under way.
    incident: Option<(usize, Millis)>,
}

impl DownloadGenerator {
    /// `events` downloads, seeded.
    pub fn new(events: u64, seed: u64, rate: f64, start: Millis) -> Self {
        Self {
            rng: Rng(seed ^ 0xd0_7e10_ad00),
            events,
            emitted: 0,
            rate: rate.max(0.001),
            start,
            incident: None,
        }
    }
}

impl DownloadGenerator {
    /// The records due until `count` have been generated in all (a paced generator's next
    /// share).
    pub fn take_while_due(&mut self, count: u64) -> impl Iterator<Item = (String, Value)> + '_ {
        let due = count.saturating_sub(self.emitted) as usize;
        self.take(due)
    }
}

impl Iterator for DownloadGenerator {
    /// (Kafka key: the region, the record).
    type Item = (String, Value);

    fn next(&mut self) -> Option<(String, Value)> {
        if self.emitted >= self.events {
            return None;
        }
        let ts = self.start + (self.emitted as f64 * 1_000.0 / self.rate) as Millis;
        self.emitted += 1;
        if self.incident.is_none_or(|(_, end)| end <= ts) && self.rng.below(20_000) == 0 {
            self.incident = Some((self.rng.below(REGIONS.len() as u64) as usize, ts + 60_000));
        }
        let region = self.rng.below(REGIONS.len() as u64) as usize;
        let incident = self
            .incident
            .is_some_and(|(r, end)| r == region && ts < end);
        let ok = self.rng.below(100) >= if incident { 50 } else { 2 };
        let duration_ms = if ok && !incident {
            400 + self.rng.below(6_000)
        } else {
            12_000 + self.rng.below(40_000)
        };
        let speed_kbps = 300 + self.rng.below(20_000);
        let record = json!({
            "ts": ts,
            "region": REGIONS[region],
            "device": *self.rng.pick(&DEVICES),
            "content_id": format!("c{}", self.rng.below(5_000)),
            "status": if ok { "ok" } else { "error" },
            "duration_ms": duration_ms,
            "bytes": duration_ms * speed_kbps / 8,
            "speed_kbps": speed_kbps,
        });
        Some((REGIONS[region].to_owned(), record))
    }
}
