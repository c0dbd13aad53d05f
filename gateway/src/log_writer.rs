//! The request-log pipeline: requests hand finished records to a bounded queue
//! (`try_send`, never waiting); a background service writes them in batches (multi-row
//! insert, every ~100 ms, `BATCH` rows at a time) and moves the usage counters. A record that cannot
//! be queued or written is counted in a metric. On shutdown the service finishes its batch
//! and leaves the rest to [`drain`], which `main` runs after the server stops.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use perpetuo_core::db::{self, logs::LogRecord, Pool};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, Mutex};

use crate::metrics;

pub const BATCH: usize = 500;
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
const WRITE_ATTEMPTS: u32 = 4;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<LogRecord>,
}

impl LogSink {
    pub fn send(&self, record: LogRecord) {
        match self.tx.try_send(record) {
            Ok(()) => metrics::LOG_QUEUE_DEPTH.inc(),
            Err(_) => metrics::LOG_DROPPED
                .with_label_values(&["queue_full"])
                .inc(),
        }
    }
}

pub type SharedReceiver = Arc<Mutex<mpsc::Receiver<LogRecord>>>;

pub fn channel(capacity: usize) -> (LogSink, SharedReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (LogSink { tx }, Arc::new(Mutex::new(rx)))
}

pub struct LogWriter {
    pub pool: Pool,
    pub rx: SharedReceiver,
}

/// Writes one batch, retrying with backoff; counts the rows as dropped when it gives up.
pub async fn write_batch(pool: &Pool, batch: &[LogRecord]) {
    if batch.is_empty() {
        return;
    }
    metrics::LOG_QUEUE_DEPTH.sub(batch.len() as i64);
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=WRITE_ATTEMPTS {
        // A write that hangs (a connection that stopped answering) is abandoned, and its
        // connection with it, so the next attempt starts afresh.
        let write = async {
            let mut client = pool.get().await?;
            db::logs::insert_batch(&mut client, batch).await
        };
        let result = db::with_timeout(WRITE_TIMEOUT, write).await;
        match result {
            Ok(_) => {
                metrics::LOG_WRITTEN.inc_by(batch.len() as u64);
                return;
            }
            Err(e) if attempt == WRITE_ATTEMPTS => {
                tracing::error!(rows = batch.len(), error = %e, "request log rows could not be written");
                metrics::LOG_DROPPED
                    .with_label_values(&["write_failed"])
                    .inc_by(batch.len() as u64);
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "request log write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// Takes up to `BATCH` queued records without waiting.
fn take_batch(rx: &mut mpsc::Receiver<LogRecord>, batch: &mut Vec<LogRecord>) {
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
}

#[async_trait]
impl BackgroundService for LogWriter {
    /// Wakes every `FLUSH_EVERY` and writes what has queued, in batches: requests never
    /// wake this task, so a busy gateway pays no cross-thread wake-up per record.
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut rx = self.rx.lock().await;
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {
                    // Requests still finishing keep queueing; `drain` writes them after
                    // the server stops.
                    return;
                }
            }
            loop {
                take_batch(&mut rx, &mut batch);
                if batch.is_empty() {
                    break;
                }
                write_batch(&self.pool, &batch).await;
                let full = batch.len() == BATCH;
                batch.clear();
                if !full {
                    break;
                }
            }
        }
    }
}

/// Writes everything still queued; for `main`, after the server has stopped.
pub async fn drain(pool: &Pool, rx: &SharedReceiver) -> usize {
    let mut rx = rx.lock().await;
    let mut total = 0;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        take_batch(&mut rx, &mut batch);
        if batch.is_empty() {
            return total;
        }
        total += batch.len();
        write_batch(pool, &batch).await;
        batch.clear();
    }
}
