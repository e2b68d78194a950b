//! The IMAP side of a mailbox: logging in (implicit TLS or STARTTLS, plaintext only on
//! loopback), reading what arrived above a UID, waiting in IDLE with a renewal and a
//! liveness check, and appending sent mail to the Sent folder.

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::{Fetch, NameAttribute, UnsolicitedResponse};
use ferry_bridge_api::{BridgeError, ErrorKind};
use futures_util::StreamExt;

use crate::net::{self, MailStream, Server, Tls};

/// A logged-in IMAP connection.
pub type ImapSession = async_imap::Session<MailStream>;

/// How long one IMAP command (other than IDLE) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `fut` with [`COMMAND_TIMEOUT`], turning IMAP errors into bridge errors that say
/// what failed.
async fn within<T>(
    what: &str,
    fut: impl std::future::Future<Output = async_imap::error::Result<T>>,
) -> Result<T, BridgeError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(imap_error(what, e)),
        Err(_) => Err(BridgeError::transient(format!("IMAP {what} timed out"))),
    }
}

fn imap_error(what: &str, e: async_imap::error::Error) -> BridgeError {
    use async_imap::error::Error;
    match e {
        Error::No(text) | Error::Bad(text) => {
            BridgeError::permanent(format!("IMAP {what} refused: {}", text.trim()))
        }
        other => BridgeError::transient(format!("IMAP {what} failed: {other}")),
    }
}

/// Connects and logs in. A refused password is [`ErrorKind::NotAuthorized`] with the
/// server's words, e.g. "IMAP login failed: [AUTHENTICATIONFAILED] Authentication failed.".
pub async fn login(
    server: &Server,
    user: &str,
    password: &str,
) -> Result<ImapSession, BridgeError> {
    server
        .check()
        .map_err(|e| BridgeError::new(ErrorKind::NotAcceptable, format!("IMAP server: {e}")))?;
    let stream = net::connect(server)
        .await
        .map_err(|e| BridgeError::transient(format!("IMAP: {}", e.text)))?;
    let mut client = async_imap::Client::new(stream);
    greeting(&mut client, server).await?;
    if server.tls == Tls::StartTls {
        within(
            "STARTTLS",
            client.run_command_and_check_ok("STARTTLS", None),
        )
        .await?;
        let stream = client.into_inner().upgrade(&server.host).await?;
        client = async_imap::Client::new(stream);
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, client.login(user, password)).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((async_imap::error::Error::No(text), _))) => Err(BridgeError::new(
            ErrorKind::NotAuthorized,
            format!("IMAP login failed: {}", text.trim()),
        )),
        Ok(Err((e, _))) => Err(imap_error("login", e)),
        Err(_) => Err(BridgeError::transient("IMAP login timed out")),
    }
}

async fn greeting(
    client: &mut async_imap::Client<MailStream>,
    server: &Server,
) -> Result<(), BridgeError> {
    match tokio::time::timeout(net::CONNECT_TIMEOUT, client.read_response()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(BridgeError::transient(format!(
            "IMAP server {server} closed the connection before its greeting"
        ))),
        Ok(Err(e)) => Err(BridgeError::transient(format!("IMAP server {server}: {e}"))),
        Err(_) => Err(BridgeError::transient(format!(
            "IMAP server {server} sent no greeting"
        ))),
    }
}

/// What SELECT told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selected {
    pub validity: u32,
    /// The UID the next message will get (or 1 + the highest seen, when not reported).
    pub uid_next: u32,
    pub exists: u32,
}

/// Selects `mailbox`.
pub async fn select(session: &mut ImapSession, mailbox: &str) -> Result<Selected, BridgeError> {
    let m = within("SELECT", session.select(mailbox)).await?;
    let uid_next = match m.uid_next {
        Some(n) => n,
        None if m.exists == 0 => 1,
        None => {
            // Ask for the highest UID of the last message.
            let fetched = fetch_all(session, &m.exists.to_string(), "(UID)").await?;
            fetched.iter().filter_map(|f| f.uid).max().unwrap_or(0) + 1
        }
    };
    Ok(Selected {
        validity: m.uid_validity.unwrap_or(0),
        uid_next,
        exists: m.exists,
    })
}

/// Whether the server does IDLE.
pub async fn has_idle(session: &mut ImapSession) -> Result<bool, BridgeError> {
    let caps = within("CAPABILITY", session.capabilities()).await?;
    Ok(caps.has_str("IDLE"))
}

async fn fetch_all(
    session: &mut ImapSession,
    set: &str,
    query: &str,
) -> Result<Vec<Fetch>, BridgeError> {
    let fut = async {
        let mut out = Vec::new();
        let mut stream = session.fetch(set, query).await?;
        while let Some(f) = stream.next().await {
            out.push(f?);
        }
        Ok(out)
    };
    within("FETCH", fut).await
}

async fn uid_fetch_all(
    session: &mut ImapSession,
    set: &str,
    query: &str,
) -> Result<Vec<Fetch>, BridgeError> {
    let fut = async {
        let mut out = Vec::new();
        let mut stream = session.uid_fetch(set, query).await?;
        while let Some(f) = stream.next().await {
            out.push(f?);
        }
        Ok(out)
    };
    within("UID FETCH", fut).await
}

