//! Sends through the Telnyx and Vonage providers against a local recording server and
//! checks the requests they make (path, authentication, body fields) and how they read the
//! answers: accepted, the provider's error JSON, 401, 429, 500 and no server at all.

mod common {
    pub mod recorder;
}

use std::sync::Arc;
use std::time::Duration;

use common::recorder::{Recorder, Reply};
use ferry_bridge_api::ErrorKind;
use ferry_sms::provider::{
    Accepted, Context, Kind, MediaRef, OutText, Provider, ProviderConfig, build,
};

const WAIT: Duration = Duration::from_secs(10);

const TELNYX_KEY: &str = "KEY01234567890";
/// Base64 of the Ed25519 public key of the seed `[7; 32]` (any valid key does here).
const TELNYX_PUBLIC_KEY: &str = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
const TELNYX_PROFILE: &str = "0f512bda-ae1e-4597-8e11-e5f5686b97d3";

const VONAGE_KEY: &str = "abcd1234";
const VONAGE_SECRET: &str = "s3cr3t-api";

fn ctx() -> Context {
    Context {
        public_url: "https://gw.example.org".into(),
        http: reqwest::Client::new(),
    }
}

fn blank(name: &str, kind: Kind, api_base: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind,
        api_base: Some(api_base.into()),
        account_sid: None,
        auth_token: None,
        api_key: None,
        public_key: None,
        messaging_profile_id: None,
        api_secret: None,
        signature_secret: None,
        sendsms_url: None,
        username: None,
        password: None,
        inbound_token: None,
    }
}

fn telnyx(api_base: &str) -> Arc<dyn Provider> {
    let cfg = ProviderConfig {
        api_key: Some(TELNYX_KEY.into()),
        public_key: Some(TELNYX_PUBLIC_KEY.into()),
        messaging_profile_id: Some(TELNYX_PROFILE.into()),
        ..blank("tx", Kind::Telnyx, api_base)
    };
    build(&cfg, &ctx()).expect("telnyx provider")
}

fn vonage(api_base: &str) -> Arc<dyn Provider> {
    let cfg = ProviderConfig {
        api_key: Some(VONAGE_KEY.into()),
        api_secret: Some(VONAGE_SECRET.into()),
        signature_secret: Some("sigsecret".into()),
        ..blank("vg", Kind::Vonage, api_base)
    };
    build(&cfg, &ctx()).expect("vonage provider")
}

fn text(from: &str, to: &str, body: &str) -> OutText {
    OutText {
        from: from.into(),
        to: to.into(),
        body: body.into(),
        media: Vec::new(),
        reference: "ref-0001".into(),
    }
}

/// An address where nothing listens: bound, read, then released.
fn dead_base() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("address");
    drop(l);
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------- Telnyx

const TELNYX_SENT: &str = r#"{"data":{"record_type":"message","direction":"outbound",
  "id":"40385f64-5717-4562-b3fc-2c963f66afa6","type":"MMS",
  "messaging_profile_id":"0f512bda-ae1e-4597-8e11-e5f5686b97d3",
  "from":{"phone_number":"+18445550001","carrier":"TELNYX LLC","line_type":"VoIP"},
  "to":[{"phone_number":"+18665550001","status":"queued"}],
  "text":"Hello, World!","errors":[]}}"#;

