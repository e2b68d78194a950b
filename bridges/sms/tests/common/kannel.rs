//! A real Kannel 1.4.5 for tests: `bearerbox`, `smsbox` and the fake SMS centre
//! (`/usr/lib/kannel/test/fakesmsc`), each in the foreground on free loopback ports with its
//! config in a temp dir, killed when the [`Kannel`] is dropped. Texts from phones are
//! injected through fakesmsc's stdin; texts Kannel sends come back from fakesmsc's log.
//!
//! Include it with `#[path = "…/bridges/sms/tests/common/kannel.rs"] mod kannel;`. It
//! depends on std, tokio and tempfile only. Waiting is driven by the boxes' log lines
//! (`-v 0`), never by sleeping.
//!
//! What fakesmsc (1.4.5) does, found by running it:
//! - with no message arguments it reads `FROM TO text WORDS…` (or `FROM TO ucs2 %XX…`,
//!   UTF-16BE url-encoded) lines from stdin, at most 254 bytes each, and logs
//!   `fakesmsc: sent message N` once it has passed line N on. It reads stdin with stdio
//!   buffering, so a line is written only after the previous one was logged as sent.
//! - it logs what Kannel delivers as `Got message N: <FROM TO text TEXT>`, or
//!   `<FROM TO ucs-2 %XX…>` for UCS-2 (url-encoded UTF-16BE), `data` for 8-bit, `udh`.
//!   It looks at the SMSC connection about once a second while idle, so a sent text can
//!   take up to a second to show.
//! - the bearerbox side of the fake SMSC makes the delivery reports: 8 (accepted by the
//!   SMSC) and then 1 (delivered) for each text with a `dlr-mask`.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Where Debian's `kannel-extras` puts the fake SMS centre.
pub const FAKESMSC: &str = "/usr/lib/kannel/test/fakesmsc";
/// How long starting may take, all attempts together, before [`Kannel::start`] panics
/// with the logs.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long fakesmsc may take to pass an injected line on.
const INJECT_DEADLINE: Duration = Duration::from_secs(10);
/// Attempts with fresh ports when a box failed (a port was taken between picking and
/// binding), within [`START_DEADLINE`].
const ATTEMPTS: usize = 3;
/// fakesmsc reads stdin lines into a 256-byte buffer (newline and NUL included).
const MAX_LINE: usize = 254;

/// How to set Kannel up.
#[derive(Clone, Debug, Default)]
pub struct KannelOptions {
    /// The sms-service URL with Kannel's escapes, e.g.
    /// `http://127.0.0.1:PORT/sms/kannel/inbound?token=T&from=%p&to=%P&id=%I&text=%a`.
    pub inbound_url: String,
    /// The sendsms-user's credentials.
    pub username: String,
    pub password: String,
}

/// A text Kannel handed to the fake SMS centre.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentText {
    pub from: String,
    pub to: String,
    /// Decoded: UCS-2 from UTF-16BE, 8-bit data as (lossy) UTF-8.
    pub text: String,
    /// How it went: `text` (7-bit), `ucs-2`, `data` (8-bit) or `udh`.
    pub coding: String,
}

/// The running boxes.
pub struct Kannel {
    // Children first: they are killed before the directory goes.
    children: Vec<Child>,
    fakesmsc_stdin: tokio::sync::Mutex<Injector>,
    sent: tokio::sync::Mutex<mpsc::UnboundedReceiver<SentText>>,
    logs: Arc<Logs>,
    pub admin_port: u16,
    pub smsbox_port: u16,
    pub smsc_port: u16,
    pub sendsms_port: u16,
    dir: tempfile::TempDir,
}

struct Injector {
    stdin: ChildStdin,
    /// Lines written so far.
    count: u64,
}

/// How the sms-service hands texts to the inbound URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

impl Kannel {
    /// Starts Kannel with an sms-service `get-url`.
    pub async fn start(opts: KannelOptions) -> Kannel {
        Self::start_with(opts, Method::Get).await
    }

    /// Starts Kannel with an sms-service `post-url` (the text goes in the body).
    pub async fn start_post(opts: KannelOptions) -> Kannel {
        Self::start_with(opts, Method::Post).await
    }

    async fn start_with(opts: KannelOptions, method: Method) -> Kannel {
        for key in [&opts.inbound_url, &opts.username, &opts.password] {
            assert!(
                !key.is_empty() && !key.contains(['"', '\n', '\r']),
                "kannel option {key:?} is empty or cannot go in kannel.conf"
            );
        }
        let deadline = Instant::now() + START_DEADLINE;
        let mut why = String::new();
        for attempt in 1..=ATTEMPTS {
            match Self::try_start(&opts, method, deadline).await {
                Ok(k) => return k,
                Err(e) => {
                    let _ = writeln!(why, "--- attempt {attempt} ---\n{e}");
                }
            }
        }
        panic!("kannel did not start:\n{why}");
    }

