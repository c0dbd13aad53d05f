//! When the shutdown grace period ends. Pingora drops requests still running then; on the
//! way their connections fail, and a request that notices before it is dropped would be
//! recorded as its client having left. [`Shutdown::cut_off`] tells the two apart: a
//! connection lost once the grace period is over was cut by the shutdown.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

#[derive(Debug)]
pub struct Shutdown {
    grace: Duration,
    began: OnceLock<Instant>,
}

impl Shutdown {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            began: OnceLock::new(),
        }
    }

    /// Whether the grace period of a shutdown under way has ended.
    pub fn cut_off(&self) -> bool {
        self.began
            .get()
            .is_some_and(|at| at.elapsed() >= self.grace)
    }
}

/// Notes when the shutdown begins.
pub struct ShutdownClock(pub std::sync::Arc<Shutdown>);

#[async_trait]
impl BackgroundService for ShutdownClock {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_ok() {
            let _ = self.0.began.set(Instant::now());
        }
    }
}
