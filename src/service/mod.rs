//! What a gateway domain answers itself: disco#info/items, version, ping, XEP-0077
//! registration (with the bridge's XEP-0004 form), XEP-0100 `jabber:iq:gateway`, vCard,
//! and XEP-0050 commands (also reachable as chat commands, see [`commands`]).

pub mod commands;
pub mod follows;

use std::sync::Arc;

use ferry_bridge_api::{ErrorKind, FormValues};

use crate::gateway::Gateway;
use crate::jid;
use crate::stanza::{self, Condition, Stanza, condition_for, form, ns};
use crate::xml::Element;

/// Features every gateway domain announces.
const FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::REGISTER,
    ns::GATEWAY,
    ns::COMMANDS,
    ns::PING,
    ns::VERSION,
    ns::VCARD,
    ns::RECEIPTS,
];

impl Gateway {
    /// Answers an IQ addressed to the domain. Every get/set gets exactly one answer.
    pub async fn domain_iq(self: Arc<Self>, st: Stanza) {
        let Some(payload) = st.payload() else {
            return self.reject(&st, Condition::BadRequest, None).await;
        };
        let get = st.typ == "get";
        let reply = match (get, payload.ns.as_str(), payload.name.as_str()) {
            (true, ns::DISCO_INFO, "query") => self.disco_info(&st, payload.attr("node")),
            (true, ns::DISCO_ITEMS, "query") => Ok(self.disco_items(&st, payload.attr("node"))),
            (true, ns::PING, "ping") => Ok(None),
            (true, ns::VERSION, "query") => Ok(Some(
                Element::new("query", ns::VERSION)
                    .with_child(Element::text_child("name", ns::VERSION, "ferry"))
                    .with_child(Element::text_child(
                        "version",
                        ns::VERSION,
                        env!("CARGO_PKG_VERSION"),
                    )),
            )),
            (true, ns::VCARD, "vCard") => Ok(Some(Element::new("vCard", ns::VCARD).with_child(
                Element::text_child("FN", ns::VCARD, self.bridge.display_name()),
            ))),
            (true, ns::REGISTER, "query") => self.register_get(&st).await,
            (false, ns::REGISTER, "query") => self.register_set(&st, payload).await,
            (true, ns::GATEWAY, "query") => {
                let (desc, prompt) = self.bridge.gateway_prompt();
                Ok(Some(
                    Element::new("query", ns::GATEWAY)
                        .with_child(Element::text_child("desc", ns::GATEWAY, desc))
                        .with_child(Element::text_child("prompt", ns::GATEWAY, prompt)),
                ))
            }
            (false, ns::GATEWAY, "query") => self.gateway_set(payload).await,
            (false, ns::COMMANDS, "command") => self.command(&st, payload).await,
            _ => Err((Condition::ServiceUnavailable, None)),
        };
        match reply {
            Ok(p) => self.send(st.iq_result(p)).await,
            Err((cond, text)) => self.reject(&st, cond, text.as_deref()).await,
        }
    }

    fn disco_info(&self, st: &Stanza, node: Option<&str>) -> Result<Option<Element>, Reply> {
        let mut q = Element::new("query", ns::DISCO_INFO).with_opt_attr("node", node);
        let identity = |cat: &str, typ: &str, name: &str| {
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", cat)
                .with_attr("type", typ)
                .with_attr("name", name)
        };
        let feature = |f: &str| Element::new("feature", ns::DISCO_INFO).with_attr("var", f);
        match node {
            None => {
                let (cat, typ) = self.kind.disco_identity();
                q.push(identity(cat, typ, &self.bridge.display_name()));
                for f in FEATURES {
                    q.push(feature(f));
                }
            }
            Some(ns::COMMANDS) => {
                q.push(identity("automation", "command-list", "Commands"));
            }
            Some(n) => {
                let cmd = commands::visible(self, st)
                    .into_iter()
                    .find(|c| c.node == n)
                    .ok_or((Condition::ItemNotFound, None))?;
                q.push(identity("automation", "command-node", cmd.name));
                q.push(feature(ns::COMMANDS));
                q.push(feature(ns::DATA));
            }
        }
        Ok(Some(q))
    }

    fn disco_items(&self, st: &Stanza, node: Option<&str>) -> Option<Element> {
        let mut q = Element::new("query", ns::DISCO_ITEMS).with_opt_attr("node", node);
        if node == Some(ns::COMMANDS) {
            for c in commands::visible(self, st) {
                q.push(
                    Element::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", &self.domain)
                        .with_attr("node", c.node)
                        .with_attr("name", c.name),
                );
            }
        }
        Some(q)
    }

