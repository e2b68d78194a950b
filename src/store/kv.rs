//! A small key/value table (`kv`) where bridges keep state that fits no other table:
//! IMAP cursors, feed validators, provider bookkeeping. Keys are namespaced by `scope`.

use super::{Store, StoreError};

impl Store {
    /// The value under (`scope`, `key`), if any.
    pub async fn kv_get(&self, scope: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM kv WHERE scope = $1 AND key = $2")
                .bind(scope)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Sets (`scope`, `key`) to `value`, replacing any earlier value.
    pub async fn kv_set(&self, scope: &str, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO kv (scope, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
        )
        .bind(scope)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes (`scope`, `key`); true if it was there.
    pub async fn kv_delete(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM kv WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
