//! The outbox journal: on a SQLite file, the append-only files where a message read from
//! XMPP is first made durable and where its settlement is recorded, so that the hot path
//! costs no SQLite write until many settled rows are moved into the outbox table at once.
//!
//! Why it exists: writing each message to SQLite twice (stored, then settled) cost more
//! CPU than the rest of ferry together (BENCHMARKS.md). A journal record is one `write()`
//! per batch, the same durability as SQLite's WAL with `synchronous=NORMAL`: it survives a
//! crash of ferry, and a power loss may lose the last records.
//!
//! **Invariant:** every outbox row that is not (yet) in SQLite has its records in a live
//! segment of this process's journal, and its entry in memory here. A row leaves the
//! journal only by a lane job that inserts it into SQLite; segments are deleted only once
//! every row they hold is there. A process holds an exclusive lock on each of its
//! segments; a segment nobody holds belongs to a process that died, and the next store to
//! start on the same file moves its rows into SQLite (`INSERT OR IGNORE`, so a row that
//! reached SQLite first keeps its state).
//!
//! Ids come from blocks reserved from the outbox's AUTOINCREMENT counter, so a journal row
//! has its final id (from which the email bridge builds its Message-ID) before SQLite ever
//! sees it, and no id is used twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferry_bridge_api::BridgeKind;

use super::outbox::{OutboxRow, SentRow};
use super::{StoreError, parse_bridge};

/// Once the active segment holds this many bytes a new one is begun, and the old one is
/// deleted after every row the journal holds has been moved into SQLite.
const SEGMENT_BYTES: u64 = 8 << 20;
/// Settled rows are moved into SQLite once this many wait. Larger moves touch each index
/// page for more rows per commit: with the random stanza ids real clients send, the
/// SQLite thread's CPU per message through Prosody fell from 13.5 to about 8 µs when this
/// went from 256 to 2,048, and from 3.9 to 3.2 µs with sequential ids (BENCHMARKS.md).
/// A read that needs the table moves what waits first (`Store::sync_outbox`), so this
/// bounds how long such a read waits, not what it sees.
pub(crate) const FLUSH_ROWS: usize = 2048;
/// Ids are reserved from the outbox's AUTOINCREMENT counter this many at a time.
pub(crate) const ID_BLOCK: i64 = 4096;
/// The largest record a reader accepts (a stanza is at most 256 KiB).
const MAX_RECORD: usize = 16 << 20;
/// Record kinds.
const ACCEPT: u8 = 1;
const SETTLE: u8 = 2;

/// An outbox row the journal holds and SQLite does not (yet). Its fields stay in the
/// bytes of its record, in the buffer that was written to the file (or read back from
/// it): storing a message copies nothing more, and moving it into SQLite binds them from
/// there.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    /// The body of its ACCEPT record (after the kind byte).
    rec: Rec,
    pub(crate) id: i64,
    pub(crate) bridge: BridgeKind,
    /// Leased by its storer until then (0: free to claim).
    pub(crate) lease_until: i64,
    /// Once settled: the foreign id, the thread and when.
    pub(crate) sent: Option<Sent>,
}

/// How a held row was settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    pub(crate) remote: String,
    pub(crate) thread: Option<String>,
    pub(crate) at: i64,
}

/// A record's body inside a shared buffer.
#[derive(Clone, Debug)]
struct Rec {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

/// The fields of an ACCEPT record, borrowed from its bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RowView<'a> {
    pub(crate) id: i64,
    pub(crate) created_at_ms: i64,
    pub(crate) attempts: i64,
    pub(crate) account: i64,
    pub(crate) recipient: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) from_jid: &'a str,
    pub(crate) stanza_id: Option<&'a str>,
    pub(crate) want_receipt: bool,
}

impl Held {
    /// The row's fields (`None` only if its bytes were damaged, which the CRC rules out).
    pub(crate) fn view(&self) -> Option<RowView<'_>> {
        let body = self.rec.buf.get(self.rec.start..self.rec.end)?;
        decode_accept(&mut Reader(body)).map(|(view, _)| view)
    }
}

