//! The durable outbox: messages read from XMPP that the foreign side has not accepted yet.
//!
//! A sender claims due rows with a lease ([`Store::claim_due`]); while the lease runs no
//! other claimer (in this process or another ferry on the same PostgreSQL) gets them. The
//! sender then settles each row with [`Store::mark_sent`], [`Store::mark_failed`] or
//! [`Store::retry_later`]. A claimer that dies leaves its rows locked until the lease
//! expires, after which they are claimed again.

use std::sync::Arc;

use ferry_bridge_api::{AccountId, BridgeKind};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::journal::{Held, ID_BLOCK, Journal, RowView, Taken};
use super::lane::{Lane, lane_error};
use super::{Backend, Store, StoreError, get_bool, now_ms, parse_bridge};

/// Where an outbox row stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Waiting for (another) attempt; may be leased by a claimer right now.
    Pending,
    /// Accepted by the foreign side.
    Sent,
    /// Given up on; the user has been (or will be) told.
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<OutboxState, StoreError> {
        match s {
            "pending" => Ok(OutboxState::Pending),
            "sent" => Ok(OutboxState::Sent),
            "failed" => Ok(OutboxState::Failed),
            other => Err(StoreError::Corrupt(format!(
                "unknown outbox state {other:?}"
            ))),
        }
    }
}

/// A message to queue. It becomes due at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOutbox {
    pub bridge: BridgeKind,
    pub account: AccountId,
    /// The foreign id to send to.
    pub recipient: String,
    /// What to send, as JSON the core writes and reads; the store does not look inside.
    pub payload: String,
    /// The full JID that sent it: where errors and receipts go.
    pub from_jid: String,
    /// The stanza's id, for XEP-0184 receipts and error replies.
    pub stanza_id: Option<String>,
    /// Whether the sender asked for a XEP-0184 receipt.
    pub want_receipt: bool,
}

/// A queued message as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub bridge: BridgeKind,
    pub account: AccountId,
    pub recipient: String,
    pub payload: String,
    pub from_jid: String,
    pub stanza_id: Option<String>,
    pub want_receipt: bool,
    pub state: OutboxState,
    /// Claims so far, this one included.
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    /// While in the future, a claimer holds the row.
    pub locked_until_ms: i64,
    pub last_error: Option<String>,
    /// Set when sent: the foreign side's id for the message.
    pub remote_message_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

macro_rules! columns {
    () => {
        "id, bridge, account_id, recipient, payload, from_jid, stanza_id, want_receipt, state, \
         attempts, next_attempt_at_ms, locked_until_ms, last_error, remote_message_id, \
         created_at_ms, updated_at_ms"
    };
}

/// The rows a claim takes: pending, due, and not leased (or the lease ran out).
macro_rules! claimable {
    () => {
        "SELECT id FROM outbox
         WHERE bridge = $1 AND state = 'pending'
           AND next_attempt_at_ms <= $2 AND locked_until_ms <= $2
         ORDER BY next_attempt_at_ms, id LIMIT $4"
    };
}

const CLAIM_SQLITE: &str = concat!(
    "UPDATE outbox SET locked_until_ms = $2 + $3, attempts = attempts + 1, updated_at_ms = $2
     WHERE id IN (",
    claimable!(),
    ") RETURNING ",
    columns!()
);

/// The CTE is evaluated once (a locking CTE is never inlined), so the rows locked are
/// exactly the rows updated; `SKIP LOCKED` passes over rows another claimer is taking, and
/// a row whose lease another claimer renewed meanwhile fails the re-check under the lock.
const CLAIM_POSTGRES: &str = concat!(
    "WITH due (due_id) AS (",
    claimable!(),
    " FOR UPDATE SKIP LOCKED)
     UPDATE outbox SET locked_until_ms = $2 + $3, attempts = attempts + 1, updated_at_ms = $2
     FROM due WHERE outbox.id = due.due_id
     RETURNING ",
    columns!()
);

/// Stores a message as due now, through the pool: `$8` attempts, leased until `$10` (0 and
/// 0 for a row any claimer may take, 1 and a lease's end for a row its storer sends
/// itself). The lane stores with [`LANE_SQL`] instead.
const INSERT: &str = "INSERT INTO outbox (bridge, account_id, recipient, payload, from_jid,
        stanza_id, want_receipt, state, attempts, next_attempt_at_ms, locked_until_ms,
        created_at_ms, updated_at_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $9, $9)
     RETURNING id";

