//! A real mail system for one test: Dovecot 2.3 (IMAP, LMTP, submission) and OpenSMTPD 6.8
//! on free loopback ports, each in its own temp dir, started in the foreground and killed
//! when the value is dropped.
//!
//! ```text
//!   ferry's user ──AUTH──▶ submission (Dovecot) ──relay──▶ OpenSMTPD ──LMTP──▶ Dovecot ──▶ Maildir
//!   the outside world ─────────────────────────────────────▲ (smtp_port)          ▲ IMAP (imap_port)
//! ```
//!
//! - [`MailServer::imap_port`]: Dovecot's IMAP, plain text, `LOGIN`/`AUTHENTICATE PLAIN`
//!   allowed. Users log in with their full address. Each has an `INBOX` and a `Sent` folder
//!   (`\Sent` in `LIST (SPECIAL-USE)`, created and subscribed at first login).
//! - [`MailServer::submission_port`]: Dovecot's submission service, SMTP with `AUTH PLAIN`
//!   and `AUTH LOGIN` and no TLS, relaying everything to OpenSMTPD. It does not keep a copy
//!   in `Sent`; that is the client's job (IMAP `APPEND`).
//! - [`MailServer::smtp_port`]: OpenSMTPD without auth, for mail "from the outside world"
//!   ([`MailServer::inject`]). It accepts only the configured users' addresses: any other
//!   recipient, at the test domains or elsewhere, gets `550 Invalid recipient` at `RCPT`
//!   time, also when it comes through submission (which passes the reply on). Accepted mail
//!   goes through LMTP into the recipient's Maildir.
//!
//! Configuration as in shared/TESTBED.md. What the harness adds on top:
//! - Every daemon runs in its own process group; stopping one signals the whole group (the
//!   Dovecot master alone leaves logged-in `imap` processes behind) and Drop kills it. Each
//!   also gets `setpriv --pdeathsig KILL`, so a test process that dies without unwinding
//!   does not leave it running.
//! - Mail is stored as the unprivileged `mail` user (Dovecot's `first_valid_uid` lowered to
//!   it); OpenSMTPD maps every address to that local user and hands the original recipient
//!   to LMTP (`rcpt-to`).
//! - While Dovecot is stopped OpenSMTPD keeps accepting mail and queues it (LMTP tempfail);
//!   [`MailServer::start_imap`] tells it to retry at once (`smtpctl schedule all`, run inside
//!   its mount namespace), so nothing waits for its retry timer.
//!
//! Nothing here sleeps to wait: readiness, delivery and shutdown are events (a daemon's log
//! line, a change in the Maildirs, a process's exit), each waited for with a deadline.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::free_port;

/// The mail domain of the usual test users (`alice@example.test`).
pub const DOMAIN: &str = "example.test";
/// Always 127.0.0.1.
pub const HOST: &str = "127.0.0.1";

/// How long each daemon gets to accept connections after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon gets to exit on SIGTERM before the harness sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dropped daemon gets to exit on SIGTERM (blocking) before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(2);
/// How long one SMTP reply may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// What Dovecot logs once its listeners (IMAP, submission, the LMTP socket) are open.
const DOVECOT_READY: &str = "starting up";
/// What OpenSMTPD logs (with `-v`) once its SMTP listener is open; its control socket is
/// open before that (the control process finishes its setup before the smtp process gets
/// its configuration).
const SMTPD_READY: &str = "smtp: will accept at most";
/// Fresh ports tried when another process takes one between pick and bind.
const PORT_ATTEMPTS: usize = 5;
/// The local user that owns the mail (Dovecot) and receives it (OpenSMTPD).
const MAIL_USER: &str = "mail";

/// Knobs for [`MailServer::start_with`]; the default is what [`MailServer::start`] uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailOptions {
    /// When set, Dovecot is configured for this many concurrent IMAP connections (process,
    /// client and per-user/IP limits raised above it; one `imap` process per connection)
    /// and shows each connection's state in its process title (`verbose_proctitle`), so
    /// [`MailServer::imap_idle_count`] can count the clients in IDLE. `None`: Dovecot's
    /// defaults (about 100 connections).
    pub max_imap_connections: Option<usize>,
}

/// A running Dovecot + OpenSMTPD pair owned by one test.
pub struct MailServer {
    imap_port: u16,
    submission_port: u16,
    smtp_port: u16,
    /// The configured addresses, in the order given.
    users: Vec<String>,
    dovecot: Option<Daemon>,
    smtpd: Option<Daemon>,
    options: MailOptions,
    /// Configs, Maildirs, spool, sockets and logs. Declared last: dropped after the daemons
    /// are gone.
    dir: tempfile::TempDir,
}

