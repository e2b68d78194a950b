//! One bridge's gateway domain: carries out the router's decisions. It owns the link's
//! outgoing queue, the bridge, and the per-user sessions, and it is where the XMPP side and
//! the bridge side meet (see [`crate::service`] for what the domain answers itself,
//! [`crate::outbox`] and [`crate::relay`] for the two message directions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_bridge_api::{
    AccountId, Bridge, BridgeError, BridgeKind, ContactState, ParsedAddress, RemoteEvent, RemoteId,
    SessionStatus,
};
use tokio::sync::{Notify, mpsc, watch};

use crate::component::Outgoing;
use crate::config::XmppConfig;
use crate::jid;
use crate::metrics::Metrics;
use crate::router::{self, Access, Route};
use crate::stanza::{self, Condition, Stanza, ns};
use crate::store::{Identity, NewOutbox, OutboxRow, Store};
use crate::xml::{Element, NS_COMPONENT};

impl Access for XmppConfig {
    fn is_allowed(&self, bare_jid: &str) -> bool {
        XmppConfig::is_allowed(self, bare_jid)
    }
    fn is_admin(&self, bare_jid: &str) -> bool {
        XmppConfig::is_admin(self, bare_jid)
    }
}

/// A running session of one registered user.
pub struct SessionEntry {
    /// The user's bare JID.
    pub user: String,
    /// Present once login succeeded; the outbox waits while it is absent.
    pub session: Option<Arc<dyn ferry_bridge_api::Session>>,
    /// What the gateway's presence tells this user.
    pub status: SessionStatus,
    /// Stops this session alone (unregistering) without stopping the process.
    pub stop: watch::Sender<bool>,
}

/// Everything one gateway domain needs.
pub struct Gateway {
    pub kind: BridgeKind,
    /// The component's JID.
    pub domain: String,
    pub bridge: Arc<dyn Bridge>,
    pub store: Store,
    /// The link's writer queue.
    pub out: Outgoing,
    /// Who may use it, and who administers it.
    pub access: XmppConfig,
    pub metrics: Metrics,
    /// Registered users' sessions by account.
    pub sessions: Mutex<HashMap<AccountId, SessionEntry>>,
    /// Wakes the outbox worker when a message is queued.
    pub outbox_wake: Notify,
    /// Rows the router stored already claimed, for the outbox worker to send without a
    /// claim of its own (their lease keeps other claimers off), and whether the worker
    /// should look in the store too.
    pub outbox_handoff: Mutex<OutboxHandoff>,
    /// Where sessions push their events (the relay reads the other end).
    pub events: mpsc::Sender<(AccountId, RemoteEvent)>,
    /// Process shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// When the gateway started, for `status`.
    pub started: Instant,
    /// Whether the component link is up, for `status` and `/healthz`.
    pub connected: watch::Receiver<bool>,
    /// Counts outbox rows settled as sent; watch it to learn that a send went through.
    pub settled: watch::Sender<u64>,
    /// Lookups the router needs for every message, kept in memory.
    pub caches: Caches,
}

/// A contact's presence to a user: available with its status text, `xa` when its
/// upstream fails.
pub fn contact_presence(contact: &str, user: &str, state: Option<&ContactState>) -> Element {
    let mut p = stanza::presence(contact, user, None);
    if let Some(state) = state {
        if !state.available {
            p.push(Element::text_child("show", NS_COMPONENT, "xa"));
        }
        if let Some(text) = &state.status {
            p.push(Element::text_child("status", NS_COMPONENT, text.clone()));
        }
    }
    p
}

/// Records (or finds) the identity for an address `bridge` has read, with its escaped
/// localpart; shared by the gateway and the commands that run without one.
pub async fn record_identity(
    store: &Store,
    bridge: &dyn Bridge,
    parsed: &ParsedAddress,
) -> Result<Identity, crate::store::StoreError> {
    let local = jid::escape_node(&parsed.localpart);
    store
        .ensure_identity(
            bridge.kind(),
            parsed.id.as_str(),
            &local,
            Some(parsed.display.as_str()),
            bridge.localparts_are_derived(),
        )
        .await
}

