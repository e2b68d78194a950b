//! ferry's email bridge: a mail correspondent is an XMPP contact, and the user's own
//! mailbox is the bridge: IMAP in (one IDLE connection per user, [`session`]), SMTP out
//! (the user's own submission server, [`smtp`]).
//!
//! Registration logs in to both servers before it says yes; the credentials are kept
//! encrypted by the core. Mail is read with limits off the reactor ([`mime`]), turned into
//! chat messages with threads, and attachments are served under `/media/`. Outgoing mail is
//! built so that no header can be injected ([`compose`]), keeps a stable Message-ID per
//! stanza, and is appended to the Sent folder.

pub mod address;
pub mod attach;
pub mod compose;
pub mod html;
pub mod imap;
pub mod inbound;
pub mod mime;
pub mod net;
pub mod session;
pub mod smtp;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_bridge_api::{
    AccountId, Bridge, BridgeError, BridgeKind, Credentials, ErrorKind, FieldKind, Form, FormField,
    FormValues, Hub, ParsedAddress, Session,
};

use crate::address::Address;
use crate::net::{Server, Tls};
use crate::store::EmailStore;

/// How often the IMAP side renews and checks its connection.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// IDLE is ended and issued again at least this often (RFC 2177 asks for < 29 min).
    pub idle_renew: Duration,
    /// After this long without a word from the server, NOOP proves the link alive; with
    /// the command timeout, a dead link is noticed within `idle_quiet` + 60 s.
    pub idle_quiet: Duration,
    /// Without IDLE, the mailbox is polled this often.
    pub poll: Duration,
    /// The longest wait between reconnection attempts.
    pub retry_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            idle_renew: Duration::from_secs(25 * 60),
            idle_quiet: Duration::from_secs(4 * 60 + 30),
            poll: Duration::from_secs(60),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// The `[email]` table, as the bridge needs it.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Defaults offered in the registration form.
    pub imap: ServerDefaults,
    pub smtp: ServerDefaults,
    /// The folder watched for new mail.
    pub mailbox: String,
    /// The largest mail read or written, attachments included.
    pub max_message_bytes: usize,
    /// `[http] public_url` without a trailing slash, for attachment links; `None` when
    /// there is no `[http]`.
    pub public_url: Option<String>,
    /// Fetch links (to attach them) from private and loopback addresses too.
    pub allow_private_links: bool,
    pub timing: Timing,
}

/// A server default from `[email]`.
#[derive(Clone, Debug)]
pub struct ServerDefaults {
    pub host: Option<String>,
    pub port: u16,
    pub tls: Tls,
}

/// How long attachment links work (SPEC: at least 30 days).
pub const MEDIA_DAYS: i64 = 60;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The shared state of every session.
pub(crate) struct Shared {
    pub settings: Settings,
    pub store: Arc<dyn EmailStore>,
}

pub struct EmailBridge {
    shared: Arc<Shared>,
}

impl EmailBridge {
    pub fn new(settings: Settings, store: Arc<dyn EmailStore>) -> EmailBridge {
        EmailBridge {
            shared: Arc::new(Shared { settings, store }),
        }
    }
}

/// One registered mailbox: who the user is and how to reach their servers.
#[derive(Clone, Debug)]
pub struct Mailbox {
    pub address: Address,
    pub name: Option<String>,
    pub imap: Server,
    pub imap_user: String,
    pub imap_password: String,
    pub smtp: Server,
    pub smtp_user: String,
    pub smtp_password: String,
}

fn field<'a>(values: &'a FormValues, var: &str) -> Option<&'a str> {
    values.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn invalid(text: String) -> BridgeError {
    BridgeError::new(ErrorKind::NotAcceptable, text)
}

