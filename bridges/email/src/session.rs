//! One user's mailbox session: the IMAP side waits in IDLE (or polls), hands every mail
//! above the last delivered UID to the core with its read position as a checkpoint, and
//! reconnects with backoff; the SMTP side sends through one kept connection and appends
//! each sent mail to the Sent folder. The gateway presence follows both sides.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ferry_bridge_api::{
    AccountId, BridgeError, ErrorKind, EventSink, InboundMessage, Outbound, RemoteEvent, RemoteId,
    SendReceipt, Session, SessionStatus, Shutdown,
};
use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::imap::{self, ImapSession, Selected, Woke};
use crate::mime::{self, Attachment, Limits, Mail};
use crate::smtp::Smtp;
use crate::store::Cursor;
use crate::{Mailbox, Shared, attach, compose, now_ms};

const SCOPE: &str = "email";

pub struct EmailSession {
    inner: Arc<Inner>,
}

struct Inner {
    account: AccountId,
    mb: Mailbox,
    shared: Arc<Shared>,
    /// The connection `login` opened, taken by the first `run`.
    first: tokio::sync::Mutex<Option<(ImapSession, Selected)>>,
    smtp: tokio::sync::Mutex<Option<Smtp>>,
    /// A second IMAP connection for APPEND to Sent, and the folder's name.
    sent: tokio::sync::Mutex<Option<(ImapSession, Option<String>)>>,
    health: Mutex<Health>,
    /// Subjects of recent mails by Message-ID, so a chat reply without a subject goes
    /// out as "Re: …" of the mail it answers.
    subjects: Mutex<Subjects>,
    events: Mutex<Option<EventSink>>,
}

#[derive(Default)]
struct Health {
    imap: Option<String>,
    smtp: Option<String>,
    shown: Option<SessionStatus>,
}

impl EmailSession {
    /// Logs in to IMAP and selects the watched folder, so a session that starts works.
    pub(crate) async fn start(
        account: AccountId,
        mb: Mailbox,
        shared: Arc<Shared>,
    ) -> Result<EmailSession, BridgeError> {
        let mut s = imap::login(&mb.imap, &mb.imap_user, &mb.imap_password).await?;
        let selected = imap::select(&mut s, &shared.settings.mailbox).await?;
        Ok(EmailSession {
            inner: Arc::new(Inner {
                account,
                mb,
                shared,
                first: tokio::sync::Mutex::new(Some((s, selected))),
                smtp: tokio::sync::Mutex::new(None),
                sent: tokio::sync::Mutex::new(None),
                health: Mutex::default(),
                subjects: Mutex::default(),
                events: Mutex::default(),
            }),
        })
    }
}

fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2 + 1))
}

