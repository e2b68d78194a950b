//! What the email bridge keeps in ferry's database, behind a trait the core implements:
//! each mailbox's read position (UIDVALIDITY, last UID handed on) and attachments served
//! under `/media/`.
//!
//! The position normally advances in the same transaction that records a delivered mail
//! (the core writes an [`ferry_bridge_api::InboundMessage::checkpoint`]); the bridge sets
//! it itself only when it starts afresh (a first login, a new UIDVALIDITY).

use async_trait::async_trait;
use ferry_bridge_api::{AccountId, BridgeError, Checkpoint};

/// A mailbox read position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub validity: u32,
    /// The highest UID already handed on.
    pub uid: u32,
}

impl Cursor {
    /// The checkpoint key of `account`'s `mailbox`.
    pub fn key(account: AccountId, mailbox: &str) -> String {
        format!("cursor:{}:{mailbox}", account.0)
    }

    pub fn encode(self) -> String {
        format!("{}:{}", self.validity, self.uid)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (v, u) = s.split_once(':')?;
        Some(Cursor {
            validity: v.parse().ok()?,
            uid: u.parse().ok()?,
        })
    }

    /// The checkpoint that records this position with a delivered mail.
    pub fn checkpoint(self, account: AccountId, mailbox: &str) -> Checkpoint {
        Checkpoint {
            scope: "email".into(),
            key: Cursor::key(account, mailbox),
            value: self.encode(),
        }
    }
}

#[async_trait]
pub trait EmailStore: Send + Sync {
    /// The kept value under `scope`/`key` (see [`Cursor::key`]).
    async fn checkpoint(&self, scope: &str, key: &str) -> Result<Option<String>, BridgeError>;

    /// Sets it outright.
    async fn set_checkpoint(&self, scope: &str, key: &str, value: &str) -> Result<(), BridgeError>;

    /// Keeps an attachment for `/media/{token}/{name}`; returns the token.
    async fn put_media(
        &self,
        name: &str,
        content_type: &str,
        data: Vec<u8>,
    ) -> Result<String, BridgeError>;

    /// Forgets attachments kept since before `before_ms`.
    async fn prune_media(&self, before_ms: i64) -> Result<u64, BridgeError>;
}