/// Settles a row as sent: `$1` remote id, `$2` thread, `$3` now, `$4` row id. A sent row
/// is also the mapping of its stanza id to the foreign id (see `messages`).
const SETTLE_SENT: &str = "UPDATE outbox SET state = 'sent', remote_message_id = $1,
        thread = $2, locked_until_ms = 0, updated_at_ms = $3
     WHERE id = $4";

const NEXT_DUE: &str = "SELECT MIN(CASE WHEN locked_until_ms > next_attempt_at_ms
                         THEN locked_until_ms ELSE next_attempt_at_ms END)
     FROM outbox WHERE bridge = $1 AND state = 'pending'";

const DEPTH: &str = "SELECT COUNT(*) FROM outbox WHERE bridge = $1 AND state = 'pending'";

fn row_from(row: &AnyRow) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        id: row.try_get("id")?,
        bridge: parse_bridge(&row.try_get::<String, _>("bridge")?)?,
        account: AccountId(row.try_get("account_id")?),
        recipient: row.try_get("recipient")?,
        payload: row.try_get("payload")?,
        from_jid: row.try_get("from_jid")?,
        stanza_id: row.try_get("stanza_id")?,
        want_receipt: get_bool(row, "want_receipt")?,
        state: OutboxState::parse(&row.try_get::<String, _>("state")?)?,
        attempts: row.try_get("attempts")?,
        next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
        locked_until_ms: row.try_get("locked_until_ms")?,
        last_error: row.try_get("last_error")?,
        remote_message_id: row.try_get("remote_message_id")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

/// The same row read on the lane's connection (columns in `columns!()` order).
fn lane_row(r: &rusqlite::Row<'_>) -> Result<OutboxRow, StoreError> {
    let e = lane_error;
    Ok(OutboxRow {
        id: r.get(0).map_err(e)?,
        bridge: parse_bridge(&r.get::<_, String>(1).map_err(e)?)?,
        account: AccountId(r.get(2).map_err(e)?),
        recipient: r.get(3).map_err(e)?,
        payload: r.get(4).map_err(e)?,
        from_jid: r.get(5).map_err(e)?,
        stanza_id: r.get(6).map_err(e)?,
        want_receipt: r.get::<_, i64>(7).map_err(e)? != 0,
        state: OutboxState::parse(&r.get::<_, String>(8).map_err(e)?)?,
        attempts: r.get(9).map_err(e)?,
        next_attempt_at_ms: r.get(10).map_err(e)?,
        locked_until_ms: r.get(11).map_err(e)?,
        last_error: r.get(12).map_err(e)?,
        remote_message_id: r.get(13).map_err(e)?,
        created_at_ms: r.get(14).map_err(e)?,
        updated_at_ms: r.get(15).map_err(e)?,
    })
}

/// A message as its freshly inserted row reads.
fn stored_row(msg: NewOutbox, id: i64, now: i64, attempts: i64, locked_until_ms: i64) -> OutboxRow {
    OutboxRow {
        id,
        bridge: msg.bridge,
        account: msg.account,
        recipient: msg.recipient,
        payload: msg.payload,
        from_jid: msg.from_jid,
        stanza_id: msg.stanza_id,
        want_receipt: msg.want_receipt,
        state: OutboxState::Pending,
        attempts,
        next_attempt_at_ms: now,
        locked_until_ms,
        last_error: None,
        remote_message_id: None,
        created_at_ms: now,
        updated_at_ms: now,
    }
}

async fn insert<'e, E>(
    exec: E,
    msg: &NewOutbox,
    now: i64,
    attempts: i64,
    locked_until_ms: i64,
) -> Result<i64, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    Ok(sqlx::query_scalar(INSERT)
        .bind(msg.bridge.as_str())
        .bind(msg.account.0)
        .bind(msg.recipient.as_str())
        .bind(msg.payload.as_str())
        .bind(msg.from_jid.as_str())
        .bind(msg.stanza_id.as_deref())
        .bind(msg.want_receipt)
        .bind(attempts)
        .bind(now)
        .bind(locked_until_ms)
        .fetch_one(exec)
        .await?)
}

/// A batch goes to the lane's multi-row statements in chunks of these sizes, largest first,
/// so that only a few statement texts are ever prepared (and then cached).
const LANE_CHUNKS: [usize; 3] = [32, 8, 1];

