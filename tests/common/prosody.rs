//! A real Prosody 0.12 for one test: its own temp dir (config, data, pidfile) and free
//! loopback ports, started in the foreground, its log read through a pipe, and killed when
//! the value is dropped.
//!
//! The configuration follows shared/TESTBED.md: no s2s, no HTTP, no TLS, PLAIN allowed on
//! loopback, users on `VirtualHost "localhost"` stored as `internal_plain` account files,
//! and one `Component` per gateway domain reachable on [`Prosody::component_port`].
//!
//! Set `FERRY_TEST_PROSODY_LOG=info` to log less than the default `debug` (for load tests).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use super::free_port;

/// The XMPP domain the users live on.
pub const DOMAIN: &str = "localhost";

/// How long Prosody gets to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long Prosody gets to exit when asked (SIGTERM at half time, SIGKILL at the end).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Prosody may take to exit once it has logged "Shutdown complete".
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);
/// Fresh port pairs tried when another process takes a port between pick and bind.
const PORT_ATTEMPTS: usize = 5;

/// Modules on top of the ones Prosody always loads (presence, message, iq, offline, c2s).
const MODULES: &[&str] = &[
    "ferry_test_stop",
    "roster",
    "saslauth",
    "disco",
    "ping",
    "carbons",
    "pep",
    "private",
    "blocklist",
    "vcard_legacy",
    "version",
    "time",
    "uptime",
];

/// A Prosody module that stops the server from inside its event loop when a flag file
/// appears. Prosody 0.12 runs its SIGTERM handler from a Lua hook, wherever the interpreter
/// happens to be; when that is inside a socket's write handler, the `<stream:error>` it
/// queues for each session is wiped with the buffer just flushed, and clients see a bare
/// close. A timer callback runs between events, where that cannot happen.
const STOP_MODULE: &str = r#"-- Written by tests/common/prosody.rs: stop when the harness asks.
module:set_global();
local flag = module:get_option_string("ferry_test_stop_file");
module:add_timer(0.02, function ()
	local f = io.open(flag, "r");
	if not f then return 0.02; end
	f:close();
	os.remove(flag);
	prosody.main_thread:run(function ()
		prosody.unlock_globals();
		prosody.shutdown("test harness stop");
		prosody.lock_globals();
	end);
end);
"#;

/// A running (or stopped) Prosody owned by a test.
pub struct Prosody {
    /// Plain-TCP c2s port on 127.0.0.1.
    pub c2s_port: u16,
    /// XEP-0114 component port on 127.0.0.1 (only listened on when there are components).
    pub component_port: u16,
    /// Config, data, pidfile and logs; removed on drop.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Everything Prosody logged and printed, across restarts (read from its pipes).
    log: Arc<Mutex<String>>,
    /// Where this run's lines begin in `log`.
    log_start: usize,
    /// Bumped for every line read; `true` once this run's output has ended (it exited).
    lines: watch::Receiver<(u64, bool)>,
}

enum Startup {
    Ready,
    PortTaken,
}

/// What waiting for a log line ended with.
#[derive(Debug, PartialEq)]
enum LogWait {
    Found,
    Exited,
    TimedOut,
}

impl Prosody {
    /// Starts Prosody with these `(domain, secret)` components and `(name, password)` users
    /// on "localhost", and returns once it accepts connections. Panics, with the log, when
    /// it does not come up.
    pub async fn start(components: &[(&str, &str)], users: &[(&str, &str)]) -> Prosody {
        Self::start_with_config(components, users, "").await
    }

