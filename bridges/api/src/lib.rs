//! The boundary between ferry's XMPP core and its bridges.
//!
//! A bridge knows one foreign network (mail, SMS, feeds) and nothing of XMPP: it never sees
//! XML or a JID, only an [`AccountId`] (a registered user of this bridge) and [`RemoteId`]s
//! (foreign identities, opaque to the core). The core owns translation, storage and the
//! XMPP link; a bridge owns parsing its own addresses, logging in, sending and receiving.
//!
//! [`fake`] holds a test double that records what it is asked to send.

#![forbid(unsafe_code)]

pub mod fake;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

/// Which foreign network a bridge speaks; also the label of its metrics and store rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BridgeKind {
    Email,
    Sms,
    Rss,
}

impl BridgeKind {
    pub const ALL: [BridgeKind; 3] = [BridgeKind::Email, BridgeKind::Sms, BridgeKind::Rss];

    /// The short name used in config tables, metrics labels and store rows.
    pub fn as_str(self) -> &'static str {
        match self {
            BridgeKind::Email => "email",
            BridgeKind::Sms => "sms",
            BridgeKind::Rss => "rss",
        }
    }

    /// The XEP-0030 identity (category, type) of the gateway domain.
    pub fn disco_identity(self) -> (&'static str, &'static str) {
        match self {
            BridgeKind::Email => ("gateway", "smtp"),
            BridgeKind::Sms => ("gateway", "sms"),
            BridgeKind::Rss => ("headline", "rss"),
        }
    }
}

impl fmt::Display for BridgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered user of one bridge, as the store numbers them. Opaque to bridges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub i64);

/// A foreign identity in the canonical form its bridge chose (an address, an E.164 number,
/// a feed URL). Only the owning bridge interprets it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteId(pub String);

impl RemoteId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RemoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the core learns when a bridge reads a foreign address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedAddress {
    /// The canonical foreign id; two spellings of one identity give the same id.
    pub id: RemoteId,
    /// The JID localpart the bridge would like, unescaped (the core applies XEP-0106).
    /// For bridges with [`Bridge::localparts_are_derived`] false, the store makes it unique
    /// by appending `-2`, `-3`, …
    pub localpart: String,
    /// How the user spelled it, kept for display and outgoing headers.
    pub display: String,
}

/// The user-supplied values of a registration form (field var → value).
pub type FormValues = BTreeMap<String, String>;

/// Credentials a bridge asked the core to keep (encrypted at rest); field → value.
pub type Credentials = BTreeMap<String, String>;

/// One field of an XEP-0004 form, without any XML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormField {
    pub var: String,
    pub kind: FieldKind,
    pub label: String,
    pub required: bool,
    /// The default value offered to the user.
    pub value: Option<String>,
    /// For `ListSingle`: (label, value).
    pub options: Vec<(String, String)>,
}

/// XEP-0004 field types a bridge may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    TextSingle,
    /// Several lines; each line comes back as a `<value/>` of its own.
    TextMulti,
    TextPrivate,
    ListSingle,
    Boolean,
    Fixed,
}

impl FieldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::TextSingle => "text-single",
            FieldKind::TextMulti => "text-multi",
            FieldKind::TextPrivate => "text-private",
            FieldKind::ListSingle => "list-single",
            FieldKind::Boolean => "boolean",
            FieldKind::Fixed => "fixed",
        }
    }
}

impl FormField {
    pub fn text(var: &str, label: &str, required: bool, value: Option<String>) -> Self {
        FormField {
            var: var.to_owned(),
            kind: FieldKind::TextSingle,
            label: label.to_owned(),
            required,
            value,
            options: Vec::new(),
        }
    }

    pub fn private(var: &str, label: &str, required: bool) -> Self {
        FormField {
            kind: FieldKind::TextPrivate,
            ..FormField::text(var, label, required, None)
        }
    }
}

/// A registration form: instructions and fields. An empty field list means the bridge
/// needs no credentials (RSS), and registering is a formality.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    pub title: String,
    pub instructions: String,
    pub fields: Vec<FormField>,
}