/// One journal file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Open and exclusively locked while it lives.
    file: File,
    /// Bytes of whole records written.
    bytes: u64,
}

impl Segment {
    /// Appends `buf` whole, or leaves the file as it was.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self.file.write_all(buf) {
            Ok(()) => {
                self.bytes += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // A torn record would hide every later one from recovery: cut it off.
                let _ = self.file.set_len(self.bytes);
                let _ = std::io::Seek::seek(&mut self.file, std::io::SeekFrom::Start(self.bytes));
                Err(e)
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Where records go; begun on the first write.
    active: Option<Segment>,
    /// Closed segments whose rows may not all be in SQLite yet, oldest first.
    retired: VecDeque<Segment>,
    /// How many segments this process has begun (names them).
    begun: u64,
    /// Reserved ids, as half-open ranges.
    ids: VecDeque<(i64, i64)>,
    /// Rows stored and not settled. A hash map: a row goes in and out once per message,
    /// and a B-tree's insert and remove cost about four times as much; the rare walks
    /// over all rows sort what they take.
    inflight: HashMap<i64, Held, foldhash::fast::RandomState>,
    /// Rows settled as sent and not yet moved into SQLite.
    settled: Vec<Held>,
    /// Rows taken out by lane jobs that have not answered yet.
    moving: usize,
    /// How many of the oldest retired segments hold only rows that are in SQLite.
    deletable: usize,
    /// A failed move could not write its rows again: retired segments stay.
    keep_retired: bool,
}

/// The journal of one store (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    /// `<database file name>-outbox-`: every segment's name starts with it.
    prefix: String,
    /// SQLite's write-ahead log of the database (`<database file>-wal`).
    wal: PathBuf,
    state: Mutex<State>,
    /// Set once what dead processes left has been moved into SQLite.
    enabled: AtomicBool,
    /// Woken whenever no move of rows is on its way any more.
    settled_moves: tokio::sync::Notify,
}

/// What a full take holds: the rows, and how many retired segments may be deleted once
/// they are in SQLite.
pub(crate) struct Taken {
    pub(crate) rows: Vec<Held>,
    pub(crate) retired: usize,
}

impl Journal {
    /// A journal beside the SQLite file `db`; nothing is written until the first row.
    pub(crate) fn new(db: &Path) -> Journal {
        let dir = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = db
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ferry.db".into());
        Journal {
            wal: dir.join(format!("{name}-wal")),
            dir,
            prefix: format!("{name}-outbox-"),
            state: Mutex::new(State::default()),
            enabled: AtomicBool::new(false),
            settled_moves: tokio::sync::Notify::new(),
        }
    }

    /// Puts the journal in use.
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    /// Whether the journal is in use.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` reserved ids, or `None` if fewer are left (reserve a block, then ask again).
    pub(crate) fn take_ids(&self, n: usize) -> Option<Vec<i64>> {
        let mut st = self.lock();
        let left: i64 = st.ids.iter().map(|(a, b)| b - a).sum();
        if left < n as i64 {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some((a, b)) = st.ids.front_mut() else {
                break;
            };
            let take = (n - out.len()).min((*b - *a) as usize) as i64;
            out.extend(*a..*a + take);
            *a += take;
            if a == b {
                st.ids.pop_front();
            }
        }
        Some(out)
    }

    /// Adds the reserved ids `start..end`.
    pub(crate) fn add_ids(&self, start: i64, end: i64) {
        if start < end {
            self.lock().ids.push_back((start, end));
        }
    }

