//! Bridge → XMPP: turns sessions' events into stanzas. Drops duplicates by remote message
//! id, creates identities on first sight (and asks the user to add the contact, with the
//! sender's name as nickname), and keeps the gateway's presence in step with each session.

use std::sync::Arc;

use ferry_bridge_api::{AccountId, InboundMessage, RemoteEvent};
use tokio::sync::mpsc;

use crate::gateway::Gateway;
use crate::stanza::{self, ns};
use crate::xml::{Element, NS_COMPONENT};

impl Gateway {
    /// Reads session events until every sender is gone.
    /// Reads session events until shutdown (the gateway itself holds a sender, so the
    /// channel never closes on its own).
    pub async fn run_relay(self: Arc<Self>, mut rx: mpsc::Receiver<(AccountId, RemoteEvent)>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some((account, event)) => self.relay(account, event).await,
                    None => return,
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    async fn relay(self: &Arc<Self>, account: AccountId, event: RemoteEvent) {
        let bridge = self.kind.as_str();
        let Some(user) = self.lock_sessions().get(&account).map(|s| s.user.clone()) else {
            tracing::debug!(?account, "event for a stopped session dropped");
            return;
        };
        match event {
            RemoteEvent::Status(s) => self.set_status(account, s).await,
            RemoteEvent::Message(m) => {
                match self
                    .store
                    .mark_inbound_with(account, &m.remote_message_id, m.checkpoint.as_ref())
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        self.metrics.message(bridge, "in", "duplicate");
                        return;
                    }
                    Err(e) => {
                        tracing::error!("store: {e}");
                        self.metrics.message(bridge, "in", "error");
                        return;
                    }
                }
                self.deliver_inbound(account, &user, m).await;
            }
            RemoteEvent::Followed { contact, nick } => {
                let Some((identity, jid)) = self.contact_for(&contact).await else {
                    return;
                };
                self.send(stanza::presence(&jid, &user, Some("subscribed")))
                    .await;
                let mut ask = stanza::presence(&jid, &user, Some("subscribe"));
                if let Some(nick) = nick.as_deref().or(identity.display.as_deref()) {
                    ask.push(Element::text_child("nick", ns::NICK, nick));
                }
                self.send(ask).await;
                let _ = self.store.introduce_contact(account, identity.id).await;
                tracing::info!(domain = %self.domain, user = %user, contact = %jid, "subscribed");
            }
            RemoteEvent::FollowRefused { contact, reason } => {
                let jid = match self.contact_for(&contact).await {
                    Some((_, jid)) => jid,
                    None => contact.to_string(),
                };
                tracing::info!(domain = %self.domain, user = %user, contact = %jid, "subscription refused: {reason}");
                self.refuse_follow(&user, &jid, &reason).await;
            }
            RemoteEvent::ContactStatus { contact, state } => {
                if let Some((_, jid)) = self.contact_for(&contact).await {
                    self.send(crate::gateway::contact_presence(&jid, &user, Some(&state)))
                        .await;
                }
            }
            RemoteEvent::Delivered { .. } | RemoteEvent::Failed { .. } => {
                // May wait for its row; the other events must not wait behind it.
                let me = Arc::clone(self);
                tokio::spawn(async move { me.report(account, event).await });
            }
        }
    }

    /// A delivery report: the receipt or the error for the message it names, once (a
    /// provider may report twice). A report can overtake the settling of its outbox row
    /// (the provider answers before ferry has written down its id), so a report for an
    /// unknown id is looked up again for a while before it is dropped.
    async fn report(&self, account: AccountId, event: RemoteEvent) {
        let (RemoteEvent::Delivered { remote_message_id }
        | RemoteEvent::Failed {
            remote_message_id, ..
        }) = &event
        else {
            return;
        };
        let mut found = self.sent_row(account, remote_message_id).await;
        let mut wait = std::time::Duration::from_millis(50);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while found.is_none() && tokio::time::Instant::now() < deadline {
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            wait = (wait * 2).min(std::time::Duration::from_secs(2));
            found = self.sent_row(account, remote_message_id).await;
        }
        let Some((row, contact)) = found else {
            tracing::info!(domain = %self.domain, "delivery report for an unknown message ignored");
            return;
        };
        match self
            .store
            .mark_inbound(account, &format!("report:{}", row.id))
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!("store: {e}"),
        }
        match event {
            RemoteEvent::Delivered { .. } => self.send_receipt(row, contact).await,
            RemoteEvent::Failed { error, .. } => {
                let _ = self.store.mark_failed(row.id, &error.text).await;
                self.metrics.message(self.kind.as_str(), "out", "error");
                self.send_failure(
                    &row,
                    &contact,
                    stanza::condition_for(error.kind),
                    &error.text,
                )
                .await;
            }
            _ => {}
        }
    }

    /// The identity and bare JID of a contact the bridge names.
    async fn contact_for(
        &self,
        contact: &ferry_bridge_api::RemoteId,
    ) -> Option<(crate::store::Identity, String)> {
        let parsed = match self.bridge.parse_address(contact.as_str()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(domain = %self.domain, "event about an address the bridge cannot read: {e}");
                return None;
            }
        };
        let identity = self.ensure_identity(&parsed).await.ok()?;
        let jid = self.contact_jid(&identity);
        Some((identity, jid))
    }

    /// The outbox row a delivery report is about, and the contact it was sent to.
    async fn sent_row(
        &self,
        account: AccountId,
        remote_message_id: &str,
    ) -> Option<(crate::store::OutboxRow, String)> {
        let row = self
            .store
            .outbox_by_remote(account, remote_message_id)
            .await
            .ok()??;
        let contact = serde_json::from_str::<crate::gateway::OutboxPayload>(&row.payload)
            .map(|p| p.contact)
            .unwrap_or_default();
        Some((row, contact))
    }

    async fn deliver_inbound(&self, account: AccountId, user: &str, m: InboundMessage) {
        let bridge = self.kind.as_str();
        let from = match &m.from {
            None => self.domain.clone(),
            Some(remote) => {
                let parsed = match self.bridge.parse_address(remote.as_str()) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!("inbound from an address the bridge cannot read: {e}");
                        self.metrics.message(bridge, "in", "error");
                        return;
                    }
                };
                let identity = match self.ensure_identity(&parsed).await {
                    Ok(i) => i,
                    Err(_) => return,
                };
                let contact = self.contact_jid(&identity);
                if let Ok(true) = self.store.introduce_contact(account, identity.id).await {
                    if let Some(nick) = m.nick.as_deref().filter(|n| !n.trim().is_empty()) {
                        self.remember_name(identity.id, nick).await;
                    }
                    let mut p = stanza::presence(&contact, user, Some("subscribe"));
                    if let Some(nick) = m.nick.as_deref().or(identity.display.as_deref()) {
                        p.push(Element::text_child("nick", ns::NICK, nick));
                    }
                    self.send(p).await;
                }
                contact
            }
        };
        let id = format!("in-{}", &m.remote_message_id)
            .chars()
            .take(128)
            .collect::<String>();
        let (thread, reply) = self.thread_of(account, &m).await;
        let reply = reply.map(|r| {
            let to = match r.direction {
                crate::store::Direction::Out => user.to_owned(),
                crate::store::Direction::In => from.clone(),
            };
            (to, r.xmpp_id)
        });
        let msg = inbound_stanza(
            &from,
            user,
            &id,
            &m,
            thread.as_deref(),
            reply.as_ref().map(|(to, id)| (to.as_str(), id.as_str())),
        );
        let _ = self
            .store
            .map_message(
                account,
                crate::store::Direction::In,
                &id,
                &m.remote_message_id,
                thread.as_deref(),
            )
            .await;
        self.send(msg).await;
        self.metrics.message(bridge, "in", "ok");
    }

    /// The XMPP thread an inbound message belongs to and the message it directly answers:
    /// the thread of the first referenced message ferry has seen (so a reply by mail
    /// continues the chat's thread), else the bridge's own; the reply is the mapped
    /// message it names first (In-Reply-To).
    async fn thread_of(
        &self,
        account: AccountId,
        m: &InboundMessage,
    ) -> (Option<String>, Option<crate::store::MessageMapping>) {
        let mut thread = None;
        let mut reply = None;
        for (i, r) in m.references.iter().take(32).enumerate() {
            let Ok(Some(found)) = self.store.xmpp_for_remote(account, r).await else {
                continue;
            };
            if i == 0 {
                reply = Some(found.clone());
            }
            if found.thread.is_some() {
                thread = found.thread;
                break;
            }
        }
        (thread.or_else(|| m.thread.clone()), reply)
    }

    /// Keeps a contact's display name (the mail's From name) for its vCard, when the
    /// contact is first introduced to a user (not on every message), writing only when it
    /// changed.
    async fn remember_name(&self, identity: i64, name: &str) {
        let key = identity.to_string();
        let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
        match self.store.kv_get(CONTACT_NAME, &key).await {
            Ok(Some(known)) if known == name => {}
            _ => {
                if let Err(e) = self.store.kv_set(CONTACT_NAME, &key, &name).await {
                    tracing::warn!("store: {e}");
                }
            }
        }
    }
}