impl MailServer {
    /// Starts Dovecot and OpenSMTPD with these `(address, password)` users (addresses like
    /// `alice@example.test`; any domain works, [`DOMAIN`] is the usual one) and returns once
    /// IMAP, submission, LMTP and SMTP accept connections. Panics, with the logs, when
    /// something does not come up.
    pub async fn start(users: &[(&str, &str)]) -> MailServer {
        MailServer::start_with(users, MailOptions::default()).await
    }

    /// [`MailServer::start`] with [`MailOptions`] (e.g. room for a thousand IMAP clients).
    pub async fn start_with(users: &[(&str, &str)], options: MailOptions) -> MailServer {
        let dir = tempfile::Builder::new()
            .prefix("ferry-mail-")
            .tempdir()
            .expect("create a temp dir for the mail servers");
        // Dovecot's mail processes (uid `mail`) and OpenSMTPD's mail.lmtp (same uid) must
        // reach the Maildirs and the LMTP socket below it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the mail temp dir");
        let (uid, gid) = passwd_ids(MAIL_USER);
        for sub in ["dovecot", "state", "spool", "smtpd-run"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create mail server dirs");
        }
        let mail = dir.path().join("mail");
        fs::create_dir_all(&mail).expect("create the mail dir");
        std::os::unix::fs::chown(&mail, Some(uid), Some(gid)).expect("chown the mail dir");

        let mut passwd = String::new();
        let mut recipients = String::new();
        let mut vusers = String::new();
        let mut domains: Vec<&str> = Vec::new();
        for (address, password) in users {
            let (local, domain) = address
                .split_once('@')
                .unwrap_or_else(|| panic!("user {address:?} is not an address (user@domain)"));
            assert!(
                !local.is_empty()
                    && !domain.is_empty()
                    && address.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
                "unusable address {address:?}"
            );
            assert!(
                !password.contains([':', '\n', '\r']),
                "passwords with ':' or line breaks do not fit Dovecot's passwd-file"
            );
            passwd.push_str(&format!("{address}:{{PLAIN}}{password}::::::\n"));
            recipients.push_str(&format!("{address}\n"));
            vusers.push_str(&format!("{address} {MAIL_USER}\n"));
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        if domains.is_empty() {
            domains.push(DOMAIN);
        }
        let write = |name: &str, body: &str| {
            fs::write(dir.path().join(name), body).unwrap_or_else(|e| panic!("write {name}: {e}"));
        };
        write("users", &passwd);
        write("recipients", &recipients);
        write("vusers", &vusers);
        write("domains", &(domains.join("\n") + "\n"));

        let mut server = MailServer {
            imap_port: 0,
            submission_port: 0,
            smtp_port: 0,
            users: users.iter().map(|(a, _)| (*a).to_owned()).collect(),
            dovecot: None,
            smtpd: None,
            options,
            dir,
        };
        server.start_smtpd().await;
        for attempt in 1..=PORT_ATTEMPTS {
            server.imap_port = free_port();
            server.submission_port = free_port();
            while server.submission_port == server.imap_port
                || server.submission_port == server.smtp_port
            {
                server.submission_port = free_port();
            }
            server.write_dovecot_conf();
            match server.spawn_dovecot().await {
                Ok(()) => return server,
                Err(why) if attempt < PORT_ATTEMPTS => {
                    eprintln!("mail test bed: Dovecot did not start ({why}); new ports");
                }
                Err(why) => panic!("Dovecot did not start: {why}\n{}", server.logs()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Always "127.0.0.1".
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// Dovecot's IMAP port (plain text, no TLS).
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// Dovecot's submission port: SMTP with AUTH PLAIN/LOGIN (no TLS), what users send with.
    pub fn submission_port(&self) -> u16 {
        self.submission_port
    }

    /// OpenSMTPD's port: SMTP without auth, for mail from the outside world.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// The configured addresses, in the order given to [`MailServer::start`].
    pub fn users(&self) -> &[String] {
        &self.users
    }

    /// The temp dir holding configs, Maildirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// True while Dovecot runs (between [`MailServer::stop_imap`] and
    /// [`MailServer::start_imap`] it does not).
    pub fn imap_running(&self) -> bool {
        self.dovecot.is_some()
    }

    /// Hands `raw` (an RFC 5322 message; bare LF line ends are sent as CRLF) to OpenSMTPD
    /// with this envelope, as mail from another server would arrive. Returns once OpenSMTPD
    /// has queued it; use [`MailServer::wait_for_messages`] to wait for delivery. Panics with
    /// the server's reply when it refuses anything.
    pub async fn inject(&self, from: &str, to: &[&str], raw: &[u8]) {
        if let Err(e) = send_mail(self.smtp_port, None, from, to, raw).await {
            panic!("OpenSMTPD refused injected mail: {e}\n{}", self.logs());
        }
    }

    /// Sends `raw` through Dovecot's submission service as `user` (AUTH PLAIN), the way a
    /// mail client would. `Err` carries the first reply that was not a success (of AUTH,
    /// MAIL, a RCPT or DATA).
    pub async fn submit(
        &self,
        user: &str,
        password: &str,
        from: &str,
        to: &[&str],
        raw: &[u8],
    ) -> Result<(), SmtpRejection> {
        send_mail(self.submission_port, Some((user, password)), from, to, raw).await
    }

    /// The Maildir directory of `user`'s `folder`: "INBOX" (any case) is the Maildir itself,
    /// any other folder is Maildir++ `.NAME` with `/` or `.` as the hierarchy separator.
    pub fn maildir(&self, user: &str, folder: &str) -> PathBuf {
        let root = self.dir.path().join("mail").join(user).join("Maildir");
        if folder.eq_ignore_ascii_case("INBOX") {
            root
        } else {
            root.join(format!(".{}", folder.replace('/', ".")))
        }
    }

    /// The messages now in `user`'s `folder` (both `new/` and `cur/`), oldest delivery first
    /// (by Maildir file name). Empty when the folder does not exist (yet).
    pub fn mailbox_messages(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        let mut files = self.message_files(user, folder);
        files.sort();
        files
            .into_iter()
            // Dovecot moves a file from new/ to cur/ when a client sees it; read the other
            // place when it vanished between listing and reading.
            .filter_map(|(_, path)| fs::read(&path).ok().or_else(|| read_moved(&path)))
            .collect()
    }

    /// How many messages `user`'s `folder` holds now (cheaper than reading them).
    pub fn message_count(&self, user: &str, folder: &str) -> usize {
        self.message_files(user, folder).len()
    }

    /// The message files of a folder (`new/` and `cur/`, not `tmp/`), unsorted.
    fn message_files(&self, user: &str, folder: &str) -> Vec<(MaildirKey, PathBuf)> {
        let dir = self.maildir(user, folder);
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    files.push((MaildirKey::of(&name), entry.path()));
                }
            }
        }
        files
    }

    /// Waits until `user`'s `folder` holds at least `n` messages and returns them all (as
    /// [`MailServer::mailbox_messages`]). Panics after `within`, with what is there and the
    /// servers' logs.
    pub async fn wait_for_messages(
        &self,
        user: &str,
        folder: &str,
        n: usize,
        within: Duration,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + within;
        // Every change under the mail directory wakes the check (inotify); the watch is in
        // place before the first look, so no delivery can slip between the two.
        let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tx.send(());
        })
        .expect("an inotify watcher");
        notify::Watcher::watch(
            &mut watcher,
            &self.dir.path().join("mail"),
            notify::RecursiveMode::Recursive,
        )
        .expect("watch the Maildirs");
        loop {
            // Counting is cheap; the files are read once there are enough.
            if self.message_count(user, folder) >= n {
                let messages = self.mailbox_messages(user, folder);
                if messages.len() >= n {
                    return messages;
                }
            }
            let woke = tokio::time::timeout_at(deadline, changed.recv()).await;
            if woke.is_err() {
                let messages = self.mailbox_messages(user, folder);
                let shown: Vec<String> = messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect();
                panic!(
                    "{user}'s {folder} has {} message(s) after {within:?}, wanted {n}:\n{}\n\
                     --- OpenSMTPD queue ---\n{}{}",
                    messages.len(),
                    shown.join("\n----\n"),
                    self.queue_if_running(),
                    self.logs()
                );
            }
            // Take the burst of events in one look.
            while changed.try_recv().is_ok() {}
        }
    }