/// In-memory copies of store lookups on the hot path. The store stays the truth: entries
/// are added after a successful read or write and removed when the row goes away.
#[derive(Default)]
pub struct Caches {
    /// Registered users: bare JID → account.
    accounts: Mutex<HashMap<String, AccountId, CacheHasher>>,
    /// Known contacts: localpart → identity.
    identities: Mutex<HashMap<String, Arc<Identity>, CacheHasher>>,
}

/// The caches' hasher: foldhash with a per-process random seed, several times cheaper
/// than SipHash on short keys; with the size bound below, flooding one with colliding
/// keys costs an attacker more than it costs ferry.
type CacheHasher = foldhash::quality::RandomState;

/// Entries beyond which a cache starts over (bounds memory under hostile input).
const CACHE_MAX: usize = 100_000;

impl Caches {
    fn get_account(&self, bare: &str) -> Option<AccountId> {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bare)
            .copied()
    }
    pub fn put_account(&self, bare: &str, id: AccountId) {
        let mut m = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CACHE_MAX {
            m.clear();
        }
        m.insert(bare.to_owned(), id);
    }
    pub fn forget_account(&self, bare: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(bare);
    }
    fn get_identity(&self, local: &str) -> Option<Arc<Identity>> {
        self.identities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(local)
            .cloned()
    }
    fn put_identity(&self, local: &str, id: &Arc<Identity>) {
        let mut m = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CACHE_MAX {
            m.clear();
        }
        m.insert(local.to_owned(), Arc::clone(id));
    }
}

/// What the router and sessions hand to the outbox worker.
#[derive(Debug, Default)]
pub struct OutboxHandoff {
    /// Rows stored already claimed, to send as they are, each with its payload as the
    /// router built it (the outbox need not read back what was just written).
    /// A queue: the worker takes at most a pass's worth from the front.
    pub rows: std::collections::VecDeque<(OutboxRow, OutboxPayload)>,
    /// Due rows may be waiting in the store: claim them.
    pub look_in_store: bool,
}

/// A message the router has checked: its row to store, its payload, and its stanza (to
/// answer with an error if it cannot be stored).
type Prepared = (Stanza, NewOutbox, OutboxPayload);

/// The payload the core keeps in an outbox row: what the bridge needs to send, and what the
/// core needs to answer the user afterwards.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct OutboxPayload {
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The XMPP id of the message this replies to (XEP-0461).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<i64>,
    /// The contact's bare JID, the `from` of receipts and errors.
    pub contact: String,
    /// The recipient as first spelled (for outgoing headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_display: Option<String>,
}

impl OutboxPayload {
    /// The payload as JSON, byte for byte what `serde_json::to_string` writes for it (a
    /// test holds the two together), written directly: serde's machinery cost more than
    /// a thousand instructions per message for a struct this small. Rows are read back
    /// with serde.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut out = String::with_capacity(
            48 + self.body.len()
                + self.contact.len()
                + self.to_display.as_ref().map_or(0, |d| d.len() + 16),
        );
        out.push_str("{\"body\":");
        json_str(&mut out, &self.body)?;
        for (key, value) in [
            ("subject", &self.subject),
            ("thread", &self.thread),
            ("reply_to", &self.reply_to),
        ] {
            if let Some(v) = value {
                out.push_str(",\"");
                out.push_str(key);
                out.push_str("\":");
                json_str(&mut out, v)?;
            }
        }
        if !self.links.is_empty() {
            out.push_str(",\"links\":[");
            for (i, link) in self.links.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(&mut out, link)?;
            }
            out.push(']');
        }
        if let Some(at) = self.sent_at_ms {
            out.push_str(",\"sent_at_ms\":");
            out.push_str(itoa::Buffer::new().format(at));
        }
        out.push_str(",\"contact\":");
        json_str(&mut out, &self.contact)?;
        if let Some(d) = &self.to_display {
            out.push_str(",\"to_display\":");
            json_str(&mut out, d)?;
        }
        out.push('}');
        Ok(out)
    }
}

