//! The SMS bridge's tables (`sms_claims`, `sms_opt_outs`, `sms_inbound`, `sms_parts`) and
//! the `media` table, behind the bridge's [`SmsStore`]; plus reading media back for
//! `/media/{token}/{name}`.

use async_trait::async_trait;
use ferry_bridge_api::{AccountId, BridgeError};
use ferry_sms::store::{
    Claim, ClaimOutcome, NewInbound, NewPart, PendingInbound, SmsStore, TextCounts,
};
use rand::RngCore;
use sqlx::Row;

use super::{Store, StoreError, now_ms};

pub(super) fn bridge_err(e: StoreError) -> BridgeError {
    if e.is_transient() {
        BridgeError::transient(format!("database: {e}"))
    } else {
        BridgeError::permanent(format!("database: {e}"))
    }
}

fn db(e: sqlx::Error) -> BridgeError {
    bridge_err(StoreError::from(e))
}

/// A stored attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaItem {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

impl Store {
    /// The attachment kept under `token`, if any.
    pub async fn media(&self, token: &str) -> Result<Option<MediaItem>, StoreError> {
        let row = sqlx::query("SELECT name, content_type, data FROM media WHERE token = $1")
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(MediaItem {
                name: r.try_get("name")?,
                content_type: r.try_get("content_type")?,
                data: r.try_get("data")?,
            }),
            None => None,
        })
    }

    /// Keeps `data` for `/media/{token}/{name}`; returns the token (192 random bits).
    pub async fn keep_media(
        &self,
        name: &str,
        content_type: &str,
        data: Vec<u8>,
    ) -> Result<String, StoreError> {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        sqlx::query(
            "INSERT INTO media (token, name, content_type, data, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token)
        .bind(name)
        .bind(content_type)
        .bind(data)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// Forgets attachments kept before `before_ms`.
    pub async fn prune_media(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM media WHERE created_at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl SmsStore for Store {
    async fn claim_number(&self, number: &str, jid: &str) -> Result<ClaimOutcome, BridgeError> {
        let mut tx = self.begin_write().await.map_err(bridge_err)?;
        let holder: Option<String> = sqlx::query("SELECT jid FROM sms_claims WHERE number = $1")
            .bind(number)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .map(|r| r.try_get("jid"))
            .transpose()
            .map_err(db)?;
        match holder {
            Some(h) if h != jid => return Ok(ClaimOutcome::TakenBy(h)),
            Some(_) => {}
            None => {
                sqlx::query(
                    "INSERT INTO sms_claims (number, jid, claimed_at_ms) VALUES ($1, $2, $3)",
                )
                .bind(number)
                .bind(jid)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        sqlx::query("DELETE FROM sms_claims WHERE jid = $1 AND number <> $2")
            .bind(jid)
            .bind(number)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(ClaimOutcome::Claimed)
    }

    async fn assign_number(&self, number: &str, jid: &str) -> Result<(), BridgeError> {
        let mut tx = self.begin_write().await.map_err(bridge_err)?;
        sqlx::query("DELETE FROM sms_claims WHERE number = $1 OR jid = $2")
            .bind(number)
            .bind(jid)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("INSERT INTO sms_claims (number, jid, claimed_at_ms) VALUES ($1, $2, $3)")
            .bind(number)
            .bind(jid)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn release_number(&self, number: &str) -> Result<bool, BridgeError> {
        let done = sqlx::query("DELETE FROM sms_claims WHERE number = $1")
            .bind(number)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_numbers_of(&self, jid: &str) -> Result<(), BridgeError> {
        sqlx::query("DELETE FROM sms_claims WHERE jid = $1")
            .bind(jid)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn claims(&self) -> Result<Vec<Claim>, BridgeError> {
        let rows = sqlx::query("SELECT number, jid FROM sms_claims ORDER BY number")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Claim {
                    number: r.try_get("number").map_err(db)?,
                    jid: r.try_get("jid").map_err(db)?,
                })
            })
            .collect()
    }

    async fn owner_account(&self, number: &str) -> Result<Option<AccountId>, BridgeError> {
        let row = sqlx::query(
            "SELECT a.id FROM sms_claims c JOIN accounts a ON a.bridge = 'sms' AND a.jid = c.jid
             WHERE c.number = $1",
        )
        .bind(number)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| r.try_get::<i64, _>("id").map(AccountId))
            .transpose()
            .map_err(db)
    }

    async fn account_for_sent(&self, message_id: &str) -> Result<Option<AccountId>, BridgeError> {
        self.sync_outbox().await.map_err(bridge_err)?;
        let row = sqlx::query(
            "SELECT account_id FROM outbox WHERE bridge = 'sms' AND remote_message_id = $1
             LIMIT 1",
        )
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(r) = row {
            return r
                .try_get::<i64, _>("account_id")
                .map(|a| Some(AccountId(a)))
                .map_err(db);
        }
        // ferry's own reference (`sms-ROWID`), which a report can name before the row is
        // settled with it.
        let Some(id) = message_id
            .strip_prefix("sms-")
            .and_then(|n| n.parse::<i64>().ok())
        else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT account_id FROM outbox WHERE bridge = 'sms' AND id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| r.try_get::<i64, _>("account_id").map(AccountId))
            .transpose()
            .map_err(db)
    }

    async fn set_opt_out(&self, number: &str, remote: &str, out: bool) -> Result<(), BridgeError> {
        let q = if out {
            sqlx::query(
                "INSERT INTO sms_opt_outs (number, remote, at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (number, remote) DO UPDATE SET at_ms = excluded.at_ms",
            )
            .bind(number)
            .bind(remote)
            .bind(now_ms())
        } else {
            sqlx::query("DELETE FROM sms_opt_outs WHERE number = $1 AND remote = $2")
                .bind(number)
                .bind(remote)
        };
        q.execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn opted_out(&self, number: &str, remote: &str) -> Result<bool, BridgeError> {
        let row = sqlx::query("SELECT 1 AS x FROM sms_opt_outs WHERE number = $1 AND remote = $2")
            .bind(number)
            .bind(remote)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn texts_since(
        &self,
        account: AccountId,
        since_ms: i64,
        mark_ms: i64,
    ) -> Result<TextCounts, BridgeError> {
        self.sync_outbox().await.map_err(bridge_err)?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COUNT(CASE WHEN created_at_ms >= $3 THEN 1 END) AS m
             FROM outbox
             WHERE account_id = $1 AND bridge = 'sms' AND created_at_ms >= $2",
        )
        .bind(account.0)
        .bind(since_ms)
        .bind(mark_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(TextCounts {
            since: row.try_get::<i64, _>("n").map_err(db)?,
            since_mark: row.try_get::<i64, _>("m").map_err(db)?,
        })
    }

    async fn accept_inbound(&self, t: &NewInbound) -> Result<bool, BridgeError> {
        let done = sqlx::query(
            "INSERT INTO sms_inbound (provider, message_id, account_id, sender, recipient, body,
                 media, received_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&t.provider)
        .bind(&t.message_id)
        .bind(t.account.0)
        .bind(&t.sender)
        .bind(&t.recipient)
        .bind(&t.body)
        .bind(&t.media)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_inbound(&self, limit: i64) -> Result<Vec<PendingInbound>, BridgeError> {
        let rows = sqlx::query(
            "SELECT id, provider, message_id, account_id, sender, recipient, body, media
             FROM sms_inbound WHERE delivered_at_ms IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(PendingInbound {
                    id: r.try_get("id")?,
                    text: NewInbound {
                        provider: r.try_get("provider")?,
                        message_id: r.try_get("message_id")?,
                        account: AccountId(r.try_get("account_id")?),
                        sender: r.try_get("sender")?,
                        recipient: r.try_get("recipient")?,
                        body: r.try_get("body")?,
                        media: r.try_get("media")?,
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }

    async fn inbound_delivered(&self, id: i64) -> Result<(), BridgeError> {
        sqlx::query("UPDATE sms_inbound SET delivered_at_ms = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn put_part(&self, part: &NewPart) -> Result<Option<String>, BridgeError> {
        let mut tx = self.begin_write().await.map_err(bridge_err)?;
        sqlx::query(
            "INSERT INTO sms_parts (provider, sender, reference, part_index, total, body,
                 received_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&part.provider)
        .bind(&part.sender)
        .bind(&part.reference)
        .bind(i64::from(part.index))
        .bind(i64::from(part.total))
        .bind(&part.body)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let rows = sqlx::query(
            "SELECT part_index, body FROM sms_parts
             WHERE provider = $1 AND sender = $2 AND reference = $3 ORDER BY part_index",
        )
        .bind(&part.provider)
        .bind(&part.sender)
        .bind(&part.reference)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        if rows.len() < part.total as usize {
            tx.commit().await.map_err(db)?;
            return Ok(None);
        }
        let mut text = String::new();
        for r in &rows {
            text.push_str(&r.try_get::<String, _>("body").map_err(db)?);
        }
        sqlx::query("DELETE FROM sms_parts WHERE provider = $1 AND sender = $2 AND reference = $3")
            .bind(&part.provider)
            .bind(&part.sender)
            .bind(&part.reference)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(text))
    }

    async fn put_media(
        &self,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<String, BridgeError> {
        self.keep_media(name, content_type, bytes.to_vec())
            .await
            .map_err(bridge_err)
    }

    async fn prune(&self, before_ms: i64) -> Result<(), BridgeError> {
        sqlx::query(
            "DELETE FROM sms_inbound WHERE delivered_at_ms IS NOT NULL AND received_at_ms < $1",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM sms_parts WHERE received_at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        // Media is kept at least 30 days (SPEC §6); 60 to be safe.
        self.prune_media(now_ms() - 60 * 24 * 3_600_000)
            .await
            .map_err(bridge_err)?;
        Ok(())
    }
}