impl Inner {
    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.shared.settings.max_message_bytes,
            ..Limits::default()
        }
    }

    /// Notes how one side is doing and tells the user when the whole picture changed.
    async fn note(&self, imap: Option<Option<String>>, smtp: Option<Option<String>>) {
        let (status, sink) = {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = imap {
                h.imap = v;
            }
            if let Some(v) = smtp {
                h.smtp = v;
            }
            let status = match (&h.imap, &h.smtp) {
                (None, None) => {
                    SessionStatus::Online(format!("{} connected", self.mb.address.spelled))
                }
                (Some(e), _) | (None, Some(e)) => SessionStatus::Failing(e.clone()),
            };
            if h.shown.as_ref() == Some(&status) {
                return;
            }
            h.shown = Some(status.clone());
            (
                status,
                self.events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            )
        };
        match &status {
            SessionStatus::Online(_) => {
                tracing::info!(email = %self.mb.address.spelled, "mailbox works")
            }
            SessionStatus::Failing(e) => {
                tracing::warn!(email = %self.mb.address.spelled, "mailbox failing: {e}")
            }
        }
        if let Some(sink) = sink {
            let _ = sink.emit(RemoteEvent::Status(status)).await;
        }
    }

    /// Watches the mailbox until shutdown; errors end one connection, not the session.
    async fn run(&self, events: EventSink, mut shutdown: Shutdown) -> Result<(), BridgeError> {
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(events.clone());
        let timing = self.shared.settings.timing;
        let mut delay = Duration::from_secs(1);
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let first = self.first.lock().await.take();
            let started = tokio::time::Instant::now();
            match self.watch(first, &events, &mut shutdown).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    self.note(Some(Some(e.text.clone())), None).await;
                    if started.elapsed() > Duration::from_secs(60) {
                        delay = Duration::from_secs(1);
                    }
                    let wait = jitter(delay);
                    delay = (delay * 2).min(timing.retry_max);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait_for(|s| *s) => return Ok(()),
                    }
                }
            }
        }
    }

    /// One IMAP connection's life: catch up from the stored position, then wait for news.
    async fn watch(
        &self,
        first: Option<(ImapSession, Selected)>,
        events: &EventSink,
        shutdown: &mut Shutdown,
    ) -> Result<(), BridgeError> {
        let settings = &self.shared.settings;
        let (mut s, selected) = match first {
            Some(pair) => pair,
            None => {
                let mut s =
                    imap::login(&self.mb.imap, &self.mb.imap_user, &self.mb.imap_password).await?;
                let sel = imap::select(&mut s, &settings.mailbox).await?;
                (s, sel)
            }
        };
        let mut cursor = self.position(selected).await?;
        let idle = imap::has_idle(&mut s).await?;
        self.note(Some(None), None).await;
        loop {
            cursor = self.catch_up(&mut s, cursor, events).await?;
            if *shutdown.borrow() {
                let _ = tokio::time::timeout(Duration::from_secs(5), s.logout()).await;
                return Ok(());
            }
            if idle {
                let (next, woke) = imap::idle(
                    s,
                    settings.timing.idle_renew,
                    settings.timing.idle_quiet,
                    shutdown,
                )
                .await?;
                s = next;
                if woke == Woke::Shutdown {
                    let _ = tokio::time::timeout(Duration::from_secs(5), s.logout()).await;
                    return Ok(());
                }
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(settings.timing.poll) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
                tokio::time::timeout(imap::COMMAND_TIMEOUT, s.noop())
                    .await
                    .map_err(|_| BridgeError::transient("IMAP NOOP timed out"))?
                    .map_err(|e| BridgeError::transient(format!("IMAP NOOP failed: {e}")))?;
            }
        }
    }

    /// Where to start reading: the stored position when the folder is the same
    /// (UIDVALIDITY unchanged), else from now on: a new registration does not replay the
    /// mailbox, and a changed UIDVALIDITY never redelivers old mail.
    async fn position(&self, sel: Selected) -> Result<Cursor, BridgeError> {
        let key = Cursor::key(self.account, &self.shared.settings.mailbox);
        let stored = self
            .shared
            .store
            .checkpoint(SCOPE, &key)
            .await?
            .as_deref()
            .and_then(Cursor::decode);
        match stored {
            Some(c) if c.validity == sel.validity => return Ok(c),
            Some(c) => tracing::warn!(
                email = %self.mb.address.spelled,
                "UIDVALIDITY changed from {} to {}: reading new mail from here on",
                c.validity,
                sel.validity
            ),
            None => {
                tracing::info!(email = %self.mb.address.spelled, "first look at the mailbox: reading new mail from here on")
            }
        }
        let c = Cursor {
            validity: sel.validity,
            uid: sel.uid_next.saturating_sub(1),
        };
        self.shared
            .store
            .set_checkpoint(SCOPE, &key, &c.encode())
            .await?;
        Ok(c)
    }

    /// Hands every mail above `cursor` to the core, oldest first.
    async fn catch_up(
        &self,
        s: &mut ImapSession,
        mut cursor: Cursor,
        events: &EventSink,
    ) -> Result<Cursor, BridgeError> {
        let max = self.shared.settings.max_message_bytes;
        for (uid, size) in imap::new_since(s, cursor.uid).await? {
            let too_big = size as usize > max;
            let raw = if too_big {
                imap::header(s, uid).await?
            } else {
                imap::body(s, uid).await?
            };
            cursor.uid = uid;
            let Some(raw) = raw else { continue };
            let mut msg = self
                .inbound(raw, uid, cursor.validity, too_big.then_some(size))
                .await;
            msg.checkpoint = Some(cursor.checkpoint(self.account, &self.shared.settings.mailbox));
            events.emit(RemoteEvent::Message(msg)).await?;
        }
        Ok(cursor)
    }

    /// A mail as a chat message. A mail that cannot be read (over a limit, hostile)
    /// becomes a short notice from the gateway instead, so its position is still recorded.
    async fn inbound(
        &self,
        raw: Vec<u8>,
        uid: u32,
        validity: u32,
        oversize: Option<u32>,
    ) -> InboundMessage {
        let fallback_id = format!("imap:{validity}:{uid}");
        let limits = self.limits();
        let parsed = tokio::task::spawn_blocking(move || mime::parse(&raw, &limits)).await;
        let mail = match parsed {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(email = %self.mb.address.spelled, uid, "unreadable mail dropped: {e}");
                return InboundMessage {
                    remote_message_id: fallback_id,
                    body: format!(
                        "A mail in your mailbox (UID {uid}) could not be read here ({e}); it is still in your mailbox."
                    ),
                    ..Default::default()
                };
            }
            Err(e) => {
                tracing::error!(uid, "mail parser failed: {e}");
                return InboundMessage {
                    remote_message_id: fallback_id,
                    body: format!(
                        "A mail in your mailbox (UID {uid}) could not be read here; it is still in your mailbox."
                    ),
                    ..Default::default()
                };
            }
        };
        self.to_message(mail, fallback_id, oversize).await
    }

    async fn to_message(
        &self,
        mail: Mail,
        fallback_id: String,
        oversize: Option<u32>,
    ) -> InboundMessage {
        let mut published = Vec::with_capacity(mail.attachments.len());
        for a in mail.attachments.iter() {
            published.push(self.publish(a).await);
        }
        if mail.from.is_none() {
            tracing::warn!(email = %self.mb.address.spelled, "mail without a readable sender; shown from the gateway");
        }
        let oversize = oversize.map(|size| (size, self.shared.settings.max_message_bytes));
        let msg = crate::inbound::to_message(mail, fallback_id, &published, oversize);
        if let Some(subject) = &msg.subject {
            self.subjects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(&msg.remote_message_id, subject);
        }
        msg
    }

    /// Keeps an attachment under `/media/` and returns its link.
    async fn publish(&self, a: &Attachment) -> Result<String, String> {
        let Some(base) = &self.shared.settings.public_url else {
            return Err("ferry has no [http] public_url to serve it from".into());
        };
        let token = self
            .shared
            .store
            .put_media(&a.name, &a.content_type, a.data.clone())
            .await
            .map_err(|e| e.text)?;
        Ok(format!("{base}/media/{token}/{}", url_escape(&a.name)))
    }

    /// The Message-ID of an outbound stanza: stable across retries and restarts.
    fn message_id(&self, key: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.mb.address.canonical.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        let digest = hex::encode(&h.finalize()[..8]);
        let key: String = key
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        format!("ferry.{key}.{digest}@{}", self.mb.address.domain())
    }

    async fn send(
        self: &Arc<Self>,
        to: &RemoteId,
        msg: &Outbound,
    ) -> Result<SendReceipt, BridgeError> {
        let to_addr = msg
            .to_display
            .as_deref()
            .and_then(|d| Address::parse(d).ok())
            .filter(|a| a.canonical == to.as_str())
            .map_or_else(|| Address::parse(to.as_str()), Ok)?;
        let max = self.shared.settings.max_message_bytes;
        let mut body = msg.body.clone();
        let mut attachments = Vec::new();
        let mut budget = max.saturating_sub(body.len() + 16 * 1024);
        let mut notes = Vec::new();
        for link in &msg.links {
            match attach::fetch(
                link,
                budget * 3 / 4,
                self.shared.settings.allow_private_links,
            )
            .await
            {
                Ok(a) => {
                    budget = budget.saturating_sub(a.data.len() * 4 / 3 + 1024);
                    // The link is now the attachment; a body that was only the link goes.
                    if body.trim() == link.as_str() {
                        body.clear();
                    }
                    attachments.push(a);
                }
                Err(skip) => {
                    let why = match skip {
                        attach::Skip::TooLarge => "too large to attach".to_owned(),
                        attach::Skip::Refused(w) | attach::Skip::Failed(w) => w,
                    };
                    tracing::info!("link left as a link: {why}");
                    notes.push(format!("{link} was sent as a link ({why})"));
                    if !body.contains(link.as_str()) {
                        body.push_str(&format!("\n{link}"));
                    }
                }
            }
        }
        let answered = msg.in_reply_to.as_deref().and_then(|r| {
            self.subjects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(r)
        });
        let subject = match (&msg.subject, answered) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => reply_subject(&s),
            (None, None) if body.trim().is_empty() => attachments
                .first()
                .map(|a| a.name.clone())
                .unwrap_or_else(|| compose::subject_from_body("")),
            (None, None) => compose::subject_from_body(&body),
        };
        let message_id = self.message_id(&msg.key);
        let mut references = Vec::new();
        if let Some(t) = &msg.thread
            && compose::is_valid_message_id(t)
        {
            references.push(t.clone());
        }
        if let Some(r) = &msg.in_reply_to
            && compose::is_valid_message_id(r)
            && !references.contains(r)
        {
            references.push(r.clone());
        }
        let draft_subject = subject.clone();
        let draft = compose::Draft {
            from: mime::Mailbox {
                address: self.mb.address.spelled.clone(),
                name: self.mb.name.clone(),
            },
            to: mime::Mailbox {
                address: to_addr.spelled.clone(),
                name: None,
            },
            subject,
            body,
            message_id: message_id.clone(),
            in_reply_to: msg
                .in_reply_to
                .clone()
                .filter(|r| compose::is_valid_message_id(r)),
            references,
            date_ms: msg.sent_at_ms.unwrap_or_else(now_ms),
            attachments,
        };
        let raw = compose::compose(&draft)
            .map_err(|e| BridgeError::permanent(format!("cannot build the mail: {e}")))?;
        if raw.len() > max {
            return Err(BridgeError::new(
                ErrorKind::ResourceConstraint,
                format!(
                    "the mail would be {} KiB, over the {} KiB limit",
                    raw.len() / 1024,
                    max / 1024
                ),
            ));
        }
        self.submit(&to_addr.spelled, &raw).await?;
        self.subjects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(&message_id, &draft_subject);
        self.append_sent(raw);
        Ok(SendReceipt {
            remote_message_id: message_id,
            delivered: true,
            notice: (!notes.is_empty()).then(|| notes.join("\n")),
        })
    }

    /// SMTP, on the kept connection when it still answers, else a new one.
    async fn submit(&self, to: &str, raw: &[u8]) -> Result<(), BridgeError> {
        let mut slot = self.smtp.lock().await;
        for attempt in 0..2 {
            let kept = match slot.take() {
                Some(mut c) if attempt == 0 => c.alive().await.then_some(c),
                _ => None,
            };
            let mut conn = match kept {
                Some(c) => c,
                None => match Smtp::connect(
                    &self.mb.smtp,
                    self.mb.hello(),
                    &self.mb.smtp_user,
                    &self.mb.smtp_password,
                )
                .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        self.note(None, Some(Some(e.text.clone()))).await;
                        return Err(if e.kind == ErrorKind::NotAuthorized {
                            // The user must fix their password; retrying will not help.
                            e
                        } else {
                            BridgeError::transient(e.text)
                        });
                    }
                },
            };
            match conn.send(&self.mb.address.spelled, to, raw).await {
                Ok(()) => {
                    *slot = Some(conn);
                    drop(slot);
                    self.note(None, Some(None)).await;
                    return Ok(());
                }
                // A kept connection the server dropped: once more on a fresh one.
                Err(e) if e.is_transient() && attempt == 0 => {
                    tracing::debug!("SMTP connection lost, reconnecting: {}", e.text);
                    continue;
                }
                Err(e) => {
                    if !e.is_transient() {
                        *slot = Some(conn);
                    }
                    return Err(e);
                }
            }
        }
        Err(BridgeError::transient("SMTP failed twice"))
    }

    /// Appends a sent mail to the Sent folder in the background (best effort: the mail
    /// has gone out either way).
    fn append_sent(self: &Arc<Self>, raw: Vec<u8>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut slot = me.sent.lock().await;
            for attempt in 0..2 {
                if slot.is_none() {
                    let opened = async {
                        let mut s =
                            imap::login(&me.mb.imap, &me.mb.imap_user, &me.mb.imap_password)
                                .await?;
                        let folder = imap::sent_folder(&mut s).await?;
                        Ok::<_, BridgeError>((s, folder))
                    }
                    .await;
                    match opened {
                        Ok(pair) => *slot = Some(pair),
                        Err(e) => {
                            tracing::warn!(email = %me.mb.address.spelled, "cannot append to Sent: {}", e.text);
                            return;
                        }
                    }
                }
                let Some((s, folder)) = slot.as_mut() else {
                    return;
                };
                let Some(folder) = folder.clone() else { return };
                match imap::append(s, &folder, &raw).await {
                    Ok(()) => return,
                    Err(e) => {
                        *slot = None;
                        if attempt == 1 {
                            tracing::warn!(email = %me.mb.address.spelled, "cannot append to {folder}: {}", e.text);
                        }
                    }
                }
            }
        });
    }
}

