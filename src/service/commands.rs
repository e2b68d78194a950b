//! Commands of a gateway domain, as XEP-0050 ad-hoc commands and as chat commands in a
//! message to the bare domain JID. Both paths run the same code and give the same text.

use std::fmt::Write as _;
use std::sync::Arc;

use ferry_bridge_api::SessionStatus;

use super::Reply;
use crate::gateway::Gateway;
use crate::jid;
use crate::stanza::{self, Condition, Stanza, form, ns};
use crate::xml::{Element, NS_COMPONENT};

/// A command's ad-hoc node, name, and who may see it.
#[derive(Clone, Copy, Debug)]
pub struct Command {
    pub node: &'static str,
    pub name: &'static str,
    pub help: &'static str,
    pub admin_only: bool,
    /// Only on gateways whose contacts are followed (feeds).
    pub follows: bool,
    /// The form field (var, label) its argument comes in, as an ad-hoc command.
    pub field: Option<(&'static str, &'static str)>,
    /// The field takes several lines (`text-multi`) rather than one.
    pub multi_line: bool,
    /// Run by the bridge ([`ferry_bridge_api::Bridge::run_command`]), not the core.
    pub from_bridge: bool,
}

const fn basic(
    node: &'static str,
    name: &'static str,
    help: &'static str,
    admin_only: bool,
) -> Command {
    Command {
        node,
        name,
        help,
        admin_only,
        follows: false,
        field: None,
        multi_line: false,
        from_bridge: false,
    }
}

const fn follow(
    node: &'static str,
    name: &'static str,
    help: &'static str,
    field: Option<(&'static str, &'static str)>,
) -> Command {
    Command {
        node,
        name,
        help,
        admin_only: false,
        follows: true,
        field,
        multi_line: false,
        from_bridge: false,
    }
}

pub const COMMANDS: &[Command] = &[
    basic("help", "Help", "list the commands", false),
    basic(
        "status",
        "Status",
        "your registration and the gateway's state",
        false,
    ),
    follow(
        "subscribe",
        "Subscribe to a feed",
        "subscribe URL — follow a feed (or a site's feed)",
        Some(("url", "Feed or site address")),
    ),
    follow(
        "unsubscribe",
        "Unsubscribe from a feed",
        "unsubscribe JID — stop following a feed (its JID or address)",
        Some(("jid", "Feed JID or address")),
    ),
    follow("list", "List feeds", "the feeds you follow", None),
    follow(
        "import",
        "Import OPML",
        "import URL — follow every feed of an OPML file (e.g. an upload link)",
        Some(("url", "OPML file address")),
    ),
    follow("export", "Export OPML", "your feeds as OPML", None),
    follow(
        "settings",
        "Settings",
        "settings, settings delivery [JID] chat|headline|default, settings quiet HH:MM-HH:MM|off \
         (UTC) — how and when entries arrive",
        Some((
            "delivery",
            "Delivery (chat or headline; JID chat|headline for one feed; or quiet HH:MM-HH:MM|off)",
        )),
    ),
    basic(
        "stats",
        "Statistics",
        "users, sessions, outbox and traffic (admins)",
        true,
    ),
    basic("users", "Users", "registered users (admins)", true),
    Command {
        field: Some(("text", "Announcement")),
        multi_line: true,
        ..basic(
            "announce",
            "Announce",
            "announce TEXT — send TEXT to every registered user (admins)",
            true,
        )
    },
];

/// The commands this stanza's sender may see: none for strangers.
pub fn visible(gw: &Gateway, st: &Stanza) -> Vec<Command> {
    let bare = jid::bare(&st.from);
    let admin = gw.access.is_admin(&bare);
    if !admin && !gw.access.is_allowed(&bare) {
        return Vec::new();
    }
    let follows = gw.bridge.subscriptions().is_some();
    let own = gw.bridge.commands().into_iter().map(|c| Command {
        node: c.node,
        name: c.name,
        help: c.help,
        admin_only: c.admin_only,
        follows: false,
        field: c.field,
        multi_line: false,
        from_bridge: true,
    });
    COMMANDS
        .iter()
        .copied()
        .chain(own)
        .filter(|c| admin || !c.admin_only)
        .filter(|c| follows || !c.follows)
        .collect()
}

