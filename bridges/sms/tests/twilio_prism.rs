//! The Twilio provider against the wire: Prism mocking Twilio's own OpenAPI description
//! (`tests/fixtures/twilio/`, validating every request: path, basic auth, form fields), and
//! small local HTTP servers answering Twilio-style errors and media redirects.
//!
//! Prism is looked for at `$FERRY_TOOLS/prism/node_modules/.bin/prism` (default
//! `/opt/ferry-tools`); `scripts/install-deps.sh` installs it. One Prism runs for the one
//! test that needs it.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_bridge_api::ErrorKind;
use ferry_sms::provider::{self, Context, Kind, MediaRef, OutText, Provider, ProviderConfig};

#[path = "common/prism.rs"]
#[allow(dead_code)]
mod prism;

use prism::{free_port, start_prism};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "f00dfacef00dfacef00dfacef00dface";

fn config(api_base: &str, sid: &str, token: &str) -> ProviderConfig {
    ProviderConfig {
        name: "tw".into(),
        kind: Kind::Twilio,
        api_base: Some(api_base.into()),
        account_sid: Some(sid.into()),
        auth_token: Some(token.into()),
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

fn twilio_with(api_base: &str, sid: &str, token: &str, http: reqwest::Client) -> Arc<dyn Provider> {
    let ctx = Context {
        public_url: "https://gw.example.org".into(),
        http,
    };
    provider::build(&config(api_base, sid, token), &ctx).expect("twilio provider")
}

fn twilio(api_base: &str, sid: &str, token: &str) -> Arc<dyn Provider> {
    twilio_with(api_base, sid, token, reqwest::Client::new())
}

fn text(to: &str, body: &str, media: &[&str]) -> OutText {
    OutText {
        from: "+14155550100".into(),
        to: to.into(),
        body: body.into(),
        media: media.iter().map(|m| (*m).to_owned()).collect(),
        reference: "ref-1".into(),
    }
}

/// Everything Prism can judge, against one Prism: accepted requests prove their shape.
#[tokio::test]
async fn requests_match_twilio_openapi() {
    let prism = start_prism(Some("ferry")).await;
    let tw = twilio(&prism.base, SID, TOKEN);

    tw.check()
        .await
        .unwrap_or_else(|e| panic!("check: {e:?}\n{}", prism.log()));

    let sends = [
        text("+14155550199", "hello", &[]),
        text("+14155550199", "héllo 👋 & good=bye?", &[]),
        text("12345", "to a short code", &[]),
        text(
            "+14155550199",
            "a photo",
            &["https://media.example.org/a.jpg"],
        ),
        text(
            "+14155550199",
            "two photos",
            &[
                "https://media.example.org/a.jpg",
                "https://media.example.org/b.png?size=large&x=1",
            ],
        ),
        text("+14155550199", "", &["https://media.example.org/a.jpg"]),
    ];
    for out in &sends {
        let accepted = tw
            .send(out)
            .await
            .unwrap_or_else(|e| panic!("send {out:?}: {e:?}\n{}", prism.log()));
        assert!(!accepted.message_id.is_empty(), "{accepted:?}");
        assert!(accepted.reports);
    }

    // An AccountSid outside the spec's `^AC[0-9a-fA-F]{32}$`: Prism answers 422.
    let bad_sid = twilio(&prism.base, "ACnothex", TOKEN);
    let e = bad_sid
        .send(&sends[0])
        .await
        .expect_err("malformed account sid accepted");
    assert_eq!(e.kind, ErrorKind::Permanent, "{e:?}");
    assert!(
        e.text.starts_with("twilio: invalid request: ")
            && e.text.contains("accountsid")
            && e.text.contains("must match pattern")
            && e.text.contains("(http 422)"),
        "{}",
        e.text
    );
    assert_eq!(
        bad_sid.check().await.map_err(|e| e.kind),
        Err(ErrorKind::Permanent)
    );

    // Prism checks only that basic credentials are there and split into user:password; a
    // token with a colon in it makes three parts, which it refuses with 401.
    let refused = twilio(&prism.base, SID, "bad:token");
    for e in [
        refused.send(&sends[0]).await.expect_err("send accepted"),
        refused.check().await.expect_err("check accepted"),
    ] {
        assert_eq!(e.kind, ErrorKind::NotAuthorized, "{e:?}");
        assert_eq!(e.text, "twilio refused the credentials");
    }

    // Controls, bypassing the provider: Prism does refuse what is wrong, so the accepted
    // sends above passed its checks rather than slipping by.
    let url = format!("{}/2010-04-01/Accounts/{SID}/Messages.json", prism.base);
    let raw = reqwest::Client::new();
    let no_auth = raw
        .post(&url)
        .form(&[
            ("To", "+14155550199"),
            ("From", "+14155550100"),
            ("Body", "x"),
        ])
        .send()
        .await
        .expect("prism answers");
    assert_eq!(no_auth.status(), 401);
    let no_to = raw
        .post(&url)
        .basic_auth(SID, Some(TOKEN))
        .form(&[("From", "+14155550100"), ("Body", "x")])
        .send()
        .await
        .expect("prism answers");
    assert_eq!(no_to.status(), 422);
    let json = raw
        .post(&url)
        .basic_auth(SID, Some(TOKEN))
        .json(&serde_json::json!({"To": "+14155550199", "From": "+14155550100", "Body": "x"}))
        .send()
        .await
        .expect("prism answers");
    assert_eq!(json.status(), 415);
}

/// Starts `router` on a loopback port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn expected_auth() -> String {
    format!("Basic {}", B64.encode(format!("{SID}:{TOKEN}")))
}

type Seen = Arc<Mutex<Vec<(Option<String>, Vec<(String, String)>)>>>;

/// A fake Messages.json answering by the `To` number, the way Twilio answers.
async fn fake_messages(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let to = form
        .iter()
        .find(|(k, _)| k == "To")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if let Ok(mut seen) = seen.lock() {
        seen.push((auth, form));
    }
    let error = |status: u16, code: u32, message: &str| {
        let body = serde_json::json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        });
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    match to.as_str() {
        "+15550021610" => error(400, 21610, "Attempt to send to unsubscribed recipient"),
        "+15550021614" => error(400, 21614, "'To' number is not a valid mobile number"),
        "+15550021211" => error(400, 21211, "Invalid 'To' Phone Number"),
        "+15550021408" => error(
            400,
            21408,
            "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
        ),
        "+15550021606" => error(
            400,
            21606,
            "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination.",
        ),
        "+15550020003" => error(401, 20003, "Authenticate"),
        "+15550000429" => error(429, 20429, "Too Many Requests"),
        "+15550000500" => error(500, 20500, "Internal Server Error"),
        "+15550000503" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>down</body></html>".to_owned(),
        )
            .into_response(),
        _ => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"sid": "SM00000000000000000000000000000001", "status": "queued"})
                .to_string(),
        )
            .into_response(),
    }
}

