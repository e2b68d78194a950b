//! Prism, the validating mock of Twilio's Messages API, started on a free loopback port
//! for a test and killed when dropped. Every request it accepts matches Twilio's own
//! OpenAPI description (`tests/fixtures/twilio/`); shared by the SMS bridge's tests and the
//! root crate's end-to-end tests (through `#[path]`).
//!
//! Prism is looked for at `$FERRY_TOOLS/prism/node_modules/.bin/prism` (default
//! `/opt/ferry-tools`); `scripts/install-deps.sh` installs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long Prism may take to start (it parses the spec first).
const PRISM_START: Duration = Duration::from_secs(60);

/// A running `prism mock`; killed when dropped.
pub struct Prism {
    _child: Child,
    /// `http://127.0.0.1:PORT`, the `api_base` to give the provider.
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Prism {
    /// Everything Prism printed so far, for failure messages.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

fn prism_bin() -> PathBuf {
    let tools = std::env::var_os("FERRY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ferry-tools"));
    tools.join("prism/node_modules/.bin/prism")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// Forwards each line of `pipe` to the log and to `tx`, until the pipe closes (draining it
/// so Prism never blocks on a full pipe).
fn forward_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    tx: mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut log) = log.lock() {
                log.push(line.clone());
            }
            let _ = tx.send(line);
        }
    });
}

/// Starts Prism on the Twilio spec and waits until it says it listens. With a `seed`, its
/// generated answers are the same every run (and every message gets the same sid); without
/// one, each answer is fresh.
///
/// `--errors` turns response violations into 500s too; the spec's own static list example
/// breaks its schema (`first_page_uri` is not a `uri`), so responses are generated from
/// the schemas instead (`--dynamic`), with a fixed `--seed` to keep them the same each run.
/// Request validation (422, 401, 415) is the same either way.
pub async fn start_prism(seed: Option<&str>) -> Prism {
    let bin = prism_bin();
    assert!(
        bin.is_file(),
        "Prism is not installed at {}: run scripts/install-deps.sh \
         (FERRY_TOOLS overrides /opt/ferry-tools)",
        bin.display()
    );
    let spec = spec_path();
    let port = free_port();
    let mut child = Command::new(&bin)
        .arg("mock")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["--errors", "--dynamic"])
        .args(seed.map(|s| ["--seed", s]).into_iter().flatten())
        .arg(&spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    if let Some(out) = child.stdout.take() {
        forward_lines(out, log.clone(), tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, log.clone(), tx);
    }
    let base = format!("http://127.0.0.1:{port}");
    let listening = tokio::time::timeout(PRISM_START, async {
        while let Some(line) = rx.recv().await {
            if line.contains("Prism is listening on") && line.contains(&base) {
                return true;
            }
        }
        false // both pipes closed: Prism exited
    })
    .await;
    let prism = Prism {
        _child: child,
        base,
        log,
    };
    match listening {
        Ok(true) => prism,
        Ok(false) => panic!("Prism exited before listening:\n{}", prism.log()),
        Err(_) => panic!(
            "Prism did not listen within {PRISM_START:?}:\n{}",
            prism.log()
        ),
    }
}

/// The spec, whether this file was included from the SMS crate's tests or the root crate's.
fn spec_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rel = "tests/fixtures/twilio/twilio_api_v2010_messages.yaml";
    let own = manifest.join(rel);
    if own.is_file() {
        own
    } else {
        manifest.join("bridges/sms").join(rel)
    }
}

impl Prism {
    /// [`start_prism`] without a seed.
    pub async fn start() -> Prism {
        start_prism(None).await
    }
}
