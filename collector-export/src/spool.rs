//! The on-disk spool: an append-only log of encoded messages, cut into segment files.
//!
//! Every event the exporter takes is appended here before anything is published; it
//! leaves only when JetStream has acknowledged it (the ack cursor passes it) or when the
//! spool is full (then the oldest segment goes, and its unacknowledged events are counted
//! as `export_spool_full`).
//!
//! Why a segment log and not redb (which the process store uses): the spool's access
//! pattern is a queue. Appends are sequential and come in batches; reads are sequential
//! from the ack cursor; removal is always of the oldest events. A segment log makes an
//! append one `write(2)` of the whole batch (no B-tree pages, no copy-on-write commit,
//! no fsync per transaction, which is what a durable redb commit costs), makes removal
//! an `unlink` of a whole file, and makes the size bound exact and cheap to enforce.
//! A crash of the process (SIGKILL) loses nothing that `append` returned for: the bytes
//! are in the page cache. A torn tail after a power loss is found by the per-record CRC
//! and cut off at the next open.
//!
//! Layout of `dir`:
//! - `epoch`: a random id made when the spool is created; it goes into message ids so a
//!   wiped spool that starts its sequence again cannot collide with old ids.
//! - `acked`: the ack cursor (last acknowledged sequence), 8 bytes LE + CRC32.
//! - `<first_seq:020>.seg`: records `[u32 body_len][u32 crc32(body)][body]`, where body
//!   is `[u64 seq][i64 spooled_at_ns][u16 subject_len][subject][payload]`, all LE. The
//!   top bit of `subject_len` marks the last record of an append, so that a reader can
//!   group the records of one append the same way every time it reads them (the
//!   publisher packs them into messages whose ids must not change on a resend).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Buf, Bytes};

/// Bytes before a record's body.
const RECORD_HEADER: usize = 8;
/// Bytes of a body before its subject.
const BODY_FIXED: usize = 8 + 8 + 2;
/// Flag in `subject_len`: the last record of an append.
const END_OF_APPEND: u16 = 0x8000;
/// Largest body accepted when reading back (a sanity bound against garbage lengths).
const MAX_BODY: usize = 64 << 20;