/// The statement texts for each of [`LANE_CHUNKS`]: a multi-row INSERT whose shared
/// parameters come first (`?1` attempts, `?2` now, `?3` lease end) and then seven for each
/// row; and a multi-row settle (`?1` now, then id, remote id and thread for each row).
/// One statement for many rows saves SQLite's per-statement work, including the
/// AUTOINCREMENT counter's update, which it makes once per INSERT statement. `OR FAIL`
/// spares SQLite the statement journal it keeps to undo a multi-row statement that breaks
/// a constraint halfway: a failed lane job rolls back its whole transaction anyway (see
/// `lane::run_group`), so there is nothing for it to undo (1.8% fewer instructions per
/// message in the store bench).
static LANE_SQL: std::sync::LazyLock<Vec<(String, String)>> = std::sync::LazyLock::new(|| {
    use std::fmt::Write;
    LANE_CHUNKS
        .iter()
        .map(|&rows| {
            let mut insert = String::from(
                "INSERT OR FAIL INTO outbox (bridge, account_id, recipient, payload, from_jid, \
                 stanza_id, want_receipt, state, attempts, next_attempt_at_ms, \
                 locked_until_ms, created_at_ms, updated_at_ms) VALUES ",
            );
            let mut settle = String::from(
                "UPDATE OR FAIL outbox SET state = 'sent', remote_message_id = v.column2, \
                 thread = v.column3, locked_until_ms = 0, updated_at_ms = ?1 FROM (VALUES ",
            );
            for r in 0..rows {
                let sep = if r == 0 { "" } else { "," };
                let b = 3 + r * 7;
                let _ = write!(
                    insert,
                    "{sep}(?{},?{},?{},?{},?{},?{},?{},'pending',?1,?2,?3,?2,?2)",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                );
                let b = 1 + r * 3;
                let _ = write!(settle, "{sep}(?{},?{},?{})", b + 1, b + 2, b + 3);
            }
            settle.push_str(") AS v WHERE outbox.id = v.column1");
            (insert, settle)
        })
        .collect()
});

/// [`chunked`] with [`LANE_CHUNKS`] and the statement `pick` chooses of [`LANE_SQL`]'s pair.
fn in_chunks<T>(
    conn: &rusqlite::Connection,
    rows: &[T],
    pick: fn(&'static (String, String)) -> &'static str,
    each: impl FnMut(&mut rusqlite::Statement<'_>, &[T]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    chunked(conn, rows, &LANE_CHUNKS, &LANE_SQL, pick, each)
}

/// Calls `each` with `rows` cut into chunks of the `sizes` (largest first; the last must
/// be 1) and the prepared statement for each chunk's size, `sql(&statements[i])` for
/// `sizes[i]`. A statement is taken from rusqlite's cache once per size, not per chunk:
/// taking it hashes, compares and copies its text (about 12 KB for 64 rows) and giving it
/// back clears its parameters, about 1,400 instructions per row when done per chunk.
fn chunked<T, S>(
    conn: &rusqlite::Connection,
    rows: &[T],
    sizes: &[usize],
    statements: &'static [S],
    sql: impl Fn(&'static S) -> &'static str,
    mut each: impl FnMut(&mut rusqlite::Statement<'_>, &[T]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut rest = rows;
    for (i, &size) in sizes.iter().enumerate() {
        let whole = rest.len() / size.max(1) * size;
        if whole == 0 {
            continue;
        }
        let Some(text) = statements.get(i) else {
            return Err(StoreError::Corrupt(format!("no statement for {size} rows")));
        };
        let mut stmt = conn.prepare_cached(sql(text)).map_err(lane_error)?;
        for chunk in rest[..whole].chunks_exact(size) {
            each(&mut stmt, chunk)?;
        }
        rest = &rest[whole..];
    }
    if !rest.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "no chunk size for the last {} rows",
            rest.len()
        )));
    }
    Ok(())
}

