//! The hard-example store: the requests the edge sent to the cloud and what the cloud answered,
//! kept on disk so that the edge model can later be fine-tuned on them (`edgeinfer
//! hard-examples export`, `edgeinfer adapt`).
//!
//! # Why segment files and not an embedded database
//!
//! The store is written by one thread, only ever appended to, read as a whole by a batch job,
//! and forgotten oldest first. That is a log, not a database: a rotating set of append-only
//! segment files does all of it with `std::fs`, one checksum crate already in the tree
//! (`crc32fast`, through `flate2`) and no compaction, locking or page cache of its own. An
//! embedded database (redb, sled, rocksdb) would bring transactions, indexes and
//! a second storage engine's failure modes for none of which there is a use, and its files
//! could not be bounded in size as simply (deleting the oldest segment is one `remove_file`).
//!
//! # Format
//!
//! `<dir>/seg-<20-digit sequence>.hex`, each beginning with the 8-byte header `EIHX` + format
//! version (u32 LE), then records: payload length (u32 LE), CRC-32 of the payload (u32 LE),
//! payload ([`HardExample::encode`]). A record cut short by a crash, or whose checksum does
//! not match, ends what is read of its segment: [`read_dir`] counts the bytes it skipped and
//! says why, and never panics on any bytes. A writer never appends to a segment it did not
//! create: after a restart it starts the next one, so a torn tail stays a tail.
//!
//! # Bounds
//!
//! The segments together hold at most `max_bytes` (plus one segment being filled): when a
//! segment reaches an eighth of the limit the writer starts the next one and deletes the oldest
//! while the total is over. Recording never blocks the request path: [`HardExampleStore::offer`]
//! puts the record in a bounded channel drained by the writer thread and, when the channel is
//! full or the writer has stopped, drops it and counts it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

use edgeinfer_serving::answer::Answer;
use edgeinfer_serving::node::Call;

/// The default `--hard-examples-max-bytes`: 64 MiB, about 20,000 MNIST-sized records.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// The smallest `--hard-examples-max-bytes` accepted: a few records per segment.
pub const MIN_MAX_BYTES: u64 = 64 << 10;
/// Records waiting for the writer; more are dropped (and counted).
pub const QUEUE: usize = 1024;
/// A record larger than this is refused by the writer and taken for corruption by the reader.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

const MAGIC: &[u8; 4] = b"EIHX";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 8;
const PAYLOAD_VERSION: u8 = 1;
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".hex";

/// One request the cloud answered for the edge.
#[derive(Clone, Debug, PartialEq)]
pub struct HardExample {
    /// The request's id.
    pub id: String,
    /// When the cloud's answer came, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Why the edge asked the cloud (`LOW_CONFIDENCE`, `EDGE_OVERLOADED`, ...).
    pub reason: String,
    /// "name@version" of the edge model in service.
    pub edge_model: String,
    /// "name@version" of the cloud model that answered.
    pub cloud_model: String,
    /// Shape of one input, as the edge model's metadata gives it.
    pub input_shape: Vec<u32>,
    /// The decoded input, row-major.
    pub input: Vec<f32>,
    /// The edge model's probabilities; empty when it did not run (an overloaded edge).
    pub edge_probabilities: Vec<f32>,
    /// The cloud's answer: its label index, label and probabilities.
    pub cloud_class: u32,
    /// The cloud's label.
    pub cloud_label: String,
    /// The cloud's probabilities.
    pub cloud_probabilities: Vec<f32>,
}