/// A message on its way from a user to the foreign side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbound {
    /// A stable id for this message (the outbox row's), usable as Message-ID material.
    pub key: String,
    pub body: String,
    pub subject: Option<String>,
    /// The XMPP `<thread/>` value, if any.
    pub thread: Option<String>,
    /// The remote message id this replies to (XEP-0461), if the core could map it.
    pub in_reply_to: Option<String>,
    /// XEP-0066 / XEP-0363 links to send as attachments or media.
    pub links: Vec<String>,
    /// When the user wrote it (XEP-0203 delay), unix milliseconds.
    pub sent_at_ms: Option<i64>,
    /// The recipient as the user first spelled it (the contact's display form), for
    /// outgoing headers; the [`RemoteId`] is the canonical form.
    pub to_display: Option<String>,
}

/// What a successful send tells the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    /// The foreign side's id for the message (Message-ID, provider message id).
    pub remote_message_id: String,
    /// True when the foreign side has taken the message for good (SMTP 250): the core sends
    /// the XEP-0184 receipt now. False when a delivery report will follow as
    /// [`RemoteEvent::Delivered`].
    pub delivered: bool,
    /// Something the user should know about how it went out (e.g. "sent as 3 SMS
    /// segments"), said by the gateway JID.
    pub notice: Option<String>,
}

/// A message from the foreign side for the user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundMessage {
    pub from: Option<RemoteId>,
    /// The de-duplication key (Message-ID, (UIDVALIDITY, UID), provider id, entry id).
    pub remote_message_id: String,
    pub body: String,
    pub subject: Option<String>,
    pub thread: Option<String>,
    /// Display name of the sender, for the XEP-0172 nickname on first contact.
    pub nick: Option<String>,
    pub links: Vec<String>,
    /// Send as `headline` rather than `chat`.
    pub headline: bool,
    /// Foreign ids of the messages this one answers, the one it directly replies to
    /// first (In-Reply-To, then References newest first). The core continues the XMPP
    /// thread of the first it knows and marks the reply (XEP-0461).
    pub references: Vec<String>,
    /// Bridge state to record in the same transaction that records this message as
    /// delivered (an IMAP read position), so the two never disagree after a crash.
    pub checkpoint: Option<Checkpoint>,
}

/// A value the core stores for a bridge (`scope`, `key`) → `value`, atomically with the
/// message that carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub scope: String,
    pub key: String,
    pub value: String,
}

/// Whether the upstream (mailbox, provider) works for this user, shown on the gateway's
/// presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    Online(String),
    Failing(String),
}

/// What a session reports to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteEvent {
    Message(InboundMessage),
    /// A delivery report for a message this session sent earlier.
    Delivered {
        remote_message_id: String,
    },
    /// A delivery failure reported after acceptance.
    Failed {
        remote_message_id: String,
        error: BridgeError,
    },
    Status(SessionStatus),
    /// A subscription the user asked for ([`Subscriptions::follow`]) is in place: the core
    /// confirms it and asks the user to add the contact, with `nick` as its nickname.
    Followed {
        contact: RemoteId,
        nick: Option<String>,
    },
    /// A subscription the user asked for cannot be honoured; `reason` says why.
    FollowRefused {
        contact: RemoteId,
        reason: String,
    },
    /// A contact's presence changed (a feed's title, last update, or error).
    ContactStatus {
        contact: RemoteId,
        state: ContactState,
    },
}

/// What a contact shows on its presence and vCard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactState {
    /// False shows the contact as `xa` (extended away): its upstream fails.
    pub available: bool,
    /// The status text.
    pub status: Option<String>,
    /// A display name (vCard FN, disco identity name).
    pub name: Option<String>,
    /// An image for the vCard, as a URL.
    pub avatar_url: Option<String>,
}

/// One contact a user follows, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follow {
    pub contact: RemoteId,
    pub name: Option<String>,
    /// The contact's own address (a feed's URL), for export.
    pub address: String,
    pub state: ContactState,
}

/// Where an import comes from: a file's bytes or a link to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportSource {
    Bytes(Vec<u8>),
    Url(String),
}

/// Gateway-wide work a bridge does beside its per-user sessions (polling feeds), and the
/// channel its results travel on. Events are tagged with the account they are for.
#[derive(Clone)]
pub struct Hub {
    pub events: mpsc::Sender<(AccountId, RemoteEvent)>,
    pub shutdown: Shutdown,
    /// Where [`Hub::count`] records (the core's metrics); opaque to bridges.
    pub counters: Arc<dyn Counters>,
}

/// A place to count outcomes (the core's metrics registry).
pub trait Counters: Send + Sync {
    fn count(&self, metric: &'static str, outcome: &'static str);