#[tokio::test]
async fn telnyx_send_posts_json_with_bearer_key() {
    let rec = Recorder::start().await;
    rec.reply("/v2/messages", Reply::json(200, TELNYX_SENT));
    let p = telnyx(&rec.url);
    let mut out = text("+18445550001", "+18665550001", "Hello, World!");
    out.media = vec!["https://media.example.org/a.png".into()];

    let accepted = p.send(&out).await.expect("accepted");
    assert_eq!(
        accepted,
        Accepted {
            message_id: "40385f64-5717-4562-b3fc-2c963f66afa6".into(),
            reports: true,
        }
    );

    let reqs = rec.wait_for(1, WAIT).await.expect("one request");
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v2/messages");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TELNYX_KEY}").as_str())
    );
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let body = r.json();
    assert_eq!(body["from"], "+18445550001");
    assert_eq!(body["to"], "+18665550001");
    assert_eq!(body["text"], "Hello, World!");
    assert_eq!(
        body["media_urls"],
        serde_json::json!(["https://media.example.org/a.png"])
    );
    assert_eq!(body["messaging_profile_id"], TELNYX_PROFILE);
    assert_eq!(body["webhook_url"], "https://gw.example.org/sms/tx/status");
}

#[tokio::test]
async fn telnyx_send_without_media_has_no_media_urls() {
    let rec = Recorder::start().await;
    rec.reply("/v2/messages", Reply::json(200, TELNYX_SENT));
    let p = telnyx(&rec.url);
    p.send(&text("+18445550001", "+18665550001", "plain"))
        .await
        .expect("accepted");
    let reqs = rec.wait_for(1, WAIT).await.expect("one request");
    let body = reqs[0].json();
    assert!(body.get("media_urls").is_none(), "{body}");
    assert_eq!(body["text"], "plain");
}

#[tokio::test]
async fn telnyx_send_maps_errors() {
    let rec = Recorder::start().await;
    let p = telnyx(&rec.url);
    let msg = text("+18445550001", "+18665550001", "hi");

    // The documented answer for a recipient who sent STOP.
    rec.reply(
        "/v2/messages",
        Reply::json(
            400,
            r#"{"errors":[{"code":"40300","title":"Blocked due to STOP message",
                "detail":"Messages cannot be sent from '+18445550001' to '+18665550001' due to an existing block rule."}]}"#,
        ),
    );
    let e = p.send(&msg).await.expect_err("opted out");
    assert_eq!(e.kind, ErrorKind::NotAcceptable);
    assert_eq!(e.text, "recipient opted out (STOP)");

    rec.reply(
        "/v2/messages",
        Reply::json(
            400,
            r#"{"errors":[{"code":"40310","title":"Invalid 'to' address",
                "detail":"The 'to' address should be a single valid number."}]}"#,
        ),
    );
    let e = p.send(&msg).await.expect_err("bad destination");
    assert_eq!(e.kind, ErrorKind::NotAcceptable);

    rec.reply(
        "/v2/messages",
        Reply::json(
            422,
            r#"{"errors":[{"code":"10015","title":"Bad Request","detail":"The request failed because it was not well-formed."}]}"#,
        ),
    );
    let e = p.send(&msg).await.expect_err("other error");
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert_eq!(
        e.text,
        "telnyx: Bad Request: The request failed because it was not well-formed"
    );

    rec.reply(
        "/v2/messages",
        Reply::json(
            401,
            r#"{"errors":[{"code":"10009","title":"Authentication failed"}]}"#,
        ),
    );
    let e = p.send(&msg).await.expect_err("401");
    assert_eq!(e.kind, ErrorKind::NotAuthorized);
    assert!(!e.text.contains(TELNYX_KEY));

    rec.reply("/v2/messages", Reply::json(429, r#"{"errors":[]}"#));
    assert_eq!(
        p.send(&msg).await.expect_err("429").kind,
        ErrorKind::Transient
    );

    rec.reply("/v2/messages", Reply::text(500, "oops"));
    assert_eq!(
        p.send(&msg).await.expect_err("500").kind,
        ErrorKind::Transient
    );

    let reqs = rec.wait_for(6, WAIT).await.expect("six requests");
    assert_eq!(reqs.len(), 6);

    let dead = telnyx(&dead_base());
    assert_eq!(
        dead.send(&msg).await.expect_err("no server").kind,
        ErrorKind::Transient
    );
}

#[tokio::test]
async fn telnyx_check_reads_the_messaging_profile() {
    let rec = Recorder::start().await;
    let path = format!("/v2/messaging_profiles/{TELNYX_PROFILE}");
    rec.reply(&path, Reply::json(200, r#"{"data":{"id":"x"}}"#));
    let p = telnyx(&rec.url);
    p.check().await.expect("credentials fine");
    let reqs = rec.wait_for(1, WAIT).await.expect("one request");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, path);
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {TELNYX_KEY}").as_str())
    );

    rec.reply(&path, Reply::json(401, r#"{"errors":[]}"#));
    assert_eq!(
        p.check().await.expect_err("refused").kind,
        ErrorKind::NotAuthorized
    );
    rec.reply(&path, Reply::json(503, "{}"));
    assert_eq!(
        p.check().await.expect_err("down").kind,
        ErrorKind::Transient
    );
}

#[tokio::test]
async fn telnyx_fetches_media_plainly_and_within_limits() {
    let rec = Recorder::start().await;
    rec.reply("/media/a.jpg", Reply::new(200, "image/jpeg", "JPEGDATA"));
    let p = telnyx(&rec.url);
    assert!(p.supports_media());
    let media = MediaRef {
        url: format!("{}/media/a.jpg", rec.url),
        content_type: Some("image/jpeg".into()),
    };
    let got = p.fetch_media(&media, 1024).await.expect("media");
    assert_eq!(got.bytes, b"JPEGDATA");
    assert_eq!(got.content_type, "image/jpeg");
    let reqs = rec.wait_for(1, WAIT).await.expect("one request");
    assert_eq!(reqs[0].method, "GET");
    assert!(reqs[0].header("authorization").is_none());

    let e = p.fetch_media(&media, 4).await.expect_err("too big");
    assert_eq!(e.kind, ErrorKind::ResourceConstraint);
}

// ---------------------------------------------------------------------------- Vonage

const VONAGE_SENT: &str = r#"{"message-count":"1","messages":[{"to":"447700900000",
  "message-id":"0A0000000123ABCD1","status":"0","remaining-balance":"3.14159265",
  "message-price":"0.03330000","network":"12345","client-ref":"ref-0001"}]}"#;