/// Whether `node` names a command only admins may run (one of ours or the bridge's). A
/// non-admin does not see it, but running it is `forbidden` (XEP-0050's condition for a
/// requester not allowed to execute a command), not the `item-not-found` of a command that
/// does not exist.
fn admin_only(gw: &Gateway, node: &str) -> bool {
    COMMANDS.iter().any(|c| c.admin_only && c.node == node)
        || gw
            .bridge
            .commands()
            .iter()
            .any(|c| c.admin_only && c.node == node)
}

impl Gateway {
    /// Runs a command by name for the sender; the text answer.
    pub async fn run_command(
        self: &Arc<Self>,
        st: &Stanza,
        name: &str,
        args: &str,
    ) -> Result<String, Reply> {
        let Some(cmd) = visible(self, st).into_iter().find(|c| c.node == name) else {
            return Err(if admin_only(self, name) {
                (
                    Condition::Forbidden,
                    Some(format!("'{name}' is for admins only")),
                )
            } else {
                (
                    Condition::ItemNotFound,
                    Some(format!("unknown command '{name}'; try 'help'")),
                )
            });
        };
        let user = jid::bare(&st.from);
        let mut out = String::new();
        match cmd.node {
            "help" => {
                let _ = writeln!(out, "{} commands:", self.bridge.display_name());
                for c in visible(self, st) {
                    let _ = writeln!(out, "  {} — {}", c.node, c.help);
                }
            }
            "status" => {
                let link = if *self.connected.borrow() {
                    "up"
                } else {
                    "down"
                };
                let _ = writeln!(
                    out,
                    "{} ({}): link {link}",
                    self.bridge.display_name(),
                    self.domain
                );
                let status = self
                    .lock_sessions()
                    .values()
                    .find(|s| s.user == user)
                    .map(|s| s.status.clone());
                match (self.account_of(&user).await, status) {
                    (None, _) => {
                        let _ = writeln!(out, "you are not registered");
                    }
                    (Some(_), Some(SessionStatus::Online(t))) => {
                        let _ = writeln!(out, "you are registered; session online{}", suffix(&t));
                    }
                    (Some(_), Some(SessionStatus::Failing(t))) => {
                        let _ = writeln!(out, "you are registered; session failing: {t}");
                    }
                    (Some(_), None) => {
                        let _ = writeln!(out, "you are registered; session not running");
                    }
                }
            }
            "stats" => {
                let users = self
                    .store
                    .count_accounts(self.kind)
                    .await
                    .map_err(store_err)?;
                let depth = self
                    .store
                    .outbox_depth(self.kind)
                    .await
                    .map_err(store_err)?;
                let sessions = self.lock_sessions().len();
                let b = self.kind.as_str();
                let _ = writeln!(out, "registered users: {users}");
                let _ = writeln!(out, "running sessions: {sessions}");
                let _ = writeln!(out, "outbox depth: {depth}");
                let _ = writeln!(
                    out,
                    "stanzas in/out: {}/{}",
                    self.metrics
                        .counter("ferry_stanzas_total", &[("bridge", b), ("direction", "in")]),
                    self.metrics.counter(
                        "ferry_stanzas_total",
                        &[("bridge", b), ("direction", "out")]
                    )
                );
                let _ = writeln!(out, "uptime: {}s", self.started.elapsed().as_secs());
            }
            "users" => {
                let accounts = self.store.accounts(self.kind).await.map_err(store_err)?;
                let _ = writeln!(out, "{} registered user(s):", accounts.len());
                for a in accounts {
                    let _ = writeln!(out, "  {}", a.jid);
                }
            }
            "announce" => {
                let text = args.trim();
                if text.is_empty() {
                    return Err((
                        Condition::BadRequest,
                        Some("nothing to announce; try 'announce TEXT'".into()),
                    ));
                }
                let accounts = self.store.accounts(self.kind).await.map_err(store_err)?;
                // A `chat` message from the bare gateway JID, like every other word the
                // gateway says to its users: clients show it in the conversation with
                // the gateway (where the user can answer with a command), and servers keep
                // it offline (XEP-0160) and in the archive (XEP-0313) for users who are
                // not online. A `headline` would be neither stored nor, in many clients,
                // shown outside a notification, so an offline user would never see it.
                for a in &accounts {
                    self.send(stanza::message(&self.domain, &a.jid, "chat", text))
                        .await;
                }
                tracing::info!(domain = %self.domain, admin = %user, users = accounts.len(), "announcement sent");
                let _ = writeln!(out, "announced to {} user(s)", accounts.len());
            }
            _ if cmd.follows => return self.follow_command(&user, cmd.node, args).await,
            _ if cmd.from_bridge => {
                let admin = self.access.is_admin(&user);
                return self
                    .bridge
                    .run_command(&user, admin, cmd.node, args)
                    .await
                    .map_err(|e| (stanza::condition_for(e.kind), Some(e.text)));
            }
            _ => return Err((Condition::ItemNotFound, None)),
        }
        Ok(out.trim_end().to_owned())
    }

