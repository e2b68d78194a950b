//! The email bridge's state in ferry's database, behind its [`EmailStore`]: mailbox read
//! positions in `kv` (advanced atomically with delivered mail by
//! [`Store::mark_inbound_with`]) and attachments in `media`.

use async_trait::async_trait;
use ferry_bridge_api::BridgeError;
use ferry_email::store::EmailStore;

use super::{Store, StoreError};

fn db(e: StoreError) -> BridgeError {
    super::sms::bridge_err(e)
}

#[async_trait]
impl EmailStore for Store {
    async fn checkpoint(&self, scope: &str, key: &str) -> Result<Option<String>, BridgeError> {
        self.kv_get(scope, key).await.map_err(db)
    }

    async fn set_checkpoint(&self, scope: &str, key: &str, value: &str) -> Result<(), BridgeError> {
        self.kv_set(scope, key, value).await.map_err(db)
    }

    async fn put_media(
        &self,
        name: &str,
        content_type: &str,
        data: Vec<u8>,
    ) -> Result<String, BridgeError> {
        self.keep_media(name, content_type, data).await.map_err(db)
    }

    async fn prune_media(&self, before_ms: i64) -> Result<u64, BridgeError> {
        Store::prune_media(self, before_ms).await.map_err(db)
    }
}