/// Inserts `msgs` on the lane's connection (inside its write transaction); returns their
/// ids.
fn lane_insert(
    conn: &rusqlite::Connection,
    msgs: &[NewOutbox],
    now: i64,
    attempts: i64,
    locked_until_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(msgs.len());
    in_chunks(
        conn,
        msgs,
        |(insert, _)| insert,
        |stmt, chunk| {
            stmt.raw_bind_parameter(1, attempts).map_err(lane_error)?;
            stmt.raw_bind_parameter(2, now).map_err(lane_error)?;
            stmt.raw_bind_parameter(3, locked_until_ms)
                .map_err(lane_error)?;
            for (r, msg) in chunk.iter().enumerate() {
                let b = 3 + r * 7;
                stmt.raw_bind_parameter(b + 1, msg.bridge.as_str())
                    .map_err(lane_error)?;
                stmt.raw_bind_parameter(b + 2, msg.account.0)
                    .map_err(lane_error)?;
                stmt.raw_bind_parameter(b + 3, &msg.recipient)
                    .map_err(lane_error)?;
                stmt.raw_bind_parameter(b + 4, &msg.payload)
                    .map_err(lane_error)?;
                stmt.raw_bind_parameter(b + 5, &msg.from_jid)
                    .map_err(lane_error)?;
                stmt.raw_bind_parameter(b + 6, &msg.stanza_id)
                    .map_err(lane_error)?;
                stmt.raw_bind_parameter(b + 7, msg.want_receipt)
                    .map_err(lane_error)?;
            }
            let inserted = stmt.raw_execute().map_err(lane_error)?;
            // Without RETURNING (SQLite buffers RETURNING rows in a temporary b-tree, which
            // costs more than the insert): an AUTOINCREMENT table gives the rows of one
            // statement consecutive ids, each one more than the largest ever, so the last id
            // tells them all.
            let n = chunk.len();
            if inserted != n {
                return Err(StoreError::Corrupt(format!(
                    "inserted {inserted} outbox rows of {n}"
                )));
            }
            let last = conn.last_insert_rowid();
            ids.extend((last + 1 - n as i64)..=last);
            Ok(())
        },
    )?;
    Ok(ids)
}

/// Settles `done` as sent on the lane's connection (inside its write transaction).
fn lane_settle(conn: &rusqlite::Connection, done: &[SentRow], now: i64) -> Result<(), StoreError> {
    in_chunks(
        conn,
        done,
        |(_, settle)| settle,
        |stmt, chunk| {
            stmt.raw_bind_parameter(1, now).map_err(lane_error)?;
            for (r, d) in chunk.iter().enumerate() {
                let b = 1 + r * 3;
                stmt.raw_bind_parameter(b + 1, d.id).map_err(lane_error)?;
                stmt.raw_bind_parameter(b + 2, &d.remote_message_id)
                    .map_err(lane_error)?;
                stmt.raw_bind_parameter(b + 3, &d.thread)
                    .map_err(lane_error)?;
            }
            stmt.raw_execute().map_err(lane_error)?;
            Ok(())
        },
    )
}

/// Sizes of the chunks [`lane_put`] writes rows in, largest first.
const PUT_CHUNKS: [usize; 3] = [64, 8, 1];
/// Parameters per row of [`PUT_SQL`].
const PUT_COLUMNS: usize = 14;

/// A bridge as a number in [`PUT_SQL`] (its place in [`BridgeKind::ALL`]): a text
/// parameter costs SQLite a copy, an allocation and a free per row.
fn bridge_code(kind: BridgeKind) -> i64 {
    BridgeKind::ALL
        .iter()
        .position(|&k| k == kind)
        .map_or(-1, |i| i as i64)
}

/// For each of [`PUT_CHUNKS`]: a multi-row INSERT of whole rows with their ids, which
/// leaves out a row whose id is taken (it reached the table first). Values that follow
/// from others are written by the statement rather than bound: the bridge's name from its
/// code, the state from whether the row has a foreign id (a sent row always has one), the
/// first due time from the creation time.
static PUT_SQL: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    use std::fmt::Write;
    let mut bridge_names = String::new();
    for (i, k) in BridgeKind::ALL.iter().enumerate() {
        let _ = write!(bridge_names, " WHEN {i} THEN '{}'", k.as_str());
    }
    PUT_CHUNKS
        .iter()
        .map(|&rows| {
            let mut sql = String::from(
                "INSERT OR IGNORE INTO outbox (id, bridge, account_id, recipient, payload, \
                 from_jid, stanza_id, want_receipt, state, attempts, next_attempt_at_ms, \
                 locked_until_ms, remote_message_id, thread, created_at_ms, updated_at_ms) \
                 VALUES ",
            );
            for r in 0..rows {
                // ?1 id, ?2 bridge code, ?3 account, ?4 recipient, ?5 payload, ?6 from_jid,
                // ?7 stanza_id, ?8 want_receipt, ?9 attempts, ?10 created, ?11 lease end,
                // ?12 foreign id, ?13 thread, ?14 updated (numbered from the row's base).
                let p = |n: usize| r * PUT_COLUMNS + n;
                let _ = write!(
                    sql,
                    "{}(?{},CASE ?{}{bridge_names} END,?{},?{},?{},?{},?{},?{},\
                     CASE WHEN ?{} IS NULL THEN 'pending' ELSE 'sent' END,\
                     ?{},?{},?{},?{},?{},?{},?{})",
                    if r == 0 { "" } else { "," },
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6),
                    p(7),
                    p(8),
                    p(12),
                    p(9),
                    p(10),
                    p(11),
                    p(12),
                    p(13),
                    p(10),
                    p(14),
                );
            }
            sql
        })
        .collect()
});

