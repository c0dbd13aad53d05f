//! The wall clock that limit windows and budget periods read.
//!
//! In a build with the `test-util` feature (what `cargo test` builds the binaries with),
//! `PERPETUO_TEST_CLOCK_FILE` may name a file holding a number of milliseconds added to
//! the real clock, read again on every call: a test starts a fresh calendar minute, or
//! jumps to the next one, by writing it, instead of waiting. Release builds have no such
//! knob.

use time::OffsetDateTime;

/// The variable naming the offset file (test builds only).
pub const TEST_CLOCK_FILE: &str = "PERPETUO_TEST_CLOCK_FILE";

/// Real wall-clock milliseconds since the Unix epoch, never the test offset: for times
/// that come from outside (a provider's reset, a stored entry's age) and are shared
/// between processes.
pub fn unix_ms() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Now, in UTC.
pub fn now_utc() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    #[cfg(feature = "test-util")]
    if let Some(ms) = test_offset_ms() {
        return now + time::Duration::milliseconds(ms);
    }
    now
}

#[cfg(feature = "test-util")]
fn test_offset_ms() -> Option<i64> {
    use std::sync::OnceLock;
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let path = PATH
        .get_or_init(|| std::env::var_os(TEST_CLOCK_FILE).map(Into::into))
        .as_ref()?;
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
