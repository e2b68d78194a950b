//! Proves the mail test bed itself (tests/common/mail.rs): mail injected into OpenSMTPD
//! lands in a Maildir and shows over IMAP, mail sent through Dovecot's submission with AUTH
//! reaches another user, unknown recipients and wrong passwords are refused with the right
//! codes, Dovecot restarts on the same port with its mail, and nothing is left running after
//! a drop.

mod common;

use std::time::Duration;

use common::mail::{DOMAIN, MailServer, SmtpClient};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);
/// Less than OpenSMTPD's first retry of a deferred delivery.
const PROMPT: Duration = Duration::from_secs(5);
const ALICE: &str = "alice@example.test";
const ALICE_PW: &str = "alice-pw";
const BOB: &str = "bob@example.test";
const BOB_PW: &str = "bob pw";

async fn start() -> MailServer {
    MailServer::start(&[(ALICE, ALICE_PW), (BOB, BOB_PW)]).await
}

fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@test>\r\n\r\nbody of {subject}\r\n.leading dot\r\n"
    )
    .into_bytes()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A raw IMAP exchange, just enough to check what a client would see.
struct Imap {
    stream: BufStream<TcpStream>,
    tag: u32,
}

impl Imap {
    async fn connect(port: u16) -> Imap {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to IMAP");
        let mut imap = Imap {
            stream: BufStream::new(stream),
            tag: 0,
        };
        let greeting = imap.line().await;
        assert!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
        imap
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.stream.read_line(&mut line))
            .await
            .expect("IMAP line in time")
            .expect("read IMAP");
        assert!(n > 0, "IMAP server closed the connection");
        line.trim_end().to_owned()
    }

    /// Sends a command; returns the untagged lines and the tagged status line.
    async fn command(&mut self, command: &str) -> (Vec<String>, String) {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.stream
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await
            .expect("write IMAP");
        self.stream.flush().await.expect("flush IMAP");
        let mut untagged = Vec::new();
        loop {
            let line = self.line().await;
            if let Some(status) = line.strip_prefix(&format!("{tag} ")) {
                return (untagged, status.to_owned());
            }
            untagged.push(line);
        }
    }

    async fn ok(&mut self, command: &str) -> Vec<String> {
        let (untagged, status) = self.command(command).await;
        assert!(
            status.starts_with("OK"),
            "{command}: {status}\n{untagged:?}"
        );
        untagged
    }

    async fn login(port: u16, user: &str, password: &str) -> Imap {
        let mut imap = Imap::connect(port).await;
        imap.ok(&format!("LOGIN \"{user}\" \"{password}\"")).await;
        imap
    }

    /// SELECTs INBOX and returns its EXISTS count.
    async fn inbox_count(&mut self) -> usize {
        let untagged = self.ok("SELECT INBOX").await;
        untagged
            .iter()
            .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
            .unwrap_or_else(|| panic!("no EXISTS in {untagged:?}"))
    }

    async fn logout(mut self) {
        let (untagged, status) = self.command("LOGOUT").await;
        assert!(status.starts_with("OK"), "LOGOUT: {status}");
        assert!(
            untagged.iter().any(|l| l.starts_with("* BYE")),
            "{untagged:?}"
        );
    }
}

async fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

