//! The log spool: an append-only store in `DATA_DIR/spool` for request-log records that
//! could not reach PostgreSQL yet, replayed when it is back (and at the next start), plus
//! the reject file for rows PostgreSQL refused. Plain synchronous file I/O: only the log
//! writer's own thread (and the final drain) calls it, never a request.
//!
//! Format: files `spool-<seq>.bin`, each a run of frames `len: u32 LE | crc32: u32 LE |
//! JSON of the record`. A frame cut short by a crash, or whose checksum does not match,
//! ends the file: it and anything after it are skipped and counted. Files are capped at
//! [`FILE_BYTES`] so a replay holds at most one in memory; the whole spool is capped at
//! `max_bytes`, past which records are dropped and counted. Writes reach the OS at once
//! (they survive the process being killed); [`Spool::sync`] fsyncs them, which the writer
//! does once per tick, so fsyncs are batched.
//!
//! A write that fails part-way (disk full, EIO) is cut back to the end of the last whole
//! frame, so a torn frame never sits in the middle of a file hiding the records written
//! after it; when even the cut fails, the file is closed there (its replay stops cleanly
//! at the torn tail) and the next record starts a new one.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use perpetuo_core::db::logs::LogRecord;
use serde::Serialize;

use crate::metrics;

/// Largest spool file; a new one is started past it.
pub const FILE_BYTES: u64 = 8 * 1024 * 1024;
/// The reject file is rotated to `rejected.jsonl.1` (replacing it) past this size.
pub const REJECT_FILE_BYTES: u64 = 16 * 1024 * 1024;
const HEADER: usize = 8;
const PREFIX: &str = "spool-";
const SUFFIX: &str = ".bin";
pub const REJECT_FILE: &str = "rejected.jsonl";

/// What the spool needs of the file it appends to: a trait, so tests can make writes fail
/// part-way.
trait Segment: Write + Send {
    /// Cuts the file back to its first `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
}

impl Segment for File {
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// Creates a spool file for appending (writes go to its end, after any cut).
type Opener = Box<dyn Fn(&Path) -> io::Result<Box<dyn Segment>> + Send>;

fn open_segment(path: &Path) -> io::Result<Box<dyn Segment>> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Box::new(file))
}

struct Current {
    path: PathBuf,
    file: Box<dyn Segment>,
    /// Bytes of whole frames in the file: where a failed write is cut back to.
    bytes: u64,
    /// When the oldest write not yet fsynced happened.
    dirty_since: Option<Instant>,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes of every spool file, sealed or current.
    total_bytes: u64,
    sealed: VecDeque<PathBuf>,
    current: Option<Current>,
    next_seq: u64,
    reject_max_bytes: u64,
    open_segment: Opener,
}

/// What reading one spool file gave.
#[derive(Debug, Default)]
pub struct Contents {
    pub records: Vec<LogRecord>,
    /// Frames skipped: cut short, bad checksum or unreadable (counting the tail as one).
    pub torn: usize,
}

#[derive(Serialize)]
struct Rejected<'a> {
    #[serde(with = "time::serde::iso8601")]
    rejected_at: time::OffsetDateTime,
    sqlstate: &'a str,
    record: &'a LogRecord,
}

fn seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