impl Mailbox {
    /// Reads a registration form (or the credentials kept from one), filling the gaps from
    /// `[email]`.
    pub fn from_values(values: &FormValues, settings: &Settings) -> Result<Mailbox, BridgeError> {
        let email = field(values, "email").ok_or_else(|| invalid("email is required".into()))?;
        let address = Address::parse(email).map_err(|e| invalid(format!("email: {}", e.text)))?;
        let password = values.get("password").cloned().unwrap_or_default();
        let server = |side: &str, d: &ServerDefaults| -> Result<Server, BridgeError> {
            let host = field(values, &format!("{side}_host"))
                .map(str::to_owned)
                .or_else(|| d.host.clone())
                .ok_or_else(|| invalid(format!("{side}_host is required (there is no default)")))?;
            let port = match field(values, &format!("{side}_port")) {
                Some(p) => p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid(format!("{side}_port: {p:?} is not a port")))?,
                None => d.port,
            };
            let tls = match field(values, &format!("{side}_tls")) {
                Some(t) => Tls::parse(t).ok_or_else(|| {
                    invalid(format!(
                        "{side}_tls: {t:?} is not implicit, starttls or none"
                    ))
                })?,
                None => d.tls,
            };
            let s = Server {
                host: host.to_ascii_lowercase(),
                port,
                tls,
            };
            s.check().map_err(|e| invalid(format!("{side}_tls: {e}")))?;
            Ok(s)
        };
        let imap = server("imap", &settings.imap)?;
        let smtp = server("smtp", &settings.smtp)?;
        let user = |side: &str| {
            field(values, &format!("{side}_user"))
                .unwrap_or(email)
                .to_owned()
        };
        let secret = |side: &str| {
            values
                .get(&format!("{side}_password"))
                .filter(|p| !p.is_empty())
                .cloned()
                .unwrap_or_else(|| password.clone())
        };
        let name = field(values, "name").map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
        });
        Ok(Mailbox {
            address,
            name,
            imap,
            imap_user: user("imap"),
            imap_password: secret("imap"),
            smtp,
            smtp_user: user("smtp"),
            smtp_password: secret("smtp"),
        })
    }

    /// What the core keeps (encrypted): every field, spelled out.
    pub fn credentials(&self) -> Credentials {
        let mut c = Credentials::new();
        c.insert("email".into(), self.address.spelled.clone());
        if let Some(n) = &self.name {
            c.insert("name".into(), n.clone());
        }
        for (side, s, u, p) in [
            ("imap", &self.imap, &self.imap_user, &self.imap_password),
            ("smtp", &self.smtp, &self.smtp_user, &self.smtp_password),
        ] {
            c.insert(format!("{side}_host"), s.host.clone());
            c.insert(format!("{side}_port"), s.port.to_string());
            c.insert(format!("{side}_tls"), s.tls.as_str().into());
            c.insert(format!("{side}_user"), u.clone());
            c.insert(format!("{side}_password"), p.clone());
        }
        c
    }

    /// The EHLO name: the domain of the user's address.
    pub fn hello(&self) -> &str {
        self.address.domain()
    }
}

#[async_trait]
impl Bridge for EmailBridge {
    fn kind(&self) -> BridgeKind {
        BridgeKind::Email
    }

    fn display_name(&self) -> String {
        "Email gateway".into()
    }

    fn gateway_prompt(&self) -> (String, String) {
        (
            "Enter an email address to write to".into(),
            "Email address".into(),
        )
    }

    fn requires_registration(&self) -> bool {
        true
    }

    fn registration_form(&self, _user: &str) -> Form {
        let s = &self.shared.settings;
        let tls_field = |var: &str, label: &str, d: Tls| FormField {
            var: var.into(),
            kind: FieldKind::ListSingle,
            label: label.into(),
            required: false,
            value: Some(d.as_str().into()),
            options: ["implicit", "starttls", "none"]
                .iter()
                .map(|o| (o.to_string(), o.to_string()))
                .collect(),
        };
        Form {
            title: "Email gateway registration".into(),
            instructions: "Give your email address and password. ferry reads new mail from \
                           your IMAP mailbox and sends through your SMTP server; it logs in \
                           to both before it accepts. Leave the servers empty to use the \
                           defaults, and the user names and passwords empty to use the \
                           address and password above."
                .into(),
            fields: vec![
                FormField::text("email", "Email address", true, None),
                FormField::text("name", "Your name (shown on outgoing mail)", false, None),
                FormField::private("password", "Password", true),
                FormField::text("imap_host", "IMAP server", false, s.imap.host.clone()),
                FormField::text(
                    "imap_port",
                    "IMAP port",
                    false,
                    Some(s.imap.port.to_string()),
                ),
                tls_field("imap_tls", "IMAP security", s.imap.tls),
                FormField::text(
                    "imap_user",
                    "IMAP user name (default: the address)",
                    false,
                    None,
                ),
                FormField::private(
                    "imap_password",
                    "IMAP password (default: the password)",
                    false,
                ),
                FormField::text("smtp_host", "SMTP server", false, s.smtp.host.clone()),
                FormField::text(
                    "smtp_port",
                    "SMTP port",
                    false,
                    Some(s.smtp.port.to_string()),
                ),
                tls_field("smtp_tls", "SMTP security", s.smtp.tls),
                FormField::text(
                    "smtp_user",
                    "SMTP user name (default: the address)",
                    false,
                    None,
                ),
                FormField::private(
                    "smtp_password",
                    "SMTP password (default: the password)",
                    false,
                ),
            ],
        }
    }

