//! The message-id map (XMPP stanza id ↔ foreign message id, per account, with the thread)
//! and inbound de-duplication (`inbound_seen`).
//!
//! The map has two sources: `message_map` (what a bridge or the relay maps explicitly,
//! inbound messages above all) and the outbox, whose sent rows carry their stanza id,
//! foreign id and thread (direction `out`). Settling a message therefore writes one row, not
//! two. Lookups read both and take the latest.

use ferry_bridge_api::AccountId;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};

/// Which way a mapped message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the foreign side to the XMPP user.
    In,
    /// From the XMPP user to the foreign side.
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    fn parse(s: &str) -> Result<Direction, StoreError> {
        match s {
            "in" => Ok(Direction::In),
            "out" => Ok(Direction::Out),
            other => Err(StoreError::Corrupt(format!("unknown direction {other:?}"))),
        }
    }
}

/// One stanza id ↔ foreign message id pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageMapping {
    pub account: AccountId,
    pub direction: Direction,
    pub xmpp_id: String,
    pub remote_message_id: String,
    pub thread: Option<String>,
    pub created_at_ms: i64,
}

fn mapping_from_row(row: &AnyRow) -> Result<MessageMapping, StoreError> {
    Ok(MessageMapping {
        account: AccountId(row.try_get("account_id")?),
        direction: Direction::parse(&row.try_get::<String, _>("direction")?)?,
        xmpp_id: row.try_get("xmpp_id")?,
        remote_message_id: row.try_get("remote_message_id")?,
        thread: row.try_get("thread")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// The latest mapping that matches `$map_where` in `message_map` or `$sent_where` among
/// the outbox rows the foreign side accepted (they have a remote id, even if a delivery
/// report failed them later) that had a stanza id. Among equally recent ones an explicit
/// mapping wins, then the later row. A macro so that the SQL stays a `&'static str`.
macro_rules! mapping_query {
    ($map_where:literal, $sent_where:literal $(,)?) => {
        concat!(
            "SELECT account_id, direction, xmpp_id, remote_message_id, thread, created_at_ms
             FROM (
                 SELECT account_id, direction, xmpp_id, remote_message_id, thread,
                        created_at_ms, 1 AS source, id
                 FROM message_map WHERE ",
            $map_where,
            "
                 UNION ALL
                 SELECT account_id, 'out' AS direction, stanza_id AS xmpp_id,
                        remote_message_id, thread, updated_at_ms AS created_at_ms,
                        0 AS source, id
                 FROM outbox WHERE ",
            $sent_where,
            " AND stanza_id IS NOT NULL AND remote_message_id IS NOT NULL
             ) mapped
             ORDER BY created_at_ms DESC, source DESC, id DESC LIMIT 1"
        )
    };
}

impl Store {
    /// Records that `xmpp_id` and `remote_message_id` name one message of `account`. A
    /// foreign id is mapped once per account: mapping it again replaces the earlier pair.
    pub async fn map_message(
        &self,
        account: AccountId,
        direction: Direction,
        xmpp_id: &str,
        remote_message_id: &str,
        thread: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO message_map
                 (account_id, direction, xmpp_id, remote_message_id, thread, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (account_id, remote_message_id) DO UPDATE
             SET direction = excluded.direction, xmpp_id = excluded.xmpp_id,
                 thread = excluded.thread, created_at_ms = excluded.created_at_ms",
        )
        .bind(account.0)
        .bind(direction.as_str())
        .bind(xmpp_id)
        .bind(remote_message_id)
        .bind(thread)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The foreign message an XMPP stanza id stands for (the latest, if the id was reused).
    pub async fn remote_for_xmpp(
        &self,
        account: AccountId,
        xmpp_id: &str,
    ) -> Result<Option<MessageMapping>, StoreError> {
        self.sync_outbox().await?;
        let row = sqlx::query(mapping_query!(
            "account_id = $1 AND xmpp_id = $2",
            "account_id = $1 AND stanza_id = $2",
        ))
        .bind(account.0)
        .bind(xmpp_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(mapping_from_row).transpose()
    }

    /// The XMPP stanza id a foreign message was given.
    pub async fn xmpp_for_remote(
        &self,
        account: AccountId,
        remote_message_id: &str,
    ) -> Result<Option<MessageMapping>, StoreError> {
        self.sync_outbox().await?;
        let row = sqlx::query(mapping_query!(
            "account_id = $1 AND remote_message_id = $2",
            "remote_message_id = $2 AND account_id = $1",
        ))
        .bind(account.0)
        .bind(remote_message_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(mapping_from_row).transpose()
    }

    /// Deletes mappings made before `before_ms`; returns how many.
    pub async fn prune_message_map(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM message_map WHERE created_at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Notes that `account` has received the foreign message `remote_message_id`. True the
    /// first time only, atomically: of any number of concurrent calls, exactly one wins.
    pub async fn mark_inbound(
        &self,
        account: AccountId,
        remote_message_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO inbound_seen (account_id, remote_message_id, seen_at_ms)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(account.0)
        .bind(remote_message_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// [`Store::mark_inbound`], and in the same transaction sets the bridge's
    /// `checkpoint` (whether or not the message was new), so a read position never runs
    /// ahead of, or behind, what was recorded as delivered.
    pub async fn mark_inbound_with(
        &self,
        account: AccountId,
        remote_message_id: &str,
        checkpoint: Option<&ferry_bridge_api::Checkpoint>,
    ) -> Result<bool, StoreError> {
        let Some(cp) = checkpoint else {
            return self.mark_inbound(account, remote_message_id).await;
        };
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO inbound_seen (account_id, remote_message_id, seen_at_ms)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(account.0)
        .bind(remote_message_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO kv (scope, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
        )
        .bind(&cp.scope)
        .bind(&cp.key)
        .bind(&cp.value)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The latest message of `thread` for `account`, either way.
    pub async fn latest_in_thread(
        &self,
        account: AccountId,
        thread: &str,
    ) -> Result<Option<MessageMapping>, StoreError> {
        self.sync_outbox().await?;
        let row = sqlx::query(mapping_query!(
            "account_id = $1 AND thread = $2",
            "account_id = $1 AND thread = $2",
        ))
        .bind(account.0)
        .bind(thread)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(mapping_from_row).transpose()
    }

    /// Undoes [`Store::mark_inbound`] when delivery failed after marking, so the message
    /// is taken again next time; true if there was a mark.
    pub async fn unmark_inbound(
        &self,
        account: AccountId,
        remote_message_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM inbound_seen WHERE account_id = $1 AND remote_message_id = $2",
        )
        .bind(account.0)
        .bind(remote_message_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets de-duplication marks older than `before_ms`; returns how many. Only prune
    /// beyond the horizon in which a foreign side could deliver the same id again.
    pub async fn prune_inbound_seen(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM inbound_seen WHERE seen_at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
