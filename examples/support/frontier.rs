//! What the load clients read of a push message.

/// The frontier of an update message, without parsing the whole message.
pub fn frontier_of(text: &str) -> Option<u64> {
    number_field(text, "frontier")
}

/// When the oldest change of an update message reached the server's store (epoch ms).
#[allow(dead_code)] // soak.rs includes this file too and measures from the frontier.
pub fn computed_at_of(text: &str) -> Option<u64> {
    number_field(text, "computed_at")
}

fn number_field(text: &str, name: &str) -> Option<u64> {
    let rest = text.split_once(&format!("\"{name}\":"))?.1;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