impl Spool {
    /// Opens (creating) `data_dir/spool`; files left by an earlier process are queued for
    /// replay, oldest first.
    pub fn open(data_dir: &Path, max_bytes: u64) -> io::Result<Self> {
        let dir = data_dir.join("spool");
        fs::create_dir_all(&dir)?;
        let mut found: Vec<(u64, PathBuf, u64)> = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            if let Some(seq) = seq_of(&path) {
                found.push((seq, path, entry.metadata()?.len()));
            }
        }
        found.sort();
        let next_seq = found.last().map_or(1, |(s, _, _)| s + 1);
        let total_bytes = found.iter().map(|(_, _, len)| len).sum();
        // Proves the directory is writable now rather than at the first outage.
        let probe = dir.join(".probe");
        fs::write(&probe, b"")?;
        fs::remove_file(&probe)?;
        let spool = Self {
            dir,
            max_bytes,
            total_bytes,
            sealed: found.into_iter().map(|(_, p, _)| p).collect(),
            current: None,
            next_seq,
            reject_max_bytes: REJECT_FILE_BYTES,
            open_segment: Box::new(open_segment),
        };
        metrics::LOG_SPOOL_BYTES.set(i64::try_from(total_bytes).unwrap_or(i64::MAX));
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether nothing waits for replay.
    pub fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.current.as_ref().is_none_or(|c| c.bytes == 0)
    }

    /// Appends records (written to the OS at once, so they survive the process being
    /// killed; fsynced by [`Spool::sync`]). Returns how many were kept: records past the
    /// size cap, or that the disk refused, are dropped and counted.
    pub fn append(&mut self, records: &[LogRecord]) -> usize {
        let mut kept = 0;
        let mut failed = 0;
        let mut first_error = None;
        for r in records {
            match self.append_one(r) {
                Ok(true) => kept += 1,
                Ok(false) => metrics::LOG_DROPPED
                    .with_label_values(&["spool_full"])
                    .inc(),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                    metrics::LOG_DROPPED
                        .with_label_values(&["spool_failed"])
                        .inc();
                }
            }
        }
        // Once per call: a full disk fails every record of a batch alike.
        if let Some(e) = first_error {
            tracing::error!(error = %e, records = failed, dir = %self.dir.display(), "log spool write failed");
        }
        metrics::LOG_SPOOLED.inc_by(kept as u64);
        metrics::LOG_SPOOL_BYTES.set(i64::try_from(self.total_bytes).unwrap_or(i64::MAX));
        kept
    }

    fn append_one(&mut self, record: &LogRecord) -> io::Result<bool> {
        let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
        let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
        let frame_len = (HEADER + payload.len()) as u64;
        if self.total_bytes + frame_len > self.max_bytes {
            return Ok(false);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.bytes + frame_len > FILE_BYTES)
        {
            self.seal()?;
        }
        if self.current.is_none() {
            let path = self
                .dir
                .join(format!("{PREFIX}{:020}{SUFFIX}", self.next_seq));
            self.next_seq += 1;
            let file = (self.open_segment)(&path)?;
            self.current = Some(Current {
                path,
                file,
                bytes: 0,
                dirty_since: None,
            });
        }
        let Some(current) = self.current.as_mut() else {
            return Err(io::Error::other("no spool file"));
        };
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        if let Err(e) = current.file.write_all(&frame) {
            // Part of the frame may be in the file: left there, it would end the file at
            // replay and hide every record appended after it.
            if let Err(cut) = current.file.truncate(current.bytes) {
                tracing::error!(error = %cut, file = %current.path.display(), "cannot cut a torn log spool frame; closing the file there");
                self.abandon_current();
            }
            return Err(e);
        }
        current.bytes += frame_len;
        current.dirty_since.get_or_insert_with(Instant::now);
        self.total_bytes += frame_len;
        Ok(true)
    }

    /// Closes the current file as it is, torn tail and all, and queues it for replay (which
    /// stops at the tail); the next record starts a new file.
    fn abandon_current(&mut self) {
        let Some(mut c) = self.current.take() else {
            return;
        };
        // Its whole frames are worth the fsync the next tick would have given them.
        if let Err(e) = c.file.sync_data() {
            tracing::error!(error = %e, file = %c.path.display(), "log spool fsync failed");
        }
        drop(c.file);
        let on_disk = fs::metadata(&c.path).map_or(c.bytes, |m| m.len());
        self.total_bytes += on_disk.saturating_sub(c.bytes);
        self.sealed.push_back(c.path);
    }

    /// Flushes the current file to disk if anything was written since the last call.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(c) = &mut self.current {
            if c.dirty_since.is_some() {
                c.file.sync_data()?;
                c.dirty_since = None;
            }
        }
        Ok(())
    }

    /// Closes the current file so it can be replayed; new records start another.
    pub fn seal(&mut self) -> io::Result<()> {
        self.sync()?;
        if let Some(c) = self.current.take() {
            if c.bytes > 0 {
                self.sealed.push_back(c.path);
            } else {
                drop(c.file);
                fs::remove_file(&c.path)?;
            }
        }
        Ok(())
    }

    /// The oldest sealed file, if any.
    pub fn oldest(&self) -> Option<&Path> {
        self.sealed.front().map(PathBuf::as_path)
    }

    /// Leaves a file that cannot be replayed where it is, out of this process's queue.
    pub fn skip(&mut self, path: &Path) {
        self.sealed.retain(|p| p != path);
    }

    /// Removes a replayed file.
    pub fn remove(&mut self, path: &Path) -> io::Result<()> {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(path)?;
        self.sealed.retain(|p| p != path);
        self.total_bytes = self.total_bytes.saturating_sub(len);
        metrics::LOG_SPOOL_BYTES.set(i64::try_from(self.total_bytes).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Appends a row PostgreSQL refused to the reject file (JSON lines; records hold no
    /// secrets), rotating the file past [`REJECT_FILE_BYTES`].
    pub fn reject(&mut self, record: &LogRecord, sqlstate: &str) {
        metrics::LOG_REJECTED.inc();
        let line = Rejected {
            rejected_at: time::OffsetDateTime::now_utc(),
            sqlstate,
            record,
        };
        let result = (|| -> io::Result<()> {
            let mut line = serde_json::to_vec(&line).map_err(io::Error::other)?;
            line.push(b'\n');
            let path = self.dir.join(REJECT_FILE);
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size + line.len() as u64 > self.reject_max_bytes {
                fs::rename(&path, self.dir.join(format!("{REJECT_FILE}.1")))?;
            }
            let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
            f.write_all(&line)
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the log reject file");
        }
    }
}

/// Reads one spool file: every whole frame up to the first damaged one.
pub fn read(path: &Path) -> io::Result<Contents> {
    let bytes = fs::read(path)?;
    Ok(decode(&bytes))
}

fn decode(mut bytes: &[u8]) -> Contents {
    let mut out = Contents::default();
    while !bytes.is_empty() {
        let frame = (|| {
            let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
            let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
            let payload = bytes.get(HEADER..HEADER + len)?;
            (crc32fast::hash(payload) == crc).then_some((payload, HEADER + len))
        })();
        let Some((payload, used)) = frame else {
            out.torn += 1;
            break;
        };
        match serde_json::from_slice::<LogRecord>(payload) {
            Ok(r) => out.records.push(r),
            Err(_) => out.torn += 1,
        }
        bytes = &bytes[used..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use perpetuo_core::db::logs::UsageSource;

    fn record(i: u32) -> LogRecord {
        LogRecord {
            id: uuid::Uuid::now_v7(),
            created_at: time::OffsetDateTime::now_utc(),
            workspace_id: Some(uuid::Uuid::now_v7()),
            api_key_id: None,
            provider_id: None,
            provider_name: Some(format!("p{i}")),
            provider_kind: None,
            route: perpetuo_core::db::logs::Route::Chat,
            model_requested: Some("gpt-4o".into()),
            model_served: None,
            status: 200,
            error_kind: None,
            streamed: false,
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
            cost_nusd: Some(7),
            usage_source: UsageSource::Provider,
            latency_ms: 5,
            ttfb_ms: None,
            attempts: vec![],
            note: None,
            cache: None,
            cache_saved_nusd: None,
            provider_key_id: None,
            provider_key_label: None,
            skipped: Vec::new(),
            trace_id: None,
        }
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn records_come_back_and_a_torn_tail_is_skipped_at_every_cut() {
        let dir = tempdir();
        let mut spool = Spool::open(dir.path(), 1 << 30).unwrap();
        let written: Vec<_> = (0..3).map(record).collect();
        assert_eq!(spool.append(&written), 3);
        spool.seal().unwrap();
        let path = spool.oldest().unwrap().to_path_buf();
        let whole = fs::read(&path).unwrap();
        let back = decode(&whole);
        assert_eq!(back.records, written);
        assert_eq!(back.torn, 0);
        // Every cut inside the last frame keeps the first two and counts one torn frame.
        let last_start = whole.len() - (decode_len(&whole, 2));
        for cut in last_start + 1..whole.len() {
            let c = decode(&whole[..cut]);
            assert_eq!(c.records, written[..2], "cut at {cut}");
            assert_eq!(c.torn, 1, "cut at {cut}");
        }
        // A flipped byte in a payload fails its checksum.
        let mut bad = whole.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x55;
        assert_eq!(decode(&bad).records, written[..2]);
    }

    /// How a [`Failing`] file misbehaves.
    #[derive(Default)]
    struct Plan {
        /// Bytes the disk still takes before a write fails (once; then it has room again).
        room: Option<usize>,
        /// Whether cutting the file back fails too.
        cut_fails: bool,
    }

    /// A real spool file whose disk fills up at a byte chosen by the test: the write that
    /// reaches it puts what fits in the file, the next one fails with ENOSPC, as `write(2)`
    /// does on a full disk.
    struct Failing {
        file: File,
        plan: std::sync::Arc<std::sync::Mutex<Plan>>,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut plan = self.plan.lock().unwrap();
            match plan.room {
                Some(0) => {
                    plan.room = None;
                    Err(io::Error::from_raw_os_error(28))
                }
                Some(room) => {
                    let n = self.file.write(&buf[..buf.len().min(room)])?;
                    plan.room = Some(room - n);
                    Ok(n)
                }
                None => self.file.write(buf),
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            self.file.flush()
        }
    }

    impl Segment for Failing {
        fn truncate(&mut self, len: u64) -> io::Result<()> {
            if self.plan.lock().unwrap().cut_fails {
                return Err(io::Error::from_raw_os_error(5));
            }
            self.file.set_len(len)
        }

        fn sync_data(&mut self) -> io::Result<()> {
            self.file.sync_data()
        }
    }

    /// A spool in `dir` whose files fail as `plan` says.
    fn failing_spool(dir: &Path, plan: Plan) -> Spool {
        let plan = std::sync::Arc::new(std::sync::Mutex::new(plan));
        let mut spool = Spool::open(dir, 1 << 30).unwrap();
        spool.open_segment = Box::new(move |path| {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            Ok(Box::new(Failing {
                file,
                plan: plan.clone(),
            }))
        });
        spool
    }

    /// Every file of the spool, oldest first, read as replay reads them.
    fn replayed(spool: &mut Spool) -> (Vec<LogRecord>, usize) {
        spool.seal().unwrap();
        let (mut records, mut torn) = (Vec::new(), 0);
        while let Some(path) = spool.oldest().map(Path::to_path_buf) {
            let c = read(&path).unwrap();
            records.extend(c.records);
            torn += c.torn;
            spool.remove(&path).unwrap();
        }
        (records, torn)
    }

    fn frame_bytes(r: &LogRecord) -> usize {
        HEADER + serde_json::to_vec(r).unwrap().len()
    }

    #[test]
    fn a_write_that_fails_part_way_is_cut_back_and_later_records_still_replay() {
        let written: Vec<_> = (0..5).map(record).collect();
        let first = frame_bytes(&written[0]);
        // The disk fills inside the second frame: in its length, its checksum, its JSON.
        for into_second in [0, 3, HEADER, HEADER + 10] {
            let dir = tempdir();
            let plan = Plan {
                room: Some(first + into_second),
                cut_fails: false,
            };
            let mut spool = failing_spool(dir.path(), plan);
            assert_eq!(spool.append(&written[..2]), 1, "the second record fails");
            assert_eq!(spool.append(&written[2..]), 3, "the disk has room again");
            let (back, torn) = replayed(&mut spool);
            let expected = [&written[..1], &written[2..]].concat();
            assert_eq!(back, expected, "{into_second} bytes into the second frame");
            assert_eq!(torn, 0, "{into_second} bytes into the second frame");
            assert!(spool.is_empty());
        }
    }

    #[test]
    fn a_torn_frame_that_cannot_be_cut_ends_its_file_and_later_records_go_to_a_new_one() {
        let written: Vec<_> = (0..5).map(record).collect();
        let dir = tempdir();
        let plan = Plan {
            room: Some(frame_bytes(&written[0]) + HEADER + 10),
            cut_fails: true,
        };
        let mut spool = failing_spool(dir.path(), plan);
        assert_eq!(spool.append(&written[..2]), 1);
        assert_eq!(spool.append(&written[2..]), 3);
        spool.seal().unwrap();
        assert_eq!(
            spool.sealed.len(),
            2,
            "the torn file is closed, a new one started"
        );
        let torn_file = read(&spool.sealed[0]).unwrap();
        assert_eq!(torn_file.records, written[..1]);
        assert_eq!(torn_file.torn, 1, "the torn tail is skipped and counted");
        let (back, torn) = replayed(&mut spool);
        assert_eq!(back, [&written[..1], &written[2..]].concat());
        assert_eq!(torn, 1);
    }

    #[test]
    fn the_reject_file_is_bounded() {
        let dir = tempdir();
        let mut spool = Spool::open(dir.path(), 1 << 30).unwrap();
        spool.reject_max_bytes = 2_000;
        for i in 0..20 {
            spool.reject(&record(i), "22008");
        }
        let current = fs::metadata(spool.dir().join(REJECT_FILE)).unwrap().len();
        let previous = fs::metadata(spool.dir().join(format!("{REJECT_FILE}.1")))
            .unwrap()
            .len();
        assert!(
            current <= 2_000 && previous <= 2_000,
            "{current} {previous}"
        );
        let text = fs::read_to_string(spool.dir().join(REJECT_FILE)).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["sqlstate"], "22008");
        assert!(line["record"]["id"].is_string());
    }

    fn decode_len(bytes: &[u8], index: usize) -> usize {
        let mut off = 0;
        for _ in 0..index {
            let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            off += HEADER + len;
        }
        bytes.len() - off
    }

    #[test]
    fn a_reopened_spool_finds_earlier_files_and_the_cap_drops_the_rest() {
        let dir = tempdir();
        {
            let mut spool = Spool::open(dir.path(), 1 << 30).unwrap();
            spool.append(&[record(1)]);
            spool.sync().unwrap();
            // Dropped without sealing, as by a crash.
        }
        let mut spool = Spool::open(dir.path(), 1 << 30).unwrap();
        assert!(!spool.is_empty());
        let path = spool.oldest().unwrap().to_path_buf();
        assert_eq!(read(&path).unwrap().records.len(), 1);
        spool.remove(&path).unwrap();
        assert!(spool.is_empty());

        let mut small = Spool::open(dir.path(), 600).unwrap();
        let kept = small.append(&(0..10).map(record).collect::<Vec<_>>());
        assert!((1..10).contains(&kept), "kept {kept}");
    }
}
