//! Vonage webhooks through the SMS bridge's real HTTP handler (`/sms/{provider}/inbound`)
//! on a loopback port: a Messages API inbound SMS signed with a JWT is kept once and
//! answered 200, a forged, tampered or unsigned (`alg: none`) one gets 403 and nothing is
//! kept; an SMS API one signed with `sig` is still taken. The store is an in-memory double
//! that records the texts the handler keeps.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ferry_bridge_api::{AccountId, Bridge, BridgeError};
use ferry_sms::provider::{Kind, ProviderConfig};
use ferry_sms::store::{
    Claim, ClaimOutcome, NewInbound, NewPart, PendingInbound, SmsStore, TextCounts,
};
use ferry_sms::{NumberEntry, Settings, SmsBridge};
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

const SECRET: &str = "signature-secret";
const GATEWAY: &str = "+447700900000";
const ACCOUNT: AccountId = AccountId(7);

/// Keeps accepted texts in memory; the gateway number belongs to [`ACCOUNT`].
#[derive(Default)]
struct MemStore {
    kept: Mutex<Vec<NewInbound>>,
}

impl MemStore {
    fn kept(&self) -> Vec<NewInbound> {
        self.kept.lock().expect("lock").clone()
    }
}

#[async_trait]
impl SmsStore for MemStore {
    async fn claim_number(&self, _: &str, _: &str) -> Result<ClaimOutcome, BridgeError> {
        Ok(ClaimOutcome::Claimed)
    }
    async fn assign_number(&self, _: &str, _: &str) -> Result<(), BridgeError> {
        Ok(())
    }
    async fn release_number(&self, _: &str) -> Result<bool, BridgeError> {
        Ok(false)
    }
    async fn release_numbers_of(&self, _: &str) -> Result<(), BridgeError> {
        Ok(())
    }
    async fn claims(&self) -> Result<Vec<Claim>, BridgeError> {
        Ok(Vec::new())
    }
    async fn owner_account(&self, number: &str) -> Result<Option<AccountId>, BridgeError> {
        Ok((number == GATEWAY).then_some(ACCOUNT))
    }
    async fn account_for_sent(&self, _: &str) -> Result<Option<AccountId>, BridgeError> {
        Ok(None)
    }
    async fn set_opt_out(&self, _: &str, _: &str, _: bool) -> Result<(), BridgeError> {
        Ok(())
    }
    async fn opted_out(&self, _: &str, _: &str) -> Result<bool, BridgeError> {
        Ok(false)
    }
    async fn texts_since(&self, _: AccountId, _: i64, _: i64) -> Result<TextCounts, BridgeError> {
        Ok(TextCounts::default())
    }
    async fn accept_inbound(&self, text: &NewInbound) -> Result<bool, BridgeError> {
        let mut kept = self.kept.lock().expect("lock");
        let fresh = !kept
            .iter()
            .any(|k| k.provider == text.provider && k.message_id == text.message_id);
        if fresh {
            kept.push(text.clone());
        }
        Ok(fresh)
    }
    async fn pending_inbound(&self, _: i64) -> Result<Vec<PendingInbound>, BridgeError> {
        Ok(Vec::new())
    }
    async fn inbound_delivered(&self, _: i64) -> Result<(), BridgeError> {
        Ok(())
    }
    async fn put_part(&self, _: &NewPart) -> Result<Option<String>, BridgeError> {
        Ok(None)
    }
    async fn put_media(&self, _: &str, _: &str, _: &[u8]) -> Result<String, BridgeError> {
        Err(BridgeError::permanent("no media here"))
    }
    async fn prune(&self, _: i64) -> Result<(), BridgeError> {
        Ok(())
    }
}

/// The bridge's webhook routes served on a loopback port.
struct Hooks {
    base: String,
    store: Arc<MemStore>,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Hooks {
    async fn start() -> Hooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let provider = ProviderConfig {
            name: "vg".into(),
            kind: Kind::Vonage,
            api_base: Some("http://127.0.0.1:9".into()),
            account_sid: None,
            auth_token: None,
            api_key: Some("abcd1234".into()),
            public_key: None,
            messaging_profile_id: None,
            api_secret: Some("api-secret".into()),
            signature_secret: Some(SECRET.into()),
            sendsms_url: None,
            username: None,
            password: None,
            inbound_token: None,
        };
        let settings = Settings {
            default_region: "GB".into(),
            quota_per_day: 0,
            numbers: vec![NumberEntry {
                number: GATEWAY.into(),
                provider: "vg".into(),
                owner: None,
            }],
            public_url: base.clone(),
            max_media_bytes: 1 << 20,
        };
        let store = Arc::new(MemStore::default());
        let bridge = SmsBridge::new(
            settings,
            &[provider],
            Arc::clone(&store) as Arc<dyn SmsStore>,
        )
        .expect("bridge");
        let app = bridge.http_routes().expect("webhook routes");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hooks {
            base,
            store,
            http: reqwest::Client::new(),
            server,
        }
    }

