//! How a test waits: [`eventually`] for anything another process does in its own time,
//! [`outlast`] for the few cool-downs that are themselves the behaviour under test.

use std::time::Duration;

pub use perpetuo_core::testing::eventually;

/// The `Retry-After` of the mock's 429s.
pub const MOCK_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `BREAKER_COOLDOWN_MS` in [`DEFAULT_ENV`].
pub const BREAKER_COOLDOWN: Duration = Duration::from_millis(800);

/// Lets a cool-down of the gateway run out (a breaker's, or a 429's `Retry-After`), with a
/// margin. The gateway times cool-downs on its monotonic clock, which the test clock does
/// not move, and where this is used, asking until the entry is back would send the very
/// requests the test counts: the wait is the behaviour under test, not a guess at an event.
pub async fn outlast(cool_down: Duration) {
    tokio::time::sleep(cool_down + Duration::from_millis(100)).await;
}