/// Appends `s` as a JSON string. Only control characters, `"` and `\` are escaped (as
/// serde_json does); a string with none of them, nearly every one, is copied as it is.
fn json_str(out: &mut String, s: &str) -> Result<(), serde_json::Error> {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&serde_json::to_string(s)?);
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
    Ok(())
}

impl Gateway {
    /// What waits for the outbox worker (see `outbox_handoff`).
    pub fn lock_handoff(&self) -> std::sync::MutexGuard<'_, OutboxHandoff> {
        self.outbox_handoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the outbox worker to look for due rows in the store (a session came up, so
    /// rows that waited for it can go).
    pub fn wake_outbox(&self) {
        self.lock_handoff().look_in_store = true;
        self.outbox_wake.notify_one();
    }

    pub fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a stanza out through the link.
    pub async fn send(&self, e: Element) {
        self.out.send(e).await;
    }

    /// Handles stanzas in the order they arrived. Messages are stored before the next
    /// stanza is looked at, so an IQ answered later proves earlier messages are safe; IQs
    /// that may take long (registration logs in upstream) run on their own task.
    ///
    /// Consecutive messages that are already waiting are stored in one transaction (group
    /// commit); any other stanza first waits for the messages before it to be stored.
    pub async fn run_router(self: Arc<Self>, mut rx: mpsc::Receiver<Element>) {
        let mut batch: Vec<Prepared> = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(el) = next.take() {
                self.handle_into(el, &mut batch).await;
                if batch.len() < 256 {
                    next = rx.try_recv().ok();
                }
            }
            self.flush(&mut batch).await;
        }
    }

    /// Carries out the routing decision for one element, storing a message at once.
    pub async fn handle(self: &Arc<Self>, el: Element) {
        let mut batch = Vec::new();
        self.handle_into(el, &mut batch).await;
        self.flush(&mut batch).await;
    }

    /// Stores the pending messages in one transaction and wakes the outbox.
    async fn flush(&self, batch: &mut Vec<Prepared>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let mut stanzas = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        for (st, row, payload) in batch.drain(..) {
            stanzas.push(st);
            rows.push(row);
            payloads.push(payload);
        }
        match self
            .store
            .enqueue_claimed(rows, crate::outbox::LEASE_MS)
            .await
        {
            Ok(stored) => {
                self.metrics
                    .messages(self.kind.as_str(), "out", "accepted", n as u64);
                self.lock_handoff()
                    .rows
                    .extend(stored.into_iter().zip(payloads));
                self.outbox_wake.notify_one();
            }
            Err(e) => {
                tracing::error!(domain = %self.domain, "cannot store {n} outbound message(s): {e}");
                self.metrics
                    .messages(self.kind.as_str(), "out", "error", n as u64);
                for st in &stanzas {
                    self.reject(
                        st,
                        Condition::InternalServerError,
                        Some("could not store the message"),
                    )
                    .await;
                }
            }
        }
        batch.clear();
    }

    /// Routes one element; messages for contacts join `batch`, everything else is handled
    /// after the batch is stored.
    async fn handle_into(self: &Arc<Self>, el: Element, batch: &mut Vec<Prepared>) {
        let st = match Stanza::from_element(el) {
            Ok(st) => st,
            Err(e) => {
                tracing::debug!(domain = %self.domain, "ignoring element: {e}");
                return;
            }
        };
        let route = router::route(&st, &self.domain, &self.access);
        if let Route::ContactMessage(local) = &route {
            match self.prepare_outbound(&st, local).await {
                Ok(Some((row, payload))) => batch.push((st, row, payload)),
                Ok(None) => {}
                Err((cond, text)) => self.reject(&st, cond, text.as_deref()).await,
            }
            return;
        }
        self.flush(batch).await;
        match route {
            Route::Ignore => {}
            Route::Reject(cond) => self.reject(&st, cond, None).await,
            Route::DomainIq => {
                let me = Arc::clone(self);
                tokio::spawn(async move { me.domain_iq(st).await });
            }
            Route::DomainMessage => self.chat_command(&st).await,
            Route::DomainPresence => self.domain_presence(&st).await,
            Route::ContactIq(local) => self.contact_iq(&st, &local).await,
            Route::ContactMessage(_) => {}
            Route::ContactPresence(local) => self.contact_presence(&st, &local).await,
        }
    }