#[tokio::test]
async fn twilio_errors_map_to_kinds() {
    let seen: Seen = Arc::default();
    let base = serve(
        Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(fake_messages),
            )
            .with_state(seen.clone()),
    )
    .await;
    let tw = twilio(&base, SID, TOKEN);

    let accepted = tw
        .send(&text(
            "+15550000201",
            "hi",
            &["https://m.example/1.jpg", "https://m.example/2.jpg"],
        ))
        .await
        .expect("accepted");
    assert_eq!(accepted.message_id, "SM00000000000000000000000000000001");
    assert!(accepted.reports);
    {
        let seen = seen.lock().expect("lock");
        let (auth, form) = &seen[0];
        assert_eq!(auth.as_deref(), Some(expected_auth().as_str()));
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("To", "+15550000201"),
                ("From", "+14155550100"),
                ("Body", "hi"),
                ("MediaUrl", "https://m.example/1.jpg"),
                ("MediaUrl", "https://m.example/2.jpg"),
                ("StatusCallback", "https://gw.example.org/sms/tw/status"),
            ]
        );
    }

    let cases = [
        (
            "+15550021610",
            ErrorKind::NotAcceptable,
            Some("recipient opted out (STOP)"),
        ),
        (
            "+15550021614",
            ErrorKind::NotAcceptable,
            Some("number is not mobile"),
        ),
        ("+15550021211", ErrorKind::NotAcceptable, None),
        ("+15550021408", ErrorKind::NotAcceptable, None),
        (
            "+15550021606",
            ErrorKind::Permanent,
            Some(
                "twilio: the 'From' phone number provided is not a valid message-capable \
                 Twilio phone number for this destination (code 21606)",
            ),
        ),
        (
            "+15550020003",
            ErrorKind::NotAuthorized,
            Some("twilio refused the credentials"),
        ),
        ("+15550000429", ErrorKind::Transient, None),
        ("+15550000500", ErrorKind::Transient, None),
        (
            "+15550000503",
            ErrorKind::Transient,
            Some("twilio: http 503"),
        ),
    ];
    for (to, kind, want) in cases {
        let e = tw
            .send(&text(to, "hi", &[]))
            .await
            .expect_err("refused send accepted");
        assert_eq!(e.kind, kind, "{to}: {e:?}");
        if let Some(want) = want {
            assert_eq!(e.text, want, "{to}");
        }
        assert!(!e.text.contains(TOKEN), "{to}: {}", e.text);
        assert!(!e.text.ends_with('.'), "{to}: {}", e.text);
    }

    // Nobody listening: transient, without the URL.
    let gone = twilio(&format!("http://127.0.0.1:{}", free_port()), SID, TOKEN);
    let e = gone
        .send(&text("+15550000201", "hi", &[]))
        .await
        .expect_err("sent to nobody");
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(e.text, "twilio: connection failed");
    assert_eq!(
        gone.check().await.map_err(|e| e.kind),
        Err(ErrorKind::Transient)
    );
}

