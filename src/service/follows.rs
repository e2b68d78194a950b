//! The commands of gateways whose contacts are followed (feeds): `subscribe`,
//! `unsubscribe`, `list`, `import`, `export`, `settings`, and [`follow_addresses`], which
//! `import` and `ferry feeds import` share. Subscribing by command is the same act as
//! subscribing by presence: the bridge confirms later and the contact asks to be added.

use std::fmt::Write as _;
use std::sync::Arc;

use ferry_bridge_api::{AccountId, Bridge, ImportSource, RemoteId, Subscriptions};

use super::Reply;
use crate::gateway::{Gateway, record_identity};
use crate::jid;
use crate::stanza::{self, Condition};
use crate::store::Store;

/// What came of following a list of addresses.
#[derive(Debug, Default)]
pub struct Followed {
    /// (address, contact JID localpart) of each address now followed (pending).
    pub ok: Vec<(String, String)>,
    /// (address, why not) of each address that could not be followed.
    pub failed: Vec<(String, String)>,
}

/// Records the identities of `addresses` and follows each for `account`.
pub async fn follow_addresses(
    store: &Store,
    bridge: &dyn Bridge,
    subs: &dyn Subscriptions,
    account: AccountId,
    addresses: &[String],
) -> Followed {
    let mut out = Followed::default();
    for raw in addresses {
        let parsed = match bridge.parse_address(raw) {
            Ok(p) => p,
            Err(e) => {
                out.failed.push((raw.clone(), e.text));
                continue;
            }
        };
        let identity = match record_identity(store, bridge, &parsed).await {
            Ok(i) => i,
            Err(e) => {
                out.failed.push((raw.clone(), format!("database: {e}")));
                continue;
            }
        };
        match subs.follow(account, &parsed.id).await {
            Ok(()) => out.ok.push((raw.clone(), identity.localpart)),
            Err(e) => out.failed.push((raw.clone(), e.text)),
        }
    }
    out
}

fn refused(e: ferry_bridge_api::BridgeError) -> Reply {
    (stanza::condition_for(e.kind), Some(e.text))
}

impl Gateway {
    /// Runs one of the follow commands for `user`; the text answer.
    pub(super) async fn follow_command(
        self: &Arc<Self>,
        user: &str,
        node: &str,
        args: &str,
    ) -> Result<String, Reply> {
        let Some(subs) = self.bridge.subscriptions() else {
            return Err((Condition::ItemNotFound, None));
        };
        let account = self.account_for_use(user).await.map_err(|c| (c, None))?;
        let mut out = String::new();
        match node {
            "subscribe" => {
                if args.is_empty() {
                    return Err((Condition::BadRequest, Some("usage: subscribe URL".into())));
                }
                let done = follow_addresses(
                    &self.store,
                    &*self.bridge,
                    &*subs,
                    account,
                    &[args.to_owned()],
                )
                .await;
                if let Some((_, why)) = done.failed.first() {
                    return Err((
                        Condition::NotAcceptable,
                        Some(format!("cannot subscribe: {why}")),
                    ));
                }
                for (addr, local) in &done.ok {
                    let _ = writeln!(
                        out,
                        "Subscribing to {addr} as {local}@{}; it will ask to be added to your contacts.",
                        self.domain
                    );
                }
            }
            "unsubscribe" => {
                if args.is_empty() {
                    return Err((Condition::BadRequest, Some("usage: unsubscribe JID".into())));
                }
                let identity = self.identity_named(args).await?;
                let contact = self.contact_jid(&identity);
                let was = subs
                    .unfollow(account, &RemoteId(identity.remote_id.clone()))
                    .await
                    .map_err(refused)?;
                if !was {
                    return Err((
                        Condition::ItemNotFound,
                        Some(format!("you do not follow {contact}")),
                    ));
                }
                // Take the contact off the roster's subscription both ways.
                self.send(stanza::presence(&contact, user, Some("unsubscribe")))
                    .await;
                self.send(stanza::presence(&contact, user, Some("unsubscribed")))
                    .await;
                let _ = write!(out, "Unsubscribed from {contact}.");
            }
            "list" => {
                let follows = subs.following(account).await.map_err(refused)?;
                if follows.is_empty() {
                    out.push_str("You follow no feeds. Try 'subscribe URL'.");
                }
                for f in follows {
                    let parsed = self.bridge.parse_address(f.contact.as_str()).ok();
                    let jid = match parsed {
                        Some(p) => match self.ensure_identity(&p).await {
                            Ok(i) => self.contact_jid(&i),
                            Err(_) => f.contact.to_string(),
                        },
                        None => f.contact.to_string(),
                    };
                    let name = f.name.unwrap_or_else(|| f.address.clone());
                    let state = match (f.state.available, f.state.status) {
                        (false, Some(s)) => format!(" — failing: {s}"),
                        _ => String::new(),
                    };
                    let _ = writeln!(out, "{jid} — {name} <{}>{state}", f.address);
                }
            }
            "import" => {
                if args.is_empty() {
                    return Err((Condition::BadRequest, Some("usage: import URL".into())));
                }
                let addresses = subs
                    .read_import(ImportSource::Url(args.to_owned()))
                    .await
                    .map_err(refused)?;
                let done =
                    follow_addresses(&self.store, &*self.bridge, &*subs, account, &addresses).await;
                let _ = writeln!(
                    out,
                    "Imported {} feed(s); each will ask to be added to your contacts.",
                    done.ok.len()
                );
                for (addr, why) in done.failed {
                    let _ = writeln!(out, "  skipped {addr}: {why}");
                }
            }
            "export" => {
                out = subs.export(account).await.map_err(refused)?;
            }
            "settings" => {
                let mut words = args.split_whitespace();
                if let (Some(name), Some(value)) = (words.next(), words.next()) {
                    subs.set_setting(account, name, value)
                        .await
                        .map_err(refused)?;
                    let _ = writeln!(out, "{name} is now {value}.");
                } else {
                    for (name, value, allowed) in subs.settings(account).await.map_err(refused)? {
                        let _ = writeln!(out, "{name} = {value} ({})", allowed.join(" | "));
                    }
                    out.push_str("Change one with: settings NAME VALUE");
                }
            }
            _ => return Err((Condition::ItemNotFound, None)),
        }
        Ok(out.trim_end().to_owned())
    }

    /// The contact a user means by a JID (`slug@gateway`), a bare localpart, or an address.
    async fn identity_named(&self, name: &str) -> Result<crate::store::Identity, Reply> {
        let name = name.trim();
        let local = match name.split_once('@') {
            Some((local, domain)) if domain == self.domain => Some(local.to_owned()),
            _ => None,
        };
        if let Some(local) = local {
            return self
                .resolve_contact(&local)
                .await
                .map_err(|c| (c, Some(format!("{name} is not a feed of this gateway"))));
        }
        let parsed = self.bridge.parse_address(name).map_err(refused)?;
        match self
            .store
            .identity_by_remote(self.kind, parsed.id.as_str())
            .await
        {
            Ok(Some(i)) => Ok(i),
            Ok(None) => self
                .resolve_contact(&jid::escape_node(name))
                .await
                .map_err(|c| (c, Some(format!("you do not follow {name}")))),
            Err(e) => {
                tracing::error!("store: {e}");
                Err((Condition::InternalServerError, None))
            }
        }
    }
}