    async fn register(&self, user: &str, values: &FormValues) -> Result<Credentials, BridgeError> {
        let mb = Mailbox::from_values(values, &self.shared.settings)?;
        // Both logins at once; either refusal is the answer.
        let imap = async {
            let mut s = imap::login(&mb.imap, &mb.imap_user, &mb.imap_password).await?;
            let selected = imap::select(&mut s, &self.shared.settings.mailbox).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), s.logout()).await;
            selected.map(|_| ())
        };
        let smtp = async {
            let c =
                smtp::Smtp::connect(&mb.smtp, mb.hello(), &mb.smtp_user, &mb.smtp_password).await?;
            c.quit().await;
            Ok::<(), BridgeError>(())
        };
        let (i, s) = tokio::join!(imap, smtp);
        i?;
        s?;
        tracing::info!(user, email = %mb.address.spelled, imap = %mb.imap, smtp = %mb.smtp, "email registration checked");
        Ok(mb.credentials())
    }

    fn parse_address(&self, raw: &str) -> Result<ParsedAddress, BridgeError> {
        Address::parse(raw).map(|a| a.to_parsed())
    }

    fn parse_localpart(&self, localpart: &str) -> Option<ParsedAddress> {
        Address::parse(localpart).ok().map(|a| a.to_parsed())
    }

    fn localparts_are_derived(&self) -> bool {
        true
    }

    /// Forgets attachments after [`MEDIA_DAYS`] days, once an hour.
    async fn serve(&self, hub: Hub) {
        let mut shutdown = hub.shutdown.clone();
        loop {
            let before = now_ms() - MEDIA_DAYS * 24 * 3_600_000;
            match self.shared.store.prune_media(before).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!("email: {n} attachments older than {MEDIA_DAYS} days forgotten")
                }
                Err(e) => tracing::warn!("email: pruning attachments: {}", e.text),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    async fn login(
        &self,
        account: AccountId,
        user: &str,
        credentials: Credentials,
    ) -> Result<Arc<dyn Session>, BridgeError> {
        let mb = Mailbox::from_values(&credentials, &self.shared.settings)?;
        let session = session::EmailSession::start(account, mb, Arc::clone(&self.shared)).await?;
        tracing::debug!(user, "email session up");
        Ok(Arc::new(session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            imap: ServerDefaults {
                host: Some("mail.example.org".into()),
                port: 993,
                tls: Tls::Implicit,
            },
            smtp: ServerDefaults {
                host: Some("mail.example.org".into()),
                port: 587,
                tls: Tls::StartTls,
            },
            mailbox: "INBOX".into(),
            max_message_bytes: 1 << 20,
            public_url: None,
            allow_private_links: false,
            timing: Timing::default(),
        }
    }

    fn values(pairs: &[(&str, &str)]) -> FormValues {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_form_falls_back_to_the_defaults_and_the_one_password() {
        let mb = Mailbox::from_values(
            &values(&[("email", "Alice@Example.org"), ("password", "pw")]),
            &settings(),
        )
        .expect("valid");
        assert_eq!(mb.imap.to_string(), "mail.example.org:993");
        assert_eq!(mb.smtp.tls, Tls::StartTls);
        assert_eq!(
            (mb.imap_user.as_str(), mb.imap_password.as_str()),
            ("Alice@Example.org", "pw")
        );
        assert_eq!(
            (mb.smtp_user.as_str(), mb.smtp_password.as_str()),
            ("Alice@Example.org", "pw")
        );
        // What is kept reads back to the same mailbox.
        let again = Mailbox::from_values(&mb.credentials(), &settings()).expect("kept");
        assert_eq!(again.credentials(), mb.credentials());
        assert_eq!(again.address.spelled, "Alice@Example.org");
    }

    #[test]
    fn the_form_refuses_plaintext_off_loopback_and_bad_values() {
        let refused = |pairs: &[(&str, &str)]| {
            Mailbox::from_values(&values(pairs), &settings())
                .expect_err("refused")
                .kind
        };
        assert_eq!(
            refused(&[
                ("email", "a@example.org"),
                ("password", "p"),
                ("imap_tls", "none")
            ]),
            ErrorKind::NotAcceptable
        );
        assert_eq!(
            refused(&[
                ("email", "a@example.org"),
                ("password", "p"),
                ("smtp_port", "0")
            ]),
            ErrorKind::NotAcceptable
        );
        assert_eq!(
            refused(&[("email", "not an address"), ("password", "p")]),
            ErrorKind::NotAcceptable
        );
        assert!(
            Mailbox::from_values(
                &values(&[
                    ("email", "a@example.org"),
                    ("password", "p"),
                    ("imap_host", "127.0.0.1"),
                    ("imap_tls", "none"),
                    ("imap_port", "1143"),
                ]),
                &settings(),
            )
            .is_ok()
        );
    }
}
