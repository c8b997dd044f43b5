//! What the load clients read of a push message.

/// The frontier of an update message, without parsing the whole message.
pub fn frontier_of(text: &str) -> Option<u64> {
    let rest = text.split_once("\"frontier\":")?.1;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