    /// Like [`Prosody::start`], with `extra` Lua appended to the global section of the
    /// config (more modules, other limits); later settings override earlier ones.
    pub async fn start_with_config(
        components: &[(&str, &str)],
        users: &[(&str, &str)],
        extra: &str,
    ) -> Prosody {
        let dir = tempfile::Builder::new()
            .prefix("ferry-prosody-")
            .tempdir()
            .expect("create a temp dir for Prosody");
        for sub in ["data", "certs", "plugins"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create Prosody dirs");
        }
        std::fs::write(
            dir.path().join("plugins").join("mod_ferry_test_stop.lua"),
            STOP_MODULE,
        )
        .expect("write the stop module");
        let mut prosody = Prosody {
            c2s_port: 0,
            component_port: 0,
            dir,
            child: None,
            log: Arc::default(),
            log_start: 0,
            lines: watch::channel((0, true)).1,
        };
        for (name, password) in users {
            prosody.add_user(name, password);
        }
        for attempt in 1..=PORT_ATTEMPTS {
            prosody.c2s_port = free_port();
            prosody.component_port = free_port();
            while prosody.component_port == prosody.c2s_port {
                prosody.component_port = free_port();
            }
            prosody.write_config(components, extra);
            match prosody.spawn_and_wait(!components.is_empty()).await {
                Startup::Ready => return prosody,
                Startup::PortTaken if attempt < PORT_ATTEMPTS => prosody.kill_now().await,
                Startup::PortTaken => {
                    panic!("Prosody could not bind its ports:\n{}", prosody.log())
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Stops Prosody gracefully (it closes every session with a `system-shutdown` stream
    /// error) and waits until it is gone; SIGTERM, then SIGKILL, if it does not comply.
    ///
    /// Prosody 0.12 lingers about a second after it has closed every session and logged
    /// "Shutdown complete" (its loop sleeps until a timer); by then all it had to say was
    /// flushed, so it is killed after a short grace instead of waited for.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let flag = self.dir.path().join("stop");
        std::fs::write(&flag, b"").expect("write the stop flag");
        let deadline = Instant::now() + STOP_TIMEOUT;
        // Asked nicely (the flag), then with SIGTERM at half time, then SIGKILL.
        let mut waited = self
            .wait_log(|l| l.contains("Shutdown complete"), STOP_TIMEOUT / 2)
            .await;
        if waited == LogWait::TimedOut {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            waited = self
                .wait_log(
                    |l| l.contains("Shutdown complete"),
                    deadline - Instant::now(),
                )
                .await;
        }
        let grace = if waited == LogWait::Found {
            SHUTDOWN_GRACE
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        let _ = std::fs::remove_file(&flag);
    }

    /// Stops Prosody and starts it again on the same ports, config and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let has_components = std::fs::read_to_string(self.config_path())
            .map(|c| c.contains("\nComponent "))
            .unwrap_or(false);
        if let Startup::PortTaken = self.spawn_and_wait(has_components).await {
            panic!(
                "Prosody could not bind its ports again on restart:\n{}",
                self.log()
            );
        }
    }

    /// Creates (or overwrites) an account on "localhost". Works before start and while
    /// Prosody runs: `internal_plain` reads the account file at each login.
    pub fn add_user(&self, name: &str, password: &str) {
        let file = account_file(&self.data_path(), name);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("create the accounts dir");
        }
        let body = format!("return {{ [\"password\"] = {} }};\n", lua_str(password));
        std::fs::write(&file, body).expect("write an account file");
    }

    /// True while the process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The running Prosody's process id (for CPU accounting in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Everything Prosody logged and printed, for failure messages.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until this run's log satisfies `pred`, Prosody's output ends, or `within`
    /// passes; woken by every line Prosody writes, never by a timer.
    async fn wait_log(&self, pred: impl Fn(&str) -> bool, within: Duration) -> LogWait {
        let deadline = Instant::now() + within;
        let mut lines = self.lines.clone();
        loop {
            let (_, ended) = *lines.borrow_and_update();
            if pred(&self.run_log()) {
                return LogWait::Found;
            }
            if ended {
                return LogWait::Exited;
            }
            match tokio::time::timeout_at(deadline, lines.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return LogWait::Exited,
                Err(_) => return LogWait::TimedOut,
            }
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    pub fn data_path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn write_config(&self, components: &[(&str, &str)], extra: &str) {
        let dir = self.dir.path();
        let p = |name: &str| lua_str(&dir.join(name).to_string_lossy());
        // Startup is detected from info lines, so the level is "debug" or "info".
        let level = match std::env::var("FERRY_TEST_PROSODY_LOG").as_deref() {
            Ok("info") => "info",
            _ => "debug",
        };
        let modules = MODULES
            .iter()
            .map(|m| lua_str(m))
            .collect::<Vec<_>>()
            .join(", ");
        let mut cfg = format!(
            r#"-- Written by tests/common/prosody.rs for one test run.
run_as_root = true
daemonize = false
pidfile = {pidfile}
data_path = {data}
plugin_paths = {{ {plugins} }}
ferry_test_stop_file = {stop}
certificates = {certs}
-- The file sink is line-buffered; through the pipe the harness wakes on every line.
log = {{ {{ levels = {{ min = {level} }}, to = "file", filename = "/dev/stdout" }} }}

interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{}}
legacy_ssl_ports = {{}}
s2s_ports = {{}}
http_ports = {{}}
https_ports = {{}}
component_ports = {{ {component} }}
component_interfaces = {{ "127.0.0.1" }}

authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true

-- Prosody's own defaults, stated so nobody lowers them by accident.
c2s_stanza_size_limit = 256 * 1024
component_stanza_size_limit = 512 * 1024

modules_enabled = {{ {modules} }}
modules_disabled = {{ "s2s" }}

-- Extra settings of this test.
{extra}

VirtualHost "{DOMAIN}"
"#,
            pidfile = p("prosody.pid"),
            data = p("data"),
            certs = p("certs"),
            plugins = p("plugins"),
            stop = p("stop"),
            level = lua_str(level),
            c2s = self.c2s_port,
            component = self.component_port,
        );
        for (domain, secret) in components {
            let _ = write!(
                cfg,
                "\nComponent {}\n    component_secret = {}\n",
                lua_str(domain),
                lua_str(secret)
            );
        }
        std::fs::write(self.config_path(), cfg).expect("write prosody.cfg.lua");
    }

    /// Spawns Prosody and waits until it has opened its ports and they accept connections.
    async fn spawn_and_wait(&mut self, has_components: bool) -> Startup {
        let _ = std::fs::remove_file(self.dir.path().join("stop"));
        // Only what this run logs counts: a restart appends to the same buffer.
        self.log_start = self.log.lock().expect("log lock").len();
        let mut child = Command::new("prosody")
            .arg("-F")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `prosody` ({e}); install it with scripts/install-deps.sh")
            });
        let (tx, rx) = watch::channel((0u64, false));
        let tx = Arc::new(tx);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect(out, Arc::clone(&self.log), Arc::clone(&tx), true));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect(err, Arc::clone(&self.log), tx, false));
        }
        self.lines = rx;
        self.child = Some(child);