    /// Records `rows` (pending, leased by their storer) as stored. True when the active
    /// segment is full: the caller then moves the journal's rows into SQLite
    /// ([`Journal::take_all`]) so that the closed segment can go.
    pub(crate) fn accept(&self, rows: &[OutboxRow]) -> Result<bool, StoreError> {
        let mut buf = Vec::with_capacity(rows.iter().map(|r| 96 + r.payload.len()).sum());
        let mut bodies = Vec::with_capacity(rows.len());
        for row in rows {
            let at = encode_accept(&mut buf, row);
            // The body: after the length and the kind byte, before the CRC.
            bodies.push((at + 5, buf.len() - 4));
        }
        let buf = Arc::new(buf);
        let mut st = self.lock();
        let full = self.write(&mut st, &buf)?;
        for (row, (start, end)) in rows.iter().zip(bodies) {
            st.inflight.insert(
                row.id,
                Held {
                    rec: Rec {
                        buf: Arc::clone(&buf),
                        start,
                        end,
                    },
                    id: row.id,
                    bridge: row.bridge,
                    lease_until: row.locked_until_ms,
                    sent: None,
                },
            );
        }
        Ok(full)
    }

    /// Records the settlement of those of `done` the journal holds in flight; returns the
    /// others (rows SQLite holds, to be settled there) and whether enough settled rows
    /// wait to be moved into SQLite.
    pub(crate) fn settle(
        &self,
        done: Vec<SentRow>,
        now: i64,
    ) -> Result<(Vec<SentRow>, bool), StoreError> {
        let mut st = self.lock();
        let mut buf = Vec::with_capacity(done.len() * 64);
        let mut ours = Vec::new();
        let mut others = Vec::new();
        for d in done {
            if st.inflight.contains_key(&d.id) {
                encode_settle(
                    &mut buf,
                    d.id,
                    now,
                    &d.remote_message_id,
                    d.thread.as_deref(),
                );
                ours.push(d);
            } else {
                others.push(d);
            }
        }
        if !ours.is_empty() {
            self.write(&mut st, &buf)?;
            for d in ours {
                if let Some(mut held) = st.inflight.remove(&d.id) {
                    held.sent = Some(Sent {
                        remote: d.remote_message_id,
                        thread: d.thread,
                        at: now,
                    });
                    st.settled.push(held);
                }
            }
        }
        let flush = st.settled.len() >= FLUSH_ROWS;
        Ok((others, flush))
    }

    /// Takes the settled rows out to be moved into SQLite (answer with
    /// [`Journal::moved`] or [`Journal::put_back`]); `submit` queues the lane job while
    /// the journal is locked, so that a later job (a read's [`Journal::take_all`]) runs
    /// after it.
    pub(crate) fn take_settled<R>(&self, submit: impl FnOnce(Vec<Held>) -> R) -> Option<R> {
        let mut st = self.lock();
        if st.settled.is_empty() {
            return None;
        }
        // The next move's rows go into room made now: growing a vector to 2,048 rows one
        // doubling at a time copied each row about twice more.
        let rows = std::mem::replace(&mut st.settled, Vec::with_capacity(FLUSH_ROWS));
        st.moving += rows.len();
        Some(submit(rows))
    }

    /// Takes every row out to be moved into SQLite (see [`Journal::take_settled`]). `None`
    /// when there is nothing to take and nothing on its way.
    pub(crate) fn take_all<R>(&self, submit: impl FnOnce(Taken) -> R) -> Option<R> {
        let mut st = self.lock();
        if st.inflight.is_empty()
            && st.settled.is_empty()
            && st.moving == 0
            && st.retired.is_empty()
        {
            return None;
        }
        let mut rows: Vec<Held> = std::mem::take(&mut st.settled);
        rows.extend(std::mem::take(&mut st.inflight).into_values());
        // In id order, as they were written: the table's rows are appended.
        rows.sort_unstable_by_key(|h| h.id);
        st.moving += rows.len();
        let retired = st.retired.len();
        Some(submit(Taken { rows, retired }))
    }

    /// `n` taken rows are in SQLite now; so are the rows of the `retired` oldest retired
    /// segments, which are deleted once no other move is on its way (a move that fails
    /// writes its rows again first; see [`Journal::put_back`]).
    pub(crate) fn moved(&self, n: usize, retired: usize) {
        let mut st = self.lock();
        st.moving = st.moving.saturating_sub(n);
        st.deletable = st.deletable.max(retired);
        self.delete_retired(&mut st);
    }