/// Why bytes could not be decoded as a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ends before a field does.
    #[error("the record ends inside its {0} field")]
    Short(&'static str),
    /// The payload is of a version this build does not know.
    #[error("record version {0}, expected {PAYLOAD_VERSION}")]
    Version(u8),
    /// A string field is not UTF-8.
    #[error("the {0} field is not UTF-8")]
    Utf8(&'static str),
    /// Bytes follow the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
}

impl HardExample {
    /// The record for `answer`, the cloud's answer to `call`; `edge` is the edge model's
    /// probabilities when it ran, and `edge_model` names the edge model.
    pub fn from_answer(
        call: &Call,
        input_shape: &[usize],
        edge: Option<&[f32]>,
        edge_model: String,
        answer: &Answer,
    ) -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            id: call.id.clone(),
            unix_ms,
            reason: answer.reason.name().to_string(),
            edge_model,
            cloud_model: answer.model.clone(),
            input_shape: input_shape.iter().map(|&d| d as u32).collect(),
            input: call.input.values.clone(),
            edge_probabilities: edge.map(<[f32]>::to_vec).unwrap_or_default(),
            cloud_class: answer.class_index as u32,
            cloud_label: answer.label.clone(),
            cloud_probabilities: answer.probabilities.clone(),
        }
    }

    /// The payload bytes: a version byte, then each field (strings and float lists
    /// length-prefixed, little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + 4
                * (self.input.len()
                    + self.edge_probabilities.len()
                    + self.cloud_probabilities.len()),
        );
        out.push(PAYLOAD_VERSION);
        put_str(&mut out, &self.id);
        out.extend_from_slice(&self.unix_ms.to_le_bytes());
        put_str(&mut out, &self.reason);
        put_str(&mut out, &self.edge_model);
        put_str(&mut out, &self.cloud_model);
        out.extend_from_slice(&(self.input_shape.len() as u32).to_le_bytes());
        for d in &self.input_shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        put_floats(&mut out, &self.input);
        put_floats(&mut out, &self.edge_probabilities);
        out.extend_from_slice(&self.cloud_class.to_le_bytes());
        put_str(&mut out, &self.cloud_label);
        put_floats(&mut out, &self.cloud_probabilities);
        out
    }

    /// Decodes a payload of [`encode`](Self::encode); any bytes give a record or an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Cursor { bytes, at: 0 };
        let version = r.take(1, "version")?[0];
        if version != PAYLOAD_VERSION {
            return Err(DecodeError::Version(version));
        }
        let id = r.string("id")?;
        let unix_ms = r.u64("timestamp")?;
        let reason = r.string("reason")?;
        let edge_model = r.string("edge model")?;
        let cloud_model = r.string("cloud model")?;
        let dims = r.u32("input shape")? as usize;
        let mut input_shape = Vec::with_capacity(dims.min(8));
        for _ in 0..dims {
            input_shape.push(r.u32("input shape")?);
        }
        let input = r.floats("input")?;
        let edge_probabilities = r.floats("edge probabilities")?;
        let cloud_class = r.u32("cloud class")?;
        let cloud_label = r.string("cloud label")?;
        let cloud_probabilities = r.floats("cloud probabilities")?;
        if r.at != bytes.len() {
            return Err(DecodeError::Trailing(bytes.len() - r.at));
        }
        Ok(Self {
            id,
            unix_ms,
            reason,
            edge_model,
            cloud_model,
            input_shape,
            input,
            edge_probabilities,
            cloud_class,
            cloud_label,
            cloud_probabilities,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_floats(out: &mut Vec<u8>, v: &[f32]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// A bounds-checked reader over a payload.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(DecodeError::Short(field))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.u32(field)? as usize;
        let b = self.take(n, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8(field))
    }

    fn floats(&mut self, field: &'static str) -> Result<Vec<f32>, DecodeError> {
        let n = self.u32(field)? as usize;
        let b = self.take(n.checked_mul(4).ok_or(DecodeError::Short(field))?, field)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// One framed record: length, checksum, payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What the writer has done since start.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Records written.
    pub recorded: AtomicU64,
    /// Records dropped because the queue was full or the writer had stopped.
    pub dropped: AtomicU64,
    /// Records lost to a write error (full disk, removed directory).
    pub write_errors: AtomicU64,
    /// Bytes the segments hold now.
    pub bytes: AtomicU64,
}

/// The edge's end of the store: hands records to the writer thread.
#[derive(Clone, Debug)]
pub struct HardExampleStore {
    tx: SyncSender<HardExample>,
    stats: Arc<StoreStats>,
    dir: PathBuf,
}

impl HardExampleStore {
    /// Opens (creating it if need be) the store in `dir`, holding at most about `max_bytes`,
    /// and starts its writer thread. The first record goes to a new segment.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        Self::open_with_queue(dir, max_bytes, QUEUE)
    }

    /// [`open`](Self::open) with a queue of `queue` records (tests make it small).
    pub fn open_with_queue(dir: &Path, max_bytes: u64, queue: usize) -> io::Result<Self> {
        if max_bytes < MIN_MAX_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{max_bytes} bytes is below the smallest store, {MIN_MAX_BYTES} bytes"),
            ));
        }
        std::fs::create_dir_all(dir)?;
        let mut segments = VecDeque::new();
        for (seq, path) in list_segments(dir)? {
            let len = std::fs::metadata(&path)?.len();
            segments.push_back(Segment { seq, path, len });
        }
        let stats = Arc::new(StoreStats::default());
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).max(MIN_MAX_BYTES / 8),
            segments,
            current: None,
            stats: stats.clone(),
            error_logged: false,
        };
        writer.enforce_limit();
        let (tx, rx) = sync_channel(queue.max(1));
        std::thread::Builder::new()
            .name("hard-examples".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            tx,
            stats,
            dir: dir.to_path_buf(),
        })
    }

    /// Hands `example` to the writer; never blocks. A full queue or a stopped writer drops it
    /// (counted in [`StoreStats::dropped`]).
    pub fn offer(&self, example: HardExample) {
        match self.tx.try_send(example) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// What the writer has done.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

struct Segment {
    seq: u64,
    path: PathBuf,
    len: u64,
}

struct Writer {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Every segment, oldest first; the last is `current` when one is open.
    segments: VecDeque<Segment>,
    current: Option<BufWriter<File>>,
    stats: Arc<StoreStats>,
    error_logged: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<HardExample>) {
        // Blocks only this thread; exits when every sender (the router) is gone.
        while let Ok(first) = rx.recv() {
            self.write(&first);
            while let Ok(next) = rx.try_recv() {
                self.write(&next);
            }
            // Flushed whenever the queue is empty, so a reader sees whole records soon.
            if let Some(f) = &mut self.current
                && let Err(e) = f.flush()
            {
                self.failed(&e);
            }
        }
        if let Some(mut f) = self.current.take() {
            let _ = f.flush();
            let _ = f.get_ref().sync_data();
        }
    }

    fn write(&mut self, example: &HardExample) {
        let payload = example.encode();
        if payload.len() > MAX_RECORD_BYTES {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let framed = frame(&payload);
        match self.append(&framed) {
            Ok(()) => {
                self.stats.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failed(&e),
        }
    }

    fn append(&mut self, framed: &[u8]) -> io::Result<()> {
        if self.current.is_none() {
            self.start_segment()?;
        }
        let file = self.current.as_mut().expect("a segment was just started");
        file.write_all(framed)?;
        let seg = self
            .segments
            .back_mut()
            .expect("the current segment is listed");
        seg.len += framed.len() as u64;
        if seg.len >= self.segment_bytes {
            let mut done = self.current.take().expect("open");
            done.flush()?;
            done.get_ref().sync_data()?;
        }
        self.enforce_limit();
        Ok(())
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let seq = self.segments.back().map_or(0, |s| s.seq + 1);
        let path = self.dir.join(segment_name(seq));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut file = BufWriter::new(file);
        file.write_all(MAGIC)?;
        file.write_all(&FORMAT_VERSION.to_le_bytes())?;
        self.segments.push_back(Segment {
            seq,
            path,
            len: HEADER_LEN,
        });
        self.current = Some(file);
        Ok(())
    }

    /// Deletes the oldest closed segments while the total is over the limit (the one being
    /// written is never deleted), and publishes the total.
    fn enforce_limit(&mut self) {
        let mut total: u64 = self.segments.iter().map(|s| s.len).sum();
        let open = usize::from(self.current.is_some());
        while total > self.max_bytes && self.segments.len() > open {
            let oldest = self.segments.pop_front().expect("not empty");
            match std::fs::remove_file(&oldest.path) {
                Ok(()) => total -= oldest.len,
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= oldest.len,
                Err(e) => {
                    // Kept in the count: the limit is not met, and the next write tries again.
                    self.segments.push_front(oldest);
                    self.log_once("cannot delete the oldest hard-example segment", &e);
                    break;
                }
            }
        }
        self.stats.bytes.store(total, Ordering::Relaxed);
    }

    fn failed(&mut self, e: &io::Error) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        // The segment may now hold a torn record: the next one goes to a new segment.
        self.current = None;
        self.log_once(
            "cannot write the hard-example store; records are counted as lost \
             (edgeinfer_hard_examples_write_errors_total)",
            e,
        );
    }

    /// Logs the first store error at ERROR; later ones are only counted.
    fn log_once(&mut self, what: &str, e: &io::Error) {
        if !self.error_logged {
            self.error_logged = true;
            tracing::error!(dir = %self.dir.display(), error = %e, "{what}");
        }
    }
}

fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:020}{SEGMENT_SUFFIX}")
}