type Auths = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn record(auths: &Auths, who: &str, headers: &HeaderMap) {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Ok(mut a) = auths.lock() {
        a.push((who.to_owned(), auth));
    }
}

/// Media behind Twilio's API redirect to a CDN on another origin: the credentials reach
/// the API only, whether reqwest follows the redirect or the provider does.
#[tokio::test]
async fn media_credentials_stay_with_twilio() {
    let auths: Auths = Arc::default();
    let cdn = serve(
        Router::new()
            .route(
                "/cdn/cat.jpg",
                get(|State(a): State<Auths>, h: HeaderMap| async move {
                    record(&a, "cdn", &h);
                    (
                        [(header::CONTENT_TYPE, "image/jpeg")],
                        vec![0xff_u8, 0xd8, 0xff, 0xe0],
                    )
                }),
            )
            .with_state(auths.clone()),
    )
    .await;
    let target = format!("{cdn}/cdn/cat.jpg");
    let api = serve(
        Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages/{msg}/Media/{media}",
                get(move |State(a): State<Auths>, h: HeaderMap| {
                    let target = target.clone();
                    async move {
                        record(&a, "api", &h);
                        (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)])
                    }
                }),
            )
            .route(
                "/big",
                get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![0_u8; 4096]) }),
            )
            .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
            .route(
                "/loop",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
            )
            .with_state(auths.clone()),
    )
    .await;
    let media = MediaRef {
        url: format!("{api}/2010-04-01/Accounts/{SID}/Messages/MM1/Media/ME1"),
        content_type: Some("image/jpeg".into()),
    };
    let following = reqwest::Client::new();
    let not_following = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for http in [following, not_following] {
        auths.lock().expect("lock").clear();
        let tw = twilio_with(&api, SID, TOKEN, http);
        let got = tw.fetch_media(&media, 1024).await.expect("media");
        assert_eq!(got.bytes, [0xff, 0xd8, 0xff, 0xe0]);
        assert_eq!(got.content_type, "image/jpeg");
        assert_eq!(
            *auths.lock().expect("lock"),
            [
                ("api".to_owned(), Some(expected_auth())),
                ("cdn".to_owned(), None),
            ]
        );

        // A link straight to another origin gets no credentials either.
        auths.lock().expect("lock").clear();
        let direct = MediaRef {
            url: format!("{cdn}/cdn/cat.jpg"),
            content_type: None,
        };
        tw.fetch_media(&direct, 1024).await.expect("media");
        assert_eq!(*auths.lock().expect("lock"), [("cdn".to_owned(), None)]);

        let at = |path: &str| MediaRef {
            url: format!("{api}{path}"),
            content_type: None,
        };
        let e = tw
            .fetch_media(&at("/big"), 1024)
            .await
            .expect_err("too big");
        assert_eq!(e.kind, ErrorKind::ResourceConstraint);
        let e = tw
            .fetch_media(&at("/missing"), 1024)
            .await
            .expect_err("missing");
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(tw.fetch_media(&at("/loop"), 1024).await.is_err());
        let bad = MediaRef {
            url: "file:///etc/passwd".into(),
            content_type: None,
        };
        assert!(tw.fetch_media(&bad, 1024).await.is_err());
    }
}
