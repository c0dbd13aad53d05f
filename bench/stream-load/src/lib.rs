//! Streaming load client for the benchmark suite: keeps N streamed completions in flight
//! against one loopback address and reports, per stream, the time to the response
//! header (TTFB) and to the first event with content (TTFT, not the role-only
//! preamble), with how every stream ended (completed with usage and its end event,
//! failed and why, or stalled).
//!
//! Modules: [`watch`] (SSE framing and what each dialect's events mean), [`load`] (the
//! workers), [`stats`] (percentiles and the summary). Depends on nothing of Perpetuo.

pub mod load;
pub mod stats;
pub mod watch;