#[tokio::test]
async fn injected_mail_reaches_the_maildir_and_imap() {
    let mail = start().await;
    assert_eq!(mail.host(), "127.0.0.1");
    assert!(ALICE.ends_with(DOMAIN));
    assert!(mail.mailbox_messages(ALICE, "INBOX").is_empty());

    let raw = message("carol@outside.test", ALICE, "injected-1");
    mail.inject("carol@outside.test", &[ALICE], &raw).await;
    let inbox = mail.wait_for_messages(ALICE, "INBOX", 1, WAIT).await;
    assert_eq!(inbox.len(), 1);
    assert!(contains(&inbox[0], "Subject: injected-1"));
    // The dot-stuffed line comes back as it was.
    assert!(contains(&inbox[0], "\n.leading dot"));
    assert!(mail.mailbox_messages(BOB, "INBOX").is_empty());

    let mut imap = Imap::login(mail.imap_port(), ALICE, ALICE_PW).await;
    assert_eq!(imap.inbox_count().await, 1);
    let fetched = imap
        .ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    assert!(
        fetched.iter().any(|l| l.contains("Subject: injected-1")),
        "{fetched:?}"
    );
    // The Sent folder is there, marked \Sent, and maps to the Maildir++ folder.
    let listed = imap.ok("LIST (SPECIAL-USE) \"\" \"*\"").await;
    assert!(
        listed
            .iter()
            .any(|l| l.contains("\\Sent") && l.ends_with(" Sent")),
        "{listed:?}"
    );
    let copy = "Subject: kept copy\r\n\r\nhello";
    imap.ok(&format!("APPEND Sent {{{}+}}\r\n{copy}", copy.len()))
        .await;
    imap.logout().await;
    let sent = mail.wait_for_messages(ALICE, "Sent", 1, WAIT).await;
    assert!(contains(&sent[0], "Subject: kept copy"));
    // The IMAP client saw the message: Dovecot moved it to cur/, and it is still listed.
    assert_eq!(mail.mailbox_messages(ALICE, "INBOX").len(), 1);
}

#[tokio::test]
async fn submission_with_auth_delivers_to_another_user() {
    let mail = start().await;
    let raw = message(ALICE, BOB, "submitted-1");
    mail.submit(ALICE, ALICE_PW, ALICE, &[BOB], &raw)
        .await
        .unwrap_or_else(|e| panic!("submission refused: {e}\n{}", mail.logs()));
    let inbox = mail.wait_for_messages(BOB, "INBOX", 1, WAIT).await;
    assert_eq!(inbox.len(), 1);
    assert!(contains(&inbox[0], "Subject: submitted-1"));
    assert!(mail.mailbox_messages(ALICE, "INBOX").is_empty());

    // The same by hand, with the client's view of every step.
    let mut c = SmtpClient::connect(mail.submission_port()).await;
    let ehlo = c.ehlo().await;
    assert!(
        ehlo.lines
            .iter()
            .any(|l| l.starts_with("AUTH") && l.contains("PLAIN")),
        "{ehlo}"
    );
    assert_eq!(c.auth_plain(BOB, BOB_PW).await.code, 235);
    assert_eq!(c.command(&format!("MAIL FROM:<{BOB}>")).await.code, 250);
    assert_eq!(c.command(&format!("RCPT TO:<{ALICE}>")).await.code, 250);
    let done = c.data(&message(BOB, ALICE, "submitted-2")).await;
    assert_eq!(done.code, 250, "{done}");
    c.quit().await;
    let inbox = mail.wait_for_messages(ALICE, "INBOX", 1, WAIT).await;
    assert!(contains(&inbox[0], "Subject: submitted-2"));
}

#[tokio::test]
async fn unknown_recipients_are_refused_at_rcpt() {
    let mail = start().await;
    let mut c = SmtpClient::connect(mail.submission_port()).await;
    c.ehlo().await;
    assert_eq!(c.auth_plain(ALICE, ALICE_PW).await.code, 235);
    assert_eq!(c.command(&format!("MAIL FROM:<{ALICE}>")).await.code, 250);
    let nobody = c.command("RCPT TO:<nobody@example.test>").await;
    assert!((500..600).contains(&nobody.code), "{nobody}");
    assert!(nobody.text().contains("nobody@example.test"), "{nobody}");
    let elsewhere = c.command("RCPT TO:<someone@elsewhere.test>").await;
    assert!((500..600).contains(&elsewhere.code), "{elsewhere}");
    // The transaction is still usable for a known recipient.
    assert_eq!(c.command(&format!("RCPT TO:<{BOB}>")).await.code, 250);
    c.quit().await;

    // submit() reports the failing command with the server's reply.
    let err = mail
        .submit(
            ALICE,
            ALICE_PW,
            ALICE,
            &["nobody@example.test"],
            &message(ALICE, "nobody@example.test", "to-nobody"),
        )
        .await
        .expect_err("nobody@ does not exist");
    assert_eq!(err.command, "RCPT TO:<nobody@example.test>");
    assert!(err.reply.code >= 500, "{err}");

    // The same straight at OpenSMTPD.
    let mut c = SmtpClient::connect(mail.smtp_port()).await;
    c.ehlo().await;
    assert_eq!(c.command("MAIL FROM:<x@outside.test>").await.code, 250);
    let r = c.command("RCPT TO:<nobody@example.test>").await;
    assert_eq!(r.code, 550, "{r}");
    c.quit().await;
}

