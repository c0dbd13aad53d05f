//! The request-log pipeline: requests hand finished records to a bounded queue
//! (`try_send`, never waiting); a background service writes them in batches (a multi-row
//! insert every ~20 ms, `BATCH` rows at a time) and moves the usage counters.
//!
//! What can go wrong, and what happens:
//! - A row PostgreSQL refuses (SQLSTATE class 22, 23 or 54): the batch is split in halves
//!   until the refused rows stand alone; every other row lands, the refused ones go to the
//!   spool's reject file and `perpetuo_log_rows_rejected_total`.
//! - The database is unreachable, or a write has not finished within `SUSPECT_AFTER`: the
//!   batch goes to the spool (`log_spool`), and so does every record queued while the
//!   write hangs, so the records held only in memory stay those of the last tick or so.
//!   While the database is down, records go straight to the spool; every `RETRY_EVERY` the
//!   writer replays the spool, which also tells it the database is back. Replay is
//!   idempotent: a row already present is skipped and moves no counter.
//! - Shutdown: the service stops with the server; `drain`, run by `main` afterwards,
//!   writes (or spools) what is still queued.
//! - `kill -9`: what is lost is what sat only in memory: the queue (at most its capacity;
//!   past it records are dropped and counted, not held) and the batch being inserted (at
//!   most `BATCH`). A record leaves memory when the insert carrying it commits, or when the
//!   insert it waits behind (the one in flight when it was queued, then its own) has run
//!   `SUSPECT_AFTER` and the batch and the queue are spooled: so for at most a tick and two
//!   inserts shorter than `SUSPECT_AFTER`, and, in a round that replays the spool, behind
//!   up to `REPLAY_BATCHES_PER_TICK` replay inserts as well (each guarded on its own).
//!   Spooled records are written to the OS at once, so they survive the process; the spool
//!   is fsynced at the end of every tick in which it was written, so a machine crash loses
//!   at most that tick's spool writes as well.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use perpetuo_core::db::{self, logs::LogRecord, DbError, Pool};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

use crate::log_spool::{self, Spool};
use crate::metrics;

pub const BATCH: usize = 500;
/// How often queued records are written. Short, so that each insert (and PostgreSQL's work
/// on it) is a short burst: at 100 ms a 500-row flush held a core for milliseconds and
/// made most of the gateway's p99 at one connection on a machine it shares with the
/// database; at 20 ms the burst and that tail are about halved, and a busy gateway
/// writes the same batches (`BATCH` rows each) as before.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A write still running after this long is presumed stuck: its rows and what queues
/// behind it go to the spool while it finishes or times out.
pub const SUSPECT_AFTER: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a writer that found the database down tries it again (by replaying).
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
const REPLAY_BATCHES_PER_TICK: usize = 8;

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
pub type SharedSpool = Arc<Mutex<Spool>>;

pub fn channel(capacity: usize) -> (LogSink, SharedReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (LogSink { tx }, Arc::new(Mutex::new(rx)))
}

pub struct LogWriter {
    pub pool: Pool,
    pub rx: SharedReceiver,
    pub spool: SharedSpool,
}

/// One insert attempt. A connection that failed or hung is taken out of the pool rather
/// than returned to it, so the next attempt starts on a fresh one.
async fn insert_once(pool: &Pool, rows: &[LogRecord]) -> Result<u64, DbError> {
    let mut client = db::with_timeout(WRITE_TIMEOUT, async { Ok(pool.get().await?) }).await?;
    match tokio::time::timeout(WRITE_TIMEOUT, db::logs::insert_batch(&mut client, rows)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => {
            if e.data_error().is_none() {
                drop(db::Client::take(client));
            }
            Err(e)
        }
        Err(_) => {
            drop(db::Client::take(client));
            Err(DbError::Timeout)
        }
    }
}

/// A row the database refused: its index in the slice written and the SQLSTATE.
pub type Refused = (usize, String);

/// Inserts `rows`, splitting the batch around rows the database refuses so every other row
/// lands. Returns the refused rows; fails only when the database is unavailable (or
/// refused for a reason that is not the rows'), in which case some of the rows may have
/// landed: writing them again is harmless.
pub async fn insert_rows(pool: &Pool, rows: &[LogRecord]) -> Result<Vec<Refused>, DbError> {
    let mut refused = Vec::new();
    let mut pending = vec![(0, rows.len())];
    while let Some((lo, hi)) = pending.pop() {
        if lo >= hi {
            continue;
        }
        match insert_once(pool, &rows[lo..hi]).await {
            Ok(n) => metrics::LOG_WRITTEN.inc_by(n),
            Err(e) => match e.data_error() {
                Some(code) if hi - lo == 1 => refused.push((lo, code.to_string())),
                Some(_) => {
                    let mid = lo + (hi - lo) / 2;
                    pending.push((mid, hi));
                    pending.push((lo, mid));
                }
                None => return Err(e),
            },
        }
    }
    Ok(refused)
}

