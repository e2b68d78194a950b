//! Foreign identities and the JID localparts they go by (`identities`, unique both ways per
//! bridge), and which of them each account has been introduced to (`contacts`).

use ferry_bridge_api::{AccountId, BridgeKind};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms, parse_bridge};

/// How many `-N` suffixes [`Store::ensure_identity`] tries before giving up.
const MAX_SUFFIX: u32 = 10_000;

/// A foreign identity as the store numbers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: i64,
    pub bridge: BridgeKind,
    /// The bridge's canonical foreign id (address, E.164 number, feed URL).
    pub remote_id: String,
    /// The JID localpart, unescaped and lowercase (the core applies XEP-0106).
    pub localpart: String,
    /// How the identity was first spelled, if known.
    pub display: Option<String>,
}

fn identity_from_row(row: &AnyRow) -> Result<Identity, StoreError> {
    Ok(Identity {
        id: row.try_get("id")?,
        bridge: parse_bridge(&row.try_get::<String, _>("bridge")?)?,
        remote_id: row.try_get("remote_id")?,
        localpart: row.try_get("localpart")?,
        display: row.try_get("display")?,
    })
}

/// Localparts are compared case-insensitively by XMPP servers, so the store keeps them in
/// lowercase and looks them up the same way.
fn normalize_localpart(localpart: &str) -> String {
    localpart.to_lowercase()
}

impl Store {
    /// The identity with foreign id `remote` (exact match).
    pub async fn identity_by_remote(
        &self,
        bridge: BridgeKind,
        remote: &str,
    ) -> Result<Option<Identity>, StoreError> {
        let row = sqlx::query(
            "SELECT id, bridge, remote_id, localpart, display FROM identities
             WHERE bridge = $1 AND remote_id = $2",
        )
        .bind(bridge.as_str())
        .bind(remote)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(identity_from_row).transpose()
    }

    /// The identity going by `localpart` (unescaped; any case).
    pub async fn identity_by_localpart(
        &self,
        bridge: BridgeKind,
        localpart: &str,
    ) -> Result<Option<Identity>, StoreError> {
        let row = sqlx::query(
            "SELECT id, bridge, remote_id, localpart, display FROM identities
             WHERE bridge = $1 AND localpart = $2",
        )
        .bind(bridge.as_str())
        .bind(normalize_localpart(localpart))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(identity_from_row).transpose()
    }

    /// Returns the identity for `remote`, creating it if needed with `preferred_localpart`
    /// (lowercased). When `derived` is false and that localpart belongs to another foreign
    /// id, tries `preferred-2`, `preferred-3`, …; when `derived` is true that is a
    /// [`StoreError::Conflict`]. An existing identity without a display name gets `display`.
    ///
    /// Race-safe: the unique constraints decide, and a lost race re-reads, so concurrent
    /// calls for one foreign id all return the same row.
    pub async fn ensure_identity(
        &self,
        bridge: BridgeKind,
        remote: &str,
        preferred_localpart: &str,
        display: Option<&str>,
        derived: bool,
    ) -> Result<Identity, StoreError> {
        let base = normalize_localpart(preferred_localpart);
        if base.is_empty() {
            return Err(StoreError::Invalid("empty localpart".into()));
        }
        if remote.is_empty() {
            return Err(StoreError::Invalid("empty foreign id".into()));
        }
        let mut suffix: u32 = 1;
        // Each turn either returns, moves to the next suffix, or retries after losing a race
        // to a row that has since vanished; bound the latter so nothing spins forever.
        let mut turns: u32 = 0;
        loop {
            turns += 1;
            if turns > MAX_SUFFIX + 100 {
                return Err(StoreError::Conflict(format!(
                    "could not settle a localpart for {remote:?}"
                )));
            }
            if let Some(mut existing) = self.identity_by_remote(bridge, remote).await? {
                if let (None, Some(display)) = (&existing.display, display) {
                    sqlx::query(
                        "UPDATE identities SET display = $1 WHERE id = $2 AND display IS NULL",
                    )
                    .bind(display)
                    .bind(existing.id)
                    .execute(&self.pool)
                    .await?;
                    existing.display = Some(display.to_owned());
                }
                return Ok(existing);
            }
            let candidate = if suffix == 1 {
                base.clone()
            } else {
                format!("{base}-{suffix}")
            };
            let row = sqlx::query(
                "INSERT INTO identities (bridge, remote_id, localpart, display, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING
                 RETURNING id, bridge, remote_id, localpart, display",
            )
            .bind(bridge.as_str())
            .bind(remote)
            .bind(&candidate)
            .bind(display)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return identity_from_row(&row);
            }
            // Conflict: either someone else just created this foreign id (the next turn
            // finds it), or the localpart belongs to another foreign id.
            let owner = self.identity_by_localpart(bridge, &candidate).await?;
            match owner {
                Some(owner) if owner.remote_id != remote => {
                    if derived {
                        return Err(StoreError::Conflict(format!(
                            "localpart {candidate:?} of {bridge} already belongs to another \
                             foreign id"
                        )));
                    }
                    suffix += 1;
                    if suffix > MAX_SUFFIX {
                        return Err(StoreError::Conflict(format!(
                            "no free localpart left for {base:?}"
                        )));
                    }
                }
                _ => {}
            }
        }
    }

    /// Records that `account` has been introduced to `identity_id` (roster entry, nickname).
    /// Returns true the first time.
    pub async fn introduce_contact(
        &self,
        account: AccountId,
        identity_id: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO contacts (account_id, identity_id, introduced_at_ms)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(account.0)
        .bind(identity_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The identities `account` has been introduced to, in the order it met them.
    pub async fn contacts(&self, account: AccountId) -> Result<Vec<Identity>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.id, i.bridge, i.remote_id, i.localpart, i.display
             FROM contacts c JOIN identities i ON i.id = c.identity_id
             WHERE c.account_id = $1 ORDER BY c.introduced_at_ms, i.id",
        )
        .bind(account.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(identity_from_row).collect()
    }

    /// Forgets that `account` knows `identity_id`; true if it did.
    pub async fn remove_contact(
        &self,
        account: AccountId,
        identity_id: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM contacts WHERE account_id = $1 AND identity_id = $2")
            .bind(account.0)
            .bind(identity_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