    /// Answers with an error, unless the stanza may not be answered with one.
    pub async fn reject(&self, st: &Stanza, cond: Condition, text: Option<&str>) {
        if let Some(reply) = st.error_reply(cond, text) {
            self.send(reply).await;
        }
    }

    /// The account of a registered user, if any.
    pub async fn account_of(&self, bare: &str) -> Option<AccountId> {
        if let Some(id) = self.caches.get_account(bare) {
            return Some(id);
        }
        match self.store.account(self.kind, bare).await {
            Ok(a) => {
                let id = a.map(|a| a.id)?;
                self.caches.put_account(bare, id);
                Some(id)
            }
            Err(e) => {
                tracing::error!(domain = %self.domain, "store: {e}");
                None
            }
        }
    }

    /// The account to act for: the registered one, or for bridges that need no
    /// registration, one created on first use.
    pub async fn account_for_use(self: &Arc<Self>, bare: &str) -> Result<AccountId, Condition> {
        if let Some(a) = self.account_of(bare).await {
            return Ok(a);
        }
        if self.bridge.requires_registration() {
            return Err(Condition::RegistrationRequired);
        }
        match self
            .store
            .upsert_account(self.kind, bare, &Default::default())
            .await
        {
            Ok(id) => {
                self.caches.put_account(bare, id);
                self.start_session(id, bare.to_owned(), Default::default());
                Ok(id)
            }
            Err(e) => {
                tracing::error!(domain = %self.domain, "store: {e}");
                Err(Condition::InternalServerError)
            }
        }
    }

    /// Finds (or creates, when the bridge can read it) the identity behind a localpart.
    pub async fn resolve_contact(&self, local: &str) -> Result<Arc<Identity>, Condition> {
        self.find_contact(local, true).await
    }

    /// As [`Gateway::resolve_contact`], but with `record` false an identity not in the
    /// store yet is answered for without being stored (its id is 0): what strangers may
    /// ask about must not grow the store.
    async fn find_contact(&self, local: &str, record: bool) -> Result<Arc<Identity>, Condition> {
        if let Some(id) = self.caches.get_identity(local) {
            return Ok(id);
        }
        match self.store.identity_by_localpart(self.kind, local).await {
            Ok(Some(id)) => {
                let id = Arc::new(id);
                self.caches.put_identity(local, &id);
                return Ok(id);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(domain = %self.domain, "store: {e}");
                return Err(Condition::InternalServerError);
            }
        }
        let raw = jid::unescape_node(local);
        let Some(parsed) = self.bridge.parse_localpart(&raw) else {
            // An address that cannot be one (a number of the wrong length) is malformed;
            // anything else is simply no contact here.
            return Err(match self.bridge.parse_address(&raw) {
                Err(e) if e.kind == ferry_bridge_api::ErrorKind::Malformed => {
                    Condition::JidMalformed
                }
                _ => Condition::ItemNotFound,
            });
        };
        if !record {
            return Ok(Arc::new(Identity {
                id: 0,
                bridge: self.kind,
                remote_id: parsed.id.0,
                localpart: local.to_owned(),
                display: Some(parsed.display),
            }));
        }
        self.ensure_identity(&parsed).await.map(Arc::new)
    }

    /// Records (or finds) the identity for an address the bridge has read.
    pub async fn ensure_identity(&self, parsed: &ParsedAddress) -> Result<Identity, Condition> {
        record_identity(&self.store, &*self.bridge, parsed)
            .await
            .map_err(|e| {
                tracing::error!(domain = %self.domain, "store: {e}");
                Condition::InternalServerError
            })
    }

    /// The bare JID of a contact.
    pub fn contact_jid(&self, identity: &Identity) -> String {
        let mut jid = String::with_capacity(identity.localpart.len() + 1 + self.domain.len());
        jid.push_str(&identity.localpart);
        jid.push('@');
        jid.push_str(&self.domain);
        jid
    }