/// Inserts rows the journal held, whole, on the lane's connection (inside its write
/// transaction); returns how many were not in the table yet. A row whose account is gone
/// is left out (deleting an account deletes its rows): the accounts are looked up once
/// here, in the same transaction, rather than by a subquery per row.
fn lane_put(conn: &rusqlite::Connection, rows: &[Held]) -> Result<usize, StoreError> {
    let mut accounts: Vec<(i64, bool)> = Vec::new();
    let mut kept = Vec::with_capacity(rows.len());
    for h in rows {
        let v = h
            .view()
            .ok_or_else(|| StoreError::Corrupt(format!("outbox journal row {}", h.id)))?;
        let account = v.account;
        let exists = match accounts.iter().find(|(a, _)| *a == account) {
            Some(&(_, exists)) => exists,
            None => {
                let exists = conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = ?1)")
                    .and_then(|mut s| s.query_row([account], |r| r.get::<_, bool>(0)))
                    .map_err(lane_error)?;
                accounts.push((account, exists));
                exists
            }
        };
        if exists {
            kept.push((h, v));
        }
    }
    let mut inserted = 0;
    chunked(
        conn,
        &kept,
        &PUT_CHUNKS,
        &PUT_SQL,
        String::as_str,
        |stmt, chunk| {
            for (r, (h, v)) in chunk.iter().enumerate() {
                bind_put_row(stmt, r * PUT_COLUMNS, h, v).map_err(lane_error)?;
            }
            inserted += stmt.raw_execute().map_err(lane_error)?;
            Ok(())
        },
    )?;
    Ok(inserted)
}

/// Binds one row of [`PUT_SQL`], whose parameters start after `b`.
fn bind_put_row(
    stmt: &mut rusqlite::Statement<'_>,
    b: usize,
    h: &Held,
    v: &RowView<'_>,
) -> rusqlite::Result<()> {
    let (locked_until, remote, thread, updated) = match &h.sent {
        Some(s) => (0, Some(s.remote.as_str()), s.thread.as_deref(), s.at),
        None => (h.lease_until, None, None, v.created_at_ms),
    };
    stmt.raw_bind_parameter(b + 1, v.id)?;
    stmt.raw_bind_parameter(b + 2, bridge_code(h.bridge))?;
    stmt.raw_bind_parameter(b + 3, v.account)?;
    stmt.raw_bind_parameter(b + 4, v.recipient)?;
    stmt.raw_bind_parameter(b + 5, v.payload)?;
    stmt.raw_bind_parameter(b + 6, v.from_jid)?;
    stmt.raw_bind_parameter(b + 7, v.stanza_id)?;
    stmt.raw_bind_parameter(b + 8, v.want_receipt)?;
    stmt.raw_bind_parameter(b + 9, v.attempts)?;
    stmt.raw_bind_parameter(b + 10, v.created_at_ms)?;
    stmt.raw_bind_parameter(b + 11, locked_until)?;
    stmt.raw_bind_parameter(b + 12, remote)?;
    stmt.raw_bind_parameter(b + 13, thread)?;
    stmt.raw_bind_parameter(b + 14, updated)
}

/// Reserves `n` ids from the outbox's AUTOINCREMENT counter, which SQLite never hands out
/// again (nor does a plain INSERT: it takes one more than the counter); returns them as a
/// half-open range.
fn lane_reserve(conn: &rusqlite::Connection, n: i64) -> Result<(i64, i64), StoreError> {
    conn.prepare_cached(
        "INSERT INTO sqlite_sequence (name, seq)
         SELECT 'outbox', COALESCE((SELECT MAX(id) FROM outbox), 0)
         WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox')",
    )
    .and_then(|mut s| s.execute([]))
    .map_err(lane_error)?;
    let last: i64 = conn
        .prepare_cached(
            "UPDATE sqlite_sequence SET seq = seq + ?1 WHERE name = 'outbox' RETURNING seq",
        )
        .and_then(|mut s| s.query_row([n], |r| r.get(0)))
        .map_err(lane_error)?;
    Ok((last - n + 1, last + 1))
}