    async fn try_start(
        opts: &KannelOptions,
        method: Method,
        deadline: Instant,
    ) -> Result<Kannel, String> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-kannel-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let [admin_port, smsbox_port, smsc_port, sendsms_port] = free_ports()?;
        let conf = dir.path().join("kannel.conf");
        let url_key = match method {
            Method::Get => "get-url",
            Method::Post => "post-url",
        };
        let text = format!(
            r#"group = core
admin-port = {admin_port}
admin-interface = 127.0.0.1
admin-password = "admin-{admin_port}"
admin-allow-ip = 127.0.0.1
smsbox-port = {smsbox_port}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = fake
port = {smsc_port}
our-host = 127.0.0.1
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {smsbox_port}
sendsms-port = {sendsms_port}
sendsms-interface = 127.0.0.1

group = sendsms-user
username = "{username}"
password = "{password}"
concatenation = true
max-messages = 10

group = sms-service
keyword = default
catch-all = true
max-messages = 0
omit-empty = true
{url_key} = "{url}"
"#,
            username = opts.username,
            password = opts.password,
            url = opts.inbound_url,
        );
        tokio::fs::write(&conf, text)
            .await
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;

        let logs = Arc::new(Logs::new());
        let (sent_tx, sent_rx) = mpsc::unbounded_channel();
        let mut children = Vec::new();

        let bearerbox = spawn(
            "bearerbox",
            Command::new("bearerbox").arg("-v").arg("0").arg(&conf),
            dir.path(),
            &logs,
            None,
        )?;
        children.push(bearerbox.0);
        let fail = |logs: &Logs, e: String| format!("{e}\n{}", logs.dump());
        logs.wait_for(deadline, |l| {
            l.starts_with("[bearerbox]") && l.contains("Start-up done")
        })
        .await
        .map_err(|e| fail(&logs, e))?;

        let smsbox = spawn(
            "smsbox",
            Command::new("smsbox").arg("-v").arg("0").arg(&conf),
            dir.path(),
            &logs,
            None,
        )?;
        children.push(smsbox.0);
        let (fakesmsc, stdin) = spawn(
            "fakesmsc",
            Command::new(FAKESMSC)
                .args(["-H", "127.0.0.1", "-r"])
                .arg(smsc_port.to_string())
                .args(["-i", "0", "-v", "0"]),
            dir.path(),
            &logs,
            Some(sent_tx),
        )?;
        children.push(fakesmsc);
        let stdin = stdin.ok_or("fakesmsc has no stdin")?;

        for (what, pred) in [
            ("smsbox connected to bearerbox", "Connected to bearerbox at"),
            ("sendsms listening", "Set up send sms service at port"),
            ("fake SMSC connected", "Fakesmsc client connected from"),
        ] {
            logs.wait_for(deadline, |l| l.contains(pred))
                .await
                .map_err(|e| fail(&logs, format!("waiting for {what}: {e}")))?;
        }

        Ok(Kannel {
            children,
            fakesmsc_stdin: tokio::sync::Mutex::new(Injector { stdin, count: 0 }),
            sent: tokio::sync::Mutex::new(sent_rx),
            logs,
            admin_port,
            smsbox_port,
            smsc_port,
            sendsms_port,
            dir,
        })
    }

    /// `http://127.0.0.1:PORT/cgi-bin/sendsms`.
    pub fn sendsms_url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.sendsms_port)
    }

    /// The temp dir with `kannel.conf`.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything the boxes logged so far, each line tagged with its box.
    pub fn logs(&self) -> String {
        self.logs.dump()
    }

    /// A text from a phone (`from`) to `to`, through the fake SMS centre. Printable ASCII
    /// goes as a 7-bit text, anything else (non-ASCII, newlines) as UCS-2, like a phone
    /// would send it. Returns once fakesmsc has passed it to bearerbox.
    pub async fn inject(&self, from: &str, to: &str, text: &str) {
        let line = if !text.is_empty() && text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            format!("{from} {to} text {text}")
        } else {
            let mut enc = String::new();
            for unit in text.encode_utf16() {
                for b in unit.to_be_bytes() {
                    let _ = write!(enc, "%{b:02X}");
                }
            }
            format!("{from} {to} ucs2 {enc}")
        };
        self.inject_line(&line).await;
    }

    /// One raw fakesmsc line (`FROM TO TYPE DATA`, see `fakesmsc -h`).
    pub async fn inject_line(&self, line: &str) {
        assert!(
            line.split(' ').count() >= 4 && !line.contains(['\n', '\r']),
            "not a fakesmsc line: {line:?}"
        );
        assert!(
            line.len() <= MAX_LINE,
            "fakesmsc reads at most {MAX_LINE} bytes a line; this one has {}",
            line.len()
        );
        let mut inj = self.fakesmsc_stdin.lock().await;
        let n = inj.count + 1;
        let written = async {
            inj.stdin.write_all(format!("{line}\n").as_bytes()).await?;
            inj.stdin.flush().await
        }
        .await;
        if let Err(e) = written {
            panic!("writing to fakesmsc: {e}\n{}", self.logs.dump());
        }
        inj.count = n;
        let done = format!("fakesmsc: sent message {n}");
        let deadline = Instant::now() + INJECT_DEADLINE;
        if let Err(e) = self
            .logs
            .wait_for(deadline, |l| {
                l.starts_with("[fakesmsc]") && l.trim_end().ends_with(&done)
            })
            .await
        {
            panic!(
                "fakesmsc did not pass {line:?} on: {e}\n{}",
                self.logs.dump()
            );
        }
    }

    /// The next text Kannel delivered to the fake SMS centre, in order; `None` when none
    /// came within `deadline`.
    pub async fn next_sent(&self, deadline: Duration) -> Option<SentText> {
        let mut rx = self.sent.lock().await;
        tokio::time::timeout(deadline, rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        // kill_on_drop would do it too; this makes the order explicit.
        for child in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

/// Picks `N` distinct free loopback ports (all bound at once, then released).
fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        *port = l
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?
            .port();
        listeners.push(l);
    }
    Ok(ports)
}