/// The segments of `dir`, oldest first. Other files are ignored.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(seq) = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|s| s.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.file_type()?.is_file() {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Bytes of a segment that were not read as records, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// The segment.
    pub segment: PathBuf,
    /// Where the unread bytes begin.
    pub offset: u64,
    /// How many bytes were not read.
    pub bytes: u64,
    /// Why.
    pub why: String,
}

/// Everything [`read_dir`] found.
#[derive(Clone, Debug, Default)]
pub struct ReadReport {
    /// The records, oldest first.
    pub records: Vec<HardExample>,
    /// Segments read.
    pub segments: usize,
    /// Parts not read (a torn tail after a crash, a corrupt record, a foreign file).
    pub skipped: Vec<Skipped>,
}

/// Reads every record of the store in `dir`, oldest first. Damage ends the segment it is in
/// (reported in [`ReadReport::skipped`]); only an unreadable directory is an error. Safe to call
/// while an edge writes the store: a record being written reads as a torn tail.
pub fn read_dir(dir: &Path) -> io::Result<ReadReport> {
    let segments = list_segments(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reading the hard-example store {}: {e}", dir.display()),
        )
    })?;
    let mut report = ReadReport::default();
    for (_, path) in segments {
        report.segments += 1;
        match File::open(&path) {
            Ok(f) => read_segment(&path, f, &mut report),
            Err(e) => report.skipped.push(Skipped {
                segment: path,
                offset: 0,
                bytes: 0,
                why: format!("cannot open: {e}"),
            }),
        }
    }
    Ok(report)
}