impl Store {
    /// The journal and the lane, when the journal is in use.
    fn journal(&self) -> Option<(&Arc<Journal>, &Arc<Lane>)> {
        match (&self.journal, &self.lane) {
            (Some(j), Some(lane)) if j.enabled() => Some((j, lane)),
            _ => None,
        }
    }

    /// Moves what processes that died left in their journals into SQLite, then puts this
    /// store's journal in use (a SQLite file only; called by [`Store::migrate`]).
    pub(crate) async fn start_journal(&self) -> Result<(), StoreError> {
        let (Some(j), Some(lane)) = (&self.journal, &self.lane) else {
            return Ok(());
        };
        let mut orphans = j.orphans()?;
        if orphans.segments() > 0 {
            let n = orphans.rows.len();
            let rows = Arc::new(std::mem::take(&mut orphans.rows));
            let inserted = lane.call(move |conn| lane_put(conn, &rows)).await?;
            if j.sync_wal() {
                orphans.remove();
            }
            if inserted > 0 {
                tracing::info!(
                    "outbox journal: {inserted} message(s) a stopped ferry left moved into the store"
                );
            }
            tracing::debug!("outbox journal: read {n} row(s) left by a stopped ferry");
        }
        j.enable();
        Ok(())
    }

    /// Moves every outbox row the journal holds into the database, so that SQL sees them
    /// all; every read and update of outbox rows calls it first. Nothing to do on
    /// PostgreSQL or an in-memory SQLite database.
    pub async fn sync_outbox(&self) -> Result<(), StoreError> {
        let Some((j, lane)) = self.journal() else {
            return Ok(());
        };
        match j.take_all(|Taken { rows, retired }| start_move(j, lane, rows, retired)) {
            Some(task) => task.await.map_err(|_| StoreError::Closed)?,
            None => Ok(()),
        }
    }

    /// Starts moving the journal's settled rows into the database, without waiting.
    fn flush_settled(&self) {
        if let Some((j, lane)) = self.journal() {
            j.take_settled(|rows| start_move(j, lane, rows, 0));
        }
    }

    /// Queues one message; returns its row id.
    pub async fn enqueue(&self, msg: &NewOutbox) -> Result<i64, StoreError> {
        insert(&self.pool, msg, now_ms(), 0, 0).await
    }

