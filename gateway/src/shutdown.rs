//! When the shutdown grace period ends. Pingora drops requests still running then; on the
//! way their connections fail, and a request that notices before it is dropped would be
//! recorded as its client having left. [`Shutdown::cut_off`] tells the two apart: a
//! connection lost once the grace period is over was cut by the shutdown.
//!
//! The moment is taken where the signal is received ([`ClockedSignals`]), before Pingora
//! starts its grace period, not by a task that notices the shutdown later: on a busy
//! machine such a task can run after the cut itself.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch};

/// How long Pingora waits, on a graceful upgrade, for the new process to take the
/// listeners before its grace period starts (its `CLOSE_TIMEOUT`).
const UPGRADE_CLOSE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Shutdown {
    grace: Duration,
    /// When Pingora drops the requests still running.
    cut_at: OnceLock<Instant>,
}

impl Shutdown {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            cut_at: OnceLock::new(),
        }
    }

    /// Whether the grace period of a shutdown under way has ended.
    pub fn cut_off(&self) -> bool {
        self.cut_at.get().is_some_and(|at| Instant::now() >= *at)
    }

    /// Notes a shutdown signal received now.
    fn begins(&self, signal: &ShutdownSignal) {
        let now = Instant::now();
        let at = match signal {
            ShutdownSignal::FastShutdown => now,
            ShutdownSignal::GracefulTerminate => now + self.grace,
            ShutdownSignal::GracefulUpgrade => now + UPGRADE_CLOSE + self.grace,
        };
        let _ = self.cut_at.set(at);
    }
}

/// Pingora's Unix signals (SIGTERM, SIGQUIT, SIGINT), each noted as it arrives.
pub struct ClockedSignals(pub Arc<Shutdown>);

#[async_trait]
impl ShutdownSignalWatch for ClockedSignals {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        self.0.begins(&signal);
        signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_comes_a_grace_period_after_a_terminate_and_at_once_on_a_fast_shutdown() {
        let s = Shutdown::new(Duration::from_secs(60));
        assert!(!s.cut_off());
        s.begins(&ShutdownSignal::GracefulTerminate);
        assert!(!s.cut_off());
        let fast = Shutdown::new(Duration::from_secs(60));
        fast.begins(&ShutdownSignal::FastShutdown);
        assert!(fast.cut_off());
    }
}
