//! What the benchmark clients read of a process's memory in /proc.

/// A memory field of /proc/`pid`/status in MiB (`VmRSS`: resident now, `VmHWM`: the peak of
/// that); `pid` may be `self`.
pub fn status_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?;
    let kib: f64 = value.split_whitespace().next()?.parse().ok()?;
    Some(kib / 1024.0)
}
