//! crowdpulse's serving layer (warp): live view store, REST, WebSocket/SSE push, HTTP ingest,
//! /metrics and the dashboard. A placeholder crate until the API issue fills it; it exists now so
//! the workspace layout of DESIGN §1 is in place.