    /// Taken rows did not reach SQLite: they are the journal's again, written anew into
    /// the active segment (their old records may be in a segment about to go).
    pub(crate) fn put_back(&self, rows: Vec<Held>) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for h in &rows {
            let at = begin_record(&mut buf, ACCEPT);
            buf.extend_from_slice(h.rec.buf.get(h.rec.start..h.rec.end).unwrap_or_default());
            end_record(&mut buf, at);
            if let Some(s) = &h.sent {
                encode_settle(&mut buf, h.id, s.at, &s.remote, s.thread.as_deref());
            }
        }
        let mut st = self.lock();
        st.moving = st.moving.saturating_sub(rows.len());
        let written = self.write(&mut st, &buf).map(|_| ());
        if written.is_err() {
            // Their only records may be in retired segments: those stay until the next
            // start reads them.
            st.keep_retired = true;
        }
        for h in rows {
            if h.sent.is_some() {
                st.settled.push(h);
            } else {
                st.inflight.insert(h.id, h);
            }
        }
        self.delete_retired(&mut st);
        written
    }

    /// Deletes the retired segments whose rows are all in SQLite (or written again), once
    /// no move is on its way and SQLite's WAL is on disk.
    fn delete_retired(&self, st: &mut State) {
        if st.moving == 0 {
            self.settled_moves.notify_waiters();
        }
        if st.deletable == 0 || st.moving != 0 || st.keep_retired || !self.sync_wal() {
            return;
        }
        for _ in 0..st.deletable.min(st.retired.len()) {
            if let Some(seg) = st.retired.pop_front() {
                remove(seg);
            }
        }
        st.deletable = 0;
    }

    /// Rows of `bridge` stored and not settled.
    pub(crate) fn depth(&self, bridge: BridgeKind) -> i64 {
        let st = self.lock();
        st.inflight.values().filter(|h| h.bridge == bridge).count() as i64
    }

    /// When the first lease of a row of `bridge` in flight ends.
    pub(crate) fn first_lease_end(&self, bridge: BridgeKind) -> Option<i64> {
        let st = self.lock();
        st.inflight
            .values()
            .filter(|h| h.bridge == bridge)
            .map(|h| h.lease_until)
            .min()
    }

    /// Whether a row in flight was leased until before `now` (its storer lost it: it must
    /// go to SQLite, where a claim finds it).
    pub(crate) fn lease_ended(&self, now: i64) -> bool {
        let st = self.lock();
        st.inflight.values().any(|h| h.lease_until <= now)
    }

    /// Waits (up to `within`) until no move of rows into SQLite is on its way: the task
    /// that hears a move's result may not have run yet when a later move returns.
    pub(crate) async fn moves_done(&self, within: std::time::Duration) {
        let wait = async {
            loop {
                let woken = self.settled_moves.notified();
                if self.lock().moving == 0 {
                    return;
                }
                woken.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
    }

    /// Deletes this process's segments; only once every row is in SQLite.
    pub(crate) fn remove_all(&self) {
        let mut st = self.lock();
        if !st.inflight.is_empty() || !st.settled.is_empty() || st.moving != 0 {
            return;
        }
        if st.keep_retired || ((st.active.is_some() || !st.retired.is_empty()) && !self.sync_wal())
        {
            return;
        }
        while let Some(seg) = st.retired.pop_front() {
            remove(seg);
        }
        if let Some(seg) = st.active.take() {
            remove(seg);
        }
    }

    /// Makes what SQLite committed durable (its WAL on disk), before a segment whose rows
    /// it holds now is deleted: with `synchronous=NORMAL` SQLite syncs its WAL only at
    /// checkpoints, and a power loss must not take the rows from both places. False (and
    /// logged) if that failed: the segments then stay.
    pub(crate) fn sync_wal(&self) -> bool {
        match File::open(&self.wal).and_then(|f| f.sync_data()) {
            Ok(()) => true,
            // No WAL: nothing was committed through it that is not in the database file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::warn!("outbox journal: cannot sync {}: {e}", self.wal.display());
                false
            }
        }
    }

    /// Appends `buf` to the active segment (begun if need be); true if it is full now, in
    /// which case it is retired and the next write begins another.
    fn write(&self, st: &mut State, buf: &[u8]) -> Result<bool, StoreError> {
        if buf.is_empty() {
            return Ok(false);
        }
        if st.active.is_none() {
            st.begun += 1;
            let seg = self.begin(st.begun)?;
            st.active = Some(seg);
        }
        let Some(seg) = st.active.as_mut() else {
            return Err(StoreError::Closed);
        };
        if let Err(e) = seg.append(buf) {
            // The segment may be unusable: the next write begins another.
            if let Some(seg) = st.active.take() {
                st.retired.push_back(seg);
            }
            return Err(journal_error(&self.dir, e));
        }
        if seg.bytes >= SEGMENT_BYTES {
            if let Some(seg) = st.active.take() {
                st.retired.push_back(seg);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Creates and locks a new segment.
    fn begin(&self, n: u64) -> Result<Segment, StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = self.dir.join(format!(
            "{}{}-{nanos}-{n}.journal",
            self.prefix,
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| journal_error(&path, e))?;
        file.try_lock().map_err(|e| StoreError::Sqlite {
            message: format!("cannot lock the outbox journal {}: {e}", path.display()),
            busy: false,
        })?;
        Ok(Segment {
            path,
            file,
            bytes: 0,
        })
    }

    /// Reads the segments that no live process holds (left by one that died): their rows,
    /// in flight ones as pending and free to claim, and the locked segments, to delete once
    /// the rows are in SQLite ([`Orphans::remove`]).
    pub(crate) fn orphans(&self) -> Result<Orphans, StoreError> {
        let mut out = Orphans::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => return Err(journal_error(&self.dir, e)),
        };
        let mut rows: BTreeMap<i64, Held> = BTreeMap::new();
        let mut settles: Vec<(i64, Sent)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&self.prefix) || !name.ends_with(".journal") {
                continue;
            }
            let path = entry.path();
            let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            if file.try_lock().is_err() {
                // A live process's.
                continue;
            }
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| journal_error(&path, e))?;
            let bytes = Arc::new(bytes);
            let whole = decode_all(&bytes, &mut rows, &mut settles);
            if whole < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    "outbox journal: {} byte(s) after the last whole record ignored",
                    bytes.len() - whole
                );
            }
            out.files.push(Segment {
                path,
                file,
                bytes: bytes.len() as u64,
            });
        }
        for (id, sent) in settles {
            if let Some(h) = rows.get_mut(&id) {
                h.sent = Some(sent);
            }
        }
        out.rows = rows
            .into_values()
            .map(|mut h| {
                // Its storer is gone: free to claim at once.
                h.lease_until = 0;
                h
            })
            .collect();
        Ok(out)
    }
}