    async fn register_get(&self, st: &Stanza) -> Result<Option<Element>, Reply> {
        let user = jid::bare(&st.from);
        let form_def = self.bridge.registration_form(&user);
        let existing = self
            .store
            .account(self.kind, &user)
            .await
            .map_err(internal)?;
        let mut q = Element::new("query", ns::REGISTER);
        q.push(Element::text_child(
            "instructions",
            ns::REGISTER,
            if form_def.instructions.is_empty() {
                format!("Register with {}.", self.bridge.display_name())
            } else {
                form_def.instructions.clone()
            },
        ));
        if let Some(acc) = &existing {
            q.push(Element::new("registered", ns::REGISTER));
            // Show what is on file, never the secrets.
            if let Some(e) = acc.credentials.get("email") {
                q.push(Element::text_child("email", ns::REGISTER, e.clone()));
            }
        } else {
            // Legacy XEP-0077 fields, for clients without form support.
            for f in &form_def.fields {
                if matches!(f.var.as_str(), "email" | "password" | "username" | "name") {
                    q.push(Element::new(&f.var, ns::REGISTER));
                }
            }
        }
        q.push(form::to_element(&form_def, Some(ns::REGISTER)));
        Ok(Some(q))
    }

    async fn register_set(
        self: &Arc<Self>,
        st: &Stanza,
        q: &Element,
    ) -> Result<Option<Element>, Reply> {
        let user = jid::bare(&st.from);
        if q.child("remove", ns::REGISTER).is_some() {
            let existed = self.unregister(&user).await.map_err(internal)?;
            if !existed {
                return Err((
                    Condition::RegistrationRequired,
                    Some("not registered".into()),
                ));
            }
            return Ok(None);
        }
        let values: FormValues = match q.child("x", ns::DATA) {
            Some(x) => form::values(x).ok_or((
                Condition::BadRequest,
                Some("the form must be submitted with type='submit'".into()),
            ))?,
            None => q
                .elements()
                .filter(|e| e.name != "x")
                .map(|e| (e.name.to_string(), e.text()))
                .collect(),
        };
        let form_def = self.bridge.registration_form(&user);
        let missing: Vec<&str> = form_def
            .fields
            .iter()
            .filter(|f| f.required && values.get(&f.var).is_none_or(|v| v.trim().is_empty()))
            .map(|f| f.var.as_str())
            .collect();
        if !missing.is_empty() {
            return Err((
                Condition::NotAcceptable,
                Some(format!("missing required field(s): {}", missing.join(", "))),
            ));
        }
        let creds = self.bridge.register(&user, &values).await.map_err(|e| {
            let cond = match e.kind {
                ErrorKind::Transient => Condition::RemoteServerTimeout,
                ErrorKind::Malformed => Condition::NotAcceptable,
                k => condition_for(k),
            };
            tracing::info!(domain = %self.domain, user = %user, "registration refused: {}", e.text);
            (cond, Some(e.text))
        })?;
        let account = self
            .store
            .upsert_account(self.kind, &user, &creds)
            .await
            .map_err(internal)?;
        self.caches.put_account(&user, account);
        tracing::info!(domain = %self.domain, user = %user, "registered");
        // (Re)starts the session with the new credentials; an old one is stopped.
        self.start_session(account, user.clone(), creds);
        // XEP-0100 §6.1: the gateway asks to be in the user's roster.
        self.send(stanza::presence(&self.domain, &user, Some("subscribe")))
            .await;
        Ok(None)
    }

    /// Removes a user's registration, credentials and mappings; true when there was one.
    pub async fn unregister(&self, user: &str) -> Result<bool, crate::store::StoreError> {
        if let Some(acc) = self.store.account(self.kind, user).await? {
            self.stop_session(acc.id);
        }
        self.caches.forget_account(user);
        if let Err(e) = self.bridge.unregister(user).await {
            tracing::warn!(domain = %self.domain, user = %user, "bridge cleanup on unregistering: {e}");
        }
        let existed = self.store.remove_account(self.kind, user).await?;
        if existed {
            tracing::info!(domain = %self.domain, user = %user, "unregistered");
            self.send(stanza::presence(&self.domain, user, Some("unsubscribe")))
                .await;
            self.send(stanza::presence(&self.domain, user, Some("unsubscribed")))
                .await;
            self.send(stanza::presence(&self.domain, user, Some("unavailable")))
                .await;
        }
        Ok(existed)
    }

    async fn gateway_set(&self, q: &Element) -> Result<Option<Element>, Reply> {
        let raw = q.child_text("prompt", ns::GATEWAY).unwrap_or_default();
        let parsed = self.bridge.parse_address(raw.trim()).map_err(|e| {
            let cond = match e.kind {
                ErrorKind::Malformed => Condition::JidMalformed,
                ErrorKind::Transient => Condition::RemoteServerTimeout,
                _ => Condition::NotAcceptable,
            };
            (cond, Some(e.text))
        })?;
        let identity = self.ensure_identity(&parsed).await.map_err(|c| (c, None))?;
        let contact = self.contact_jid(&identity);
        Ok(Some(
            Element::new("query", ns::GATEWAY)
                .with_child(Element::text_child("jid", ns::GATEWAY, contact.clone()))
                .with_child(Element::text_child("prompt", ns::GATEWAY, contact)),
        ))
    }
}

/// An error answer: condition and optional text.
pub type Reply = (Condition, Option<String>);

fn internal(e: crate::store::StoreError) -> Reply {
    tracing::error!("store: {e}");
    (Condition::InternalServerError, None)
}
