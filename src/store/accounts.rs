//! Registered users of each bridge (`accounts`), with their credentials sealed by the
//! store's [`Cipher`](super::Cipher) and bound to their row.

use std::fmt;

use ferry_bridge_api::{AccountId, BridgeKind, Credentials};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms, parse_bridge};

/// A registered user of one bridge. `Debug` shows credential field names, never values.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub bridge: BridgeKind,
    /// Bare JID, lowercase.
    pub jid: String,
    /// Decrypted; empty for bridges that keep none.
    pub credentials: Credentials,
    pub created_at_ms: i64,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("bridge", &self.bridge)
            .field("jid", &self.jid)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// What a credentials blob is bound to: moving it to another (bridge, jid) breaks it.
fn credentials_aad(bridge: BridgeKind, jid: &str) -> Vec<u8> {
    let mut aad = b"ferry-credentials:v1:".to_vec();
    aad.extend_from_slice(bridge.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(jid.as_bytes());
    aad
}

/// How account JIDs are keyed: bare JIDs compare case-insensitively in practice.
fn normalize_jid(jid: &str) -> String {
    jid.trim().to_lowercase()
}

impl Store {
    fn seal_credentials(
        &self,
        bridge: BridgeKind,
        jid: &str,
        creds: &Credentials,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if creds.is_empty() {
            return Ok(None);
        }
        let json = serde_json::to_vec(creds)
            .map_err(|e| StoreError::Invalid(format!("credentials do not serialise: {e}")))?;
        Ok(Some(
            self.cipher.encrypt(&json, &credentials_aad(bridge, jid)),
        ))
    }

    fn account_from_row(&self, row: &AnyRow) -> Result<Account, StoreError> {
        let bridge = parse_bridge(&row.try_get::<String, _>("bridge")?)?;
        let jid: String = row.try_get("jid")?;
        let blob: Option<Vec<u8>> = row.try_get("credentials")?;
        let credentials = match blob {
            None => Credentials::new(),
            Some(blob) => {
                let json = self.cipher.decrypt(&blob, &credentials_aad(bridge, &jid))?;
                serde_json::from_slice(&json).map_err(|e| {
                    StoreError::Corrupt(format!("credentials of {jid} are not a json map: {e}"))
                })?
            }
        };
        Ok(Account {
            id: AccountId(row.try_get("id")?),
            bridge,
            jid,
            credentials,
            created_at_ms: row.try_get("created_at_ms")?,
        })
    }

    /// Registers `jid` (a bare JID; stored lowercase) with `bridge`, or replaces the
    /// credentials of an existing registration, keeping its id.
    pub async fn upsert_account(
        &self,
        bridge: BridgeKind,
        jid: &str,
        creds: &Credentials,
    ) -> Result<AccountId, StoreError> {
        let jid = normalize_jid(jid);
        if jid.is_empty() {
            return Err(StoreError::Invalid("empty jid".into()));
        }
        let sealed = self.seal_credentials(bridge, &jid, creds)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO accounts (bridge, jid, credentials, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (bridge, jid) DO UPDATE
             SET credentials = excluded.credentials, updated_at_ms = excluded.updated_at_ms
             RETURNING id",
        )
        .bind(bridge.as_str())
        .bind(&jid)
        .bind(sealed)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(AccountId(id))
    }

    /// The registration of `jid` (any case) with `bridge`. Fails with
    /// [`StoreError::Crypto`] if its credentials do not open.
    pub async fn account(
        &self,
        bridge: BridgeKind,
        jid: &str,
    ) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(
            "SELECT id, bridge, jid, credentials, created_at_ms FROM accounts
             WHERE bridge = $1 AND jid = $2",
        )
        .bind(bridge.as_str())
        .bind(normalize_jid(jid))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.account_from_row(&r)).transpose()
    }

    /// The account with this id, if it still exists.
    pub async fn account_by_id(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(
            "SELECT id, bridge, jid, credentials, created_at_ms FROM accounts WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.account_from_row(&r)).transpose()
    }

    /// Every registration with `bridge`, oldest first. An account whose credentials do not
    /// open (or do not parse) is left out with an error in the log, so one bad row does not
    /// keep everyone else offline.
    pub async fn accounts(&self, bridge: BridgeKind) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, bridge, jid, credentials, created_at_ms FROM accounts
             WHERE bridge = $1 ORDER BY id",
        )
        .bind(bridge.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.account_from_row(row) {
                Ok(account) => out.push(account),
                Err(e @ (StoreError::Crypto | StoreError::Corrupt(_))) => {
                    let id: Option<i64> = row.try_get("id").ok();
                    tracing::error!(%bridge, account = ?id, error = %e, "skipping unreadable account");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// How many users have registered with `bridge`.
    pub async fn count_accounts(&self, bridge: BridgeKind) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE bridge = $1")
                .bind(bridge.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Unregisters `jid` from `bridge`: deletes the account with its credentials, contacts,
    /// message map, outbox rows and inbound de-duplication rows, in one transaction.
    /// Returns false if there was no such account.
    pub async fn remove_account(&self, bridge: BridgeKind, jid: &str) -> Result<bool, StoreError> {
        self.sync_outbox().await?;
        let mut tx = self.begin_write().await?;
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM accounts WHERE bridge = $1 AND jid = $2")
                .bind(bridge.as_str())
                .bind(normalize_jid(jid))
                .fetch_optional(&mut *tx)
                .await?;
        let Some(id) = id else {
            tx.rollback().await?;
            return Ok(false);
        };
        // ON DELETE CASCADE would do this too; spelling it out keeps removal complete even
        // on a connection where foreign keys are off.
        for sql in [
            "DELETE FROM outbox WHERE account_id = $1",
            "DELETE FROM message_map WHERE account_id = $1",
            "DELETE FROM inbound_seen WHERE account_id = $1",
            "DELETE FROM contacts WHERE account_id = $1",
            "DELETE FROM accounts WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