/// Writes one batch: inserted, or refused rows set aside, or — when the database is
/// unavailable — spooled. Returns whether the database took it. For tests and callers
/// without a queue; the service uses the same path.
pub async fn write_batch(pool: &Pool, spool: &mut Spool, batch: &[LogRecord]) -> bool {
    let (ok, _) = write_guarded(pool, None, spool, batch).await;
    ok
}

/// [`write_batch`], and while the insert is outstanding past `SUSPECT_AFTER`: spools the
/// batch once and moves whatever queues in `rx` to the spool every `FLUSH_EVERY`. Returns
/// whether the database took the batch, and whether the batch was spooled meanwhile.
async fn write_guarded(
    pool: &Pool,
    mut rx: Option<&mut mpsc::Receiver<LogRecord>>,
    spool: &mut Spool,
    batch: &[LogRecord],
) -> (bool, bool) {
    if batch.is_empty() {
        return (true, false);
    }
    let started = Instant::now();
    let insert = insert_rows(pool, batch);
    tokio::pin!(insert);
    let mut tick = tokio::time::interval_at(started + SUSPECT_AFTER, FLUSH_EVERY);
    let mut spooled = false;
    let result = loop {
        tokio::select! {
            r = &mut insert => break r,
            _ = tick.tick() => {
                if !spooled {
                    spool.append(batch);
                    spooled = true;
                }
                if let Some(rx) = rx.as_deref_mut() {
                    spool_queued(rx, spool);
                }
                sync(spool);
            }
        }
    };
    match result {
        Ok(refused) => {
            // A batch spooled while its insert was slow is replayed later as a no-op; its
            // refused rows are then set aside a second time, which only the metric shows.
            for (i, sqlstate) in refused {
                if let Some(r) = batch.get(i) {
                    spool.reject(r, &sqlstate);
                }
            }
            (true, spooled)
        }
        Err(e) => {
            tracing::warn!(rows = batch.len(), error = %e, "request log write failed; spooling");
            if !spooled {
                spool.append(batch);
            }
            (false, true)
        }
    }
}

fn sync(spool: &mut Spool) {
    if let Err(e) = spool.sync() {
        tracing::error!(error = %e, "log spool fsync failed");
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
    metrics::LOG_QUEUE_DEPTH.sub(batch.len() as i64);
}

/// Moves everything queued to the spool.
fn spool_queued(rx: &mut mpsc::Receiver<LogRecord>, spool: &mut Spool) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        take_batch(rx, &mut batch);
        if batch.is_empty() {
            return;
        }
        spool.append(&batch);
        batch.clear();
    }
}

/// A spool file being replayed.
struct Replay {
    path: PathBuf,
    records: Vec<LogRecord>,
    done: usize,
}

/// The writer's memory between ticks.
#[derive(Default)]
struct Writer {
    /// Until when the database is taken as down (records go straight to the spool).
    down_until: Option<Instant>,
    replay: Option<Replay>,
}

impl Writer {
    fn down(&self) -> bool {
        self.down_until.is_some_and(|t| Instant::now() < t)
    }

    fn mark_down(&mut self) {
        self.down_until = Some(Instant::now() + RETRY_EVERY);
    }