    /// A message to a contact, checked and turned into an outbox row (not stored yet).
    /// `None` when there is nothing to deliver (chat states, markers).
    async fn prepare_outbound(
        self: &Arc<Self>,
        st: &Stanza,
        local: &str,
    ) -> Result<Option<(NewOutbox, OutboxPayload)>, (Condition, Option<String>)> {
        let body = st.el.child_text("body", NS_COMPONENT).unwrap_or_default();
        let links: Vec<String> = st
            .el
            .elements()
            .filter(|e| e.is("x", ns::OOB))
            .filter_map(|x| x.child_text("url", ns::OOB))
            .filter(|u| !u.is_empty())
            .collect();
        if body.trim().is_empty() && links.is_empty() {
            return Ok(None);
        }
        let user = jid::bare_str(&st.from);
        let account = self.account_for_use(user).await.map_err(|c| (c, None))?;
        let identity = self.resolve_contact(local).await.map_err(|cond| {
            let text = match cond {
                Condition::ItemNotFound => {
                    Some(format!("{local} is not an address this gateway can reach"))
                }
                Condition::JidMalformed => {
                    Some(format!("{local} is not a valid address for this gateway"))
                }
                _ => None,
            };
            (cond, text)
        })?;
        let to = ferry_bridge_api::RemoteId(identity.remote_id.clone());
        self.bridge.admit(account, &to).await.map_err(|e| {
            tracing::info!(domain = %self.domain, user = %user, "message refused: {}", e.text);
            (crate::stanza::condition_for(e.kind), Some(e.text))
        })?;
        let payload = OutboxPayload {
            body,
            subject: st
                .el
                .child_text("subject", NS_COMPONENT)
                .filter(|s| !s.is_empty()),
            thread: st
                .el
                .child_text("thread", NS_COMPONENT)
                .filter(|s| !s.is_empty()),
            reply_to: st
                .el
                .child("reply", ns::REPLY)
                .and_then(|r| r.attr("id"))
                .map(str::to_owned),
            links,
            sent_at_ms: st
                .el
                .child("delay", ns::DELAY)
                .and_then(|d| d.attr("stamp"))
                .and_then(crate::stanza::parse_stamp_ms),
            contact: self.contact_jid(&identity),
            to_display: identity.display.clone(),
        };
        let text = payload.to_json().map_err(|e| {
            tracing::error!("cannot encode outbox payload: {e}");
            (Condition::InternalServerError, None)
        })?;
        let row = NewOutbox {
            bridge: self.kind,
            account,
            recipient: identity.remote_id.clone(),
            payload: text,
            from_jid: st.from.as_str().to_owned(),
            stanza_id: st.id.clone(),
            want_receipt: st.el.child("request", ns::RECEIPTS).is_some(),
        };
        Ok(Some((row, payload)))
    }