    /// Stops Dovecot (SIGTERM to its process group: IMAP clients get `* BYE`; SIGKILL if it
    /// lingers) and returns once none of its processes is left. OpenSMTPD keeps running and
    /// queues incoming mail until [`MailServer::start_imap`]. No-op when already stopped.
    pub async fn stop_imap(&mut self) {
        if let Some(dovecot) = self.dovecot.take() {
            dovecot.stop().await;
        }
    }

    /// Starts Dovecot again on the same ports with the same Maildirs, waits until it accepts
    /// connections, and has OpenSMTPD retry the mail it queued meanwhile. No-op when running.
    /// Panics when a port was taken meanwhile.
    pub async fn start_imap(&mut self) {
        if self.dovecot.is_some() {
            return;
        }
        if let Err(why) = self.spawn_dovecot().await {
            panic!("Dovecot did not start again: {why}\n{}", self.logs());
        }
        self.flush_queue();
    }

    /// [`MailServer::stop_imap`] then [`MailServer::start_imap`].
    pub async fn restart_imap(&mut self) {
        self.stop_imap().await;
        self.start_imap().await;
    }

    /// Has OpenSMTPD retry every queued message now (`smtpctl schedule all`).
    pub fn flush_queue(&self) {
        let out = self.smtpctl(&["schedule", "all"]);
        assert!(
            out.status.success(),
            "smtpctl schedule all failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// OpenSMTPD's queue as `smtpctl show queue` prints it (one envelope a line), for
    /// failure messages and tests that check mail is waiting.
    pub fn queue(&self) -> String {
        let out = self.smtpctl(&["show", "queue"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn queue_if_running(&self) -> String {
        if self.smtpd.is_some() {
            self.queue()
        } else {
            String::new()
        }
    }

    /// Dovecot's log (across restarts).
    pub fn dovecot_log(&self) -> String {
        read_lossy(&self.dir.path().join("dovecot.log"))
    }

    /// OpenSMTPD's log.
    pub fn smtpd_log(&self) -> String {
        read_lossy(&self.dir.path().join("smtpd.log"))
    }

    /// How many of Dovecot's IMAP connections are in IDLE now, from the `imap` processes'
    /// titles. Only counts with [`MailOptions::max_imap_connections`] set (which turns on
    /// `verbose_proctitle`); 0 otherwise.
    pub fn imap_idle_count(&self) -> usize {
        self.imap_process_titles()
            .iter()
            .filter(|t| t.ends_with(" IDLE]"))
            .count()
    }

    /// The titles of Dovecot's running `imap` processes (one per logged-in connection), e.g.
    /// `dovecot-ferry-mail-XXXX/imap [alice@example.test 127.0.0.1 IDLE]` with
    /// `verbose_proctitle`.
    pub fn imap_process_titles(&self) -> Vec<String> {
        let Some(pgid) = self.dovecot.as_ref().map(Daemon::pgid) else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .filter(|e| process_group(&e.path()) == Some(pgid))
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
                    .trim_end()
                    .to_owned()
            })
            // `dovecot-INSTANCE/imap …` (the harness names each instance).
            .filter(|t| {
                t.split(' ')
                    .next()
                    .is_some_and(|w| w.starts_with("dovecot") && w.ends_with("/imap"))
            })
            .collect()
    }

    /// The process group of Dovecot's processes (master and children), while it runs.
    pub fn dovecot_pgid(&self) -> Option<u32> {
        self.dovecot.as_ref().map(Daemon::pgid)
    }

    /// The process group of OpenSMTPD's processes, while it runs.
    pub fn smtpd_pgid(&self) -> Option<u32> {
        self.smtpd.as_ref().map(Daemon::pgid)
    }

    /// Both logs, labelled, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- Dovecot log ---\n{}--- OpenSMTPD log ---\n{}",
            self.dovecot_log(),
            self.smtpd_log()
        )
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn write_dovecot_conf(&self) {
        let d = |name: &str| self.path(name);
        let instance = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (uid, gid) = passwd_ids(MAIL_USER);
        let conf = format!(
            r#"# Written by tests/common/mail.rs for one test run.
instance_name = {instance}
base_dir = {base}
state_dir = {state}
# To the harness, which copies it to dovecot.log and watches for DOVECOT_READY.
log_path = /dev/stderr
protocols = imap lmtp submission
listen = 127.0.0.1
hostname = mail.example.test
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# Answer a failed login fast: no 2 s delay (Dovecot 2.3 still queues the reply for its
# next failure check, up to 0.5 s later) and no per-address penalty (anvil socket below).
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{mail}/%u/Maildir

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
  default_fields = uid={MAIL_USER} gid={MAIL_USER} home={mail}/%u
}}

namespace inbox {{
  inbox = yes
  separator = .
  mailbox Sent {{
    special_use = \Sent
    auto = subscribe
  }}
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {submission}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
submission_relay_host = 127.0.0.1
submission_relay_port = {smtp}
"#,
            base = d("dovecot"),
            state = d("state"),
            mail = d("mail"),
            users = d("users"),
            imap = self.imap_port,
            submission = self.submission_port,
            smtp = self.smtp_port,
        );
        let conf = match self.options.max_imap_connections {
            None => conf,
            Some(n) => conf + &many_clients_conf(n),
        };
        fs::write(self.dir.path().join("dovecot.conf"), conf).expect("write dovecot.conf");
    }

    fn write_smtpd_conf(&self) {
        let d = |name: &str| self.path(name);
        let conf = format!(
            r#"# Written by tests/common/mail.rs for one test run.
table domains file:{domains}
table recipients file:{recipients}
table vusers file:{vusers}
listen on 127.0.0.1 port {port} hostname mx.example.test
action "dovecot" lmtp "{lmtp}" rcpt-to virtual <vusers>
match from any for domain <domains> rcpt-to <recipients> action "dovecot"
"#,
            domains = d("domains"),
            recipients = d("recipients"),
            vusers = d("vusers"),
            port = self.smtp_port,
            lmtp = d("dovecot/lmtp"),
        );
        fs::write(self.dir.path().join("smtpd.conf"), conf).expect("write smtpd.conf");
    }

    /// Starts OpenSMTPD on a fresh free port (retrying with another when it is taken).
    async fn start_smtpd(&mut self) {
        for attempt in 1..=PORT_ATTEMPTS {
            self.smtp_port = free_port();
            self.write_smtpd_conf();
            let script = format!(
                "mount --bind {spool} /var/spool && mount --bind {run} /run && exec smtpd -d -v -f {conf}",
                spool = sh_quote(&self.path("spool")),
                run = sh_quote(&self.path("smtpd-run")),
                conf = sh_quote(&self.path("smtpd.conf")),
            );
            // Its control socket, for smtpctl; a stale one from a failed attempt goes first.
            let control = self.dir.path().join("smtpd-run").join("smtpd.sock");
            let _ = fs::remove_file(&control);
            let log = self.dir.path().join("smtpd.log");
            // Its own mount namespace too, so that the bind mounts are its alone; the
            // `unshare` process is in it, which is where smtpctl enters.
            let smtpd = Daemon::spawn(
                "OpenSMTPD",
                &["--mount", "--propagation", "private"],
                &["sh", "-c", &script],
                &log,
                SMTPD_READY,
            );
            let ports = [(self.smtp_port, "OpenSMTPD")];
            match wait_ready(&smtpd, &ports, Some(&control)).await {
                Ok(()) => {
                    self.smtpd = Some(smtpd);
                    return;
                }
                Err(why) => {
                    smtpd.stop().await;
                    if attempt == PORT_ATTEMPTS {
                        panic!("OpenSMTPD did not start: {why}\n{}", self.smtpd_log());
                    }
                    eprintln!("mail test bed: OpenSMTPD did not start ({why}); new port");
                }
            }
        }
    }

    /// Spawns Dovecot with the current config and waits until IMAP, submission and LMTP are
    /// there.
    async fn spawn_dovecot(&mut self) -> Result<(), String> {
        // What a killed Dovecot left behind: a stale pid file (Dovecot refuses to start
        // while its pid is alive) and a stale socket (would look ready).
        let base = self.dir.path().join("dovecot");
        let _ = fs::remove_file(base.join("master.pid"));
        let lmtp = base.join("lmtp");
        let _ = fs::remove_file(&lmtp);
        let conf = self.dir.path().join("dovecot.conf");
        let conf = conf.to_str().expect("a UTF-8 temp path");
        let log = self.dir.path().join("dovecot.log");
        let dovecot = Daemon::spawn(
            "Dovecot",
            &[],
            &["dovecot", "-F", "-c", conf],
            &log,
            DOVECOT_READY,
        );
        let ports = [
            (self.imap_port, "Dovecot"),
            (self.submission_port, "Dovecot"),
        ];
        match wait_ready(&dovecot, &ports, Some(&lmtp)).await {
            Ok(()) => {
                self.dovecot = Some(dovecot);
                Ok(())
            }
            Err(why) => {
                dovecot.stop().await;
                Err(why)
            }
        }
    }

    /// Runs smtpctl inside OpenSMTPD's mount namespace, where its control socket is.
    fn smtpctl(&self, args: &[&str]) -> std::process::Output {
        let pid = self.smtpd.as_ref().map(|s| s.pid).expect("OpenSMTPD runs");
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .arg("smtpctl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter smtpctl")
    }
}

/// Waits until `daemon` logs that it is ready, then checks that every port greets with the
/// given word (so a foreign process on a port is not taken for it) and `socket` exists.
/// `Err` when it exits first, the deadline passes, or a check fails. No event says that a
/// TCP port has started listening, so the daemon's own log line is the event: each daemon
/// logs its ready line after its listeners are open (see [`DOVECOT_READY`],
/// [`SMTPD_READY`]), and a connection made then waits in the listen queue until the daemon
/// greets it.
async fn wait_ready(
    daemon: &Daemon,
    ports: &[(u16, &str)],
    socket: Option<&Path>,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut ready = daemon.ready.subscribe();
    let mut exited = daemon.exit.done.subscribe();
    tokio::select! {
        seen = tokio::time::timeout_at(deadline, ready.wait_for(|r| *r)) => {
            if !matches!(seen, Ok(Ok(_))) {
                return Err(format!("{} not ready within {START_TIMEOUT:?}", daemon.name));
            }
        }
        _ = exited.wait_for(|d| *d) => {}
    }
    if let Some(status) = daemon.exited() {
        return Err(format!("{} exited ({status})", daemon.name));
    }
    for &(port, word) in ports {
        match greeting(port, deadline).await {
            Some(g) if g.contains(word) => {}
            Some(g) => {
                return Err(format!(
                    "port {port} greets with {g:?}, not {word}'s (taken by another process?)"
                ));
            }
            None => {
                return Err(format!(
                    "{} logged ready but port {port} does not greet",
                    daemon.name
                ));
            }
        }
    }
    match socket {
        Some(socket) if !socket.exists() => Err(format!(
            "{} logged ready but {} is missing",
            daemon.name,
            socket.display()
        )),
        _ => Ok(()),
    }
}

/// The first line a server sends on `port`, or `None` when nothing accepts, or nothing is
/// said by `deadline`.
async fn greeting(port: u16, deadline: Instant) -> Option<String> {
    let attempt = async {
        let mut s = TcpStream::connect((HOST, port)).await.ok()?;
        let mut buf = vec![0u8; 512];
        let mut got = 0;
        while !buf[..got].contains(&b'\n') && got < buf.len() {
            let n = s.read(&mut buf[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let _ = s.shutdown().await;
        Some(String::from_utf8_lossy(&buf[..got]).trim_end().to_owned())
    };
    tokio::time::timeout_at(deadline, attempt)
        .await
        .ok()
        .flatten()
        .filter(|g| !g.is_empty())
}

/// One daemon in a PID namespace of its own. The spawned process is `unshare --pid --fork`,
/// which ignores SIGTERM and waits for the daemon (the namespace's init); when the daemon
/// exits, the kernel kills whatever else lives in the namespace and waits until it is gone
/// before the daemon's exit completes. So `unshare` exiting means every process the daemon
/// left (Dovecot's `imap` processes, say) is gone, and that exit is an event: a thread
/// blocks in `wait` and reports it, nothing polls. Signals go to the process group.
struct Daemon {
    name: &'static str,
    /// The `unshare` process: leader of the group, and the one whose exit is awaited.
    pid: u32,
    exit: Arc<Exit>,
    /// Turns true when the daemon logs its ready line.
    ready: Arc<tokio::sync::watch::Sender<bool>>,
}

/// The leader's exit, reported by its waiter thread to sync and async waiters alike.
struct Exit {
    status: std::sync::Mutex<Option<ExitStatus>>,
    changed: std::sync::Condvar,
    done: tokio::sync::watch::Sender<bool>,
}

impl Daemon {
    /// Spawns `program args` as the init of a new PID namespace (see [`Daemon`]); with
    /// `unshare_flags` (e.g. `--mount`) the same `unshare` makes more namespaces. The group
    /// is killed if this test process dies (`setpriv --pdeathsig`, `unshare --kill-child`).
    /// Its output (stdout and stderr) goes through a pipe to a thread that appends it to
    /// `log` and reports the first line containing `ready_line`.
    fn spawn(
        name: &'static str,
        unshare_flags: &[&str],
        program: &[&str],
        log: &Path,
        ready_line: &'static str,
    ) -> Daemon {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let (output, input) = std::io::pipe().expect("a pipe for the daemon's output");
        let input_too = input.try_clone().expect("clone the pipe");
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", "unshare"])
            .args(unshare_flags)
            .args(["--pid", "--fork", "--kill-child", "--"])
            .args(program);
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(input)
            .stderr(input_too)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {name} ({e}); install it with scripts/install-deps.sh")
            });
        // Only the daemon holds the pipe's writing end now, so the copy below ends when the
        // daemon's whole namespace is gone.
        drop(cmd);
        let ready = Arc::new(tokio::sync::watch::Sender::new(false));
        let report_ready = Arc::clone(&ready);
        std::thread::spawn(move || {
            use std::io::{BufRead as _, Write as _};
            for line in std::io::BufReader::new(output).split(b'\n') {
                let Ok(mut line) = line else { break };
                if !*report_ready.borrow() && String::from_utf8_lossy(&line).contains(ready_line) {
                    report_ready.send_replace(true);
                }
                line.push(b'\n');
                let _ = file.write_all(&line);
            }
        });
        let pid = child.id();
        let exit = Arc::new(Exit {
            status: std::sync::Mutex::new(None),
            changed: std::sync::Condvar::new(),
            done: tokio::sync::watch::Sender::new(false),
        });
        let report = Arc::clone(&exit);
        std::thread::spawn(move || {
            let status = child.wait().ok();
            *report.status.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(status.unwrap_or_else(|| ExitStatus::from_raw(0)));
            report.changed.notify_all();
            report.done.send_replace(true);
        });
        Daemon {
            name,
            pid,
            exit,
            ready,
        }
    }

    /// The process group of the daemon's processes (`unshare` leads it).
    fn pgid(&self) -> u32 {
        self.pid
    }

    /// The leader's exit status once it has exited (and with it the whole namespace).
    fn exited(&self) -> Option<ExitStatus> {
        *self.exit.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alive(&self) -> bool {
        self.exited().is_none()
    }

    /// Waits until the leader has exited or `within` has passed; true if it exited.
    async fn exit_within(&self, within: Duration) -> bool {
        let mut done = self.exit.done.subscribe();
        tokio::time::timeout(within, done.wait_for(|d| *d))
            .await
            .is_ok()
    }

    /// [`Daemon::exit_within`], blocking (for `Drop`).
    fn exit_within_blocking(&self, within: Duration) -> bool {
        let status = self.exit.status.lock().unwrap_or_else(|e| e.into_inner());
        let (status, _) = self
            .exit
            .changed
            .wait_timeout_while(status, within, |s| s.is_none())
            .unwrap_or_else(|e| e.into_inner());
        status.is_some()
    }

    fn signal(&self, signal: &str) {
        if self.alive() {
            let _ = Command::new("kill")
                .args([signal, "--", &format!("-{}", self.pgid())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// SIGTERM to the group, SIGKILL after [`STOP_TIMEOUT`]; returns when all are gone.
    async fn stop(self) {
        self.signal("-TERM");
        if !self.exit_within(STOP_TIMEOUT).await {
            eprintln!("mail test bed: {} ignored SIGTERM; killing it", self.name);
            self.kill_now();
        }
    }

    /// SIGKILL to the group, then waits (blocking, bounded) for the leader. The kernel tears
    /// the namespace down as the daemon dies.
    fn kill_now(&self) {
        self.signal("-KILL");
        self.exit_within_blocking(STOP_TIMEOUT);
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so that each daemon reaps its own children (OpenSMTPD's would
    /// otherwise linger as zombies until init collects them), SIGKILL after a short grace.
    fn drop(&mut self) {
        self.signal("-TERM");
        if !self.exit_within_blocking(DROP_GRACE) {
            self.kill_now();
        }
    }
}

/// Dovecot settings for `n` concurrent IMAP connections (see [`MailOptions`]): one `imap`
/// process per connection, login, auth and anvil sized for them, and process titles that
/// show each connection's state.
fn many_clients_conf(n: usize) -> String {
    let processes = n + 100;
    let clients = 4 * n + 1000;
    format!(
        r#"
# MailOptions::max_imap_connections = {n}
verbose_proctitle = yes
default_process_limit = {processes}
default_client_limit = {clients}
mail_max_userip_connections = {n}
service imap {{
  process_limit = {processes}
  client_limit = 1
}}
service imap-login {{
  process_limit = {processes}
}}
service anvil {{
  client_limit = {clients}
}}
service auth {{
  client_limit = {clients}
}}
"#
    )
}

/// The process group of the process at `/proc/PID`, from its `stat`.
fn process_group(proc_dir: &Path) -> Option<u32> {
    let stat = fs::read_to_string(proc_dir.join("stat")).ok()?;
    // "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The uid and gid of a local user, from /etc/passwd.
fn passwd_ids(user: &str) -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == user)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no local user {user:?} in /etc/passwd"))
}

/// How Maildir files sort: by delivery second, then microsecond, then name.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct MaildirKey(u64, u64, String);

impl MaildirKey {
    /// From a name like `1700000000.M123456P789.host,S=…:2,S`.
    fn of(name: &str) -> MaildirKey {
        let mut parts = name.splitn(3, '.');
        let secs = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let micros = parts
            .next()
            .and_then(|p| p.strip_prefix('M'))
            .map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        MaildirKey(secs, micros, name.to_owned())
    }
}

/// Reads a Maildir file that moved from new/ to cur/ (gaining flags) after it was listed.
fn read_moved(path: &Path) -> Option<Vec<u8>> {
    let name = path.file_name()?.to_str()?;
    let base = name.split(':').next()?;
    let cur = path.parent()?.parent()?.join("cur");
    fs::read_dir(&cur).ok()?.flatten().find_map(|e| {
        let n = e.file_name();
        let n = n.to_str()?;
        (n.split(':').next() == Some(base))
            .then(|| fs::read(e.path()).ok())
            .flatten()
    })
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One SMTP reply: the code and the text of each line (without the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// The lines' text joined by newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn is_success(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// A command an SMTP server did not accept, with its reply.
#[derive(Debug, Clone)]
pub struct SmtpRejection {
    /// The command as sent (`AUTH PLAIN` without its credentials, `MAIL FROM:<…>`, …).
    pub command: String,
    pub reply: SmtpReply,
}

impl fmt::Display for SmtpRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.command, self.reply)
    }
}

/// A minimal SMTP client over plain TCP, for tests that need to see each reply. Every read
/// has a deadline; a connection that closes or stalls panics.
pub struct SmtpClient {
    stream: BufStream<TcpStream>,
    /// The 220 greeting.
    pub greeting: SmtpReply,
}

impl SmtpClient {
    /// Connects to 127.0.0.1:`port` and reads the greeting (panics unless it is 220).
    pub async fn connect(port: u16) -> SmtpClient {
        let stream = TcpStream::connect((HOST, port))
            .await
            .unwrap_or_else(|e| panic!("connect to SMTP on port {port}: {e}"));
        let mut client = SmtpClient {
            stream: BufStream::new(stream),
            greeting: SmtpReply {
                code: 0,
                lines: Vec::new(),
            },
        };
        client.greeting = client.reply().await;
        assert_eq!(
            client.greeting.code, 220,
            "SMTP greeting on port {port}: {}",
            client.greeting
        );
        client
    }

    /// Sends one command line (CRLF added) and returns the reply.
    pub async fn command(&mut self, line: &str) -> SmtpReply {
        self.send_line(line.as_bytes()).await;
        self.reply().await
    }

    /// `EHLO`; panics unless it is accepted.
    pub async fn ehlo(&mut self) -> SmtpReply {
        let r = self.command("EHLO client.example.test").await;
        assert_eq!(r.code, 250, "EHLO: {r}");
        r
    }

    /// `AUTH PLAIN` with an initial response; 235 on success, 535 on bad credentials.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> SmtpReply {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.command(&format!("AUTH PLAIN {token}")).await
    }

    /// `DATA`, then `raw` with CRLF line ends and dot-stuffing, then the final dot. Returns
    /// the reply to DATA when it is not 354, else the reply to the message.
    pub async fn data(&mut self, raw: &[u8]) -> SmtpReply {
        let go = self.command("DATA").await;
        if go.code != 354 {
            return go;
        }
        let mut body = Vec::with_capacity(raw.len() + raw.len() / 32 + 5);
        let text = raw.strip_suffix(b"\n").unwrap_or(raw);
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'.') {
                body.push(b'.');
            }
            body.extend_from_slice(line);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
        self.write(&body).await;
        self.reply().await
    }

    /// `QUIT` (the reply is not checked; the server may just close).
    pub async fn quit(mut self) {
        self.send_line(b"QUIT").await;
        let _ = tokio::time::timeout(SMTP_TIMEOUT, async {
            let mut line = String::new();
            let _ = self.stream.read_line(&mut line).await;
        })
        .await;
    }

    async fn send_line(&mut self, line: &[u8]) {
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"\r\n");
        self.write(&buf).await;
    }

    async fn write(&mut self, bytes: &[u8]) {
        let io = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(SMTP_TIMEOUT, io)
            .await
            .expect("SMTP write timed out")
            .expect("SMTP write");
    }

    /// Reads one (possibly multi-line) reply.
    async fn reply(&mut self) -> SmtpReply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(SMTP_TIMEOUT, self.stream.read_line(&mut line))
                .await
                .unwrap_or_else(|_| panic!("no SMTP reply within {SMTP_TIMEOUT:?}"))
                .expect("read an SMTP reply");
            assert!(n > 0, "SMTP server closed the connection; got {lines:?}");
            let line = line.trim_end_matches(['\r', '\n']);
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not an SMTP reply line: {line:?}"));
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if !more {
                return SmtpReply { code, lines };
            }
        }
    }
}

/// One whole SMTP transaction on `port`: EHLO, optional AUTH PLAIN, MAIL, RCPT for each of
/// `to`, DATA, QUIT. `Err` with the first command that failed.
async fn send_mail(
    port: u16,
    auth: Option<(&str, &str)>,
    from: &str,
    to: &[&str],
    raw: &[u8],
) -> Result<(), SmtpRejection> {
    let mut c = SmtpClient::connect(port).await;
    c.ehlo().await;
    let check = |command: String, reply: SmtpReply| {
        if reply.is_success() {
            Ok(())
        } else {
            Err(SmtpRejection { command, reply })
        }
    };
    if let Some((user, password)) = auth {
        let r = c.auth_plain(user, password).await;
        check(format!("AUTH PLAIN ({user})"), r)?;
    }
    let mail = format!("MAIL FROM:<{from}>");
    let r = c.command(&mail).await;
    check(mail, r)?;
    for rcpt in to {
        let cmd = format!("RCPT TO:<{rcpt}>");
        let r = c.command(&cmd).await;
        check(cmd, r)?;
    }
    let r = c.data(raw).await;
    check("DATA".to_owned(), r)?;
    c.quit().await;
    Ok(())
}

/// Standard base64 with padding (for AUTH PLAIN).
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
