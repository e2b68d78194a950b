//! Integration tests of `ferry_rss::fetch` and `ferry_rss::discover` against a local HTTP
//! server: conditional GET, status and Retry-After, redirects and their re-check, the
//! address guard (no connection at all when refused), size, time and per-host limits, and
//! feed autodiscovery; plus table tests of the address ranges and header parsers.

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use common::server::{Body, Route, TestServer};
use ferry_rss::discover::{discover, find_feed_links, looks_like_feed};
use ferry_rss::fetch::{
    FetchError, FetchOutcome, FetchPolicy, Fetcher, Validators, is_forbidden, parse_max_age,
    parse_retry_after,
};

const RSS: &str =
    r#"<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>"#;
const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- generated -->
<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title></feed>"#;
const MIB: u64 = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(5);

/// A policy that lets the fetcher reach `server` (and only it) although it is on loopback.
fn policy_for(server: &TestServer) -> FetchPolicy {
    FetchPolicy {
        allow_hosts: vec![server.authority()],
        ..FetchPolicy::default()
    }
}

fn fetcher_for(server: &TestServer) -> Fetcher {
    Fetcher::new(policy_for(server)).expect("build a fetcher")
}

fn none() -> Validators {
    Validators::default()
}

fn fetched(outcome: FetchOutcome) -> (Vec<u8>, String, Validators, Option<Duration>) {
    match outcome {
        FetchOutcome::Fetched {
            body,
            final_url,
            validators,
            max_age,
            ..
        } => (body, final_url, validators, max_age),
        other => panic!("expected a body, got {other:?}"),
    }
}

// ---- conditional GET ----

#[tokio::test]
async fn fetch_records_validators_and_repoll_is_not_modified() {
    let server = TestServer::start().await;
    let etag = r#"W/"abc-123""#;
    // A non-standard date: it must come back byte for byte, not reformatted.
    let last_modified = "Tuesday, 01-Jan-30 00:00:00 GMT";
    server.route(
        "/feed.xml",
        Route::ok(RSS)
            .header("Content-Type", "application/rss+xml; charset=utf-8")
            .header("ETag", etag)
            .header("Last-Modified", last_modified)
            .header("Cache-Control", "public, max-age=600")
            .conditional(),
    );
    let fetcher = fetcher_for(&server);

    let first = fetcher
        .fetch(&server.url("/feed.xml"), &none())
        .await
        .expect("first fetch");
    let FetchOutcome::Fetched {
        body,
        final_url,
        validators,
        max_age,
        content_type,
    } = first
    else {
        panic!("expected a body, got {first:?}");
    };
    assert_eq!(body, RSS.as_bytes());
    assert_eq!(final_url, server.url("/feed.xml"));
    assert_eq!(validators.etag.as_deref(), Some(etag));
    assert_eq!(validators.last_modified.as_deref(), Some(last_modified));
    assert_eq!(max_age, Some(Duration::from_secs(600)));
    assert_eq!(
        content_type.as_deref(),
        Some("application/rss+xml; charset=utf-8")
    );

    let second = fetcher
        .fetch(&server.url("/feed.xml"), &validators)
        .await
        .expect("repoll");
    assert_eq!(
        second,
        FetchOutcome::NotModified {
            max_age: Some(Duration::from_secs(600))
        }
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].header("if-none-match"), None);
    assert_eq!(requests[0].header("if-modified-since"), None);
    assert_eq!(requests[1].header("if-none-match"), Some(etag));
    assert_eq!(requests[1].header("if-modified-since"), Some(last_modified));
    let accept = requests[0].header("accept").unwrap_or_default();
    assert!(accept.starts_with("application/rss+xml"), "{accept}");
    let agent = requests[0].header("user-agent").unwrap_or_default();
    assert!(agent.starts_with("ferry/"), "{agent}");
}

#[tokio::test]
async fn only_last_modified_is_enough_for_not_modified() {
    let server = TestServer::start().await;
    let stamp = "Wed, 21 Oct 2015 07:28:00 GMT";
    server.route(
        "/f",
        Route::ok(RSS).header("Last-Modified", stamp).conditional(),
    );
    let fetcher = fetcher_for(&server);
    let (_, _, validators, max_age) = fetched(
        fetcher
            .fetch(&server.url("/f"), &none())
            .await
            .expect("fetch"),
    );
    assert_eq!(validators.etag, None);
    assert_eq!(max_age, None);
    let again = fetcher
        .fetch(&server.url("/f"), &validators)
        .await
        .expect("repoll");
    assert_eq!(again, FetchOutcome::NotModified { max_age: None });
    assert_eq!(
        server.requests()[1].header("if-modified-since"),
        Some(stamp)
    );
}