    /// IQs to a contact: disco#info, vCard, ping.
    async fn contact_iq(&self, st: &Stanza, local: &str) {
        let Some(payload) = st.payload() else {
            return self.reject(st, Condition::BadRequest, None).await;
        };
        let from = jid::bare(&st.from);
        let stranger = !self.access.is_allowed(&from) && !self.access.is_admin(&from);
        let identity = match self.find_contact(local, !stranger).await {
            Ok(i) => i,
            Err(cond) => return self.reject(st, cond, None).await,
        };
        let reply = match (st.typ.as_str(), payload.ns.as_str()) {
            ("get", ns::DISCO_INFO) if payload.attr("node").is_none() => {
                let mut q = Element::new("query", ns::DISCO_INFO).with_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "client")
                        .with_attr("type", "pc")
                        .with_attr(
                            "name",
                            identity.display.as_deref().unwrap_or(&identity.remote_id),
                        ),
                );
                // Followable contacts (feeds) only talk: no receipts come from them.
                let receipts = self.bridge.subscriptions().is_none();
                for f in [ns::DISCO_INFO, ns::VCARD, ns::RECEIPTS, ns::PING] {
                    if f != ns::RECEIPTS || receipts {
                        q.push(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
                    }
                }
                Some(q)
            }
            ("get", ns::DISCO_ITEMS) => Some(Element::new("query", ns::DISCO_ITEMS)),
            ("get", ns::PING) => None,
            ("get", ns::VCARD) => {
                let state = match self.bridge.subscriptions() {
                    Some(subs) => {
                        subs.contact_state(&RemoteId(identity.remote_id.clone()))
                            .await
                    }
                    None => None,
                };
                let known = match state.as_ref().and_then(|s| s.name.clone()) {
                    Some(n) => Some(n),
                    None => self
                        .store
                        .kv_get(crate::relay::CONTACT_NAME, &identity.id.to_string())
                        .await
                        .ok()
                        .flatten(),
                };
                let name = known
                    .or_else(|| identity.display.clone())
                    .unwrap_or_else(|| identity.remote_id.clone());
                let mut card = Element::new("vCard", ns::VCARD)
                    .with_child(Element::text_child("FN", ns::VCARD, name.clone()))
                    .with_child(Element::text_child("NICKNAME", ns::VCARD, name))
                    .with_child(Element::text_child(
                        "NOTE",
                        ns::VCARD,
                        identity.remote_id.clone(),
                    ));
                if let Some(url) = state.and_then(|s| s.avatar_url) {
                    card.push(
                        Element::new("PHOTO", ns::VCARD).with_child(Element::text_child(
                            "EXTVAL",
                            ns::VCARD,
                            url,
                        )),
                    );
                }
                Some(card)
            }
            _ => return self.reject(st, Condition::ServiceUnavailable, None).await,
        };
        self.send(st.iq_result(reply)).await;
    }

    /// Presence to a contact: subscriptions are accepted (for followable contacts such as
    /// feeds, subscribing follows and the bridge confirms later), probes answered.
    async fn contact_presence(self: &Arc<Self>, st: &Stanza, local: &str) {
        let identity = match self.resolve_contact(local).await {
            Ok(i) => i,
            Err(cond) => {
                if st.typ == "subscribe" {
                    let user = jid::bare(&st.from);
                    if self.bridge.subscriptions().is_some() {
                        // Following is what the user asked for: say why it cannot be.
                        let why = format!(
                            "{local} is not an address this gateway can follow ({})",
                            cond.as_str()
                        );
                        self.refuse_follow(&user, st.to.as_str(), &why).await;
                    } else {
                        self.send(stanza::presence(
                            st.to.as_str(),
                            &user,
                            Some("unsubscribed"),
                        ))
                        .await;
                    }
                }
                tracing::debug!("presence for unknown contact {local}: {}", cond.as_str());
                return;
            }
        };
        let contact = self.contact_jid(&identity);
        let user = jid::bare(&st.from);
        let remote = RemoteId(identity.remote_id.clone());
        if let Some(subs) = self.bridge.subscriptions() {
            match st.typ.as_str() {
                "subscribe" => {
                    let followed = match self.account_for_use(&user).await {
                        Ok(account) => subs.follow(account, &remote).await,
                        Err(cond) => Err(BridgeError::permanent(cond.as_str())),
                    };
                    if let Err(e) = followed {
                        self.refuse_follow(&user, &contact, &e.text).await;
                    }
                }
                "unsubscribe" => {
                    if let Some(account) = self.account_of(&user).await
                        && let Err(e) = subs.unfollow(account, &remote).await
                    {
                        tracing::warn!(domain = %self.domain, "cannot unfollow: {e}");
                    }
                    self.send(stanza::presence(&contact, &user, Some("unsubscribed")))
                        .await;
                }
                "probe" => {
                    let state = subs.contact_state(&remote).await;
                    self.send(contact_presence(&contact, &user, state.as_ref()))
                        .await;
                }
                _ => {}
            }
            return;
        }
        match st.typ.as_str() {
            "subscribe" => {
                self.send(stanza::presence(&contact, &user, Some("subscribed")))
                    .await;
                self.send(stanza::presence(&contact, &user, None)).await;
            }
            "probe" => self.send(stanza::presence(&contact, &user, None)).await,
            "unsubscribe" => {
                self.send(stanza::presence(&contact, &user, Some("unsubscribed")))
                    .await;
            }
            _ => {}
        }
    }

    /// Tells a user that following `contact` did not work, and why: `unsubscribed` from
    /// the contact and a chat message from the gateway.
    pub async fn refuse_follow(&self, user: &str, contact: &str, reason: &str) {
        self.send(stanza::presence(contact, user, Some("unsubscribed")))
            .await;
        let text = format!("Cannot subscribe to {contact}: {reason}");
        self.send(stanza::message(&self.domain, user, "chat", &text))
            .await;
    }

    /// The gateway's presence for a user, from their session's state.
    pub fn gateway_presence(&self, user: &str) -> Element {
        let status = self
            .lock_sessions()
            .values()
            .find(|s| s.user == user)
            .map(|s| s.status.clone());
        let mut p = stanza::presence(&self.domain, user, None);
        match status {
            Some(SessionStatus::Online(text)) => {
                if !text.is_empty() {
                    p.push(Element::text_child("status", NS_COMPONENT, text));
                }
            }
            Some(SessionStatus::Failing(text)) => {
                p.push(Element::text_child("show", NS_COMPONENT, "xa"));
                p.push(Element::text_child("status", NS_COMPONENT, text));
            }
            // A gateway that needs no registration (RSS) works for every allowed user,
            // whether or not they have used it yet.
            None if !self.bridge.requires_registration() => {}
            None => {
                p.set_attr("type", "unavailable");
            }
        }
        p
    }

    /// Presence addressed to the gateway domain (XEP-0100 §6).
    async fn domain_presence(&self, st: &Stanza) {
        let user = jid::bare(&st.from);
        let registered = self.account_of(&user).await.is_some();
        match st.typ.as_str() {
            "subscribe" => {
                if registered || !self.bridge.requires_registration() {
                    self.send(stanza::presence(&self.domain, &user, Some("subscribed")))
                        .await;
                    self.send(self.gateway_presence(&user)).await;
                } else {
                    self.send(stanza::presence(&self.domain, &user, Some("unsubscribed")))
                        .await;
                }
            }
            "probe" | "available" => {
                if registered || !self.bridge.requires_registration() {
                    self.send(self.gateway_presence(&user)).await;
                } else if st.typ == "probe" {
                    self.send(stanza::presence(&self.domain, &user, Some("unavailable")))
                        .await;
                }
            }
            "unsubscribe" => {
                self.send(stanza::presence(&self.domain, &user, Some("unsubscribed")))
                    .await;
            }
            _ => {}
        }
    }

    /// Tells every user of this gateway how it is doing, e.g. after the link came back.
    pub async fn broadcast_presence(&self) {
        let users: Vec<String> = self
            .lock_sessions()
            .values()
            .map(|s| s.user.clone())
            .collect();
        for u in users {
            self.send(self.gateway_presence(&u)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OutboxPayload;

    #[test]
    fn payload_json_is_serde_jsons_byte_for_byte() {
        let awkward =
            "quote \" back \\ nl \n tab \t nul \u{0} us \u{1f} del \u{7f} é 😀 </x> \u{2028}";
        let full = OutboxPayload {
            body: awkward.into(),
            subject: Some("re: \"that\"".into()),
            thread: Some("t-1".into()),
            reply_to: Some("id\\1".into()),
            links: vec!["https://example.org/a?b=c&d".into(), awkward.into()],
            sent_at_ms: Some(-1_700_000_000_123),
            contact: "bob\\40example.org@gw.example.org".into(),
            to_display: Some("Bob <bob@example.org>".into()),
        };
        let cases = [
            OutboxPayload::default(),
            OutboxPayload {
                body: "hello".into(),
                contact: "bob@gw".into(),
                ..Default::default()
            },
            OutboxPayload {
                links: vec!["only".into()],
                sent_at_ms: Some(0),
                ..Default::default()
            },
            full,
        ];
        for p in &cases {
            let ours = p.to_json().expect("encodes");
            assert_eq!(ours, serde_json::to_string(p).expect("serde encodes"));
            let back: OutboxPayload = serde_json::from_str(&ours).expect("reads back");
            assert_eq!(back.body, p.body);
            assert_eq!(back.links, p.links);
            assert_eq!(back.to_display, p.to_display);
        }
    }
}