/// Starts one box in `dir` with its output going into `logs` (and, for fakesmsc, what it
/// received into `sent`).
fn spawn(
    name: &'static str,
    cmd: &mut Command,
    dir: &std::path::Path,
    logs: &Arc<Logs>,
    sent: Option<mpsc::UnboundedSender<SentText>>,
) -> Result<(Child, Option<ChildStdin>), String> {
    let mut child = cmd
        .current_dir(dir)
        .stdin(if sent.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    let stdin = child.stdin.take();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_lines(name, out, logs.clone(), sent.clone(), false));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_lines(name, err, logs.clone(), sent, true));
    }
    Ok((child, stdin))
}

/// Copies a box's output into `logs`, line by line (bytes that are not UTF-8 replaced).
async fn read_lines(
    name: &'static str,
    out: impl AsyncRead + Unpin,
    logs: Arc<Logs>,
    sent: Option<mpsc::UnboundedSender<SentText>>,
    mark_end: bool,
) {
    let mut reader = BufReader::new(out);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                if let (Some(tx), Some(text)) = (&sent, parse_got_message(line)) {
                    let _ = tx.send(text);
                }
                logs.push(format!("[{name}] {line}"));
            }
        }
    }
    if mark_end {
        logs.push(format!("[{name}] {END}"));
    }
}

/// What [`read_lines`] logs when a box closed its output (it exited).
const END: &str = "<<output closed>>";

/// Reads fakesmsc's `Got message N: <FROM TO TYPE DATA>`.
fn parse_got_message(line: &str) -> Option<SentText> {
    let rest = &line[line.find("Got message ")? + "Got message ".len()..];
    let body = &rest[rest.find(": <")? + 3..];
    let body = body.strip_suffix('>')?;
    let mut parts = body.splitn(4, ' ');
    let from = parts.next()?.to_owned();
    let to = parts.next()?.to_owned();
    let coding = parts.next()?.to_owned();
    let data = parts.next().unwrap_or("");
    let text = match coding.as_str() {
        "text" => data.to_owned(),
        "ucs-2" => {
            let bytes = url_decode(data);
            let units = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
        "data" => String::from_utf8_lossy(&url_decode(data)).into_owned(),
        "udh" => {
            let data = data.split_once(" data ").map(|(_, d)| d).unwrap_or("");
            String::from_utf8_lossy(&url_decode(data)).into_owned()
        }
        _ => data.to_owned(),
    };
    Some(SentText {
        from,
        to,
        text,
        coding,
    })
}

/// Kannel's url decoding: `+` is a space, `%XX` a byte.
fn url_decode(s: &str) -> Vec<u8> {
    let s = s.as_bytes();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match s.get(i + 1..i + 3) {
                Some(h) if h.iter().all(u8::is_ascii_hexdigit) => {
                    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(hex(h[0]) * 16 + hex(h[1]));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Every line the boxes wrote, and a counter that ticks with each.
struct Logs {
    lines: Mutex<Vec<String>>,
    seq: watch::Sender<usize>,
}

impl Logs {
    fn new() -> Logs {
        Logs {
            lines: Mutex::new(Vec::new()),
            seq: watch::channel(0).0,
        }
    }

    fn push(&self, line: String) {
        let n = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            lines.push(line);
            lines.len()
        };
        self.seq.send_replace(n);
    }

    fn dump(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let skip = lines.len().saturating_sub(400);
        let mut out = String::new();
        if skip > 0 {
            let _ = writeln!(out, "[… {skip} earlier lines]");
        }
        for l in &lines[skip..] {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// Waits until some line (any so far, or one to come) satisfies `pred`. Fails at the
    /// deadline, or when a box panicked or exited first.
    async fn wait_for(&self, deadline: Instant, pred: impl Fn(&str) -> bool) -> Result<(), String> {
        let mut rx = self.seq.subscribe();
        let mut seen = 0;
        loop {
            {
                let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
                for l in &lines[seen..] {
                    if pred(l) {
                        return Ok(());
                    }
                    if l.contains("PANIC:") || l.ends_with(END) {
                        return Err(format!("a box failed: {l}"));
                    }
                }
                seen = lines.len();
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("log closed".into()),
                Err(_) => return Err("timed out".into()),
            }
        }
    }
}
