//! The `ferry` binary's own surface (SPEC §1): `--version`, `check` with its exit status
//! and its problems on stderr, `migrate`, and where the config comes from (`--config`,
//! `$FERRY_CONFIG`, then `./ferry.toml`).

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str =
    "[xmpp]\nallowed = [\"example.org\"]\n[rss]\ndomain = \"rss.example.org\"\nsecret = \"s\"\n";

/// Runs ferry in `dir` with `args`, `FERRY_CONFIG` set to `env_config` (removed if None).
fn ferry(dir: &Path, env_config: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.current_dir(dir).args(args).env("RUST_LOG", "warn");
    match env_config {
        Some(v) => cmd.env("FERRY_CONFIG", v),
        None => cmd.env_remove("FERRY_CONFIG"),
    };
    cmd.output().expect("run ferry")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_names_the_package_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ferry(dir.path(), None, &["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {text:?}"
    );
}

#[test]
fn check_reports_every_problem_with_its_key_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[xmpp]\nport = 0\n[rss]\ndomain = \"rss.example.org\"\nsecret = \"s\"\nbogus = 1\n",
    )
    .expect("config");
    let out = ferry(
        dir.path(),
        None,
        &["check", "--config", path.to_str().expect("utf-8 path")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("xmpp.port"), "{err}");
    assert!(err.contains("rss.bogus"), "{err}");

    std::fs::write(&path, CONFIG).expect("config");
    let out = ferry(
        dir.path(),
        None,
        &["--config", path.to_str().expect("utf-8 path"), "check"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn the_config_comes_from_ferry_config_then_the_current_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = dir.path().join("elsewhere.toml");
    std::fs::write(&elsewhere, "[xmpp]\nport = 0\n").expect("config");
    // $FERRY_CONFIG names a bad file: check reads it, not ./ferry.toml.
    std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
    let out = ferry(dir.path(), elsewhere.to_str(), &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("elsewhere.toml"), "{}", stderr(&out));
    // Unset, or set but empty: ./ferry.toml.
    for env_config in [None, Some("")] {
        let out = ferry(dir.path(), env_config, &["check"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "FERRY_CONFIG={env_config:?}: {}",
            stderr(&out)
        );
    }
    // Neither: a clear error naming the file, exit 1.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = ferry(empty.path(), None, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ferry.toml"), "{}", stderr(&out));
}

#[test]
fn migrate_creates_the_database_and_a_private_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
    let out = ferry(dir.path(), None, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("ferry.db").exists());
    let key = std::fs::metadata(dir.path().join("ferry.key")).expect("key file");
    assert_eq!(key.len(), 32);
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    // Again: nothing to do, still fine.
    let out = ferry(dir.path(), None, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A component secret the server refuses stops `ferry run` with exit status 2 and says so
/// once on stderr (SPEC §1: a runtime failure that retrying will not fix).
#[test]
fn run_exits_2_when_the_server_refuses_the_secret() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // A server that reads the handshake and refuses it.
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("ferry connects");
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        let mut greeted = false;
        while !String::from_utf8_lossy(&seen).contains("</handshake>") {
            let n = s.read(&mut buf).expect("read from ferry");
            assert!(n > 0, "ferry closed before its handshake");
            seen.extend_from_slice(&buf[..n]);
            if !greeted && String::from_utf8_lossy(&seen).contains("<stream:stream") {
                greeted = true;
                s.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='rss.example.org' id='cli-1'>").expect("greet");
            }
        }
        s.write_all(b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>").expect("refuse");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ferry.toml"),
        format!("[xmpp]\nport = {port}\nallowed = [\"example.org\"]\n[rss]\ndomain = \"rss.example.org\"\nsecret = \"wrong\"\n"),
    )
    .expect("config");
    let out = ferry(dir.path(), None, &["run"]);
    server.join().expect("server thread");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let said = err
        .lines()
        .filter(|l| l.starts_with("ferry: "))
        .collect::<Vec<_>>();
    assert_eq!(said.len(), 1, "{err}");
    assert!(said[0].contains("secret"), "{err}");
    // Said once: the reason is not repeated by its own source.
    let reason = said[0].trim_start_matches("ferry: ");
    assert!(
        !reason.contains(&format!("{reason}: {reason}")) && reason.matches("secret").count() == 1,
        "{reason}"
    );
}