        let mut wanted = vec![format!(
            "Activated service 'c2s' on [127.0.0.1]:{}",
            self.c2s_port
        )];
        if has_components {
            wanted.push(format!(
                "Activated service 'component' on [127.0.0.1]:{}",
                self.component_port
            ));
        }
        // A port another process holds is only reported in the log: Prosody goes on
        // without it, and a connect would reach the other process.
        let waited = self
            .wait_log(
                |log| {
                    log.contains("Failed to open server port")
                        || wanted.iter().all(|w| log.contains(w.as_str()))
                },
                START_TIMEOUT,
            )
            .await;
        match waited {
            LogWait::Found if self.run_log().contains("Failed to open server port") => {
                Startup::PortTaken
            }
            LogWait::Found => {
                assert!(
                    accepts(self.c2s_port).await
                        && (!has_components || accepts(self.component_port).await),
                    "Prosody logged its ports open but does not accept connections:\n{}",
                    self.log()
                );
                Startup::Ready
            }
            LogWait::Exited => panic!("Prosody exited during startup:\n{}", self.log()),
            LogWait::TimedOut => panic!(
                "Prosody did not open its ports within {START_TIMEOUT:?}:\n{}",
                self.log()
            ),
        }
    }

    /// The log lines of the current (or last) run.
    fn run_log(&self) -> String {
        self.log
            .lock()
            .expect("log lock")
            .get(self.log_start..)
            .unwrap_or_default()
            .to_owned()
    }

    async fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

async fn accepts(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// How Prosody's datamanager names a host or user directory/file: every byte that is not
/// an ASCII letter or digit becomes `%xx` (so `a.b` is `a%2eb`).
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02x}");
        }
    }
    out
}

/// A Lua string literal for any bytes: letters, digits and a few safe characters as they
/// are, everything else as a decimal `\ddd` escape.
pub fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b" ._-/:@+=,".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\{b:03}");
        }
    }
    out.push('"');
    out
}

/// The path of an account file, for tests that inspect Prosody's storage.
pub fn account_file(data_path: &Path, user: &str) -> PathBuf {
    data_path
        .join(encode_path(DOMAIN))
        .join("accounts")
        .join(format!("{}.dat", encode_path(user)))
}

/// Appends a pipe's lines to the log and wakes waiters for each; the stdout reader (Prosody's
/// log) also reports when the output ends, i.e. when Prosody has exited.
async fn collect(
    pipe: impl AsyncRead + Unpin,
    log: Arc<Mutex<String>>,
    lines: Arc<watch::Sender<(u64, bool)>>,
    reports_end: bool,
) {
    let mut reader = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        {
            let mut l = log.lock().expect("log lock");
            l.push_str(&line);
            l.push('\n');
        }
        lines.send_modify(|(n, _)| *n += 1);
    }
    if reports_end {
        lines.send_modify(|(_, ended)| *ended = true);
    }
}