    /// One round: replay some of the spool (when the database is not known to be down),
    /// then write or spool what has queued, then fsync the spool.
    async fn round(&mut self, pool: &Pool, rx: &mut mpsc::Receiver<LogRecord>, spool: &mut Spool) {
        if !self.down() {
            self.replay_some(pool, rx, spool).await;
        }
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            take_batch(rx, &mut batch);
            if batch.is_empty() {
                break;
            }
            if self.down() {
                spool.append(&batch);
            } else {
                let (ok, _) = write_guarded(pool, Some(&mut *rx), spool, &batch).await;
                if !ok {
                    self.mark_down();
                }
            }
            let full = batch.len() == BATCH;
            batch.clear();
            if !full {
                break;
            }
        }
        sync(spool);
    }

    /// Replays up to `REPLAY_BATCHES_PER_TICK` batches from the spool, oldest file first,
    /// removing each file once all of it has landed.
    async fn replay_some(
        &mut self,
        pool: &Pool,
        rx: &mut mpsc::Receiver<LogRecord>,
        spool: &mut Spool,
    ) {
        for _ in 0..REPLAY_BATCHES_PER_TICK {
            if self.replay.is_none() {
                if spool.oldest().is_none() {
                    if spool.is_empty() {
                        return;
                    }
                    if let Err(e) = spool.seal() {
                        tracing::error!(error = %e, "cannot seal the log spool file");
                        return;
                    }
                }
                let Some(path) = spool.oldest().map(PathBuf::from) else {
                    return;
                };
                match log_spool::read(&path) {
                    Ok(contents) => {
                        if contents.torn > 0 {
                            tracing::warn!(torn = contents.torn, file = %path.display(), "damaged records skipped in the log spool");
                            metrics::LOG_SPOOL_TORN.inc_by(contents.torn as u64);
                        }
                        self.replay = Some(Replay {
                            path,
                            records: contents.records,
                            done: 0,
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, file = %path.display(), "cannot read a log spool file; leaving it");
                        spool.skip(&path);
                        continue;
                    }
                }
            }
            let Some(replay) = self.replay.as_mut() else {
                return;
            };
            if replay.done >= replay.records.len() {
                if let Err(e) = spool.remove(&replay.path) {
                    tracing::error!(error = %e, "cannot remove a replayed log spool file");
                    spool.skip(&replay.path);
                }
                self.replay = None;
                continue;
            }
            let end = (replay.done + BATCH).min(replay.records.len());
            let chunk = &replay.records[replay.done..end];
            let started = Instant::now();
            let result = tokio::select! {
                r = insert_rows(pool, chunk) => r,
                // Records queued meanwhile must not wait in memory for a slow replay.
                _ = spool_while_slow(started, rx, spool) => Err(DbError::Timeout),
            };
            match result {
                Ok(refused) => {
                    for (i, sqlstate) in refused {
                        if let Some(r) = chunk.get(i) {
                            spool.reject(r, &sqlstate);
                        }
                    }
                    metrics::LOG_REPLAYED.inc_by(chunk.len() as u64);
                    replay.done = end;
                    self.down_until = None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "log spool replay failed; the database is still away");
                    self.mark_down();
                    return;
                }
            }
        }
    }
}

/// Never ends: past `SUSPECT_AFTER`, moves queued records to the spool every
/// `FLUSH_EVERY`; past `WRITE_TIMEOUT`, gives up (returns) so the caller marks the
/// database down.
async fn spool_while_slow(started: Instant, rx: &mut mpsc::Receiver<LogRecord>, spool: &mut Spool) {
    let mut tick = tokio::time::interval_at(started + SUSPECT_AFTER, FLUSH_EVERY);
    loop {
        tick.tick().await;
        spool_queued(rx, spool);
        sync(spool);
        if started.elapsed() >= WRITE_TIMEOUT * 2 {
            return;
        }
    }
}

#[async_trait]
impl BackgroundService for LogWriter {
    /// Wakes every `FLUSH_EVERY` and writes what has queued, in batches: requests never
    /// wake this task, so a busy gateway pays no cross-thread wake-up per record.
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut rx = self.rx.lock().await;
        let mut spool = self.spool.lock().await;
        let mut writer = Writer::default();
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {
                    // Requests still finishing keep queueing; `drain` writes them after
                    // the server stops.
                    sync(&mut spool);
                    return;
                }
            }
            writer.round(&self.pool, &mut rx, &mut spool).await;
        }
    }
}

/// How long `drain` waits for records still on their way: a runtime that outlived its
/// shutdown timeout may still be dropping requests, each of which sends its record.
pub const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Writes everything still queued, spooling it if the database is away; for `main`, after
/// the server has stopped. It keeps receiving until every sender is gone (or
/// `DRAIN_WAIT` passes), so a record sent late by a request dropped at the end of the
/// shutdown is not left behind. Returns how many records it handled.
pub async fn drain(pool: &Pool, rx: &SharedReceiver, spool: &SharedSpool) -> usize {
    let mut rx = rx.lock().await;
    let mut spool = spool.lock().await;
    let deadline = Instant::now() + DRAIN_WAIT;
    let mut total = 0;
    let mut down = false;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        take_batch(&mut rx, &mut batch);
        if batch.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => {
                    metrics::LOG_QUEUE_DEPTH.dec();
                    batch.push(r);
                }
                Ok(None) | Err(_) => break,
            }
        }
        total += batch.len();
        if down {
            spool.append(&batch);
        } else {
            down = !write_guarded(pool, None, &mut spool, &batch).await.0;
        }
        batch.clear();
    }
    sync(&mut spool);
    total
}