/// What dead processes left (see [`Journal::orphans`]).
#[derive(Debug, Default)]
pub(crate) struct Orphans {
    pub(crate) rows: Vec<Held>,
    files: Vec<Segment>,
}

impl Orphans {
    /// How many segments were found.
    pub(crate) fn segments(&self) -> usize {
        self.files.len()
    }

    /// Deletes the segments (call once their rows are in SQLite).
    pub(crate) fn remove(self) {
        self.files.into_iter().for_each(remove);
    }
}

/// Deletes a segment (the lock goes with the file handle, after the name is gone, so that
/// no other process reads a file that is being deleted).
fn remove(seg: Segment) {
    if let Err(e) = std::fs::remove_file(&seg.path) {
        tracing::warn!(path = %seg.path.display(), "cannot delete an outbox journal segment: {e}");
    }
    drop(seg.file);
}

fn journal_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Sqlite {
        message: format!("outbox journal {}: {e}", path.display()),
        busy: false,
    }
}

// A record: length (u32, of kind and body), kind (u8), body, CRC-32 of kind and body
// (u32). Integers are little-endian; a string is its length (u32) and UTF-8 bytes; an
// optional string is a flag byte and, if 1, the string.

fn begin_record(buf: &mut Vec<u8>, kind: u8) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    at
}