    /// Queues several messages in one transaction (all or none); returns their ids in order.
    pub async fn enqueue_batch(&self, msgs: &[NewOutbox]) -> Result<Vec<i64>, StoreError> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let msgs = Arc::new(msgs.to_vec());
        self.insert_batch(&msgs, now_ms(), 0, 0).await
    }

    /// Queues several messages in one transaction (all or none), already claimed by the
    /// caller: each row counts its first attempt and is leased until `now + lease_ms`, so
    /// the caller sends them itself without a claim. Returns the rows as stored, in order.
    pub async fn enqueue_claimed(
        &self,
        msgs: Vec<NewOutbox>,
        lease_ms: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let until = now.saturating_add(lease_ms.max(0));
        if let Some((j, lane)) = self.journal() {
            let ids = loop {
                if let Some(ids) = j.take_ids(msgs.len()) {
                    break ids;
                }
                let n = ID_BLOCK.max(msgs.len() as i64);
                let (start, end) = lane.call(move |conn| lane_reserve(conn, n)).await?;
                j.add_ids(start, end);
            };
            let rows: Vec<OutboxRow> = msgs
                .into_iter()
                .zip(ids)
                .map(|(msg, id)| stored_row(msg, id, now, 1, until))
                .collect();
            if j.accept(&rows)? {
                // The segment is full: once every row is in SQLite it can go. The rows are
                // stored either way (a failed move is logged where it ends).
                let _ = self.sync_outbox().await;
            }
            return Ok(rows);
        }
        let msgs = Arc::new(msgs);
        let ids = self.insert_batch(&msgs, now, 1, until).await?;
        // The lane's job dropped its handle before answering, so this takes the rows back
        // without a copy (it copies only if that ever changes).
        let msgs = Arc::try_unwrap(msgs).unwrap_or_else(|shared| shared.as_ref().clone());
        Ok(msgs
            .into_iter()
            .zip(ids)
            .map(|(msg, id)| stored_row(msg, id, now, 1, until))
            .collect())
    }

    async fn insert_batch(
        &self,
        msgs: &Arc<Vec<NewOutbox>>,
        now: i64,
        attempts: i64,
        locked_until_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        if let Some(lane) = &self.lane {
            let msgs = Arc::clone(msgs);
            return lane
                .call(move |conn| lane_insert(conn, &msgs, now, attempts, locked_until_ms))
                .await;
        }
        let mut tx = self.begin_write().await?;
        let mut ids = Vec::with_capacity(msgs.len());
        for msg in msgs.iter() {
            ids.push(insert(&mut *tx, msg, now, attempts, locked_until_ms).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Takes up to `limit` rows of `bridge` that are due at `now_ms`, leasing them until
    /// `now_ms + lease_ms` and counting the attempt. Rows come oldest-due first. Concurrent
    /// claimers, in this process or others sharing the database, never get the same row
    /// while its lease runs.
    pub async fn claim_due(
        &self,
        bridge: BridgeKind,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let lease_ms = lease_ms.max(0);
        // A row whose storer let its lease end must be where a claim finds it.
        if let Some((j, _)) = self.journal()
            && j.lease_ended(now_ms)
        {
            self.sync_outbox().await?;
        }
        let mut out = if let Some(lane) = &self.lane {
            // One statement is one write transaction: SQLite has a single writer.
            lane.call(move |conn| {
                let mut stmt = conn.prepare_cached(CLAIM_SQLITE).map_err(lane_error)?;
                let mut rows = stmt
                    .query(rusqlite::named_params! {
                        "$1": bridge.as_str(), "$2": now_ms, "$3": lease_ms, "$4": limit,
                    })
                    .map_err(lane_error)?;
                let mut out = Vec::new();
                while let Some(r) = rows.next().map_err(lane_error)? {
                    out.push(lane_row(r)?);
                }
                Ok(out)
            })
            .await?
        } else {
            let sql = match self.backend {
                Backend::Sqlite => CLAIM_SQLITE,
                // Row locks taken by the sub-select; rows another claimer is taking are
                // skipped.
                Backend::Postgres => CLAIM_POSTGRES,
            };
            let rows = sqlx::query(sql)
                .bind(bridge.as_str())
                .bind(now_ms)
                .bind(lease_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(row_from).collect::<Result<Vec<_>, _>>()?
        };
        out.sort_by_key(|r| (r.next_attempt_at_ms, r.id));
        Ok(out)
    }

    /// Settles a row as accepted by the foreign side under `remote_message_id`; true if
    /// the row exists.
    pub async fn mark_sent(&self, id: i64, remote_message_id: &str) -> Result<bool, StoreError> {
        self.sync_outbox().await?;
        let done = sqlx::query(SETTLE_SENT)
            .bind(remote_message_id)
            .bind(None::<&str>)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Settles many delivered rows in one transaction: each is marked sent with its
    /// remote message id and thread, which maps its stanza id (if it had one) to the remote
    /// id for later replies, corrections and threads (direction `out`).
    pub async fn complete_sent(&self, done: Vec<SentRow>) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let done = match self.journal() {
            Some((j, _)) => {
                let (others, flush) = j.settle(done, now)?;
                if flush {
                    self.flush_settled();
                }
                others
            }
            None => done,
        };
        if done.is_empty() {
            return Ok(());
        }
        if let Some(lane) = &self.lane {
            return lane.call(move |conn| lane_settle(conn, &done, now)).await;
        }
        let mut tx = self.begin_write().await?;
        for d in &done {
            sqlx::query(SETTLE_SENT)
                .bind(d.remote_message_id.as_str())
                .bind(d.thread.as_deref())
                .bind(now)
                .bind(d.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Settles a row as failed for good (also after a late delivery failure of a sent
    /// row); true if the row exists.
    pub async fn mark_failed(&self, id: i64, error: &str) -> Result<bool, StoreError> {
        self.sync_outbox().await?;
        let done = sqlx::query(
            "UPDATE outbox SET state = 'failed', last_error = $2, locked_until_ms = 0,
                 updated_at_ms = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every lease on pending rows (a process that held them is gone); returns how
    /// many rows were leased.
    pub async fn release_leases(&self) -> Result<u64, StoreError> {
        self.sync_outbox().await?;
        let done = sqlx::query(
            "UPDATE outbox SET locked_until_ms = 0 WHERE state = 'pending' AND locked_until_ms > $1",
        )
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Releases a pending row for another attempt at `next_attempt_at_ms`, noting `error`.
    /// False if the row is gone or no longer pending.
    pub async fn retry_later(
        &self,
        id: i64,
        next_attempt_at_ms: i64,
        error: &str,
    ) -> Result<bool, StoreError> {
        self.sync_outbox().await?;
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at_ms = $2, last_error = $3, locked_until_ms = 0,
                 updated_at_ms = $4
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(next_attempt_at_ms)
        .bind(error)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many rows of `bridge` are pending (due, scheduled or leased).
    pub async fn outbox_depth(&self, bridge: BridgeKind) -> Result<i64, StoreError> {
        let held = self.journal().map_or(0, |(j, _)| j.depth(bridge));
        Ok(self.bridge_scalar::<i64>(DEPTH, bridge).await? + held)
    }

    /// Runs a query that takes the bridge as `$1` and returns one value: on the lane's
    /// connection when there is one, else through the pool.
    async fn bridge_scalar<T>(&self, sql: &'static str, bridge: BridgeKind) -> Result<T, StoreError>
    where
        T: rusqlite::types::FromSql
            + for<'r> sqlx::Decode<'r, sqlx::Any>
            + sqlx::Type<sqlx::Any>
            + Send
            + Unpin
            + 'static,
    {
        if let Some(lane) = &self.lane {
            return lane
                .call(move |conn| {
                    conn.prepare_cached(sql)
                        .and_then(|mut s| s.query_row([bridge.as_str()], |r| r.get(0)))
                        .map_err(lane_error)
                })
                .await;
        }
        Ok(sqlx::query_scalar(sql)
            .bind(bridge.as_str())
            .fetch_one(&self.pool)
            .await?)
    }

    /// One row by id.
    pub async fn outbox_row(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        self.sync_outbox().await?;
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM outbox WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_from).transpose()
    }

    /// The newest row stored for the XMPP stanza id `stanza_id` (tests, support).
    pub async fn outbox_by_stanza(&self, stanza_id: &str) -> Result<Option<OutboxRow>, StoreError> {
        self.sync_outbox().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM outbox WHERE stanza_id = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(stanza_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_from).transpose()
    }

    /// The row that was sent as `remote_message_id` for `account` (for delivery reports).
    pub async fn outbox_by_remote(
        &self,
        account: AccountId,
        remote_message_id: &str,
    ) -> Result<Option<OutboxRow>, StoreError> {
        self.sync_outbox().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM outbox WHERE account_id = $1 AND remote_message_id = $2
              ORDER BY id DESC LIMIT 1"
        ))
        .bind(account.0)
        .bind(remote_message_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_from).transpose()
    }

    /// When the next pending row of `bridge` becomes claimable (its due time, or its
    /// lease's end if later); `None` when nothing is pending. May be in the past.
    pub async fn next_due_at(&self, bridge: BridgeKind) -> Result<Option<i64>, StoreError> {
        let stored: Option<i64> = self.bridge_scalar(NEXT_DUE, bridge).await?;
        let held = self.journal().and_then(|(j, _)| j.first_lease_end(bridge));
        Ok(match (stored, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Deletes settled (sent or failed) rows last touched before `before_ms`; returns how
    /// many. Pending rows are never pruned.
    pub async fn prune_outbox(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.sync_outbox().await?;
        let done =
            sqlx::query("DELETE FROM outbox WHERE state <> 'pending' AND updated_at_ms < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}

/// A delivered outbox row, for [`Store::complete_sent`].
#[derive(Clone, Debug)]
pub struct SentRow {
    pub id: i64,
    pub account: AccountId,
    pub remote_message_id: String,
    pub thread: Option<String>,
}

/// Queues the lane job that moves `rows` out of the journal into the table (called while
/// the journal is locked, so that moves queue in the order they were taken) and starts
/// the task that ends the move: on success the journal forgets the rows (and the
/// `retired` segments the move covered), else it takes them back. The task runs whether
/// or not anyone waits for it, so a caller who stops waiting leaves no row neither here
/// nor there.
fn start_move(
    j: &Arc<Journal>,
    lane: &Lane,
    rows: Vec<Held>,
    retired: usize,
) -> tokio::task::JoinHandle<Result<(), StoreError>> {
    let rows = Arc::new(rows);
    let put = Arc::clone(&rows);
    let done = lane.submit(move |conn| lane_put(conn, &put).map(|_| ()));
    let j = Arc::clone(j);
    tokio::spawn(async move {
        let result = done.await;
        match &result {
            Ok(()) => j.moved(rows.len(), retired),
            Err(e) => {
                tracing::warn!("outbox journal: cannot move rows into the store: {e}");
                // The lane's job dropped its handle before answering.
                let rows = Arc::try_unwrap(rows).unwrap_or_else(|shared| shared.as_ref().clone());
                if let Err(again) = j.put_back(rows) {
                    tracing::error!("outbox journal: cannot write rows back: {again}");
                }
            }
        }
        result
    })
}
