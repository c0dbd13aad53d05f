//! Knobs that exist only in a build with the `test-util` feature (what `cargo test` builds
//! the binaries with). A release build reads none of them: each answers as if unset.

/// Set (to anything), a server leaves the tokenizer to load on its first use instead of
/// on a thread of its own at start. What it counts is the same either way; only who waits
/// for the load differs. Most test gateways never tokenize anything, and the load was
/// two thirds of a debug gateway's CPU from exec to idle.
pub const LAZY_TOKENIZER: &str = "PERPETUO_TEST_LAZY_TOKENIZER";

/// Whether [`LAZY_TOKENIZER`] is set (always `false` in a build without `test-util`).
pub fn lazy_tokenizer() -> bool {
    #[cfg(feature = "test-util")]
    {
        std::env::var_os(LAZY_TOKENIZER).is_some()
    }
    #[cfg(not(feature = "test-util"))]
    {
        false
    }
}
