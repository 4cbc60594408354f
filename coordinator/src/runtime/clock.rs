//! The runtime's one access to wall-clock time. The replicated state machine never reads a
//! clock: the leader stamps each proposal with [`now_ms`].

/// Current Unix time in milliseconds.
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