fn end_record(buf: &mut Vec<u8>, at: usize) {
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&buf[at + 4..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_opt(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            buf.push(1);
            put_str(buf, s);
        }
        None => buf.push(0),
    }
}

/// Appends an ACCEPT record; returns where it begins.
fn encode_accept(buf: &mut Vec<u8>, row: &OutboxRow) -> usize {
    let at = begin_record(buf, ACCEPT);
    put_i64(buf, row.id);
    put_i64(buf, row.created_at_ms);
    put_i64(buf, row.attempts);
    put_str(buf, row.bridge.as_str());
    put_i64(buf, row.account.0);
    put_str(buf, &row.recipient);
    put_str(buf, &row.payload);
    put_str(buf, &row.from_jid);
    put_opt(buf, row.stanza_id.as_deref());
    buf.push(u8::from(row.want_receipt));
    end_record(buf, at);
    at
}

fn encode_settle(buf: &mut Vec<u8>, id: i64, at: i64, remote: &str, thread: Option<&str>) {
    let start = begin_record(buf, SETTLE);
    put_i64(buf, id);
    put_i64(buf, at);
    put_str(buf, remote);
    put_opt(buf, thread);
    end_record(buf, start);
}

/// Reads a record body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    fn i64(&mut self) -> Option<i64> {
        self.bytes(8)?.try_into().ok().map(i64::from_le_bytes)
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = u32::from_le_bytes(self.bytes(4)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.bytes(len)?).ok()
    }
    fn opt(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.str().map(Some),
            _ => None,
        }
    }
}