/// The (UID, size) of every message above `last`, oldest first.
pub async fn new_since(
    session: &mut ImapSession,
    last: u32,
) -> Result<Vec<(u32, u32)>, BridgeError> {
    let set = format!("{}:*", last.saturating_add(1));
    let mut found: Vec<(u32, u32)> = uid_fetch_all(session, &set, "(UID RFC822.SIZE)")
        .await?
        .iter()
        .filter_map(|f| Some((f.uid?, f.size.unwrap_or(0))))
        // `N:*` always includes the last message, even when its UID is below N.
        .filter(|(uid, _)| *uid > last)
        .collect();
    found.sort_unstable();
    found.dedup_by_key(|(uid, _)| *uid);
    Ok(found)
}

/// The whole message `uid` (without setting \Seen), or `None` when it is gone.
pub async fn body(session: &mut ImapSession, uid: u32) -> Result<Option<Vec<u8>>, BridgeError> {
    let fetched = uid_fetch_all(session, &uid.to_string(), "(UID BODY.PEEK[])").await?;
    Ok(fetched
        .iter()
        .find(|f| f.uid == Some(uid))
        .and_then(|f| f.body().map(<[u8]>::to_vec)))
}

/// The header section of message `uid`.
pub async fn header(session: &mut ImapSession, uid: u32) -> Result<Option<Vec<u8>>, BridgeError> {
    let fetched = uid_fetch_all(session, &uid.to_string(), "(UID BODY.PEEK[HEADER])").await?;
    Ok(fetched
        .iter()
        .find(|f| f.uid == Some(uid))
        .and_then(|f| f.header().or_else(|| f.body()).map(<[u8]>::to_vec)))
}

/// How an IDLE wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Woke {
    /// The server said something (new mail, flags, expunge).
    News,
    /// Time to renew IDLE, or the server was quiet long enough that it is worth checking.
    Quiet,
    /// ferry is shutting down.
    Shutdown,
}

/// Waits in IDLE until the server says something, `renew` passes (the whole wait), or
/// `quiet` passes without a word from the server; then ends IDLE and, after a quiet spell,
/// proves the connection alive with NOOP. A dead connection is an error.
pub async fn idle(
    session: ImapSession,
    renew: Duration,
    quiet: Duration,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(ImapSession, Woke), BridgeError> {
    // Mail that came while the last commands ran was announced then (EXISTS), not in
    // the coming IDLE: look again before waiting.
    let mut news = false;
    while let Ok(r) = session.unsolicited_responses.try_recv() {
        news |= matches!(
            r,
            UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
        );
    }
    if news {
        return Ok((session, Woke::News));
    }
    let mut handle = session.idle();
    within("IDLE", handle.init()).await?;
    let woke = {
        let (wait, stop) = handle.wait_with_timeout(quiet);
        let woke = tokio::select! {
            r = wait => match r {
                Ok(IdleResponse::NewData(_)) => Woke::News,
                Ok(IdleResponse::Timeout) | Ok(IdleResponse::ManualInterrupt) => Woke::Quiet,
                Err(e) => return Err(imap_error("IDLE", e)),
            },
            _ = tokio::time::sleep(renew) => Woke::Quiet,
            _ = shutdown.wait_for(|s| *s) => Woke::Shutdown,
        };
        drop(stop);
        woke
    };
    let mut session = within("DONE", handle.done()).await?;
    // Whatever was announced, the caller looks at the mailbox next.
    while session.unsolicited_responses.try_recv().is_ok() {}
    if woke == Woke::Quiet {
        within("NOOP", session.noop()).await?;
    }
    Ok((session, woke))
}

/// The Sent folder: the one marked `\Sent` (RFC 6154), else one named like it.
pub async fn sent_folder(session: &mut ImapSession) -> Result<Option<String>, BridgeError> {
    let fut = async {
        let mut names = Vec::new();
        let mut stream = session.list(Some(""), Some("*")).await?;
        while let Some(n) = stream.next().await {
            let n = n?;
            let sent = n
                .attributes()
                .iter()
                .any(|a| matches!(a, NameAttribute::Sent));
            names.push((n.name().to_owned(), sent));
        }
        Ok(names)
    };
    let names = within("LIST", fut).await?;
    if let Some((n, _)) = names.iter().find(|(_, sent)| *sent) {
        return Ok(Some(n.clone()));
    }
    const USUAL: &[&str] = &["Sent", "Sent Items", "Sent Messages", "INBOX.Sent"];
    Ok(names
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| USUAL.iter().any(|u| u.eq_ignore_ascii_case(n))))
}

/// Appends `raw` to `folder`, marked \Seen.
pub async fn append(
    session: &mut ImapSession,
    folder: &str,
    raw: &[u8],
) -> Result<(), BridgeError> {
    within(
        "APPEND",
        session.append(folder, Some("(\\Seen)"), None, raw),
    )
    .await
}
