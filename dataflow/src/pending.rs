//! Data held by time until a frontier passes it (held deltas, an operator's stash, a sink's
//! pending changes): taking what lies below the frontier.

use std::collections::BTreeMap;

use crate::event::Millis;

/// Takes the entries of `pending` before `frontier` (all of them when None: the input ended).
pub fn take_below<T>(
    pending: &mut BTreeMap<Millis, T>,
    frontier: Option<Millis>,
) -> BTreeMap<Millis, T> {
    match frontier {
        Some(f) => {
            let later = pending.split_off(&f);
            std::mem::replace(pending, later)
        }
        None => std::mem::take(pending),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_lies_below_the_frontier() {
        let mut pending: BTreeMap<Millis, &str> = [(1, "a"), (5, "b"), (9, "c")].into();
        assert_eq!(take_below(&mut pending, Some(5)), [(1, "a")].into());
        assert_eq!(take_below(&mut pending, None), [(5, "b"), (9, "c")].into());
        assert!(pending.is_empty());
    }
}
