//! The migration runner: the embedded list of schema migrations and the code that applies
//! the pending ones, each in its own transaction, recording them in `ferry_migrations`.
//!
//! On PostgreSQL every migration transaction first takes a transaction-scoped advisory
//! lock, so ferry instances starting together apply each migration exactly once; on
//! SQLite `BEGIN IMMEDIATE` serialises them the same way.

use super::{Backend, Store, StoreError, now_ms};

/// One schema step, in both dialects. Never edit one that has been released.
struct Migration {
    /// Applied in increasing order; recorded in `ferry_migrations.version`.
    version: i64,
    /// Recorded alongside the version; a mismatch means the files were renumbered.
    name: &'static str,
    /// The SQL run on SQLite.
    sqlite: &'static str,
    /// The SQL run on PostgreSQL.
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_feeds",
        sqlite: include_str!("../../migrations/sqlite/0002_feeds.sql"),
        postgres: include_str!("../../migrations/postgres/0002_feeds.sql"),
    },
    Migration {
        version: 3,
        name: "0003_sms",
        sqlite: include_str!("../../migrations/sqlite/0003_sms.sql"),
        postgres: include_str!("../../migrations/postgres/0003_sms.sql"),
    },
    Migration {
        version: 4,
        name: "0004_email",
        sqlite: include_str!("../../migrations/sqlite/0004_email.sql"),
        postgres: include_str!("../../migrations/postgres/0004_email.sql"),
    },
    Migration {
        version: 5,
        name: "0005_lean_indexes",
        sqlite: include_str!("../../migrations/sqlite/0005_lean_indexes.sql"),
        postgres: include_str!("../../migrations/postgres/0005_lean_indexes.sql"),
    },
    Migration {
        version: 6,
        name: "0006_feed_settings",
        sqlite: include_str!("../../migrations/sqlite/0006_feed_settings.sql"),
        postgres: include_str!("../../migrations/postgres/0006_feed_settings.sql"),
    },
];

/// `pg_advisory_xact_lock` key for migrations: "ferry" in ASCII.
const PG_MIGRATION_LOCK: i64 = 0x66_65_72_72_79;

/// The same text in both dialects; created inside the (locked) migration transaction, since
/// concurrent `CREATE TABLE IF NOT EXISTS` can collide on PostgreSQL.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS ferry_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)";

impl Store {
    /// Applies the migrations this database lacks and returns their names (empty when the
    /// schema is current). Safe to run from several processes at once. Fails if the
    /// database was migrated by a newer ferry, or if a recorded name does not match.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let newest = MIGRATIONS.last().map_or(0, |m| m.version);
        let mut applied = Vec::new();
        for m in MIGRATIONS {
            let mut tx = self.begin_write().await?;
            if self.backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_MIGRATION_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(CREATE_TABLE).execute(&mut *tx).await?;

            let recorded: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM ferry_migrations")
                    .fetch_one(&mut *tx)
                    .await?;
            if let Some(recorded) = recorded.filter(|&v| v > newest) {
                return Err(StoreError::Migration(format!(
                    "the database is at schema version {recorded}, newer than this ferry \
                     knows ({newest}); upgrade ferry"
                )));
            }
            let existing: Option<String> =
                sqlx::query_scalar("SELECT name FROM ferry_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
            match existing {
                Some(name) if name == m.name => {
                    tx.rollback().await?;
                    continue;
                }
                Some(name) => {
                    return Err(StoreError::Migration(format!(
                        "version {} is recorded as {name:?} but this ferry calls it {:?}",
                        m.version, m.name
                    )));
                }
                None => {}
            }

            let sql = match self.backend {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::Migration(format!("{}: {e}", m.name)))?;
            sqlx::query(
                "INSERT INTO ferry_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(migration = m.name, "applied database migration");
            applied.push(m.name.to_owned());
        }
        self.start_journal().await?;
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_named_after_their_files() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for m in MIGRATIONS {
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            assert!(!m.sqlite.trim().is_empty() && !m.postgres.trim().is_empty());
        }
    }
}