#[tokio::test]
async fn not_modified_to_an_unconditional_request_is_an_error() {
    let server = TestServer::start().await;
    server.route("/f", Route::status(304));
    let result = fetcher_for(&server).fetch(&server.url("/f"), &none()).await;
    assert_eq!(
        result,
        Err(FetchError::Status {
            code: 304,
            retry_after: None
        })
    );
}

// ---- status codes and Retry-After ----

#[tokio::test]
async fn too_many_requests_with_retry_after_seconds() {
    let server = TestServer::start().await;
    server.route("/f", Route::status(429).header("Retry-After", "120"));
    let err = fetcher_for(&server)
        .fetch(&server.url("/f"), &none())
        .await
        .expect_err("429 is an error");
    assert_eq!(
        err,
        FetchError::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert!(!err.is_refusal());
    assert_eq!(err.to_string(), "http status 429 (retry after 120s)");
}

#[tokio::test]
async fn service_unavailable_with_retry_after_date() {
    let server = TestServer::start().await;
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    server.route("/f", Route::status(503).header("Retry-After", &later));
    let err = fetcher_for(&server)
        .fetch(&server.url("/f"), &none())
        .await
        .expect_err("503 is an error");
    let after = err.retry_after().expect("a retry-after");
    assert!(
        (Duration::from_secs(3590)..=Duration::from_secs(3600)).contains(&after),
        "{after:?}"
    );
    assert!(matches!(err, FetchError::Status { code: 503, .. }));
}

#[tokio::test]
async fn other_statuses_carry_no_retry_after() {
    let server = TestServer::start().await;
    server.route("/gone", Route::status(500).header("Retry-After", "30"));
    let fetcher = fetcher_for(&server);
    assert_eq!(
        fetcher.fetch(&server.url("/gone"), &none()).await,
        Err(FetchError::Status {
            code: 500,
            retry_after: None
        })
    );
    assert_eq!(
        fetcher.fetch(&server.url("/missing"), &none()).await,
        Err(FetchError::Status {
            code: 404,
            retry_after: None
        })
    );
}

// ---- redirects ----

#[tokio::test]
async fn relative_and_absolute_redirects_are_followed() {
    let server = TestServer::start().await;
    server.route("/dir/a", Route::redirect(302, "b?x=1"));
    server.route("/dir/b", Route::redirect(301, "/c"));
    server.route("/c", Route::redirect(307, &server.url("/d")));
    // Scheme-relative.
    let e = format!("//{}/e", server.authority());
    server.route("/d", Route::redirect(308, &e));
    server.route("/e", Route::redirect(303, "final.xml"));
    server.route("/final.xml", Route::ok(RSS));
    let (body, final_url, _, _) = fetched(
        fetcher_for(&server)
            .fetch(&server.url("/dir/a"), &none())
            .await
            .expect("five redirects are fine"),
    );
    assert_eq!(body, RSS.as_bytes());
    assert_eq!(final_url, server.url("/final.xml"));
    assert_eq!(
        server.stats().targets(),
        ["/dir/a", "/dir/b?x=1", "/c", "/d", "/e", "/final.xml"]
    );
}

#[tokio::test]
async fn more_than_five_redirects_are_refused() {
    let server = TestServer::start().await;
    for i in 0..6 {
        server.route(
            &format!("/r{i}"),
            Route::redirect(302, &format!("/r{}", i + 1)),
        );
    }
    server.route("/r6", Route::ok(RSS));
    let result = fetcher_for(&server)
        .fetch(&server.url("/r0"), &none())
        .await;
    assert_eq!(result, Err(FetchError::TooManyRedirects));
    let targets = server.stats().targets();
    assert_eq!(targets.len(), 6, "{targets:?}");
    assert!(!targets.contains(&"/r6".to_owned()));
}

#[tokio::test]
async fn redirect_to_another_loopback_port_is_refused_without_connecting() {
    let allowed = TestServer::start().await;
    let other = TestServer::start().await;
    other.fallback(Route::ok(RSS));
    allowed.route("/", Route::redirect(302, &other.url("/secret")));
    let err = fetcher_for(&allowed)
        .fetch(&allowed.url("/"), &none())
        .await
        .expect_err("the second hop is private");
    assert_eq!(
        err,
        FetchError::Refused("127.0.0.1 is a loopback address".into())
    );
    assert_eq!(err.to_string(), "refused: 127.0.0.1 is a loopback address");
    assert!(err.is_refusal());
    assert_eq!(allowed.requests().len(), 1);
    assert_eq!(other.connections(), 0);
}

#[tokio::test]
async fn redirect_to_other_loopback_hosts_is_refused_without_connecting() {
    let allowed = TestServer::start().await;
    let fetcher = fetcher_for(&allowed);

    let v4 = TestServer::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    v4.fallback(Route::ok(RSS));
    allowed.route("/to-v4", Route::redirect(302, &v4.url("/")));
    let err = fetcher
        .fetch(&allowed.url("/to-v4"), &none())
        .await
        .expect_err("127.0.0.2 is loopback");
    assert_eq!(
        err,
        FetchError::Refused("127.0.0.2 is a loopback address".into())
    );
    assert_eq!(v4.connections(), 0);

    // A name that resolves to loopback is refused by the resolver, before connecting.
    let named = TestServer::start().await;
    named.fallback(Route::ok(RSS));
    let location = format!("http://localhost:{}/", named.addr().port());
    allowed.route("/to-name", Route::redirect(301, &location));
    let err = fetcher
        .fetch(&allowed.url("/to-name"), &none())
        .await
        .expect_err("localhost is loopback");
    assert!(err.is_refusal(), "{err:?}");
    assert!(err.to_string().contains("loopback"), "{err}");
    assert_eq!(named.connections(), 0);

    // Not every test machine has IPv6 loopback; the refusal does not depend on it.
    let v6 = TestServer::bind("[::1]:0").await.ok();
    let port = v6.as_ref().map_or(9, |s| s.addr().port());
    allowed.route(
        "/to-v6",
        Route::redirect(307, &format!("http://[::1]:{port}/")),
    );
    let err = fetcher
        .fetch(&allowed.url("/to-v6"), &none())
        .await
        .expect_err("::1 is loopback");
    assert_eq!(err, FetchError::Refused("::1 is a loopback address".into()));
    if let Some(v6) = v6 {
        assert_eq!(v6.connections(), 0);
    }

    allowed.route("/to-file", Route::redirect(302, "file:///etc/passwd"));
    let err = fetcher
        .fetch(&allowed.url("/to-file"), &none())
        .await
        .expect_err("file urls are not fetched");
    assert!(err.is_refusal(), "{err:?}");
}

// ---- the address guard ----

#[tokio::test]
async fn private_addresses_are_refused_without_any_connection() {
    let server = TestServer::start().await;
    server.fallback(Route::ok(RSS));
    let fetcher = Fetcher::new(FetchPolicy::default()).expect("fetcher");
    assert!(!fetcher.policy().allow_private);

    let err = fetcher
        .fetch(&server.url("/feed"), &none())
        .await
        .expect_err("127.0.0.1 is refused");
    assert_eq!(err.to_string(), "refused: 127.0.0.1 is a loopback address");

    let by_name = format!("http://localhost:{}/feed", server.addr().port());
    let err = fetcher
        .fetch(&by_name, &none())
        .await
        .expect_err("localhost is refused");
    assert!(err.is_refusal(), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("refused: localhost resolves to"),
        "{err}"
    );

    // Other spellings of loopback, and other private ranges.
    let port = server.addr().port();
    for url in [
        format!("http://0x7f.0.0.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        "http://10.1.2.3/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00::1]/".to_owned(),
    ] {
        let err = fetcher.fetch(&url, &none()).await.expect_err(&url);
        assert!(err.is_refusal(), "{url}: {err:?}");
    }
    assert_eq!(server.connections(), 0);

    if let Ok(v6) = TestServer::bind("[::1]:0").await {
        v6.fallback(Route::ok(RSS));
        let err = fetcher
            .fetch(&v6.url("/feed"), &none())
            .await
            .expect_err("::1 is refused");
        assert_eq!(err.to_string(), "refused: ::1 is a loopback address");
        assert_eq!(v6.connections(), 0);
    } else {
        let err = fetcher
            .fetch("http://[::1]:9/feed", &none())
            .await
            .expect_err("::1 is refused");
        assert_eq!(err.to_string(), "refused: ::1 is a loopback address");
    }
}

#[tokio::test]
async fn allow_private_and_allow_hosts_let_the_fetch_through() {
    let server = TestServer::start().await;
    server.fallback(Route::ok(RSS));
    let open = Fetcher::new(FetchPolicy {
        allow_private: true,
        ..FetchPolicy::default()
    })
    .expect("fetcher");
    let by_name = format!("http://localhost:{}/feed", server.addr().port());
    for url in [server.url("/a"), by_name] {
        let (body, _, _, _) = fetched(open.fetch(&url, &none()).await.expect(&url));
        assert_eq!(body, RSS.as_bytes());
    }
    assert!(server.connections() >= 1);

    // allow_hosts is exact: the host with another port, or another host, stays guarded.
    let only_other_port = Fetcher::new(FetchPolicy {
        allow_hosts: vec!["127.0.0.1:1".into(), "LOCALHOST:1".into()],
        ..FetchPolicy::default()
    })
    .expect("fetcher");
    let before = server.connections();
    assert!(
        only_other_port
            .fetch(&server.url("/b"), &none())
            .await
            .expect_err("port differs")
            .is_refusal()
    );
    let by_name = format!("http://localhost:{}/feed", server.addr().port());
    assert!(
        only_other_port
            .fetch(&by_name, &none())
            .await
            .expect_err("port differs")
            .is_refusal()
    );
    assert_eq!(server.connections(), before);

    // A bare host entry allows every port of that host.
    let host_only = Fetcher::new(FetchPolicy {
        allow_hosts: vec!["localhost".into()],
        ..FetchPolicy::default()
    })
    .expect("fetcher");
    let (body, _, _, _) = fetched(host_only.fetch(&by_name, &none()).await.expect("allowed"));
    assert_eq!(body, RSS.as_bytes());
}

#[tokio::test]
async fn bad_urls_are_refused() {
    let fetcher = Fetcher::new(FetchPolicy::default()).expect("fetcher");
    for url in [
        "ftp://example.com/feed",
        "file:///etc/passwd",
        "not a url",
        "http://",
    ] {
        let err = fetcher.fetch(url, &none()).await.expect_err(url);
        assert!(err.is_refusal(), "{url}: {err:?}");
    }
}

// ---- size and time limits ----

fn gzip_of_zeros(len: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        encoder.write_all(&block[..n]).expect("compress");
        left -= n;
    }
    encoder.finish().expect("compress")
}

fn small_limit(server: &TestServer) -> Fetcher {
    Fetcher::new(FetchPolicy {
        max_bytes: MIB,
        ..policy_for(server)
    })
    .expect("fetcher")
}

#[tokio::test]
async fn gzip_body_is_decoded_and_counted_after_decompression() {
    let server = TestServer::start().await;
    let bomb = gzip_of_zeros(50 * MIB as usize);
    assert!(bomb.len() < MIB as usize, "the bomb is small on the wire");
    server.route("/bomb", Route::ok(bomb).header("Content-Encoding", "gzip"));
    let small = gzip_of_zeros(1000);
    server.route(
        "/small",
        Route::ok(small).header("Content-Encoding", "gzip"),
    );
    let fetcher = small_limit(&server);

    let (body, _, _, _) = fetched(
        fetcher
            .fetch(&server.url("/small"), &none())
            .await
            .expect("small gzip"),
    );
    assert_eq!(body, vec![0u8; 1000]);
    let encoding = server.requests()[0]
        .header("accept-encoding")
        .unwrap_or_default()
        .to_owned();
    assert!(encoding.contains("gzip"), "{encoding}");

    let result = fetcher.fetch(&server.url("/bomb"), &none()).await;
    assert_eq!(result, Err(FetchError::TooLarge { limit: MIB }));
}

#[tokio::test]
async fn long_streamed_body_is_cut_off_at_the_limit() {
    let server = TestServer::start().await;
    let total = 100 * MIB;
    server.route(
        "/huge",
        Route::body(Body::Stream {
            total,
            announce_length: false,
        }),
    );
    let started = Instant::now();
    let result = small_limit(&server)
        .fetch(&server.url("/huge"), &none())
        .await;
    assert_eq!(result, Err(FetchError::TooLarge { limit: MIB }));
    assert!(started.elapsed() < Duration::from_secs(5));
    // The fetcher hung up: the server's writes fail long before 100 MB.
    assert!(server.wait_for(WAIT, |s| s.closed == s.connections).await);
    let sent = server.stats().body_bytes_sent;
    assert!(sent < total / 2, "the server sent {sent} bytes");
}

#[tokio::test]
async fn announced_length_over_the_limit_is_refused_early() {
    let server = TestServer::start().await;
    let total = 100 * MIB;
    server.route(
        "/huge",
        Route::body(Body::Stream {
            total,
            announce_length: true,
        }),
    );
    let result = small_limit(&server)
        .fetch(&server.url("/huge"), &none())
        .await;
    assert_eq!(result, Err(FetchError::TooLarge { limit: MIB }));
    assert!(server.wait_for(WAIT, |s| s.closed == s.connections).await);
    assert!(server.stats().body_bytes_sent < total / 2);
}

#[tokio::test]
async fn body_at_exactly_the_limit_is_accepted() {
    let server = TestServer::start().await;
    server.route(
        "/exact",
        Route::body(Body::Stream {
            total: MIB,
            announce_length: false,
        }),
    );
    server.route(
        "/one-more",
        Route::body(Body::Stream {
            total: MIB + 1,
            announce_length: false,
        }),
    );
    let fetcher = small_limit(&server);
    let (body, _, _, _) = fetched(
        fetcher
            .fetch(&server.url("/exact"), &none())
            .await
            .expect("exactly the limit"),
    );
    assert_eq!(body.len() as u64, MIB);
    assert_eq!(
        fetcher.fetch(&server.url("/one-more"), &none()).await,
        Err(FetchError::TooLarge { limit: MIB })
    );
}

#[tokio::test]
async fn slow_drip_is_cut_off_by_the_total_timeout() {
    let server = TestServer::start().await;
    server.route(
        "/drip",
        Route::body(Body::Drip {
            every: Duration::from_millis(200),
        }),
    );
    let fetcher = Fetcher::new(FetchPolicy {
        timeout: Duration::from_secs(1),
        ..policy_for(&server)
    })
    .expect("fetcher");
    let started = Instant::now();
    let result = fetcher.fetch(&server.url("/drip"), &none()).await;
    let elapsed = started.elapsed();
    assert_eq!(result, Err(FetchError::Timeout));
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // The server did get to drip some bytes: the cut came during the body.
    assert!(server.stats().body_bytes_sent >= 2);
}

#[tokio::test]
async fn slow_headers_are_cut_off_too() {
    let server = TestServer::start().await;
    server.route("/late", Route::ok(RSS).held());
    let fetcher = Fetcher::new(FetchPolicy {
        timeout: Duration::from_millis(500),
        ..policy_for(&server)
    })
    .expect("fetcher");
    let started = Instant::now();
    assert_eq!(
        fetcher.fetch(&server.url("/late"), &none()).await,
        Err(FetchError::Timeout)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ---- per-host concurrency ----

#[tokio::test]
async fn at_most_two_fetches_per_host_at_once() {
    let server = TestServer::start().await;
    server.fallback(Route::ok(RSS).held());
    let fetcher = fetcher_for(&server);
    assert_eq!(fetcher.policy().per_host, 2);
    let all = tokio::spawn({
        let fetcher = fetcher.clone();
        let urls: Vec<String> = (0..6).map(|i| server.url(&format!("/f{i}"))).collect();
        async move {
            let validators = none();
            futures_util::future::join_all(urls.iter().map(|u| fetcher.fetch(u, &validators))).await
        }
    });
    // Answers are held: two requests arrive, and each answer lets exactly one more in.
    assert!(server.wait_for(WAIT, |s| s.in_flight == 2).await);
    for arrived in 3..=6 {
        server.release(1);
        assert!(
            server
                .wait_for(WAIT, |s| s.requests.len() == arrived && s.in_flight == 2)
                .await,
            "{:?}",
            server.stats()
        );
    }
    server.release(2);
    let results = all.await.expect("fetch task");
    for result in results {
        let (body, _, _, _) = fetched(result.expect("every fetch succeeds"));
        assert_eq!(body, RSS.as_bytes());
    }
    let stats = server.stats();
    assert_eq!(stats.requests.len(), 6);
    assert_eq!(stats.max_in_flight, 2, "two at once, never more");
}

#[tokio::test]
async fn per_host_limit_is_shared_by_clones_and_separate_per_host() {
    let a = TestServer::start().await;
    a.fallback(Route::ok(RSS).held());
    let b = TestServer::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    b.fallback(Route::ok(RSS));
    let fetcher = Fetcher::new(FetchPolicy {
        per_host: 1,
        allow_hosts: vec![a.authority(), b.authority()],
        ..FetchPolicy::default()
    })
    .expect("fetcher");
    let clone = fetcher.clone();

    let first = tokio::spawn({
        let (fetcher, url) = (fetcher.clone(), a.url("/one"));
        async move { fetcher.fetch(&url, &none()).await }
    });
    assert!(a.wait_for(WAIT, |s| s.in_flight == 1).await);
    // The clone shares the limit: this one waits for the first to finish.
    let second = tokio::spawn({
        let (fetcher, url) = (clone.clone(), a.url("/two"));
        async move { fetcher.fetch(&url, &none()).await }
    });
    // Another host is not held up by the busy one.
    clone
        .fetch(&b.url("/y"), &none())
        .await
        .expect("the other host");
    let busy = a.stats();
    assert_eq!(busy.in_flight, 1, "the first fetch is still running");
    assert_eq!(busy.targets(), ["/one"]);

    a.release(2);
    for task in [first, second] {
        task.await.expect("task").expect("fetch");
    }
    let stats = a.stats();
    assert_eq!(stats.targets(), ["/one", "/two"]);
    assert_eq!(stats.max_in_flight, 1);
    assert_eq!(fetcher.tracked_hosts(), 2);
}

#[tokio::test]
async fn per_host_limiters_stay_bounded() {
    // Nothing listens on port 1: every fetch fails at once, but takes a host's limiter.
    let fetcher = Fetcher::new(FetchPolicy {
        allow_private: true,
        ..FetchPolicy::default()
    })
    .expect("fetcher");
    for i in 0..300u32 {
        let url = format!("http://127.0.{}.{}:1/", i / 250, i % 250 + 1);
        let result = fetcher.fetch(&url, &none()).await;
        assert!(
            matches!(result, Err(FetchError::Network(_))),
            "{url}: {result:?}"
        );
    }
    let kept = fetcher.tracked_hosts();
    assert!((1..=256).contains(&kept), "{kept} limiters kept");
}

// ---- the test server itself ----

#[tokio::test]
async fn test_server_stops_when_shut_down() {
    let server = TestServer::start().await;
    let addr = server.addr();
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

// ---- discovery ----

#[test]
fn feed_links_in_html() {
    let html = r#"<!DOCTYPE html>
<html><head>
<!-- <link rel="alternate" type="application/rss+xml" href="/commented.xml"> -->
<script>var s = '<link rel="alternate" type="application/rss+xml" href="/scripted.xml">';</script>
<link rel="stylesheet" type="text/css" href="/style.css">
<link rel="alternate" type="text/html" href="/other.html">
<link rel="alternate" type="application/rss+xml" title="Posts" href="feed.xml">
<LINK HREF='/atom?a=1&amp;b=2' TYPE='Application/Atom+XML' REL='Alternate'>
<link type=application/feed+json rel="alternate feed" href=/feed.json />
<link rel="alternate" type="application/json" href="https://cdn.example.net/f.json">
<link rel="alternate" type="application/rss+xml" href="feed.xml">
<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
<link rel="alternate" type="application/rss+xml" href="">
</head><body><p>a < b</p></body></html>"#;
    assert_eq!(
        find_feed_links(html, "https://example.com/blog/post.html"),
        [
            "https://example.com/blog/feed.xml",
            "https://example.com/atom?a=1&b=2",
            "https://example.com/feed.json",
            "https://cdn.example.net/f.json",
        ]
    );
}

#[test]
fn feed_links_use_the_base_element() {
    let html = r#"<html><head>
<link rel=alternate type="application/rss+xml" href="rss.xml">
<base href="/journal/">
<base href="/ignored/">
</head></html>"#;
    assert_eq!(
        find_feed_links(html, "http://example.org/a/b"),
        ["http://example.org/journal/rss.xml"]
    );
    assert!(find_feed_links("<html><p>nothing</p></html>", "http://example.org/").is_empty());
    assert!(find_feed_links("<link rel=alternate", "http://example.org/").is_empty());
}

#[test]
fn feed_links_scanner_survives_hostile_html() {
    let link = r#"<link rel="alternate" type="application/rss+xml" href="/ok.xml">"#;
    let nasty = [
        "<",
        "<<<<",
        "<link",
        "<link rel='alternate",
        "<link =é rel=alternate>",
        "<link ='x'é rel=alternate>",
        "<lïnk rel=alternate>",
        "<!--",
        "<!-- é",
        "<script>é",
        "<link rel=alternate type=application/rss+xml href='é",
        "<a href=\"é\"é=é>",
        "&amp;&#xffffffff;&#;&",
        "<link rel=alternate type=application/rss+xml href=\"&#x110000;&#0;\">",
    ];
    for junk in nasty {
        // Every fragment, alone and before a good link, with multibyte text around it.
        let _ = find_feed_links(junk, "http://example.org/");
        let html = format!("é{junk}é");
        let _ = find_feed_links(&html, "http://example.org/");
        let html = format!("{junk}>\"'-->{link}");
        let _ = find_feed_links(&html, "http://example.org/");
    }
    // Stray `=` and duplicate attributes: the first of a name wins.
    let html =
        r#"<link =x rel=alternate rel=stylesheet type="application/rss+xml" href="/a" href="/b">"#;
    assert_eq!(
        find_feed_links(html, "http://example.org/"),
        ["http://example.org/a"]
    );
    // The scan stops at 512 KiB, even in the middle of a multibyte character.
    let mut big = "é".repeat(300 * 1024);
    big.push_str(link);
    assert!(big.len() > 512 * 1024);
    assert!(find_feed_links(&big, "http://example.org/").is_empty());
    let mut early = link.to_owned();
    early.push_str(&"é".repeat(300 * 1024));
    assert_eq!(
        find_feed_links(&early, "http://example.org/"),
        ["http://example.org/ok.xml"]
    );
    // A bad base gives nothing rather than a panic.
    assert!(find_feed_links(link, "not a url").is_empty());
}

#[test]
fn feed_sniffing() {
    let xml = Some("application/xml");
    let html = Some("text/html; charset=utf-8");
    assert!(looks_like_feed(html, RSS.as_bytes()));
    assert!(looks_like_feed(None, ATOM.as_bytes()));
    assert!(looks_like_feed(
        None,
        "\u{feff}  <rdf:RDF xmlns:rdf=\"x\"><channel/></rdf:RDF>".as_bytes()
    ));
    assert!(looks_like_feed(
        Some("application/json"),
        br#"{"version":"https://jsonfeed.org/version/1","items":[]}"#
    ));
    assert!(!looks_like_feed(
        Some("application/json"),
        br#"{"version":"1.0"}"#
    ));
    assert!(looks_like_feed(xml, b"<unknown-root/>"));
    assert!(!looks_like_feed(xml, b"<!DOCTYPE html><html></html>"));
    assert!(!looks_like_feed(html, b"<html><body>hi</body></html>"));
    assert!(!looks_like_feed(None, b""));
    // Multibyte text where a prefix is compared: no panic, no feed.
    assert!(!looks_like_feed(None, "<!doctype htmé".as_bytes()));
    assert!(!looks_like_feed(None, "<?xml é".as_bytes()));
    assert!(!looks_like_feed(None, &[0xff, 0xfe, b'<', 0xc3]));
}

fn discovering(server: &TestServer) -> Fetcher {
    fetcher_for(server)
}

#[tokio::test]
async fn discover_follows_the_link_tag() {
    let server = TestServer::start().await;
    server.route(
        "/",
        Route::ok(
            r#"<html><head><title>Blog</title>
            <link rel="alternate" type="application/atom+xml" href="/blog/atom.xml"></head></html>"#,
        )
        .header("Content-Type", "text/html; charset=utf-8"),
    );
    let found = discover(&discovering(&server), &server.url("/"))
        .await
        .expect("found");
    assert_eq!(found, server.url("/blog/atom.xml"));
    assert_eq!(server.stats().targets(), ["/"]);
}

#[tokio::test]
async fn discover_falls_back_to_common_paths() {
    let server = TestServer::start().await;
    server.route(
        "/",
        Route::ok("<html><body>no links here</body></html>").header("Content-Type", "text/html"),
    );
    // A catch-all page is not a feed, even with 200.
    server.route(
        "/rss",
        Route::ok("<!doctype html><html>not found</html>").header("Content-Type", "text/html"),
    );
    server.route(
        "/atom.xml",
        Route::ok(ATOM).header("Content-Type", "application/octet-stream"),
    );
    let found = discover(&discovering(&server), &server.url("/"))
        .await
        .expect("found");
    assert_eq!(found, server.url("/atom.xml"));
    assert_eq!(
        server.stats().targets(),
        ["/", "/feed", "/rss", "/atom.xml"]
    );
}

#[tokio::test]
async fn discover_accepts_a_site_url_that_is_a_feed() {
    let server = TestServer::start().await;
    server.route("/", Route::redirect(301, "/index.rss"));
    server.route(
        "/index.rss",
        Route::ok(RSS).header("Content-Type", "text/plain"),
    );
    server.route(
        "/json",
        Route::ok(r#"{"version": "https:\/\/jsonfeed.org\/version\/1.1", "items": []}"#)
            .header("Content-Type", "application/json"),
    );
    let fetcher = discovering(&server);
    assert_eq!(
        discover(&fetcher, &server.url("/")).await.expect("found"),
        server.url("/index.rss")
    );
    assert_eq!(
        discover(&fetcher, &server.url("/json"))
            .await
            .expect("found"),
        server.url("/json")
    );
    assert_eq!(server.stats().targets(), ["/", "/index.rss", "/json"]);
}

#[tokio::test]
async fn discover_reports_not_found_and_passes_refusals_on() {
    let server = TestServer::start().await;
    server.route(
        "/",
        Route::ok("<html></html>").header("Content-Type", "text/html"),
    );
    let err = discover(&discovering(&server), &server.url("/"))
        .await
        .expect_err("no feed");
    assert_eq!(err, FetchError::NotFound);
    assert_eq!(err.to_string(), "no feed found on this site");
    assert_eq!(
        server.stats().targets(),
        [
            "/",
            "/feed",
            "/rss",
            "/atom.xml",
            "/feed.xml",
            "/rss.xml",
            "/index.xml",
            "/feed.json"
        ]
    );

    let guarded = Fetcher::new(FetchPolicy::default()).expect("fetcher");
    let err = discover(&guarded, &server.url("/"))
        .await
        .expect_err("loopback");
    assert!(err.is_refusal(), "{err:?}");
    assert_eq!(server.stats().requests.len(), 8);
}

// ---- address ranges and header parsing ----

fn ip(s: &str) -> IpAddr {
    s.parse().expect(s)
}

#[test]
fn forbidden_addresses() {
    for s in [
        // IPv4
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.255",
        "127.0.0.1",
        "127.255.0.9",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        // IPv6
        "::",
        "::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "fc00::1",
        "fdff::1",
        "ff02::1",
        "ff0e::1",
        "2001:db8::1",
        "3fff::1",
        "100::1",
        "2001::1",
        "2001:10::1",
        "64:ff9b:1::1",
        "4000::1",
        // IPv4-mapped: always, whatever the embedded address
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:8.8.8.8",
        // IPv4-compatible
        "::127.0.0.1",
        "::8.8.8.8",
        // NAT64 and 6to4 with a forbidden embedded address
        "64:ff9b::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::10.1.1.1",
        "2002:7f00:1::",
        "2002:c0a8:101::1",
    ] {
        assert!(is_forbidden(ip(s)), "{s} should be forbidden");
    }
    for s in [
        "1.1.1.1",
        "8.8.8.8",
        "9.9.9.9",
        "100.63.255.255",
        "100.128.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "192.0.1.1",
        "192.169.0.1",
        "198.17.255.255",
        "198.20.0.1",
        "223.255.255.254",
        "93.184.215.14",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "2001:4860:4860::8888",
        "2001:200::1",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
    ] {
        assert!(!is_forbidden(ip(s)), "{s} should be allowed");
    }
}

#[test]
fn max_age_from_cache_control() {
    let secs = |n| Some(Duration::from_secs(n));
    assert_eq!(parse_max_age("max-age=300"), secs(300));
    assert_eq!(parse_max_age("public, max-age=300"), secs(300));
    assert_eq!(parse_max_age("public, s-maxage=60, max-age=300"), secs(60));
    assert_eq!(parse_max_age("max-age=300, s-maxage=60"), secs(60));
    assert_eq!(parse_max_age(" MAX-AGE = \"30\" "), secs(30));
    assert_eq!(parse_max_age("max-age=0"), secs(0));
    assert_eq!(parse_max_age("no-cache, max-age=60"), None);
    assert_eq!(parse_max_age("max-age=60, No-Store"), None);
    assert_eq!(parse_max_age("private"), None);
    assert_eq!(parse_max_age(""), None);
    assert_eq!(parse_max_age("max-age=abc"), None);
    assert_eq!(parse_max_age("max-age=-1"), None);
    assert_eq!(parse_max_age("max-age="), None);
    assert_eq!(
        parse_max_age("max-age=99999999999999999999999"),
        secs(u64::MAX)
    );
}

#[test]
fn retry_after_values() {
    let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:26:30 GMT").expect("date");
    let secs = |n| Some(Duration::from_secs(n));
    assert_eq!(parse_retry_after("120", now), secs(120));
    assert_eq!(parse_retry_after(" 0 ", now), secs(0));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
        secs(90)
    );
    // RFC 850 and asctime forms are HTTP-dates too.
    assert_eq!(
        parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
        secs(90)
    );
    assert_eq!(parse_retry_after("Wed Oct 21 07:28:00 2015", now), secs(90));
    // A date in the past: retry now.
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
        secs(0)
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("-5", now), None);
    assert_eq!(parse_retry_after("", now), None);
}

#[test]
fn error_messages_are_lowercase_without_period() {
    let errors = [
        FetchError::Refused("10.0.0.1 is a private address".into()),
        FetchError::Status {
            code: 404,
            retry_after: None,
        },
        FetchError::TooLarge { limit: 10 },
        FetchError::Timeout,
        FetchError::TooManyRedirects,
        FetchError::NotFound,
        FetchError::Network("connection reset".into()),
    ];
    for e in errors {
        let text = e.to_string();
        assert!(text.starts_with(|c: char| c.is_ascii_lowercase()), "{text}");
        assert!(!text.ends_with('.'), "{text}");
    }
    assert_eq!(FetchError::Timeout.retry_after(), None);
    let defaults = FetchPolicy::default();
    assert_eq!(defaults.max_bytes, 15 * MIB);
    assert_eq!(defaults.timeout, Duration::from_secs(30));
    assert_eq!(defaults.max_redirects, 5);
    assert_eq!(defaults.per_host, 2);
    assert!(!defaults.allow_private && defaults.allow_hosts.is_empty());
    assert!(defaults.user_agent.starts_with("ferry/") && defaults.user_agent.ends_with("(+feeds)"));
}
