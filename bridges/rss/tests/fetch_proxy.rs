//! Proxy environment variables must not divert feed fetches. The environment is process-wide
//! (and changing it is `unsafe` in edition 2024), so the test runs its check in a child
//! process of this test binary, with the proxy variables set only there: the same test,
//! which in the child (told by an environment variable) does the fetching.

mod common;

use std::time::Duration;

use common::server::{Route, TestServer};
use ferry_rss::fetch::{FetchOutcome, FetchPolicy, Fetcher, Validators};

const CHILD_ORIGIN: &str = "FERRY_TEST_PROXY_CHILD_ORIGIN";

#[tokio::test]
async fn proxy_environment_is_ignored() {
    if let Ok(origin) = std::env::var(CHILD_ORIGIN) {
        return child_fetch(origin).await;
    }
    let origin = TestServer::start().await;
    origin.route("/feed", Route::ok("<rss/>"));
    origin.route("/control", Route::ok("direct"));
    // The "proxy" answers anything it is asked, so a diverted request would be seen here.
    let proxy = TestServer::start().await;
    proxy.fallback(Route::ok("proxied"));
    let proxy_url = proxy.url("");

    let exe = std::env::current_exe().expect("test binary path");
    let mut child = tokio::process::Command::new(exe);
    child
        .args([
            "--exact",
            "proxy_environment_is_ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ORIGIN, origin.authority())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .kill_on_drop(true);
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        child.env(name, &proxy_url);
    }
    let output = tokio::time::timeout(Duration::from_secs(8), child.output())
        .await
        .expect("the child finishes in time")
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The child really ran its check (not filtered out).
    assert!(stdout.contains("1 passed"), "{stdout}");

    // The fetcher went straight to the origin …
    assert_eq!(origin.stats().targets(), ["/feed"]);
    // … while a default client in the same environment did use the proxy.
    let via_proxy = proxy.stats().targets();
    assert_eq!(via_proxy.len(), 1, "{via_proxy:?}");
    assert!(via_proxy[0].ends_with("/control"), "{via_proxy:?}");
}

/// The child's half: proxies are set in its environment.
async fn child_fetch(origin: String) {
    assert!(std::env::var("HTTP_PROXY").is_ok());

    // Control: an ordinary client honours the proxy variables.
    let control = reqwest::get(format!("http://{origin}/control"))
        .await
        .expect("control request")
        .text()
        .await
        .expect("control body");
    assert_eq!(control, "proxied");

    let fetcher = Fetcher::new(FetchPolicy {
        allow_hosts: vec![origin.clone()],
        ..FetchPolicy::default()
    })
    .expect("fetcher");
    let outcome = fetcher
        .fetch(&format!("http://{origin}/feed"), &Validators::default())
        .await
        .expect("fetch");
    let FetchOutcome::Fetched { body, .. } = outcome else {
        panic!("expected a body, got {outcome:?}");
    };
    assert_eq!(body, b"<rss/>");
}