    /// Counts one message of `bridge` in `ferry_messages_total` (e.g. an inbound repeat
    /// a bridge dropped itself, as `("in", "duplicate")`).
    fn message(&self, bridge: BridgeKind, direction: &'static str, outcome: &'static str) {
        let _ = (bridge, direction, outcome);
    }
}

impl Hub {
    /// Counts one `outcome` of `metric` (e.g. `("ferry_feed_fetches_total", "ok")`).
    pub fn count(&self, metric: &'static str, outcome: &'static str) {
        self.counters.count(metric, outcome);
    }

    /// Counts one message in `ferry_messages_total`.
    pub fn count_message(
        &self,
        bridge: BridgeKind,
        direction: &'static str,
        outcome: &'static str,
    ) {
        self.counters.message(bridge, direction, outcome);
    }
}

/// Contacts a user follows rather than talks to (feeds): subscribing to a contact's
/// presence follows it, unsubscribing stops it. Bridges without such contacts return `None`
/// from [`Bridge::subscriptions`].
#[async_trait]
pub trait Subscriptions: Send + Sync {
    /// Starts following `contact` for `account`. The outcome arrives later as
    /// [`RemoteEvent::Followed`] or [`RemoteEvent::FollowRefused`] (after a first fetch).
    async fn follow(&self, account: AccountId, contact: &RemoteId) -> Result<(), BridgeError>;

    /// Stops following; true when there was something to stop.
    async fn unfollow(&self, account: AccountId, contact: &RemoteId) -> Result<bool, BridgeError>;

    /// Everything `account` follows.
    async fn following(&self, account: AccountId) -> Result<Vec<Follow>, BridgeError>;

    /// What `contact` shows, if the bridge knows it.
    async fn contact_state(&self, contact: &RemoteId) -> Option<ContactState>;

    /// Reads an import (OPML) into the addresses it lists.
    async fn read_import(&self, source: ImportSource) -> Result<Vec<String>, BridgeError>;

    /// Writes what `account` follows as an export document (OPML).
    async fn export(&self, account: AccountId) -> Result<String, BridgeError>;

    /// The user's settings as (name, value, allowed values).
    async fn settings(
        &self,
        account: AccountId,
    ) -> Result<Vec<(String, String, Vec<String>)>, BridgeError>;

    /// Changes one setting.
    async fn set_setting(
        &self,
        account: AccountId,
        name: &str,
        value: &str,
    ) -> Result<(), BridgeError>;
}

/// Where a session pushes its events; the core tags them with the account.
#[derive(Clone, Debug)]
pub struct EventSink {
    account: AccountId,
    tx: mpsc::Sender<(AccountId, RemoteEvent)>,
}

impl EventSink {
    pub fn new(account: AccountId, tx: mpsc::Sender<(AccountId, RemoteEvent)>) -> Self {
        EventSink { account, tx }
    }

    pub fn account(&self) -> AccountId {
        self.account
    }

    /// Hands an event to the core; fails only when the core is shutting down.
    pub async fn emit(&self, event: RemoteEvent) -> Result<(), BridgeError> {
        self.tx
            .send((self.account, event))
            .await
            .map_err(|_| BridgeError::transient("ferry is shutting down"))
    }
}

/// Becomes true when the process is shutting down; sessions return from `run` then.
pub type Shutdown = watch::Receiver<bool>;

/// What kind of failure, so the core can pick the XMPP error condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retrying later may help (4xx, connection lost, provider down).
    Transient,
    /// The address cannot be a foreign id at all.
    Malformed,
    /// The address is well-formed but refused (not a mobile number, opted out).
    NotAcceptable,
    /// The recipient does not exist or refuses mail.
    RecipientUnavailable,
    /// Credentials were refused.
    NotAuthorized,
    /// A limit was hit (quota, size).
    ResourceConstraint,
    /// The user is not allowed to do this.
    Forbidden,
    /// Something else that will not get better by retrying.
    Permanent,
}

/// A bridge's error: a kind that says what XMPP condition fits and whether to retry, and a
/// human text (lowercase, no trailing period) safe to show to the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct BridgeError {
    pub kind: ErrorKind,
    pub text: String,
}

