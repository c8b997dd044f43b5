//! The hash map used for per-worker state: foldhash with a fixed seed, several times faster than
//! SipHash on short keys, and the same layout in every run. Keys come from our own records, and
//! no result depends on iteration order.

/// A `HashMap` with the fixed fast hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// A set with the same hasher as [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;

/// FNV-1a: a fixed 64-bit hash, the same in every process and build (unlike the maps' hasher,
/// whose layout only has to hold within one run).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