/// What can go wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or directory of the spool could not be used.
    #[error("export spool: cannot {action} {} (check that the data directory is writable and has space)", path.display())]
    Io {
        /// What was being done (`create`, `write`, `read`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A subject longer than a record can hold.
    #[error("export spool: subject of {len} bytes is longer than 32767")]
    SubjectTooLong {
        /// Its length.
        len: usize,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Records encoded by the caller, outside the spool's lock, to be appended in one write.
#[derive(Debug, Default)]
pub struct RecordBatch {
    buf: Vec<u8>,
    /// Start of each record in `buf`.
    starts: Vec<usize>,
}

impl RecordBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one record; `payload` appends the message body to the buffer it is given.
    /// The sequence number is filled in by [`Spool::append`].
    pub fn push(
        &mut self,
        spooled_at_ns: i64,
        subject: &str,
        payload: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), SpoolError> {
        let subject_len = u16::try_from(subject.len())
            .ok()
            .filter(|&l| l & END_OF_APPEND == 0)
            .ok_or(SpoolError::SubjectTooLong { len: subject.len() })?;
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; RECORD_HEADER]);
        self.buf.extend_from_slice(&0u64.to_le_bytes()); // seq, set at append
        self.buf.extend_from_slice(&spooled_at_ns.to_le_bytes());
        self.buf.extend_from_slice(&subject_len.to_le_bytes());
        self.buf.extend_from_slice(subject.as_bytes());
        payload(&mut self.buf);
        let body_len = (self.buf.len() - start - RECORD_HEADER) as u32;
        self.buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
        self.starts.push(start);
        Ok(())
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Bytes the batch takes on disk.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.starts.clear();
    }

    /// Numbers the records from `first_seq` and seals each with its CRC.
    fn seal(&mut self, first_seq: u64) {
        let ends = self.starts[1..]
            .iter()
            .copied()
            .chain(std::iter::once(self.buf.len()));
        let last = self.starts.len() - 1;
        for (i, (start, end)) in self.starts.iter().copied().zip(ends).enumerate() {
            let body = start + RECORD_HEADER;
            self.buf[body..body + 8].copy_from_slice(&(first_seq + i as u64).to_le_bytes());
            if i == last {
                let at = body + 16;
                let len = u16::from_le_bytes([self.buf[at], self.buf[at + 1]]) | END_OF_APPEND;
                self.buf[at..at + 2].copy_from_slice(&len.to_le_bytes());
            }
            let crc = crc32fast::hash(&self.buf[body..end]);
            self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// One record read back from the spool.
#[derive(Debug, Clone)]
pub struct SpoolRecord {
    /// Its sequence number (from 1, never reused within an epoch).
    pub seq: u64,
    /// When it was appended, in nanoseconds since the Unix epoch.
    pub spooled_at_ns: i64,
    /// The NATS subject.
    pub subject: Bytes,
    /// The message body.
    pub payload: Bytes,
    /// The last record of the append (one pipeline batch) it came in.
    pub ends_append: bool,
}

/// Parses the record at the start of `buf`: `Ok(Some((record, len)))`, `Ok(None)` when
/// `buf` holds only part of one, `Err(())` when the bytes are not a valid record.
fn parse_record(buf: &Bytes) -> Result<Option<(SpoolRecord, usize)>, ()> {
    if buf.len() < RECORD_HEADER {
        return Ok(None);
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if !(BODY_FIXED..=MAX_BODY).contains(&body_len) {
        return Err(());
    }
    let total = RECORD_HEADER + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = buf.slice(RECORD_HEADER..total);
    if crc32fast::hash(&body) != crc {
        return Err(());
    }
    let mut fixed = &body[..BODY_FIXED];
    let seq = fixed.get_u64_le();
    let spooled_at_ns = fixed.get_i64_le();
    let subject_field = fixed.get_u16_le();
    let ends_append = subject_field & END_OF_APPEND != 0;
    let subject_len = usize::from(subject_field & !END_OF_APPEND);
    if BODY_FIXED + subject_len > body.len() {
        return Err(());
    }
    Ok(Some((
        SpoolRecord {
            seq,
            spooled_at_ns,
            subject: body.slice(BODY_FIXED..BODY_FIXED + subject_len),
            payload: body.slice(BODY_FIXED + subject_len..),
            ends_append,
        },
        total,
    )))
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// `first_seq - 1` while empty.
    last_seq: u64,
    /// Bytes written (and readable).
    len: u64,
    first_ts_ns: i64,
    path: PathBuf,
}

#[derive(Debug)]
struct Inner {
    segments: VecDeque<Segment>,
    /// Append handle of the last segment.
    active: File,
    next_seq: u64,
    acked: u64,
    /// Age hint: when the first unacknowledged event was spooled, if known exactly.
    oldest_unacked_ns: Option<i64>,
    bytes: u64,
    dropped_full: u64,
    appended: u64,
    acked_file: File,
}

/// A point-in-time view of the spool.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpoolStats {
    /// Bytes on disk.
    pub bytes: u64,
    /// Events not yet acknowledged.
    pub unacked_events: u64,
    /// When the oldest unacknowledged event was spooled (ns since the Unix epoch).
    pub oldest_unacked_ns: Option<i64>,
    /// Events dropped unacknowledged because the spool was full.
    pub dropped_full: u64,
    /// Events appended since open.
    pub appended: u64,
    /// The ack cursor.
    pub acked: u64,
    /// The next sequence number to be given.
    pub next_seq: u64,
}

/// The spool. Appends come from the sink (on the pipeline's task), reads and acks from
/// the publisher; one mutex guards the segment list, held for one `write(2)` at most.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    epoch: String,
    max_bytes: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    appended: tokio::sync::Notify,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded to `max_bytes`, recovering what a
    /// previous run left: records past the ack cursor will be published again.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Self>, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let epoch = Self::epoch(dir)?;
        let acked_path = dir.join("acked");
        let acked_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&acked_path)
            .map_err(io("open", &acked_path))?;
        let mut cursor = [0u8; 12];
        let acked = match acked_file.read_exact_at(&mut cursor, 0) {
            Ok(()) if crc32fast::hash(&cursor[..8]).to_le_bytes() == cursor[8..12] => {
                u64::from_le_bytes(cursor[..8].try_into().expect("8 bytes"))
            }
            Ok(()) => {
                tracing::warn!(path = %acked_path.display(), "export spool: ack cursor damaged; resending everything spooled (JetStream drops what it already has)");
                0
            }
            Err(_) => 0,
        };

        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io("list", dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path();
                let name = path.file_name()?.to_str()?;
                let seq = name.strip_suffix(".seg")?.parse::<u64>().ok()?;
                Some((seq, path))
            })
            .collect();
        names.sort_unstable_by_key(|(seq, _)| *seq);

        let mut segments = VecDeque::new();
        let mut bytes = 0;
        let mut last_seen = acked;
        for (first_seq, path) in names {
            let segment = Self::recover_segment(first_seq, &path)?;
            last_seen = last_seen.max(segment.last_seq);
            if segment.last_seq <= acked {
                // Fully acknowledged (or empty): nothing to resend.
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
                continue;
            }
            bytes += segment.len;
            segments.push_back(segment);
        }
        let next_seq = last_seen + 1;
        let path = segment_path(dir, next_seq);
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("create", &path))?;
        let oldest_unacked_ns = segments
            .front()
            .filter(|s| s.first_seq == acked + 1)
            .map(|s| s.first_ts_ns);
        segments.push_back(Segment {
            first_seq: next_seq,
            last_seq: next_seq - 1,
            len: 0,
            first_ts_ns: 0,
            path,
        });
        let spool = Spool {
            dir: dir.to_owned(),
            epoch,
            max_bytes,
            // Small enough that dropping one segment frees little, large enough that
            // files stay few.
            segment_bytes: (max_bytes / 16).clamp(64 << 10, 64 << 20),
            inner: Mutex::new(Inner {
                segments,
                active,
                next_seq,
                acked,
                oldest_unacked_ns,
                bytes,
                dropped_full: 0,
                appended: 0,
                acked_file,
            }),
            appended: tokio::sync::Notify::new(),
        };
        Ok(Arc::new(spool))
    }

    fn epoch(dir: &Path) -> Result<String, SpoolError> {
        let path = dir.join("epoch");
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            _ => {
                // Time and pid: unique enough for "this spool directory, this creation".
                let id = format!(
                    "{:x}",
                    (now_ns() as u64) ^ (u64::from(std::process::id()) << 48)
                );
                let tmp = dir.join("epoch.tmp");
                std::fs::write(&tmp, &id).map_err(io("write", &tmp))?;
                std::fs::rename(&tmp, &path).map_err(io("write", &path))?;
                Ok(id)
            }
        }
    }

    /// Scans a segment, cutting it at the first record that is torn or damaged.
    fn recover_segment(first_seq: u64, path: &Path) -> Result<Segment, SpoolError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("open", path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io("read", path))?;
        let data = Bytes::from(data);
        let mut offset = 0usize;
        let mut expected = first_seq;
        let mut first_ts_ns = 0;
        loop {
            match parse_record(&data.slice(offset..)) {
                Ok(Some((record, len))) if record.seq == expected => {
                    if expected == first_seq {
                        first_ts_ns = record.spooled_at_ns;
                    }
                    expected += 1;
                    offset += len;
                }
                Ok(None) if offset == data.len() => break,
                _ => {
                    tracing::warn!(
                        path = %path.display(),
                        kept = expected - first_seq,
                        cut_bytes = data.len() - offset,
                        "export spool: damaged or torn tail cut off"
                    );
                    file.set_len(offset as u64).map_err(io("truncate", path))?;
                    file.seek(SeekFrom::End(0)).map_err(io("seek", path))?;
                    break;
                }
            }
        }
        Ok(Segment {
            first_seq,
            last_seq: expected - 1,
            len: offset as u64,
            first_ts_ns,
            path: path.to_owned(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent state (every update is
        // completed before the next line can fail), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This spool's epoch (part of every message id).
    pub fn epoch_id(&self) -> &str {
        &self.epoch
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `batch` in one write and returns the first sequence number given. When
    /// the spool goes over its bound, the oldest segments are removed and their
    /// unacknowledged events counted in [`SpoolStats::dropped_full`].
    pub fn append(&self, batch: &mut RecordBatch) -> Result<u64, SpoolError> {
        if batch.is_empty() {
            return Ok(self.lock().next_seq);
        }
        let now = now_ns();
        let mut inner = self.lock();
        let first_seq = inner.next_seq;
        batch.seal(first_seq);
        let count = batch.len() as u64;
        let active_len = inner.segments.back().map_or(0, |s| s.len);
        if active_len > 0 && active_len + batch.bytes() as u64 > self.segment_bytes {
            let path = segment_path(&self.dir, first_seq);
            inner.active = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io("create", &path))?;
            inner.segments.push_back(Segment {
                first_seq,
                last_seq: first_seq - 1,
                len: 0,
                first_ts_ns: 0,
                path,
            });
        }
        if let Err(e) = inner.active.write_all(&batch.buf) {
            // Undo a partial write so the next append starts on a record boundary.
            let segment = inner.segments.back().expect("an active segment");
            let (len, path) = (segment.len, segment.path.clone());
            let _ = inner.active.set_len(len);
            return Err(SpoolError::Io {
                action: "write",
                path,
                source: e,
            });
        }
        let segment = inner.segments.back_mut().expect("an active segment");
        if segment.len == 0 {
            segment.first_ts_ns = now;
        }
        segment.len += batch.bytes() as u64;
        segment.last_seq += count;
        inner.bytes += batch.bytes() as u64;
        inner.next_seq += count;
        inner.appended += count;
        if inner.acked + 1 == first_seq {
            inner.oldest_unacked_ns = Some(now);
        }
        self.enforce_bound(&mut inner);
        drop(inner);
        self.appended.notify_one();
        Ok(first_seq)
    }

    fn enforce_bound(&self, inner: &mut Inner) {
        while inner.bytes > self.max_bytes && inner.segments.len() > 1 {
            let oldest = inner.segments.pop_front().expect("more than one segment");
            let unacked = oldest
                .last_seq
                .saturating_sub(inner.acked.max(oldest.first_seq - 1));
            inner.dropped_full += unacked;
            inner.bytes -= oldest.len;
            if oldest.last_seq > inner.acked {
                inner.acked = oldest.last_seq;
                inner.oldest_unacked_ns = inner
                    .segments
                    .front()
                    .filter(|s| s.len > 0)
                    .map(|s| s.first_ts_ns);
                Self::persist_acked(inner);
            }
            if unacked > 0 {
                tracing::warn!(
                    events = unacked,
                    "export spool full: oldest unacknowledged events dropped (export_spool_full)"
                );
            }
            if let Err(e) = std::fs::remove_file(&oldest.path) {
                tracing::warn!(path = %oldest.path.display(), "export spool: cannot remove a dropped segment: {e}");
            }
        }
    }

    fn persist_acked(inner: &mut Inner) {
        let mut cursor = [0u8; 12];
        cursor[..8].copy_from_slice(&inner.acked.to_le_bytes());
        let crc = crc32fast::hash(&cursor[..8]);
        cursor[8..].copy_from_slice(&crc.to_le_bytes());
        // One 12-byte write: a process crash cannot tear it. Failing to persist only
        // means more resends (deduplicated by JetStream) after a restart.
        if let Err(e) = inner.acked_file.write_all_at(&cursor, 0) {
            tracing::warn!("export spool: cannot persist the ack cursor: {e}");
        }
    }

    /// Moves the ack cursor to `seq` (everything up to it is acknowledged) and removes
    /// segments that are now fully acknowledged. `next_spooled_at_ns` is when the event
    /// after `seq` was spooled, if the caller knows it.
    pub fn ack_through(&self, seq: u64, next_spooled_at_ns: Option<i64>) {
        let mut inner = self.lock();
        if seq <= inner.acked {
            return;
        }
        inner.acked = seq.min(inner.next_seq - 1);
        Self::persist_acked(&mut inner);
        while inner.segments.len() > 1
            && inner
                .segments
                .front()
                .is_some_and(|s| s.last_seq <= inner.acked)
        {
            let done = inner.segments.pop_front().expect("checked");
            inner.bytes -= done.len;
            if let Err(e) = std::fs::remove_file(&done.path) {
                tracing::warn!(path = %done.path.display(), "export spool: cannot remove an acknowledged segment: {e}");
            }
        }
        inner.oldest_unacked_ns = if inner.acked + 1 >= inner.next_seq {
            None
        } else {
            next_spooled_at_ns.or_else(|| {
                // Not known exactly: the start of its segment, an upper bound of its age.
                inner
                    .segments
                    .iter()
                    .find(|s| s.last_seq > inner.acked)
                    .map(|s| s.first_ts_ns)
            })
        };
    }

    /// The ack cursor.
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Current figures.
    pub fn stats(&self) -> SpoolStats {
        let inner = self.lock();
        SpoolStats {
            bytes: inner.bytes,
            unacked_events: (inner.next_seq - 1).saturating_sub(inner.acked),
            oldest_unacked_ns: inner.oldest_unacked_ns,
            dropped_full: inner.dropped_full,
            appended: inner.appended,
            acked: inner.acked,
            next_seq: inner.next_seq,
        }
    }

    /// Resolves after the next append (or at once if one happened since the last call).
    pub async fn wait_for_append(&self) {
        self.appended.notified().await;
    }

    /// A reader positioned at the first unacknowledged record.
    pub fn reader(self: &Arc<Self>) -> SpoolReader {
        let from = self.acked() + 1;
        SpoolReader {
            spool: Arc::clone(self),
            next_seq: from,
            segment_first: 0,
            offset: 0,
            file: None,
        }
    }
}

/// Reads records in sequence order, from the ack cursor on, as they are appended.
#[derive(Debug)]
pub struct SpoolReader {
    spool: Arc<Spool>,
    /// The next sequence number wanted.
    next_seq: u64,
    /// The segment being read (by first sequence number) and the offset in it.
    segment_first: u64,
    offset: u64,
    file: Option<File>,
}

impl SpoolReader {
    /// Starts again from the first unacknowledged record (after a failed publish).
    pub fn rewind(&mut self) {
        self.next_seq = self.spool.acked() + 1;
        self.segment_first = 0;
        self.offset = 0;
        self.file = None;
    }

    /// Up to about `max_bytes` of the next records; empty when it has read all there is.
    pub fn read(&mut self, mut max_bytes: usize) -> Result<Vec<SpoolRecord>, SpoolError> {
        loop {
            let (path, len, next_segment) = {
                let inner = self.spool.lock();
                // Records dropped from a full spool (or acknowledged meanwhile) are skipped.
                self.next_seq = self.next_seq.max(inner.acked + 1);
                let index = match inner
                    .segments
                    .iter()
                    .position(|s| s.first_seq == self.segment_first)
                {
                    Some(i) => i,
                    None => {
                        // Not started, or its segment is gone: scan the one holding
                        // `next_seq` from its start.
                        let Some(i) = inner
                            .segments
                            .iter()
                            .position(|s| s.last_seq >= self.next_seq)
                        else {
                            return Ok(Vec::new());
                        };
                        self.segment_first = inner.segments[i].first_seq;
                        self.offset = 0;
                        self.file = None;
                        i
                    }
                };
                let s = &inner.segments[index];
                (
                    s.path.clone(),
                    s.len,
                    inner.segments.get(index + 1).map(|n| n.first_seq),
                )
            };
            if self.offset >= len {
                match next_segment {
                    Some(first) => {
                        self.segment_first = first;
                        self.offset = 0;
                        self.file = None;
                        continue;
                    }
                    None => return Ok(Vec::new()),
                }
            }
            if self.file.is_none() {
                self.file = Some(File::open(&path).map_err(io("open", &path))?);
            }
            let want =
                ((len - self.offset) as usize).min(max_bytes.max(RECORD_HEADER + BODY_FIXED));
            let mut buf = vec![0u8; want];
            let file = self.file.as_ref().expect("opened above");
            file.read_exact_at(&mut buf, self.offset)
                .map_err(io("read", &path))?;
            let buf = Bytes::from(buf);
            let next_seq_before = self.next_seq;
            let mut at = 0usize;
            let mut records = Vec::new();
            // Where the last whole append ended: (offset, records kept, next_seq).
            let mut append_end = None;
            let mut last_ends_append = true;
            while let Ok(Some((record, n))) = parse_record(&buf.slice(at..)) {
                at += n;
                last_ends_append = record.ends_append;
                if record.seq >= self.next_seq {
                    self.next_seq = record.seq + 1;
                    records.push(record);
                }
                if last_ends_append {
                    append_end = Some((at, records.len(), self.next_seq));
                }
            }
            if !last_ends_append && self.offset + (at as u64) < len {
                // The read cut an append: hand over whole appends only, so the
                // publisher groups them the same way on every read.
                match append_end {
                    Some((end, kept, next_seq)) => {
                        at = end;
                        records.truncate(kept);
                        self.next_seq = next_seq;
                    }
                    None if at > 0 => {
                        // One append larger than the read: read it whole.
                        self.next_seq = next_seq_before;
                        max_bytes = max_bytes.saturating_mul(2);
                        continue;
                    }
                    None => {}
                }
            }
            if at == 0 {
                // A record larger than the read: read it whole next time.
                let body_len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
                if buf.len() >= RECORD_HEADER + body_len || body_len > MAX_BODY {
                    // Damaged in place (the append path never writes this): skip the
                    // rest of the segment rather than loop on it.
                    tracing::error!(path = %path.display(), offset = self.offset, "export spool: unreadable record; skipping the rest of the segment");
                    self.offset = len;
                    continue;
                }
                let mut whole = vec![0u8; RECORD_HEADER + body_len];
                file.read_exact_at(&mut whole, self.offset)
                    .map_err(io("read", &path))?;
                let whole = Bytes::from(whole);
                if let Ok(Some((record, n))) = parse_record(&whole) {
                    self.offset += n as u64;
                    if record.seq >= self.next_seq {
                        self.next_seq = record.seq + 1;
                        return Ok(vec![record]);
                    }
                    continue;
                }
                self.offset = len;
                continue;
            }
            self.offset += at as u64;
            if records.is_empty() {
                continue;
            }
            return Ok(records);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, payload_len: usize) -> RecordBatch {
        let mut b = RecordBatch::new();
        for i in 0..n {
            b.push(i as i64, "collector.h.process.exec", |buf| {
                buf.extend(std::iter::repeat_n(b'x', payload_len))
            })
            .unwrap();
        }
        b
    }

    fn read_all(reader: &mut SpoolReader) -> Vec<u64> {
        let mut seqs = Vec::new();
        loop {
            let records = reader.read(1 << 16).unwrap();
            if records.is_empty() {
                return seqs;
            }
            seqs.extend(records.iter().map(|r| r.seq));
        }
    }

    #[test]
    fn appended_records_read_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 2 << 20).unwrap();
        let mut reader = spool.reader();
        for _ in 0..50 {
            spool.append(&mut batch(100, 100)).unwrap();
        }
        let seqs = read_all(&mut reader);
        assert_eq!(seqs, (1..=5000).collect::<Vec<_>>());
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() > 3,
            "several segments"
        );
        let stats = spool.stats();
        assert_eq!(stats.unacked_events, 5000);
        assert_eq!(stats.dropped_full, 0);
    }

    #[test]
    fn acked_records_are_not_read_again_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 2 << 20).unwrap();
        for _ in 0..30 {
            spool.append(&mut batch(100, 100)).unwrap();
        }
        spool.ack_through(1234, None);
        let epoch = spool.epoch_id().to_owned();
        drop(spool);
        let spool = Spool::open(dir.path(), 2 << 20).unwrap();
        assert_eq!(spool.epoch_id(), epoch);
        assert_eq!(spool.acked(), 1234);
        let seqs = read_all(&mut spool.reader());
        assert_eq!(seqs, (1235..=3000).collect::<Vec<_>>());
        // New appends continue the sequence, never reuse it.
        assert_eq!(spool.append(&mut batch(1, 10)).unwrap(), 3001);
    }

    #[test]
    fn everything_acked_then_reopened_keeps_counting() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 2 << 20).unwrap();
        spool.append(&mut batch(10, 10)).unwrap();
        spool.ack_through(10, None);
        assert_eq!(spool.stats().unacked_events, 0);
        assert_eq!(spool.stats().oldest_unacked_ns, None);
        drop(spool);
        let spool = Spool::open(dir.path(), 2 << 20).unwrap();
        assert_eq!(spool.append(&mut batch(1, 10)).unwrap(), 11);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 2 << 20).unwrap();
        spool.append(&mut batch(10, 50)).unwrap();
        let path = spool.lock().segments.back().unwrap().path.clone();
        drop(spool);
        // Half a record at the end, as a power loss mid-write leaves it.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let mut extra = batch(1, 50);
        extra.seal(11);
        f.write_all(&extra.buf[..30]).unwrap();
        drop(f);
        let spool = Spool::open(dir.path(), 2 << 20).unwrap();
        assert_eq!(read_all(&mut spool.reader()), (1..=10).collect::<Vec<_>>());
        assert_eq!(spool.append(&mut batch(1, 10)).unwrap(), 11);
    }

    #[test]
    fn reads_end_on_append_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 8 << 20).unwrap();
        for _ in 0..20 {
            spool.append(&mut batch(37, 100)).unwrap();
        }
        let mut reader = spool.reader();
        let mut seen = 0;
        loop {
            // Reads of about 10 records are smaller than an append of 37: each read
            // still returns whole appends.
            let records = reader.read(10 * 126).unwrap();
            let Some(last) = records.last() else { break };
            assert!(
                last.ends_append,
                "read ended inside an append at {}",
                last.seq
            );
            assert_eq!(last.seq % 37, 0);
            assert_eq!(records.len() % 37, 0);
            seen += records.len();
        }
        assert_eq!(seen, 740);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let max = 1 << 20;
        let spool = Spool::open(dir.path(), max).unwrap();
        // ~4 MiB into a 1 MiB spool.
        for _ in 0..400 {
            spool.append(&mut batch(100, 80)).unwrap();
        }
        let stats = spool.stats();
        assert!(stats.bytes <= max + (64 << 10), "{stats:?}");
        assert!(stats.dropped_full > 0);
        // Every event is either still unacknowledged in the spool or counted dropped.
        assert_eq!(stats.dropped_full + stats.unacked_events, 40_000);
        let seqs = read_all(&mut spool.reader());
        assert_eq!(seqs.len() as u64, stats.unacked_events);
        assert_eq!(*seqs.last().unwrap(), 40_000);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn a_reader_behind_a_dropped_segment_skips_to_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&mut batch(100, 80)).unwrap();
        let mut reader = spool.reader();
        assert_eq!(reader.read(1 << 10).unwrap().first().unwrap().seq, 1);
        for _ in 0..400 {
            spool.append(&mut batch(100, 80)).unwrap();
        }
        let first = reader.read(1 << 16).unwrap().first().unwrap().seq;
        assert_eq!(first, spool.acked() + 1);
    }
}