#[tokio::test]
async fn vonage_send_posts_form_without_plus() {
    let rec = Recorder::start().await;
    rec.reply("/sms/json", Reply::json(200, VONAGE_SENT));
    let p = vonage(&rec.url);
    assert!(!p.supports_media());

    let accepted = p
        .send(&text("+447700900001", "+447700900000", "Hello £5 [ok]"))
        .await
        .expect("accepted");
    assert_eq!(
        accepted,
        Accepted {
            message_id: "0A0000000123ABCD1".into(),
            reports: true,
        }
    );

    let reqs = rec.wait_for(1, WAIT).await.expect("one request");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/sms/json");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    );
    assert_eq!(r.form_value("api_key").as_deref(), Some(VONAGE_KEY));
    assert_eq!(r.form_value("api_secret").as_deref(), Some(VONAGE_SECRET));
    assert_eq!(r.form_value("from").as_deref(), Some("447700900001"));
    assert_eq!(r.form_value("to").as_deref(), Some("447700900000"));
    assert_eq!(r.form_value("text").as_deref(), Some("Hello £5 [ok]"));
    assert_eq!(
        r.form_value("callback").as_deref(),
        Some("https://gw.example.org/sms/vg/status")
    );
    assert_eq!(r.form_value("client-ref").as_deref(), Some("ref-0001"));
    // GSM-7 text (with extension characters) goes as the default type.
    assert_eq!(r.form_value("type"), None);
    assert!(!r.body_text().contains("%2B"), "{}", r.body_text());
}

