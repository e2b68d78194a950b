//! `ferry feeds import` and `ferry feeds export` through the real binary: an OPML file in,
//! pending subscriptions in the SQLite store, the same feeds out as OPML; bad input gets a
//! clear message and exit status 1.

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str =
    "[xmpp]\nallowed = [\"example.org\"]\n[rss]\ndomain = \"rss.example.org\"\nsecret = \"s\"\n";

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(dir.join("ferry.toml"))
        .args(args)
        .env_remove("FERRY_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ferry")
}

#[test]
fn opml_goes_in_and_comes_back_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
    let opml = r#"<?xml version="1.0"?>
<opml version="2.0"><head><title>mine</title></head><body>
  <outline text="News"><outline text="XKCD" type="rss" xmlUrl="https://xkcd.com/atom.xml"/>
  <outline text="LWN" type="rss" xmlUrl="https://lwn.net/headlines/rss"/></outline>
  <outline text="broken" type="rss" xmlUrl="ftp://example.org/feed"/>
</body></opml>"#;
    let file = dir.path().join("in.opml");
    std::fs::write(&file, opml).expect("opml");

    let out = ferry(
        dir.path(),
        &[
            "feeds",
            "import",
            "--jid",
            "alice@example.org",
            file.to_str().expect("utf-8 path"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("imported 2 feed(s)"), "{stderr}");
    assert!(
        stderr.contains("skipped ftp://example.org/feed"),
        "{stderr}"
    );

    let out = ferry(
        dir.path(),
        &["feeds", "export", "--jid", "alice@example.org"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = String::from_utf8_lossy(&out.stdout);
    assert!(exported.contains("<opml"), "{exported}");
    assert!(exported.contains("https://xkcd.com/atom.xml"), "{exported}");
    assert!(
        exported.contains("https://lwn.net/headlines/rss"),
        "{exported}"
    );
    assert!(!exported.contains("ftp://"), "{exported}");

    // Importing again changes nothing twice over.
    let out = ferry(
        dir.path(),
        &[
            "feeds",
            "import",
            "--jid",
            "alice@example.org",
            file.to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success());
    let again = ferry(
        dir.path(),
        &["feeds", "export", "--jid", "alice@example.org"],
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .matches("xmlUrl")
            .count(),
        2
    );
}

#[test]
fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
    let junk = dir.path().join("junk.opml");
    std::fs::write(&junk, "<html>not opml").expect("junk");
    let out = ferry(
        dir.path(),
        &[
            "feeds",
            "import",
            "--jid",
            "alice@example.org",
            junk.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("junk.opml"),
        "names the file"
    );
    let out = ferry(dir.path(), &["feeds", "export", "--jid", "not a jid"]);
    assert_eq!(out.status.code(), Some(1));
    let out = ferry(
        dir.path(),
        &["feeds", "export", "--jid", "nobody@example.org"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("follows no feeds"));
}
