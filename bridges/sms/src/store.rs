//! What the SMS bridge keeps in ferry's database, behind a trait the core implements:
//! which user claimed which gateway number, who opted out, inbound texts accepted from
//! webhooks until they reach XMPP (unique by provider message id, so a webhook delivered
//! twice is taken once), parts of long texts waiting for their siblings, and media.

use async_trait::async_trait;
use ferry_bridge_api::{AccountId, BridgeError};

/// Who holds a gateway number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub number: String,
    /// The bare JID of the user.
    pub jid: String,
}

/// Whether a claim went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed,
    /// Another user holds it.
    TakenBy(String),
}

/// How many texts an account handed to the gateway (outbox rows), for the quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextCounts {
    /// Since the start of the quota's window.
    pub since: i64,
    /// Since the mark (the oldest text admitted that may not have been stored yet).
    pub since_mark: i64,
}

/// An inbound text, as accepted from a webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInbound {
    pub provider: String,
    pub message_id: String,
    pub account: AccountId,
    /// The sender (canonical number).
    pub sender: String,
    /// The gateway number (canonical).
    pub recipient: String,
    pub body: String,
    /// JSON array of `{url, content_type}`.
    pub media: String,
}

/// An accepted inbound text not yet handed to XMPP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInbound {
    pub id: i64,
    pub text: NewInbound,
}

/// One part of a long text (Vonage `concat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPart {
    pub provider: String,
    pub sender: String,
    pub reference: String,
    pub index: u32,
    pub total: u32,
    pub body: String,
}

/// The SMS bridge's tables.
#[async_trait]
pub trait SmsStore: Send + Sync {
    /// Gives `number` to `jid` unless someone else holds it; `jid`'s other numbers are
    /// released (one number per user).
    async fn claim_number(&self, number: &str, jid: &str) -> Result<ClaimOutcome, BridgeError>;

    /// Gives `number` to `jid` whoever held it (an admin's assignment).
    async fn assign_number(&self, number: &str, jid: &str) -> Result<(), BridgeError>;

    /// Releases `number`; true when it was held.
    async fn release_number(&self, number: &str) -> Result<bool, BridgeError>;

    /// Releases every number `jid` holds.
    async fn release_numbers_of(&self, jid: &str) -> Result<(), BridgeError>;

    async fn claims(&self) -> Result<Vec<Claim>, BridgeError>;

    /// The registered SMS account of whoever holds `number`.
    async fn owner_account(&self, number: &str) -> Result<Option<AccountId>, BridgeError>;

    /// The account that sent the text the provider calls `message_id` (from the outbox).
    async fn account_for_sent(&self, message_id: &str) -> Result<Option<AccountId>, BridgeError>;

    /// Records that `remote` opted out of texts from `number` (`true`) or back in.
    async fn set_opt_out(&self, number: &str, remote: &str, out: bool) -> Result<(), BridgeError>;

    async fn opted_out(&self, number: &str, remote: &str) -> Result<bool, BridgeError>;

    /// Texts `account` handed to the gateway since `since_ms` (the quota's window), and how
    /// many of them since `mark_ms`, read in one statement so that the two agree.
    async fn texts_since(
        &self,
        account: AccountId,
        since_ms: i64,
        mark_ms: i64,
    ) -> Result<TextCounts, BridgeError>;

    /// Keeps an inbound text; false when the provider's id was taken before (a repeated
    /// webhook). Of any number of concurrent calls with one id, exactly one returns true.
    async fn accept_inbound(&self, text: &NewInbound) -> Result<bool, BridgeError>;

    /// Accepted texts not yet handed to XMPP, oldest first.
    async fn pending_inbound(&self, limit: i64) -> Result<Vec<PendingInbound>, BridgeError>;

    async fn inbound_delivered(&self, id: i64) -> Result<(), BridgeError>;

    /// Keeps a part; when it completes its text, removes the parts and returns their
    /// bodies joined in order.
    async fn put_part(&self, part: &NewPart) -> Result<Option<String>, BridgeError>;

    /// Keeps media for `/media/{token}/{name}`; returns the token.
    async fn put_media(
        &self,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<String, BridgeError>;

    /// Forgets delivered texts and stale parts older than `before_ms`.
    async fn prune(&self, before_ms: i64) -> Result<(), BridgeError>;
}