/// "Re: " before a subject that has none.
fn reply_subject(s: &str) -> String {
    let t = s.trim();
    if t.len() >= 3 && t[..3].eq_ignore_ascii_case("re:") {
        t.to_owned()
    } else {
        format!("Re: {t}")
    }
}

/// A bounded memory of subjects by Message-ID (oldest forgotten first).
#[derive(Default)]
struct Subjects {
    order: std::collections::VecDeque<String>,
    by_id: std::collections::HashMap<String, String>,
}

impl Subjects {
    const MAX: usize = 512;

    fn put(&mut self, id: &str, subject: &str) {
        if self
            .by_id
            .insert(id.to_owned(), subject.to_owned())
            .is_none()
        {
            self.order.push_back(id.to_owned());
            if self.order.len() > Self::MAX
                && let Some(old) = self.order.pop_front()
            {
                self.by_id.remove(&old);
            }
        }
    }

    fn get(&self, id: &str) -> Option<String> {
        self.by_id.get(id).cloned()
    }
}

/// Percent-escapes a file name for a URL path segment.
fn url_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Session for EmailSession {
    async fn run(&self, events: EventSink, shutdown: Shutdown) -> Result<(), BridgeError> {
        self.inner.run(events, shutdown).await
    }

    async fn send(&self, to: &RemoteId, msg: &Outbound) -> Result<SendReceipt, BridgeError> {
        self.inner.send(to, msg).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_get_one_re_and_old_subjects_are_forgotten() {
        assert_eq!(reply_subject("Lunch?"), "Re: Lunch?");
        assert_eq!(reply_subject("RE: Lunch?"), "RE: Lunch?");
        let mut s = Subjects::default();
        for i in 0..Subjects::MAX + 10 {
            s.put(&format!("m{i}@x"), &format!("s{i}"));
        }
        assert_eq!(s.get("m0@x"), None);
        assert_eq!(
            s.get(&format!("m{}@x", Subjects::MAX + 9)).as_deref(),
            Some(format!("s{}", Subjects::MAX + 9).as_str())
        );
        assert_eq!(s.by_id.len(), Subjects::MAX);
        assert!(compose::is_valid_message_id("a.b@c"));
        assert!(
            !compose::is_valid_message_id("a b@c")
                && !compose::is_valid_message_id("<a@c>")
                && !compose::is_valid_message_id("abc")
        );
        assert_eq!(url_escape("a b/é.pdf"), "a%20b%2F%C3%A9.pdf");
    }
}