    /// POSTs a JSON body to the inbound webhook with `Authorization: Bearer token`.
    async fn post(&self, token: &str, body: &[u8]) -> u16 {
        self.http
            .post(format!("{}/sms/vg/inbound", self.base))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_vec())
            .send()
            .await
            .expect("webhook answered")
            .status()
            .as_u16()
    }

    /// GETs the inbound webhook with `query`.
    async fn get(&self, query: &str) -> u16 {
        self.http
            .get(format!("{}/sms/vg/inbound?{query}", self.base))
            .send()
            .await
            .expect("webhook answered")
            .status()
            .as_u16()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn token(header: &str, claims: &str, secret: &str) -> String {
    let signed = format!(
        "{}.{}",
        B64URL.encode(header.as_bytes()),
        B64URL.encode(claims.as_bytes())
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(signed.as_bytes());
    format!("{signed}.{}", B64URL.encode(mac.finalize().into_bytes()))
}

fn claims(body: &[u8]) -> String {
    format!(
        r#"{{"iat":{},"jti":"c5ba8f24-1a14-4c10-bfdf-3fbe8ce511b5","iss":"Vonage","payload_hash":"{}","api_key":"abcd1234"}}"#,
        now(),
        hex::encode(Sha256::digest(body))
    )
}

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

const INBOUND: &[u8] = br#"{"channel":"sms","message_uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab","to":"447700900000","from":"447700900001","timestamp":"2020-04-21T18:49:22Z","text":"Hello From Vonage!","message_type":"text","sms":{"num_messages":"1"}}"#;

#[tokio::test]
async fn messages_api_webhooks_are_kept_only_with_a_good_jwt() {
    let hooks = Hooks::start().await;

    // Signed with another secret.
    let forged = token(HS256, &claims(INBOUND), "guessed");
    assert_eq!(hooks.post(&forged, INBOUND).await, 403);
    // A good token, for another body.
    let good = token(HS256, &claims(INBOUND), SECRET);
    let tampered = String::from_utf8(INBOUND.to_vec())
        .expect("utf-8")
        .replace("Hello From Vonage!", "Send me your PIN");
    assert_eq!(hooks.post(&good, tampered.as_bytes()).await, 403);
    // Unsigned.
    let none = format!(
        "{}.{}.",
        B64URL.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64URL.encode(claims(INBOUND).as_bytes())
    );
    assert_eq!(hooks.post(&none, INBOUND).await, 403);
    assert_eq!(
        hooks.store.kept(),
        Vec::new(),
        "a refused webhook kept a text"
    );

    assert_eq!(hooks.post(&good, INBOUND).await, 200);
    let want = NewInbound {
        provider: "vg".into(),
        message_id: "aaaaaaaa-bbbb-cccc-dddd-0123456789ab".into(),
        account: ACCOUNT,
        sender: "+447700900001".into(),
        recipient: GATEWAY.into(),
        body: "Hello From Vonage!".into(),
        media: "[]".into(),
    };
    assert_eq!(hooks.store.kept(), vec![want.clone()]);
    // Delivered again: accepted, and kept once.
    assert_eq!(hooks.post(&good, INBOUND).await, 200);
    assert_eq!(hooks.store.kept(), vec![want]);
}

/// The SMS API's own signature: MD5 of the sorted `&key=value` string and the secret.
fn md5_sig(params: &[(&str, &str)], secret: &str) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut h = Md5::new();
    for (k, v) in sorted {
        h.update(format!("&{k}={v}").as_bytes());
    }
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

#[tokio::test]
async fn sms_api_webhooks_are_still_checked_by_their_sig() {
    let hooks = Hooks::start().await;
    let ts = now().to_string();
    let params = [
        ("msisdn", "447700900002"),
        ("to", "447700900000"),
        ("messageId", "0A0000000123ABCD1"),
        ("text", "Hello"),
        ("type", "text"),
        ("timestamp", ts.as_str()),
    ];
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let wrong = md5_sig(&params, "guessed");
    assert_eq!(hooks.get(&format!("{query}&sig={wrong}")).await, 403);
    assert_eq!(hooks.store.kept(), Vec::new());
    let sig = md5_sig(&params, SECRET);
    assert_eq!(hooks.get(&format!("{query}&sig={sig}")).await, 200);
    let kept = hooks.store.kept();
    assert_eq!(
        kept.iter()
            .map(|k| (k.message_id.as_str(), k.sender.as_str(), k.body.as_str()))
            .collect::<Vec<_>>(),
        vec![("0A0000000123ABCD1", "+447700900002", "Hello")]
    );
}