/// Decodes the whole records at the start of `bytes` into `rows` (accepts) and `settles`;
/// returns how many bytes they took (a torn or damaged record ends the reading).
fn decode_all(
    bytes: &Arc<Vec<u8>>,
    rows: &mut BTreeMap<i64, Held>,
    settles: &mut Vec<(i64, Sent)>,
) -> usize {
    let mut at = 0;
    loop {
        let Some(head) = bytes.get(at..at + 4) else {
            return at;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 || len > MAX_RECORD {
            return at;
        }
        let Some(body) = bytes.get(at + 4..at + 4 + len) else {
            return at;
        };
        let Some(crc) = bytes.get(at + 4 + len..at + 8 + len) else {
            return at;
        };
        if crc32fast::hash(body).to_le_bytes() != crc {
            return at;
        }
        let mut r = Reader(&body[1..]);
        let ok = match body[0] {
            ACCEPT => decode_accept(&mut r).map(|(v, bridge)| {
                let held = Held {
                    rec: Rec {
                        buf: Arc::clone(bytes),
                        start: at + 5,
                        end: at + 4 + len,
                    },
                    id: v.id,
                    bridge,
                    lease_until: 0,
                    sent: None,
                };
                rows.insert(v.id, held);
            }),
            SETTLE => (|| {
                let id = r.i64()?;
                let at = r.i64()?;
                let remote = r.str()?.to_owned();
                let thread = r.opt()?.map(str::to_owned);
                settles.push((id, Sent { remote, thread, at }));
                Some(())
            })(),
            _ => None,
        };
        if ok.is_none() {
            return at;
        }
        at += 8 + len;
    }
}

/// Reads an ACCEPT record's body.
fn decode_accept<'a>(r: &mut Reader<'a>) -> Option<(RowView<'a>, BridgeKind)> {
    let id = r.i64()?;
    let created_at_ms = r.i64()?;
    let attempts = r.i64()?;
    let kind = parse_bridge(r.str()?).ok()?;
    let account = r.i64()?;
    let recipient = r.str()?;
    let payload = r.str()?;
    let from_jid = r.str()?;
    let stanza_id = r.opt()?;
    let want_receipt = r.u8()? != 0;
    Some((
        RowView {
            id,
            created_at_ms,
            attempts,
            account,
            recipient,
            payload,
            from_jid,
            stanza_id,
            want_receipt,
        },
        kind,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outbox::OutboxState;
    use ferry_bridge_api::AccountId;

    /// The row as [`OutboxRow`] (for tests).
    fn to_row(h: &Held) -> Option<OutboxRow> {
        let v = h.view()?;
        Some(OutboxRow {
            id: v.id,
            bridge: h.bridge,
            account: AccountId(v.account),
            recipient: v.recipient.to_owned(),
            payload: v.payload.to_owned(),
            from_jid: v.from_jid.to_owned(),
            stanza_id: v.stanza_id.map(str::to_owned),
            want_receipt: v.want_receipt,
            state: if h.sent.is_some() {
                OutboxState::Sent
            } else {
                OutboxState::Pending
            },
            attempts: v.attempts,
            next_attempt_at_ms: v.created_at_ms,
            locked_until_ms: if h.sent.is_some() { 0 } else { h.lease_until },
            last_error: None,
            remote_message_id: h.sent.as_ref().map(|s| s.remote.clone()),
            created_at_ms: v.created_at_ms,
            updated_at_ms: h.sent.as_ref().map_or(v.created_at_ms, |s| s.at),
        })
    }

    fn row(id: i64, payload: &str) -> OutboxRow {
        OutboxRow {
            id,
            bridge: BridgeKind::Email,
            account: AccountId(7),
            recipient: "bob@example.org".into(),
            payload: payload.into(),
            from_jid: "alice@example.net/phone".into(),
            stanza_id: Some(format!("m{id}")),
            want_receipt: true,
            state: OutboxState::Pending,
            attempts: 1,
            next_attempt_at_ms: 1000,
            locked_until_ms: 121_000,
            last_error: None,
            remote_message_id: None,
            created_at_ms: 1000,
            updated_at_ms: 1000,
        }
    }

    fn sent_row(id: i64) -> SentRow {
        SentRow {
            id,
            account: AccountId(7),
            remote_message_id: format!("r{id}"),
            thread: Some("t".into()),
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut_off() {
        let mut buf = Vec::new();
        encode_accept(&mut buf, &row(1, "{\"body\":\"héllo\"}"));
        encode_accept(&mut buf, &row(2, ""));
        encode_settle(&mut buf, 1, 2000, "r1", Some("t"));
        let whole = buf.len();
        encode_accept(&mut buf, &row(3, "lost"));
        buf.truncate(buf.len() - 3);
        let buf = Arc::new(buf);
        let (mut rows, mut settles) = (BTreeMap::new(), Vec::new());
        assert_eq!(decode_all(&buf, &mut rows, &mut settles), whole);
        assert_eq!(rows.len(), 2);
        let mut expected = row(1, "{\"body\":\"héllo\"}");
        expected.locked_until_ms = 0;
        assert_eq!(to_row(&rows[&1]), Some(expected));
        assert_eq!(rows[&2].view().map(|v| v.payload), Some(""));
        let sent = Sent {
            remote: "r1".into(),
            thread: Some("t".into()),
            at: 2000,
        };
        assert_eq!(settles, vec![(1, sent)]);

        // A flipped byte ends the reading at that record.
        let mut bad = buf[..whole].to_vec();
        bad[10] ^= 1;
        let (mut rows, mut settles) = (BTreeMap::new(), Vec::new());
        assert_eq!(decode_all(&Arc::new(bad), &mut rows, &mut settles), 0);
        assert!(rows.is_empty());
    }

    #[test]
    fn a_dead_process_s_segments_are_read_and_a_live_one_s_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ferry.db");
        let live = Journal::new(&db);
        live.accept(&[row(1, "a"), row(2, "b")]).expect("accept");
        let (others, flush) = live
            .settle(vec![sent_row(1), sent_row(9)], 5000)
            .expect("settle");
        assert_eq!(others.iter().map(|d| d.id).collect::<Vec<_>>(), vec![9]);
        assert!(!flush);

        // While it lives, another store on the same file leaves its segment alone.
        let other = Journal::new(&db);
        assert!(other.orphans().expect("read").rows.is_empty());

        // It dies (its file handles close): the rows are found, the settled one as sent
        // and the other free to claim.
        drop(live);
        let found = other.orphans().expect("read");
        assert_eq!(found.segments(), 1);
        let rows: Vec<OutboxRow> = found.rows.iter().filter_map(to_row).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].state, OutboxState::Sent);
        assert_eq!(rows[0].remote_message_id.as_deref(), Some("r1"));
        assert_eq!(
            found.rows[0]
                .sent
                .as_ref()
                .and_then(|s| s.thread.as_deref()),
            Some("t")
        );
        assert_eq!(rows[0].updated_at_ms, 5000);
        assert_eq!(rows[1].state, OutboxState::Pending);
        assert_eq!(rows[1].locked_until_ms, 0);
        assert_eq!(rows[1].payload, "b");
        found.remove();
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn a_take_that_fails_puts_the_rows_back_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ferry.db");
        let j = Journal::new(&db);
        j.accept(&[row(1, "a"), row(2, "b")]).expect("accept");
        j.settle(vec![sent_row(2)], 5000).expect("settle");
        let taken = j.take_all(|t| t).expect("something to take");
        assert_eq!(taken.rows.len(), 2);
        assert_eq!(j.depth(BridgeKind::Email), 0);
        j.put_back(taken.rows).expect("put back");
        assert_eq!(j.depth(BridgeKind::Email), 1);
        assert_eq!(j.first_lease_end(BridgeKind::Email), Some(121_000));
        assert!(j.lease_ended(121_000));
        assert!(!j.lease_ended(120_999));
        drop(j);
        let found = Journal::new(&db).orphans().expect("read");
        assert_eq!(found.rows.len(), 2);
        assert!(found.rows[1].sent.is_some());
        assert!(found.rows[0].sent.is_none());
    }

    #[test]
    fn a_full_segment_goes_only_once_no_failed_move_needs_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ferry.db");
        let files = || std::fs::read_dir(dir.path()).expect("dir").count();
        let j = Journal::new(&db);
        j.accept(&[row(1, "a")]).expect("accept");
        j.settle(vec![sent_row(1)], 5000).expect("settle");
        // A flush of row 1 is on its way when the segment fills up.
        let flush = j.take_settled(|rows| rows).expect("a settled row");
        let big = "x".repeat(SEGMENT_BYTES as usize);
        assert!(
            j.accept(&[row(2, &big)]).expect("accept"),
            "the segment is full"
        );
        let taken = j.take_all(|t| t).expect("row 2");
        assert_eq!((taken.rows.len(), taken.retired), (1, 1));
        // Row 2 reached SQLite, but the flush has not answered: the segment stays.
        j.moved(taken.rows.len(), taken.retired);
        assert_eq!(files(), 1);
        // The flush failed: row 1 is written again, and only then does the old segment go.
        j.put_back(flush).expect("put back");
        assert_eq!(files(), 1);
        drop(j);
        let found = Journal::new(&db).orphans().expect("read");
        let ids: Vec<i64> = found.rows.iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![1]);
        assert!(found.rows[0].sent.is_some());
    }

    #[test]
    fn ids_come_from_reserved_blocks_in_order() {
        let j = Journal::new(Path::new("ferry.db"));
        assert_eq!(j.take_ids(1), None);
        j.add_ids(10, 13);
        j.add_ids(20, 22);
        assert_eq!(j.take_ids(4), Some(vec![10, 11, 12, 20]));
        assert_eq!(j.take_ids(2), None);
        assert_eq!(j.take_ids(1), Some(vec![21]));
    }
}