    /// XEP-0050 execution: every command is a single stage that completes at once.
    pub(super) async fn command(
        self: &Arc<Self>,
        st: &Stanza,
        cmd: &Element,
    ) -> Result<Option<Element>, Reply> {
        let node = cmd.attr("node").unwrap_or_default();
        let action = cmd.attr("action").unwrap_or("execute");
        if action == "cancel" {
            return Ok(Some(
                Element::new("command", ns::COMMANDS)
                    .with_attr("node", node)
                    .with_attr("status", "canceled")
                    .with_opt_attr("sessionid", cmd.attr("sessionid")),
            ));
        }
        let session = cmd
            .attr("sessionid")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{node}-{:x}", rand::random::<u64>()));
        let known = visible(self, st).into_iter().find(|c| c.node == node);
        let submitted = cmd.elements().find_map(form::values);
        let mut args = String::new();
        if let Some((var, label)) = known.and_then(|c| c.field) {
            match submitted.as_ref().and_then(|v| v.get(var)) {
                Some(value) if !value.trim().is_empty() => {
                    args = if node == "settings" {
                        // The one field takes a delivery, or another setting by name.
                        let value = value.trim();
                        let named = value
                            .split_whitespace()
                            .next()
                            .is_some_and(|w| w.eq_ignore_ascii_case("quiet"));
                        if named {
                            value.to_owned()
                        } else {
                            format!("{var} {value}")
                        }
                    } else {
                        value.trim().to_owned()
                    };
                }
                // `settings` without a value shows them; the others need their field.
                _ if node == "settings" && submitted.is_some() => {}
                _ => {
                    let form = ferry_bridge_api::Form {
                        title: known.map(|c| c.name).unwrap_or_default().to_owned(),
                        instructions: known.map(|c| c.help).unwrap_or_default().to_owned(),
                        fields: vec![ferry_bridge_api::FormField {
                            kind: if known.is_some_and(|c| c.multi_line) {
                                ferry_bridge_api::FieldKind::TextMulti
                            } else {
                                ferry_bridge_api::FieldKind::TextSingle
                            },
                            ..ferry_bridge_api::FormField::text(var, label, true, None)
                        }],
                    };
                    return Ok(Some(
                        Element::new("command", ns::COMMANDS)
                            .with_attr("node", node)
                            .with_attr("status", "executing")
                            .with_attr("sessionid", session)
                            .with_child(
                                Element::new("actions", ns::COMMANDS)
                                    .with_attr("execute", "complete")
                                    .with_child(Element::new("complete", ns::COMMANDS)),
                            )
                            .with_child(form::to_element(&form, None)),
                    ));
                }
            }
        }
        let text = self.run_command(st, node, &args).await?;
        Ok(Some(
            Element::new("command", ns::COMMANDS)
                .with_attr("node", node)
                .with_attr("status", "completed")
                .with_attr("sessionid", session)
                .with_child(
                    Element::text_child("note", ns::COMMANDS, text.clone())
                        .with_attr("type", "info"),
                )
                .with_child(form::result(node, &[("result", "Result", text)])),
        ))
    }

    /// A chat message to the bare domain: the first word is a command.
    pub async fn chat_command(self: &Arc<Self>, st: &Stanza) {
        let Some(body) = st.el.child_text("body", NS_COMPONENT) else {
            return;
        };
        let body = body.trim();
        if body.is_empty() {
            return;
        }
        let (name, args) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        let name = name.to_lowercase();
        let text = match self.run_command(st, &name, args.trim()).await {
            Ok(t) => t,
            Err((_, Some(t))) => t,
            Err((c, None)) => format!("error: {}", c.as_str()),
        };
        let mut reply = stanza::message(&self.domain, st.from.as_str(), "chat", &text);
        if let Some(t) = st.el.child("thread", NS_COMPONENT) {
            reply.push(t.clone());
        }
        self.send(reply).await;
    }
}

fn suffix(t: &str) -> String {
    if t.is_empty() {
        String::new()
    } else {
        format!(" ({t})")
    }
}

fn store_err(e: crate::store::StoreError) -> Reply {
    tracing::error!("store: {e}");
    (Condition::InternalServerError, None)
}