#[tokio::test]
async fn wrong_password_gets_535() {
    let mail = start().await;
    let mut c = SmtpClient::connect(mail.submission_port()).await;
    c.ehlo().await;
    let r = c.auth_plain(ALICE, "not-the-password").await;
    assert_eq!(r.code, 535, "{r}");
    let r = c.auth_plain(ALICE, ALICE_PW).await;
    assert_eq!(r.code, 235, "{r}");
    c.quit().await;

    let err = mail
        .submit(BOB, "wrong", BOB, &[ALICE], &message(BOB, ALICE, "x"))
        .await
        .expect_err("wrong password");
    assert_eq!(err.reply.code, 535, "{err}");
    assert!(err.command.starts_with("AUTH"), "{err}");
}

#[tokio::test]
async fn imap_restart_keeps_port_and_mail_and_queued_mail_arrives() {
    let mut mail = start().await;
    let port = mail.imap_port();
    mail.inject(
        "carol@outside.test",
        &[ALICE],
        &message("c", ALICE, "before"),
    )
    .await;
    mail.wait_for_messages(ALICE, "INBOX", 1, WAIT).await;

    // A logged-in client is told the server goes away.
    let mut imap = Imap::login(port, ALICE, ALICE_PW).await;
    assert_eq!(imap.inbox_count().await, 1);
    mail.restart_imap().await;
    assert_eq!(imap.line().await, "* BYE Server shutting down.");
    assert_eq!(mail.imap_port(), port);
    let mut imap = Imap::login(port, ALICE, ALICE_PW).await;
    assert_eq!(imap.inbox_count().await, 1);
    imap.logout().await;

    // Mail that arrives while Dovecot is down waits in OpenSMTPD's queue.
    mail.stop_imap().await;
    assert!(!mail.imap_running());
    assert!(!accepts(port).await, "IMAP still answers after stop_imap");
    assert!(!accepts(mail.submission_port()).await);
    mail.inject(
        "carol@outside.test",
        &[ALICE],
        &message("c", ALICE, "while-down"),
    )
    .await;
    assert_eq!(mail.mailbox_messages(ALICE, "INBOX").len(), 1);
    mail.start_imap().await;
    assert_eq!(mail.imap_port(), port);
    // start_imap has OpenSMTPD retry at once; its own first retry comes ~10 s later.
    let inbox = mail.wait_for_messages(ALICE, "INBOX", 2, PROMPT).await;
    assert!(contains(&inbox[1], "Subject: while-down"));
    let mut imap = Imap::login(port, ALICE, ALICE_PW).await;
    assert_eq!(imap.inbox_count().await, 2);
    imap.logout().await;
}

#[tokio::test]
async fn drop_leaves_nothing_running() {
    let mail = start().await;
    let ports = [mail.imap_port(), mail.submission_port(), mail.smtp_port()];
    let dir = mail.dir().to_owned();
    for port in ports {
        assert!(accepts(port).await, "port {port} not open while running");
    }
    drop(mail);
    for port in ports {
        assert!(!accepts(port).await, "port {port} still open after drop");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    // No process still names that dir on its command line (the Dovecot master and
    // OpenSMTPD name its path, Dovecot's other processes its instance name, the basename).
    let dir = dir
        .file_name()
        .expect("temp dir name")
        .to_string_lossy()
        .into_owned();
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&dir)
        {
            left.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    assert!(left.is_empty(), "still running: {left:?}");
}