/// The `kv` scope of contacts' display names (identity id → name).
pub const CONTACT_NAME: &str = "contact_name";

/// The `<message>` for an inbound message: `chat` (or `headline`), its subject and thread,
/// the XEP-0461 reply (`to`, `id`) when it answers a known message, an XEP-0066 link per
/// attachment and a chat marker.
pub fn inbound_stanza(
    from: &str,
    user: &str,
    id: &str,
    m: &InboundMessage,
    thread: Option<&str>,
    reply: Option<(&str, &str)>,
) -> Element {
    let typ = if m.headline { "headline" } else { "chat" };
    let mut msg = stanza::message(from, user, typ, &m.body).with_attr("id", id);
    if let Some(s) = &m.subject {
        msg.push(Element::text_child("subject", NS_COMPONENT, s.clone()));
    }
    if let Some(t) = thread {
        msg.push(Element::text_child("thread", NS_COMPONENT, t));
    }
    if let Some((to, rid)) = reply {
        msg.push(
            Element::new("reply", ns::REPLY)
                .with_attr("to", to)
                .with_attr("id", rid),
        );
    }
    for url in &m.links {
        msg.push(Element::new("x", ns::OOB).with_child(Element::text_child(
            "url",
            ns::OOB,
            url.clone(),
        )));
    }
    msg.push(Element::new("markable", "urn:xmpp:chat-markers:0"));
    msg
}
