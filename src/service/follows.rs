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
            "settings" => out = self.settings_command(&*subs, account, args).await?,
            _ => return Err((Condition::ItemNotFound, None)),
        }
        Ok(out.trim_end().to_owned())
    }

    /// `settings`: lists the user's settings (a contact's own one names its JID);
    /// `settings NAME VALUE` changes one; `settings NAME JID VALUE` changes a contact's own
    /// (the bridge hears `NAME REMOTE-ID`), e.g. `settings delivery xkcd.com@… headline`.
    async fn settings_command(
        &self,
        subs: &dyn Subscriptions,
        account: AccountId,
        args: &str,
    ) -> Result<String, Reply> {
        const USAGE: &str = "usage: settings, settings NAME VALUE, or settings NAME JID VALUE \
             (e.g. settings delivery headline, settings quiet 22:00-07:00, \
             settings delivery JID chat)";
        let mut out = String::new();
        let words: Vec<&str> = args.split_whitespace().collect();
        match words.as_slice() {
            [] => {
                for (name, value, allowed) in subs.settings(account).await.map_err(refused)? {
                    let name = self.setting_name(&name).await;
                    let _ = writeln!(out, "{name} = {value} ({})", allowed.join(" | "));
                }
                out.push_str(
                    "Change one with: settings NAME VALUE, or for one feed: \
                     settings delivery JID chat|headline|default. \
                     Quiet hours are in UTC (ferry does not know your time zone).",
                );
            }
            [name, value] => {
                subs.set_setting(account, name, value)
                    .await
                    .map_err(refused)?;
                let now = self.setting_value(subs, account, name).await;
                let _ = write!(out, "{name} is now {}.", now.as_deref().unwrap_or(value));
            }
            [name, target, value] => {
                let identity = self.identity_named(target).await?;
                let contact = self.contact_jid(&identity);
                let follows = subs.following(account).await.map_err(refused)?;
                if !follows
                    .iter()
                    .any(|f| f.contact.as_str() == identity.remote_id)
                {
                    return Err((
                        Condition::ItemNotFound,
                        Some(format!("you do not follow {contact}")),
                    ));
                }
                let own = format!("{} {}", name.to_ascii_lowercase(), identity.remote_id);
                subs.set_setting(account, &own, value)
                    .await
                    .map_err(refused)?;
                let _ = match self.setting_value(subs, account, &own).await {
                    Some(v) => write!(out, "{name} of {contact} is now {v}."),
                    None => {
                        let default = self.setting_value(subs, account, name).await;
                        write!(
                            out,
                            "{name} of {contact} now follows your default ({}).",
                            default.as_deref().unwrap_or("unknown")
                        )
                    }
                };
            }
            _ => return Err((Condition::BadRequest, Some(USAGE.to_owned()))),
        }
        Ok(out)
    }

    /// The value of setting `name` (any case) as the bridge lists it now.
    async fn setting_value(
        &self,
        subs: &dyn Subscriptions,
        account: AccountId,
        name: &str,
    ) -> Option<String> {
        let all = subs.settings(account).await.ok()?;
        all.into_iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v, _)| v)
    }

    /// A listed setting's name, with a contact's remote id (`delivery URL`) shown as the
    /// contact's JID.
    async fn setting_name(&self, name: &str) -> String {
        let Some((base, remote)) = name.split_once(' ') else {
            return name.to_owned();
        };
        let jid = match self.bridge.parse_address(remote) {
            Ok(p) => match self.ensure_identity(&p).await {
                Ok(i) => self.contact_jid(&i),
                Err(_) => remote.to_owned(),
            },
            Err(_) => remote.to_owned(),
        };
        format!("{base} {jid}")
    }

    /// The contact a user means by a JID (`slug@gateway`), a bare localpart, or an address.
    async fn identity_named(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<crate::store::Identity>, Reply> {
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
            Ok(Some(i)) => Ok(std::sync::Arc::new(i)),
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