#[tokio::test]
async fn vonage_send_marks_non_gsm_text_unicode_and_keeps_short_codes() {
    let rec = Recorder::start().await;
    rec.reply("/sms/json", Reply::json(200, VONAGE_SENT));
    let p = vonage(&rec.url);
    p.send(&text("+447700900001", "12345", "Привет 😀"))
        .await
        .expect("accepted");
    let reqs = rec.wait_for(1, WAIT).await.expect("one request");
    let r = &reqs[0];
    assert_eq!(r.form_value("type").as_deref(), Some("unicode"));
    assert_eq!(r.form_value("to").as_deref(), Some("12345"));
    assert_eq!(r.form_value("text").as_deref(), Some("Привет 😀"));
}

#[tokio::test]
async fn vonage_send_maps_errors() {
    let rec = Recorder::start().await;
    let p = vonage(&rec.url);
    let msg = text("+447700900001", "+447700900000", "hi");
    let status = |code: &str, text: &str| {
        Reply::json(
            200,
            &format!(
                r#"{{"message-count":"1","messages":[{{"status":"{code}","error-text":"{text}"}}]}}"#
            ),
        )
    };

    rec.reply("/sms/json", status("4", "Bad Credentials"));
    let e = p.send(&msg).await.expect_err("credentials");
    assert_eq!(e.kind, ErrorKind::NotAuthorized);
    assert!(!e.text.contains(VONAGE_SECRET));

    rec.reply("/sms/json", status("9", "Quota Exceeded - rejected"));
    assert_eq!(
        p.send(&msg).await.expect_err("quota").kind,
        ErrorKind::ResourceConstraint
    );

    rec.reply("/sms/json", status("1", "Throughput Rate Exceeded"));
    assert_eq!(
        p.send(&msg).await.expect_err("throttled").kind,
        ErrorKind::Transient
    );

    rec.reply("/sms/json", status("6", "Unroutable message - rejected"));
    assert_eq!(
        p.send(&msg).await.expect_err("unroutable").kind,
        ErrorKind::NotAcceptable
    );

    rec.reply("/sms/json", Reply::json(401, "{}"));
    assert_eq!(
        p.send(&msg).await.expect_err("401").kind,
        ErrorKind::NotAuthorized
    );

    rec.reply("/sms/json", Reply::json(429, "{}"));
    assert_eq!(
        p.send(&msg).await.expect_err("429").kind,
        ErrorKind::Transient
    );

    rec.reply("/sms/json", Reply::text(500, "down"));
    assert_eq!(
        p.send(&msg).await.expect_err("500").kind,
        ErrorKind::Transient
    );

    let reqs = rec.wait_for(7, WAIT).await.expect("seven requests");
    assert_eq!(reqs.len(), 7);

    let dead = vonage(&dead_base());
    let e = dead.send(&msg).await.expect_err("no server");
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(!e.text.contains(VONAGE_SECRET));
}

#[tokio::test]
async fn vonage_check_asks_for_the_balance() {
    let rec = Recorder::start().await;
    rec.reply(
        "/account/get-balance",
        Reply::json(200, r#"{"value":10.28,"autoReload":false}"#),
    );
    let p = vonage(&rec.url);
    p.check().await.expect("credentials fine");
    let reqs = rec.wait_for(1, WAIT).await.expect("one request");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, "/account/get-balance");
    assert_eq!(reqs[0].query_value("api_key").as_deref(), Some(VONAGE_KEY));
    assert_eq!(
        reqs[0].query_value("api_secret").as_deref(),
        Some(VONAGE_SECRET)
    );

    rec.reply("/account/get-balance", Reply::json(401, "{}"));
    let e = p.check().await.expect_err("refused");
    assert_eq!(e.kind, ErrorKind::NotAuthorized);
    assert!(!e.text.contains(VONAGE_SECRET));

    let e = p
        .fetch_media(
            &MediaRef {
                url: format!("{}/x", rec.url),
                content_type: None,
            },
            10,
        )
        .await
        .expect_err("no media");
    assert_eq!(e.kind, ErrorKind::Permanent);
}
