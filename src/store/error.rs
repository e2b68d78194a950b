//! The store's error type: what can go wrong with the database, the key file, the schema or
//! the data, and which of those are worth retrying.

use sqlx::error::DatabaseError;

/// Everything the store can fail with. Messages are lowercase and never contain secrets
/// (no credentials, no key material, no database password).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite refused a statement run on the store's own SQLite thread (see `lane`).
    #[error("database error: {message}")]
    Sqlite {
        message: String,
        /// The database was busy or locked: a retry may succeed.
        busy: bool,
    },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// A sealed blob did not open: wrong key, tampered data, or a blob moved to another row.
    #[error("stored secret could not be decrypted (wrong key, tampered or misplaced data)")]
    Crypto,
    /// The key file is missing and could not be created, unreadable, or malformed.
    #[error("key file: {0}")]
    Key(String),
    /// A migration failed, or the database's schema does not fit this build.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A row holds something this build cannot read (unknown bridge, bad JSON, bad enum).
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    /// The database URL names neither SQLite nor PostgreSQL.
    #[error("unsupported database url (want sqlite: or postgres:): {0}")]
    UnsupportedUrl(String),
    /// A uniqueness rule could not be met (e.g. a derived localpart already taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller passed something the store will not keep (e.g. an empty localpart).
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether retrying later may succeed: the connection dropped, the pool was exhausted,
    /// the database was busy or locked, or PostgreSQL reported a serialization failure,
    /// deadlock, shutdown or lack of connections. Constraint violations and bad data are not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => sqlx_is_transient(e),
            StoreError::Sqlite { busy, .. } => *busy,
            _ => false,
        }
    }
}

fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => database_error_is_transient(db.as_ref()),
        _ => false,
    }
}

fn database_error_is_transient(db: &dyn DatabaseError) -> bool {
    let Some(code) = db.code() else {
        return false;
    };
    // SQLite reports its extended result code as a number; the primary code is the low byte.
    if let Ok(n) = code.parse::<i32>() {
        const SQLITE_BUSY: i32 = 5;
        const SQLITE_LOCKED: i32 = 6;
        return matches!(n & 0xff, SQLITE_BUSY | SQLITE_LOCKED);
    }
    // PostgreSQL SQLSTATE: connection exceptions (08), serialization failure, deadlock,
    // operator intervention / shutdown (57P0x), insufficient resources (53).
    code.starts_with("08")
        || code == "40001"
        || code == "40P01"
        || code.starts_with("57P0")
        || code.starts_with("53")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_trouble_is_transient() {
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::Crypto.is_transient());
        assert!(!StoreError::Migration("x".into()).is_transient());
    }
}
