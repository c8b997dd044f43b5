//! The hash map used for per-worker state: foldhash with a fixed seed, several times faster than
//! SipHash on short keys, and the same layout in every run. Keys come from our own records, and
//! no result depends on iteration order.

/// A `HashMap` with the fixed fast hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