impl BridgeError {
    pub fn new(kind: ErrorKind, text: impl Into<String>) -> Self {
        BridgeError {
            kind,
            text: text.into(),
        }
    }
    pub fn transient(text: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, text)
    }
    pub fn permanent(text: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, text)
    }
    pub fn malformed(text: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed, text)
    }
    /// Whether retrying the same operation later can succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// A command a bridge adds to its gateway's ad-hoc and chat commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeCommand {
    /// The ad-hoc node and the chat command's first word.
    pub node: &'static str,
    pub name: &'static str,
    /// One line for `help`: usage and what it does.
    pub help: &'static str,
    pub admin_only: bool,
    /// The form field (var, label) its argument comes in, as an ad-hoc command.
    pub field: Option<(&'static str, &'static str)>,
}

/// One per process and foreign network.
#[async_trait]
pub trait Bridge: Send + Sync + 'static {
    fn kind(&self) -> BridgeKind;

    /// A human name for the gateway (disco identity name, vCard).
    fn display_name(&self) -> String;

    /// XEP-0100 `jabber:iq:gateway` description and prompt.
    fn gateway_prompt(&self) -> (String, String);

    /// Whether a user must register (give credentials) before using the gateway.
    fn requires_registration(&self) -> bool;

    /// The registration form offered to `jid` (a bare JID as text, only for choosing
    /// defaults such as which numbers it may claim).
    fn registration_form(&self, user: &str) -> Form;

    /// Checks submitted registration values (logging in upstream where there is one) and
    /// returns the credentials to keep.
    async fn register(&self, user: &str, values: &FormValues) -> Result<Credentials, BridgeError>;

    /// Reads an address as a user typed it (gateway prompt, commands).
    fn parse_address(&self, raw: &str) -> Result<ParsedAddress, BridgeError>;

    /// Reads a JID localpart that the store does not know yet, already XEP-0106-unescaped
    /// by the core. `None` means it cannot name a contact of this bridge.
    fn parse_localpart(&self, localpart: &str) -> Option<ParsedAddress>;

    /// True when the localpart follows from the id alone (email, SMS): no suffixing needed.
    fn localparts_are_derived(&self) -> bool;

    /// Starts a session for a registered user.
    async fn login(
        &self,
        account: AccountId,
        user: &str,
        credentials: Credentials,
    ) -> Result<Arc<dyn Session>, BridgeError>;

    /// HTTP routes this bridge serves (webhooks), mounted at the root of `[http]`.
    fn http_routes(&self) -> Option<axum::Router> {
        None
    }

    /// Followable contacts (feeds), if this bridge has them.
    fn subscriptions(&self) -> Option<Arc<dyn Subscriptions>> {
        None
    }

    /// Gateway-wide background work (polling feeds) until `hub.shutdown` turns true.
    async fn serve(&self, _hub: Hub) {}

    /// Checks, before a message is stored, that `account` may send to `to` now (quotas,
    /// opt-outs). An error is the user's answer; nothing is stored.
    async fn admit(&self, _account: AccountId, _to: &RemoteId) -> Result<(), BridgeError> {
        Ok(())
    }

    /// `user` unregistered: forget what the bridge keeps for them outside the core's store.
    async fn unregister(&self, _user: &str) -> Result<(), BridgeError> {
        Ok(())
    }

    /// What is wrong gateway-wide (a provider that did not answer), for `/healthz`; empty
    /// when all is well.
    fn health(&self) -> Vec<String> {
        Vec::new()
    }

    /// Commands of this bridge beside the core's.
    fn commands(&self) -> Vec<BridgeCommand> {
        Vec::new()
    }

    /// Runs one of [`Bridge::commands`] for `user` (a bare JID; `admin` when it is one of
    /// `[xmpp] admins`); the text answer.
    async fn run_command(
        &self,
        _user: &str,
        _admin: bool,
        node: &str,
        _args: &str,
    ) -> Result<String, BridgeError> {
        Err(BridgeError::permanent(format!("unknown command {node:?}")))
    }
}

/// One per registered user and bridge.
#[async_trait]
pub trait Session: Send + Sync {
    /// Receives from upstream until `shutdown` turns true, pushing events into `events`.
    async fn run(&self, events: EventSink, shutdown: Shutdown) -> Result<(), BridgeError>;

    /// Hands one message to the foreign side.
    async fn send(&self, to: &RemoteId, msg: &Outbound) -> Result<SendReceipt, BridgeError>;
}