/// Reads one segment's records into `report`, stopping at the first damage.
fn read_segment(path: &Path, file: File, report: &mut ReadReport) {
    let size = file.metadata().map_or(0, |m| m.len());
    let mut r = io::BufReader::new(file);
    let skip = |offset: u64, why: String, report: &mut ReadReport| {
        report.skipped.push(Skipped {
            segment: path.to_path_buf(),
            offset,
            bytes: size.saturating_sub(offset),
            why,
        });
    };
    let mut header = [0u8; HEADER_LEN as usize];
    if r.read_exact(&mut header).is_err() {
        skip(0, "shorter than the segment header".into(), report);
        return;
    }
    if &header[..4] != MAGIC {
        skip(0, "not a hard-example segment (bad magic)".into(), report);
        return;
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if version != FORMAT_VERSION {
        skip(
            0,
            format!("segment format {version}, expected {FORMAT_VERSION}"),
            report,
        );
        return;
    }
    let mut offset = HEADER_LEN;
    loop {
        let mut head = [0u8; 8];
        match read_full(&mut r, &mut head) {
            Ok(0) => return,
            Ok(8) => {}
            Ok(_) => {
                return skip(
                    offset,
                    "torn record header (crash mid-write)".into(),
                    report,
                );
            }
            Err(e) => return skip(offset, format!("read error: {e}"), report),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD_BYTES {
            return skip(
                offset,
                format!("record length {len} over the {MAX_RECORD_BYTES}-byte limit (corrupt)"),
                report,
            );
        }
        let mut payload = vec![0u8; len];
        match read_full(&mut r, &mut payload) {
            Ok(n) if n == len => {}
            Ok(_) => return skip(offset, "torn record (crash mid-write)".into(), report),
            Err(e) => return skip(offset, format!("read error: {e}"), report),
        }
        if crc32fast::hash(&payload) != crc {
            return skip(offset, "checksum mismatch (corrupt record)".into(), report);
        }
        match HardExample::decode(&payload) {
            Ok(rec) => report.records.push(rec),
            Err(e) => return skip(offset, format!("undecodable record: {e}"), report),
        }
        offset += 8 + len as u64;
    }
}

/// Reads until `buf` is full or the end; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
#[path = "hard_examples_tests.rs"]
mod tests;
