//! ferry's durable store: accounts and their encrypted credentials, foreign identities and
//! their JID localparts, contacts, the message-id map, inbound de-duplication, the durable
//! outbox, the RSS bridge's feeds (behind its `FeedStore`) and a small key/value table for
//! bridges.
//!
//! One set of queries serves SQLite and PostgreSQL through [`sqlx::AnyPool`]; where the
//! dialects differ the code branches on [`Backend`]. On a SQLite file the outbox's rows are
//! first appended to a journal file (`journal`) and moved into the table in groups, and the
//! outbox's writes run on the store's own SQLite thread (`lane`), a whole batch per job.
//! Times are `i64` unix milliseconds.
//! The schema lives in `migrations/{sqlite,postgres}/` and is applied by
//! [`Store::migrate`].

mod accounts;
mod crypto;
mod email;
mod error;
mod feeds;
mod identities;
mod journal;
mod kv;
mod lane;
mod messages;
mod migrate;
mod outbox;
mod sms;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_bridge_api::BridgeKind;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

pub use accounts::Account;
pub use crypto::{BLOB_VERSION, Cipher, KEY_LEN};
pub use error::StoreError;
pub use identities::Identity;
pub use messages::{Direction, MessageMapping};
pub use outbox::{NewOutbox, OutboxRow, OutboxState, SentRow};
pub use sms::MediaItem;

/// Which database the store talks to; picks the SQL dialect where the two differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names (`sqlite:…`, `postgres://…`, `postgresql://…`).
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::UnsupportedUrl(format!("scheme {scheme:?}"))),
        }
    }
}

/// A handle on the database. Cheap to clone: clones share the connection pool and key.
#[derive(Clone, Debug)]
pub struct Store {
    /// The connections; every query goes through it.
    pool: AnyPool,
    /// Which dialect to speak where SQLite and PostgreSQL differ.
    backend: Backend,
    /// Seals credentials at rest; behind an `Arc` so clones do not copy the key around.
    cipher: Arc<Cipher>,
    /// The thread that runs the outbox's writes on a SQLite file (`None` otherwise).
    lane: Option<Arc<lane::Lane>>,
    /// Where the outbox's rows are first written on a SQLite file (`None` otherwise); in
    /// use once [`Store::migrate`] has moved what a dead process left into SQLite.
    journal: Option<Arc<journal::Journal>>,
}

impl Store {
    /// Connects to `url` (not yet migrating: call [`Store::migrate`]).
    ///
    /// SQLite files are created if missing, and every connection gets WAL journaling,
    /// `synchronous=NORMAL`, foreign keys and a 5 s busy timeout. `sqlite::memory:` gets a
    /// single connection that is never recycled, since each connection would otherwise see
    /// its own empty database.
    pub async fn open(url: &str, cipher: Cipher) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                let memory = sqlite_is_memory(url);
                let options = AnyPoolOptions::new()
                    .after_connect(|conn, _meta| Box::pin(sqlite_pragmas(conn)));
                let options = if memory {
                    options
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                } else {
                    options
                };
                let url = if memory {
                    url.to_owned()
                } else {
                    sqlite_create_if_missing(url)
                };
                options.connect(&url).await?
            }
            Backend::Postgres => AnyPoolOptions::new().connect(url).await?,
        };
        // The pool created the file; the lane opens its own connection to it.
        let lane = match backend {
            Backend::Sqlite => lane::Lane::open(url)?.map(Arc::new),
            Backend::Postgres => None,
        };
        let journal = match (&lane, lane::file_path(url)?) {
            (Some(_), Some(path)) => Some(Arc::new(journal::Journal::new(&path))),
            _ => None,
        };
        Ok(Store {
            pool,
            backend,
            cipher: Arc::new(cipher),
            lane,
            journal,
        })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; later calls fail. Waits for checked-out connections.
    pub async fn close(&self) {
        if let Err(e) = self.sync_outbox().await {
            tracing::error!("cannot move the outbox journal's rows into the database: {e}");
        }
        if let Some(journal) = &self.journal {
            journal.moves_done(std::time::Duration::from_secs(5)).await;
            journal.remove_all();
        }
        if let Some(lane) = &self.lane {
            lane.close().await;
        }
        self.pool.close().await;
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of one failing
    /// when it upgrades a read lock.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// Now as unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// A `sqlite:` URL's database part (a path, still percent-encoded, or `:memory:`) and its
/// query (`""` when none).
fn sqlite_parts(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split_once('?').unwrap_or((rest, ""))
}

fn sqlite_is_memory(url: &str) -> bool {
    let (db, query) = sqlite_parts(url);
    db == ":memory:" || query.split('&').any(|p| p == "mode=memory")
}

/// How long a SQLite connection (sqlx's or the lane's) waits for another's write lock; set
/// first, since switching to WAL may itself wait for a lock.
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000;";
/// What every SQLite connection sets after its busy timeout and WAL journaling.
const SQLITE_PRAGMAS: &str = "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;";

/// Adds `mode=rwc` unless the URL already chooses a mode.
fn sqlite_create_if_missing(url: &str) -> String {
    match url.split_once('?') {
        None => format!("{url}?mode=rwc"),
        Some((_, query)) if query.split('&').any(|p| p.starts_with("mode=")) => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
    }
}

async fn sqlite_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(SQLITE_BUSY_TIMEOUT)
        .execute(&mut *conn)
        .await?;
    let mode: Option<String> = sqlx::query_scalar("PRAGMA journal_mode = WAL")
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(mode) = mode.filter(|m| !m.eq_ignore_ascii_case("wal"))
        && !mode.eq_ignore_ascii_case("memory")
    {
        tracing::warn!(%mode, "sqlite refused WAL journaling; concurrent access will be slower");
    }
    sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut *conn).await?;
    Ok(())
}

/// The bridge a stored name denotes.
pub(crate) fn parse_bridge(s: &str) -> Result<BridgeKind, StoreError> {
    BridgeKind::ALL
        .into_iter()
        .find(|b| b.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown bridge {s:?}")))
}

/// Reads a boolean column: PostgreSQL has BOOLEAN, SQLite stores 0/1.
pub(crate) fn get_bool(row: &sqlx::any::AnyRow, column: &str) -> Result<bool, StoreError> {
    match row.try_get::<bool, _>(column) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::from_url("mysql://u@h/db").is_err());
        assert!(sqlite_is_memory("sqlite::memory:"));
        assert!(sqlite_is_memory("sqlite://?mode=memory"));
        assert!(!sqlite_is_memory("sqlite://ferry.db"));
        assert_eq!(
            sqlite_create_if_missing("sqlite://ferry.db"),
            "sqlite://ferry.db?mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://f.db?cache=private"),
            "sqlite://f.db?cache=private&mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://f.db?mode=ro"),
            "sqlite://f.db?mode=ro"
        );
    }
}
