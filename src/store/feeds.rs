//! The RSS bridge's tables (`feeds`, `feed_subscriptions`, `feed_entries`) behind the
//! engine's [`FeedStore`]: feed rows with their schedule and validators, leased to one
//! poller at a time, subscriptions (pending until confirmed), and the entry keys each feed
//! has shown, recorded in the same transaction as the feed row. A subscription may have a
//! delivery of its own (`feed_subscriptions.delivery`); the user's default delivery and
//! quiet hours are kv values; entries held during quiet hours wait in `feed_held`.

use std::collections::HashSet;

use async_trait::async_trait;
use ferry_bridge_api::{AccountId, BridgeError};
use ferry_rss::engine::{FeedRecord, FeedStore, QuietHours, StoredEntry, Subscriber};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Backend, Store, StoreError, get_bool};

/// Every SQL text built here is made from these constants and numbered placeholders only,
/// never from values (hence `AssertSqlSafe`).
const COLUMNS: &str = "feed, fetch_url, title, icon, etag, last_modified, next_fetch_ms, \
    failures, last_error, last_ok_ms, updated_ms, recent";

/// [`COLUMNS`], each qualified with `table.`.
fn columns_of(table: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per multi-row insert of entry keys (3 parameters each, far below either limit).
const KEYS_PER_STATEMENT: usize = 200;

fn record_from(row: &AnyRow) -> Result<FeedRecord, StoreError> {
    Ok(FeedRecord {
        feed: row.try_get("feed")?,
        fetch_url: row.try_get("fetch_url")?,
        title: row.try_get("title")?,
        icon: row.try_get("icon")?,
        etag: row.try_get("etag")?,
        last_modified: row.try_get("last_modified")?,
        next_fetch_ms: row.try_get("next_fetch_ms")?,
        failures: row.try_get("failures")?,
        last_error: row.try_get("last_error")?,
        last_ok_ms: row.try_get("last_ok_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        recent: row.try_get("recent")?,
    })
}

fn bridge_err(e: StoreError) -> BridgeError {
    if e.is_transient() {
        BridgeError::transient(format!("database: {e}"))
    } else {
        BridgeError::permanent(format!("database: {e}"))
    }
}

const DELIVERY_SCOPE: &str = "rss.delivery";
/// The user's quiet hours (`22:00-07:00`, UTC), keyed by account id.
const QUIET_SCOPE: &str = "rss.quiet";

/// A subscriber as `SUBSCRIBER_COLUMNS` from `feed_subscriptions s` and the `kv q` of
/// their quiet hours read it.
fn subscriber_from(row: &AnyRow) -> Result<Subscriber, StoreError> {
    let quiet: Option<String> = row.try_get("quiet")?;
    Ok(Subscriber {
        account: AccountId(row.try_get("account_id")?),
        headline: get_bool(row, "headline")?,
        pending: get_bool(row, "pending")?,
        quiet: quiet.and_then(|q| QuietHours::parse(&q).ok()),
    })
}

const SUBSCRIBER_COLUMNS: &str = "s.account_id, s.headline, s.pending, q.value AS quiet";
/// Joins each subscription `s` with its user's quiet hours `q` (scope [`QUIET_SCOPE`]).
const QUIET_JOIN: &str =
    "LEFT JOIN kv q ON q.scope = 'rss.quiet' AND q.key = CAST(s.account_id AS TEXT)";

impl Store {
    async fn feed_row(&self, feed: &str) -> Result<Option<FeedRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM feeds WHERE feed = $1"
        )))
        .bind(feed)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record_from).transpose()
    }

    async fn subscribe_row(
        &self,
        account: AccountId,
        feed: &str,
        headline: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO feeds (feed, next_fetch_ms, recent) VALUES ($1, $2, '')
             ON CONFLICT (feed) DO NOTHING",
        )
        .bind(feed)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO feed_subscriptions (account_id, feed, headline, pending, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account_id, feed)
             DO UPDATE SET pending = excluded.pending,
                 headline = CASE WHEN feed_subscriptions.delivery IS NULL
                                 THEN excluded.headline
                                 ELSE feed_subscriptions.delivery = 'headline' END",
        )
        .bind(account.0)
        .bind(feed)
        .bind(headline)
        .bind(true)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due_rows(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<FeedRecord>, StoreError> {
        let due = "SELECT f.feed FROM feeds f
             WHERE f.next_fetch_ms <= $1 AND f.lease_until_ms <= $1
               AND EXISTS (SELECT 1 FROM feed_subscriptions s WHERE s.feed = f.feed)
             ORDER BY f.next_fetch_ms LIMIT $3";
        let sql = match self.backend {
            // One statement is one write transaction: SQLite has a single writer.
            Backend::Sqlite => format!(
                "UPDATE feeds SET lease_until_ms = $2 WHERE feed IN ({due}) RETURNING {COLUMNS}"
            ),
            // Rows another instance is claiming are skipped.
            Backend::Postgres => {
                let cols = columns_of("feeds");
                format!(
                    "WITH due AS ({due} FOR UPDATE SKIP LOCKED)
                     UPDATE feeds SET lease_until_ms = $2 FROM due WHERE feeds.feed = due.feed
                     RETURNING {cols}"
                )
            }
        };
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(lease_until_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(record_from)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|r| r.next_fetch_ms);
        Ok(out)
    }

    async fn save_row(
        &self,
        r: &FeedRecord,
        keys: &[String],
        now_ms: i64,
    ) -> Result<HashSet<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO feeds (feed, fetch_url, title, icon, etag, last_modified, next_fetch_ms,
                 lease_until_ms, failures, last_error, last_ok_ms, updated_ms, recent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12)
             ON CONFLICT (feed) DO UPDATE SET fetch_url = excluded.fetch_url,
                 title = excluded.title, icon = excluded.icon, etag = excluded.etag,
                 last_modified = excluded.last_modified, next_fetch_ms = excluded.next_fetch_ms,
                 lease_until_ms = 0, failures = excluded.failures,
                 last_error = excluded.last_error, last_ok_ms = excluded.last_ok_ms,
                 updated_ms = excluded.updated_ms, recent = excluded.recent",
        )
        .bind(&r.feed)
        .bind(&r.fetch_url)
        .bind(&r.title)
        .bind(&r.icon)
        .bind(&r.etag)
        .bind(&r.last_modified)
        .bind(r.next_fetch_ms)
        .bind(r.failures)
        .bind(&r.last_error)
        .bind(r.last_ok_ms)
        .bind(r.updated_ms)
        .bind(&r.recent)
        .execute(&mut *tx)
        .await?;
        let mut fresh = HashSet::new();
        let unique: Vec<&String> = {
            let mut seen = HashSet::new();
            keys.iter().filter(|k| seen.insert(k.as_str())).collect()
        };
        for chunk in unique.chunks(KEYS_PER_STATEMENT) {
            let mut sql =
                String::from("INSERT INTO feed_entries (feed, entry_key, seen_at_ms) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("($1, ${}, $2)", i + 3));
            }
            sql.push_str(" ON CONFLICT (feed, entry_key) DO NOTHING RETURNING entry_key");
            let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql))
                .bind(&r.feed)
                .bind(now_ms);
            for k in chunk {
                q = q.bind(k.as_str());
            }
            fresh.extend(q.fetch_all(&mut *tx).await?);
        }
        tx.commit().await?;
        Ok(fresh)
    }

    async fn prune_rows(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM feeds WHERE NOT EXISTS
                 (SELECT 1 FROM feed_subscriptions s WHERE s.feed = feeds.feed)",
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl FeedStore for Store {
    async fn feed(&self, feed: &str) -> Result<Option<FeedRecord>, BridgeError> {
        self.feed_row(feed).await.map_err(bridge_err)
    }

    async fn subscribe(
        &self,
        account: AccountId,
        feed: &str,
        headline: bool,
        now_ms: i64,
    ) -> Result<(), BridgeError> {
        self.subscribe_row(account, feed, headline, now_ms)
            .await
            .map_err(bridge_err)
    }

    async fn unsubscribe(&self, account: AccountId, feed: &str) -> Result<bool, BridgeError> {
        let done =
            sqlx::query("DELETE FROM feed_subscriptions WHERE account_id = $1 AND feed = $2")
                .bind(account.0)
                .bind(feed)
                .execute(&self.pool)
                .await
                .map_err(|e| bridge_err(e.into()))?;
        Ok(done.rows_affected() > 0)
    }

    async fn subscriptions(&self, account: AccountId) -> Result<Vec<FeedRecord>, BridgeError> {
        let cols = columns_of("f");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {cols} FROM feeds f JOIN feed_subscriptions s ON s.feed = f.feed
             WHERE s.account_id = $1 ORDER BY f.feed"
        )))
        .bind(account.0)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))?;
        rows.iter()
            .map(record_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bridge_err)
    }

    async fn subscribers(&self, feed: &str) -> Result<Vec<Subscriber>, BridgeError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM feed_subscriptions s {QUIET_JOIN}
             WHERE s.feed = $1 ORDER BY s.account_id"
        )))
        .bind(feed)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))?;
        rows.iter()
            .map(subscriber_from)
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(bridge_err)
    }

    async fn confirm(&self, account: AccountId, feed: &str) -> Result<(), BridgeError> {
        sqlx::query(
            "UPDATE feed_subscriptions SET pending = $3 WHERE account_id = $1 AND feed = $2",
        )
        .bind(account.0)
        .bind(feed)
        .bind(false)
        .execute(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))?;
        Ok(())
    }

    async fn pending_feeds(&self, limit: usize) -> Result<Vec<String>, BridgeError> {
        sqlx::query_scalar(
            "SELECT DISTINCT feed FROM feed_subscriptions WHERE pending = $1 ORDER BY feed
             LIMIT $2",
        )
        .bind(true)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))
    }

    async fn claim_due_feeds(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<FeedRecord>, BridgeError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.claim_due_rows(
            now_ms,
            lease_until_ms,
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await
        .map_err(bridge_err)
    }

    async fn claim(
        &self,
        feed: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Option<FeedRecord>, BridgeError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE feeds SET lease_until_ms = $3 WHERE feed = $1 AND lease_until_ms <= $2
             RETURNING {COLUMNS}"
        )))
        .bind(feed)
        .bind(now_ms)
        .bind(lease_until_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))?;
        row.as_ref()
            .map(record_from)
            .transpose()
            .map_err(bridge_err)
    }

    async fn next_due_ms(&self) -> Result<Option<i64>, BridgeError> {
        sqlx::query_scalar(
            "SELECT MIN(CASE WHEN f.lease_until_ms > f.next_fetch_ms THEN f.lease_until_ms
                             ELSE f.next_fetch_ms END)
             FROM feeds f
             WHERE EXISTS (SELECT 1 FROM feed_subscriptions s WHERE s.feed = f.feed)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))
    }

    async fn save(
        &self,
        record: &FeedRecord,
        keys: &[String],
        now_ms: i64,
    ) -> Result<HashSet<String>, BridgeError> {
        self.save_row(record, keys, now_ms)
            .await
            .map_err(bridge_err)
    }

    async fn prune(&self) -> Result<u64, BridgeError> {
        self.prune_rows().await.map_err(bridge_err)
    }

    async fn delivery(&self, account: AccountId) -> Result<Option<bool>, BridgeError> {
        let v = self
            .kv_get(DELIVERY_SCOPE, &account.0.to_string())
            .await
            .map_err(bridge_err)?;
        Ok(v.map(|v| v == "headline"))
    }

    async fn set_delivery(&self, account: AccountId, headline: bool) -> Result<(), BridgeError> {
        let value = if headline { "headline" } else { "chat" };
        self.kv_set(DELIVERY_SCOPE, &account.0.to_string(), value)
            .await
            .map_err(bridge_err)?;
        sqlx::query(
            "UPDATE feed_subscriptions SET headline = $2
             WHERE account_id = $1 AND delivery IS NULL",
        )
        .bind(account.0)
        .bind(headline)
        .execute(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))?;
        Ok(())
    }

    async fn set_feed_delivery(
        &self,
        account: AccountId,
        feed: &str,
        choice: Option<bool>,
        headline: bool,
    ) -> Result<bool, BridgeError> {
        let choice = choice.map(|h| if h { "headline" } else { "chat" });
        let done = sqlx::query(
            "UPDATE feed_subscriptions SET delivery = $3, headline = $4
             WHERE account_id = $1 AND feed = $2",
        )
        .bind(account.0)
        .bind(feed)
        .bind(choice)
        .bind(headline)
        .execute(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))?;
        Ok(done.rows_affected() > 0)
    }

    async fn feed_deliveries(
        &self,
        account: AccountId,
    ) -> Result<Vec<(String, bool)>, BridgeError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT feed, delivery FROM feed_subscriptions
             WHERE account_id = $1 AND delivery IS NOT NULL ORDER BY feed",
        )
        .bind(account.0)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))?;
        Ok(rows
            .into_iter()
            .map(|(feed, d)| (feed, d == "headline"))
            .collect())
    }

    async fn quiet(&self, account: AccountId) -> Result<Option<QuietHours>, BridgeError> {
        let v = self
            .kv_get(QUIET_SCOPE, &account.0.to_string())
            .await
            .map_err(bridge_err)?;
        Ok(v.and_then(|v| QuietHours::parse(&v).ok()))
    }

    async fn set_quiet(
        &self,
        account: AccountId,
        quiet: Option<QuietHours>,
    ) -> Result<(), BridgeError> {
        let key = account.0.to_string();
        match quiet {
            Some(q) => self.kv_set(QUIET_SCOPE, &key, &q.to_string()).await,
            None => self.kv_delete(QUIET_SCOPE, &key).await.map(|_| ()),
        }
        .map_err(bridge_err)
    }

    async fn hold(
        &self,
        account: AccountId,
        feed: &str,
        entries: &[StoredEntry],
        now_ms: i64,
    ) -> Result<(), BridgeError> {
        let run = async {
            let mut tx = self.begin_write().await?;
            // In order, so ids keep it; nothing for a subscription that is gone.
            for e in entries {
                sqlx::query(
                    "INSERT INTO feed_held (account_id, feed, entry, held_at_ms)
                     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM feed_subscriptions
                         WHERE account_id = $1 AND feed = $2)",
                )
                .bind(account.0)
                .bind(feed)
                .bind(e.to_json())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        };
        run.await.map_err(bridge_err)
    }

    async fn held_subscriptions(&self) -> Result<Vec<(String, Subscriber)>, BridgeError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT s.feed, {SUBSCRIBER_COLUMNS}
             FROM (SELECT DISTINCT account_id, feed FROM feed_held) h
             JOIN feed_subscriptions s ON s.account_id = h.account_id AND s.feed = h.feed
             {QUIET_JOIN}
             ORDER BY s.account_id, s.feed"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))?;
        rows.iter()
            .map(|row| Ok((row.try_get("feed")?, subscriber_from(row)?)))
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(bridge_err)
    }

    async fn held(
        &self,
        account: AccountId,
        feed: &str,
        limit: usize,
    ) -> Result<Vec<(i64, StoredEntry)>, BridgeError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, entry FROM feed_held WHERE account_id = $1 AND feed = $2
             ORDER BY id LIMIT $3",
        )
        .bind(account.0)
        .bind(feed)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| bridge_err(e.into()))?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, text) in rows {
            match StoredEntry::from_json(&text) {
                Some(e) => out.push((id, e)),
                None => {
                    // Never readable, so never sent: dropped rather than blocking the rest.
                    tracing::warn!(id, %feed, "feeds: a held entry is unreadable; dropped");
                    sqlx::query("DELETE FROM feed_held WHERE id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| bridge_err(e.into()))?;
                }
            }
        }
        Ok(out)
    }

    async fn release(&self, account: AccountId, feed: &str, up_to: i64) -> Result<(), BridgeError> {
        sqlx::query("DELETE FROM feed_held WHERE account_id = $1 AND feed = $2 AND id <= $3")
            .bind(account.0)
            .bind(feed)
            .bind(up_to)
            .execute(&self.pool)
            .await
            .map_err(|e| bridge_err(e.into()))?;
        Ok(())
    }
}
