//! Telnyx, over its Messaging API v2: sends texts (and MMS) with `POST /v2/messages`,
//! checks the key against the messaging profile, verifies webhooks by their Ed25519
//! signature over `{telnyx-timestamp}|{raw body}`, and reads `message.received` and the
//! delivery events (`message.sent`, `message.finalized`) out of them.
//!
//! References: <https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks>,
//! <https://developers.telnyx.com/docs/messaging/messages/error-codes>,
//! <https://developers.telnyx.com/development/api-fundamentals/api-errors>.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use ferry_bridge_api::{BridgeError, ErrorKind};
use serde_json::{Value, json};

use super::{
    Accepted, Context, Delivery, Event, Hook, HookError, InboundText, Kind, Media, MediaRef,
    OutText, Provider, ProviderConfig, Request, StatusReport, need, read_limited, status_kind,
    unreachable,
};

const DEFAULT_API_BASE: &str = "https://api.telnyx.com";

/// How far a webhook's `telnyx-timestamp` may be from now, either way, in seconds.
const TOLERANCE_SECS: i64 = 300;

const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
const TIMESTAMP_HEADER: &str = "telnyx-timestamp";

/// Telnyx error code for a recipient who sent STOP ("Blocked due to STOP message").
const CODE_OPTED_OUT: &str = "40300";

/// Telnyx error codes meaning the destination cannot take a text: 40310 invalid 'to'
/// address, 40001 not routable (landline), 40012 invalid destination number.
const CODES_BAD_DESTINATION: &[&str] = &["40310", "40001", "40012"];

/// Telnyx general API codes: 10009 authentication failed, 10010 authorization failed.
const CODES_NOT_AUTHORIZED: &[&str] = &["10009", "10010"];

/// Telnyx general API code 10011: too many requests.
const CODE_TOO_MANY: &str = "10011";

pub struct Telnyx {
    name: String,
    api_base: String,
    api_key: String,
    public_key: VerifyingKey,
    messaging_profile_id: String,
    ctx: Context,
}

impl Telnyx {
    pub fn new(cfg: &ProviderConfig, ctx: &Context) -> Result<Self, String> {
        let api_key = need(&cfg.api_key, "api_key")?.to_owned();
        let public_key = parse_public_key(need(&cfg.public_key, "public_key")?)?;
        let messaging_profile_id =
            need(&cfg.messaging_profile_id, "messaging_profile_id")?.to_owned();
        let api_base = cfg
            .api_base
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_API_BASE)
            .trim_end_matches('/')
            .to_owned();
        Ok(Telnyx {
            name: cfg.name.clone(),
            api_base,
            api_key,
            public_key,
            messaging_profile_id,
            ctx: ctx.clone(),
        })
    }
}

/// Decodes the base64 of a raw 32-byte Ed25519 public key.
fn parse_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| "public_key is not base64".to_owned())?;
    let raw: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("public_key must be 32 bytes, not {}", bytes.len()))?;
    VerifyingKey::from_bytes(&raw).map_err(|_| "public_key is not an ed25519 key".to_owned())
}

#[async_trait]
impl Provider for Telnyx {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> Kind {
        Kind::Telnyx
    }

    fn supports_media(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), BridgeError> {
        let url = format!(
            "{}/v2/messaging_profiles/{}",
            self.api_base,
            path_segment(&self.messaging_profile_id)
        );
        let resp = self
            .ctx
            .http
            .get(url)
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(|e| unreachable("telnyx", &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.bytes().await.unwrap_or_default();
        if status.as_u16() == 404 {
            return Err(BridgeError::permanent(
                "telnyx: messaging profile not found",
            ));
        }
        Err(api_error(status, &body))
    }

    async fn send(&self, text: &OutText) -> Result<Accepted, BridgeError> {
        let mut body = json!({
            "from": text.from,
            "to": text.to,
            "text": text.body,
            "messaging_profile_id": self.messaging_profile_id,
            "webhook_url": self.ctx.hook_url(&self.name, Hook::Status),
        });
        if !text.media.is_empty() {
            body["media_urls"] = json!(text.media);
        }
        let resp = self
            .ctx
            .http
            .post(format!("{}/v2/messages", self.api_base))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable("telnyx", &e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| unreachable("telnyx", &e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| BridgeError::permanent("telnyx: unreadable answer to a send"))?;
        let id = v
            .pointer("/data/id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| BridgeError::permanent("telnyx: answer to a send without an id"))?;
        Ok(Accepted {
            message_id: id.to_owned(),
            reports: true,
        })
    }

    fn verify(&self, _hook: Hook, req: &Request<'_>) -> Result<(), HookError> {
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let sig = header(SIGNATURE_HEADER)
            .ok_or_else(|| HookError::Forbidden(format!("missing {SIGNATURE_HEADER}")))?;
        let ts_raw = header(TIMESTAMP_HEADER)
            .ok_or_else(|| HookError::Forbidden(format!("missing {TIMESTAMP_HEADER}")))?;
        let ts: i64 = ts_raw
            .parse()
            .map_err(|_| HookError::Forbidden(format!("bad {TIMESTAMP_HEADER}")))?;
        if req.now.abs_diff(ts) > TOLERANCE_SECS.unsigned_abs() {
            return Err(HookError::Forbidden(
                "timestamp outside the 300 s window".into(),
            ));
        }
        let sig_bytes = B64
            .decode(sig)
            .map_err(|_| HookError::Forbidden("signature is not base64".into()))?;
        let sig = Signature::from_slice(&sig_bytes)
            .map_err(|_| HookError::Forbidden("signature has the wrong length".into()))?;
        let mut signed = Vec::with_capacity(ts_raw.len() + 1 + req.body.len());
        signed.extend_from_slice(ts_raw.as_bytes());
        signed.push(b'|');
        signed.extend_from_slice(req.body);
        self.public_key
            .verify_strict(&signed, &sig)
            .map_err(|_| HookError::Forbidden("bad signature".into()))
    }

    fn parse(&self, _hook: Hook, req: &Request<'_>) -> Result<Vec<Event>, HookError> {
        parse_events(req.body)
    }

    async fn fetch_media(&self, media: &MediaRef, max_bytes: usize) -> Result<Media, BridgeError> {
        // Telnyx media links are pre-signed: a plain GET, no credentials.
        let resp = self
            .ctx
            .http
            .get(&media.url)
            .send()
            .await
            .map_err(|e| unreachable("telnyx", &e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(BridgeError::new(
                status_kind(status),
                format!("telnyx: media download refused (http {})", status.as_u16()),
            ));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| media.content_type.clone())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let bytes = read_limited(resp, max_bytes).await?;
        Ok(Media {
            bytes,
            content_type,
        })
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One entry of Telnyx's `{"errors": [{"code", "title", "detail"}]}`.
struct ApiError {
    code: String,
    title: String,
    detail: String,
}

fn api_errors(body: &[u8]) -> Vec<ApiError> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    v.get("errors")
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .map(|e| ApiError {
                    code: scalar(e.get("code")),
                    title: scalar(e.get("title")),
                    detail: scalar(e.get("detail")),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON string or number as text (Telnyx error codes come as either).
fn scalar(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// `title: detail` without a trailing period, or whichever of them is there.
fn reason(title: &str, detail: &str) -> String {
    let detail = detail.trim_end_matches('.');
    match (title.is_empty(), detail.is_empty()) {
        (false, false) => format!("{title}: {detail}"),
        (false, true) => title.to_owned(),
        (true, false) => detail.to_owned(),
        (true, true) => String::new(),
    }
}

/// Maps a refused API call (status and body) to an error.
fn api_error(status: reqwest::StatusCode, body: &[u8]) -> BridgeError {
    let code = status.as_u16();
    let errors = api_errors(body);
    let has = |c: &str| errors.iter().any(|e| e.code == c);
    if code == 429 || code >= 500 || has(CODE_TOO_MANY) {
        let why = if code >= 500 {
            format!("telnyx: server error (http {code})")
        } else {
            "telnyx: too many requests".to_owned()
        };
        return BridgeError::transient(why);
    }
    if has(CODE_OPTED_OUT) {
        return BridgeError::new(ErrorKind::NotAcceptable, "recipient opted out (STOP)");
    }
    if let Some(e) = errors
        .iter()
        .find(|e| CODES_BAD_DESTINATION.contains(&e.code.as_str()))
    {
        return BridgeError::new(
            ErrorKind::NotAcceptable,
            format!("telnyx: {}", reason(&e.title, &e.detail)),
        );
    }
    if code == 401 || code == 403 || CODES_NOT_AUTHORIZED.iter().any(|c| has(c)) {
        return BridgeError::new(ErrorKind::NotAuthorized, "telnyx: api key refused");
    }
    let kind = status_kind(status);
    match errors.first() {
        Some(e) if !reason(&e.title, &e.detail).is_empty() => {
            BridgeError::new(kind, format!("telnyx: {}", reason(&e.title, &e.detail)))
        }
        _ => BridgeError::new(kind, format!("telnyx: request refused (http {code})")),
    }
}

/// Reads the events of a webhook body `{"data": {"event_type", "id", "payload"}}`.
fn parse_events(body: &[u8]) -> Result<Vec<Event>, HookError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| HookError::BadRequest("not json".into()))?;
    let data = v
        .get("data")
        .ok_or_else(|| HookError::BadRequest("no data".into()))?;
    let event_type = data
        .get("event_type")
        .and_then(Value::as_str)
        .ok_or_else(|| HookError::BadRequest("no data.event_type".into()))?;
    if !event_type.starts_with("message.") {
        return Ok(Vec::new());
    }
    let Some(payload) = data.get("payload") else {
        return Err(HookError::BadRequest("no data.payload".into()));
    };
    let id = payload
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if event_type == "message.received" {
        let id = id.ok_or_else(|| HookError::BadRequest("no payload.id".into()))?;
        let from = payload
            .pointer("/from/phone_number")
            .and_then(Value::as_str)
            .ok_or_else(|| HookError::BadRequest("no payload.from.phone_number".into()))?;
        let to = payload
            .pointer("/to/0/phone_number")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let text = payload
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let media = payload
            .get("media")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|m| {
                        let url = m.get("url").and_then(Value::as_str)?;
                        Some(MediaRef {
                            url: url.to_owned(),
                            content_type: m
                                .get("content_type")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Ok(vec![Event::Inbound(InboundText {
            message_id: id.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            text: text.to_owned(),
            media,
            part: None,
        })]);
    }
    // Any other message.* event that carries a per-recipient status is a delivery update.
    let Some(status) = payload.pointer("/to/0/status").and_then(Value::as_str) else {
        return Ok(Vec::new());
    };
    let id = id.ok_or_else(|| HookError::BadRequest("no payload.id".into()))?;
    let from = payload
        .pointer("/from/phone_number")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let delivery = match status {
        "delivered" => Delivery::Delivered,
        "sending_failed" | "delivery_failed" | "delivery_unconfirmed" | "expired" => {
            Delivery::Failed(failure_reason(payload, status))
        }
        _ => Delivery::Pending,
    };
    Ok(vec![Event::Status(StatusReport {
        message_id: id.to_owned(),
        from,
        delivery,
    })])
}

/// The first of `payload.errors` as `title: detail`, else the status in words.
fn failure_reason(payload: &Value, status: &str) -> String {
    let first = payload.pointer("/errors/0");
    let why = first
        .map(|e| reason(&scalar(e.get("title")), &scalar(e.get("detail"))))
        .unwrap_or_default();
    if why.is_empty() {
        status.replace('_', " ")
    } else {
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};
    use ed25519_dalek::{Signer, SigningKey};

    const SEED: [u8; 32] = [7u8; 32];
    const NOW: i64 = 1_700_000_000;

    fn keypair() -> (SigningKey, String) {
        let sk = SigningKey::from_bytes(&SEED);
        let pk = B64.encode(sk.verifying_key().to_bytes());
        (sk, pk)
    }

    fn ctx() -> Context {
        Context {
            public_url: "https://gw.example.org".into(),
            http: reqwest::Client::new(),
        }
    }

    fn provider(public_key: &str) -> Telnyx {
        let cfg = ProviderConfig {
            public_key: Some(public_key.into()),
            ..provider_cfg_template()
        };
        Telnyx::new(&cfg, &ctx()).expect("provider")
    }

    fn signed_headers(sk: &SigningKey, ts: i64, body: &[u8]) -> HeaderMap {
        let mut msg = format!("{ts}|").into_bytes();
        msg.extend_from_slice(body);
        let sig = B64.encode(sk.sign(&msg).to_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&sig).expect("header"),
        );
        h.insert(
            TIMESTAMP_HEADER,
            HeaderValue::from_str(&ts.to_string()).expect("header"),
        );
        h
    }

    fn request<'a>(headers: &'a HeaderMap, body: &'a [u8], now: i64) -> Request<'a> {
        Request {
            method: "POST",
            url: "https://gw.example.org/sms/tx/inbound",
            query: "",
            headers,
            body,
            now,
        }
    }

    #[test]
    fn bad_public_keys_are_refused() {
        let cfg = |pk: &str| ProviderConfig {
            public_key: Some(pk.into()),
            ..provider_cfg_template()
        };
        let ctx = ctx();
        assert!(Telnyx::new(&cfg("not base64!"), &ctx).is_err());
        assert!(Telnyx::new(&cfg(&B64.encode([1u8; 31])), &ctx).is_err());
        let (_, good) = keypair();
        assert!(Telnyx::new(&cfg(&good), &ctx).is_ok());
        let missing = ProviderConfig {
            messaging_profile_id: None,
            ..cfg(&good)
        };
        assert!(Telnyx::new(&missing, &ctx).is_err());
    }

    fn provider_cfg_template() -> ProviderConfig {
        ProviderConfig {
            name: "tx".into(),
            kind: Kind::Telnyx,
            api_base: None,
            account_sid: None,
            auth_token: None,
            api_key: Some("KEY0123".into()),
            public_key: None,
            messaging_profile_id: Some("profile".into()),
            api_secret: None,
            signature_secret: None,
            sendsms_url: None,
            username: None,
            password: None,
            inbound_token: None,
        }
    }

    #[test]
    fn signed_request_verifies() {
        let (sk, pk) = keypair();
        let p = provider(&pk);
        let body = br#"{"data":{"event_type":"message.received"}}"#;
        let h = signed_headers(&sk, NOW, body);
        assert_eq!(p.verify(Hook::Inbound, &request(&h, body, NOW)), Ok(()));
        // Within the window either way.
        assert_eq!(
            p.verify(Hook::Inbound, &request(&h, body, NOW + 300)),
            Ok(())
        );
        assert_eq!(
            p.verify(Hook::Status, &request(&h, body, NOW - 300)),
            Ok(())
        );
    }

    #[test]
    fn tampered_body_is_forbidden() {
        let (sk, pk) = keypair();
        let p = provider(&pk);
        let body = br#"{"data":{"event_type":"message.received","text":"hi"}}"#;
        let h = signed_headers(&sk, NOW, body);
        let tampered = br#"{"data":{"event_type":"message.received","text":"ho"}}"#;
        assert!(matches!(
            p.verify(Hook::Inbound, &request(&h, tampered, NOW)),
            Err(HookError::Forbidden(_))
        ));
    }

    #[test]
    fn tampered_timestamp_is_forbidden() {
        let (sk, pk) = keypair();
        let p = provider(&pk);
        let body = b"{}";
        let mut h = signed_headers(&sk, NOW, body);
        h.insert(TIMESTAMP_HEADER, HeaderValue::from_static("1700000001"));
        assert!(matches!(
            p.verify(Hook::Inbound, &request(&h, body, NOW)),
            Err(HookError::Forbidden(_))
        ));
    }

    #[test]
    fn other_key_is_forbidden() {
        let (_, pk) = keypair();
        let p = provider(&pk);
        let other = SigningKey::from_bytes(&[9u8; 32]);
        let body = b"{}";
        let h = signed_headers(&other, NOW, body);
        assert!(matches!(
            p.verify(Hook::Inbound, &request(&h, body, NOW)),
            Err(HookError::Forbidden(_))
        ));
    }

    #[test]
    fn stale_and_future_timestamps_are_forbidden() {
        let (sk, pk) = keypair();
        let p = provider(&pk);
        let body = b"{}";
        let stale = signed_headers(&sk, NOW - 301, body);
        assert!(matches!(
            p.verify(Hook::Inbound, &request(&stale, body, NOW)),
            Err(HookError::Forbidden(_))
        ));
        let future = signed_headers(&sk, NOW + 301, body);
        assert!(matches!(
            p.verify(Hook::Inbound, &request(&future, body, NOW)),
            Err(HookError::Forbidden(_))
        ));
    }

    #[test]
    fn missing_or_garbled_headers_are_forbidden() {
        let (sk, pk) = keypair();
        let p = provider(&pk);
        let body = b"{}";
        let full = signed_headers(&sk, NOW, body);
        for drop in [SIGNATURE_HEADER, TIMESTAMP_HEADER] {
            let mut h = full.clone();
            h.remove(drop);
            assert!(matches!(
                p.verify(Hook::Inbound, &request(&h, body, NOW)),
                Err(HookError::Forbidden(_))
            ));
        }
        let mut h = full.clone();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_static("%%%"));
        assert!(matches!(
            p.verify(Hook::Inbound, &request(&h, body, NOW)),
            Err(HookError::Forbidden(_))
        ));
        let mut h = full.clone();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_static("AAAA"));
        assert!(matches!(
            p.verify(Hook::Inbound, &request(&h, body, NOW)),
            Err(HookError::Forbidden(_))
        ));
        let mut h = full;
        h.insert(TIMESTAMP_HEADER, HeaderValue::from_static("soon"));
        assert!(matches!(
            p.verify(Hook::Inbound, &request(&h, body, NOW)),
            Err(HookError::Forbidden(_))
        ));
    }

    /// The `message.received` example of Telnyx's API reference (inboundMessage callback,
    /// <https://developers.telnyx.com/api-reference/callbacks/inbound-message>, also at
    /// <https://apispec.telnyx.com/inboundmessageevent-7390268d0>), with one media item
    /// added in the documented shape (`url`, `content_type`, `sha256`, `size`).
    const RECEIVED: &str = r#"{
      "data": {
        "event_type": "message.received",
        "id": "bf6307bd-884d-4c1f-b6ea-c62b8c495d3c",
        "occurred_at": "2019-01-23T18:10:02.574Z",
        "payload": {
          "cc": [],
          "completed_at": null,
          "cost": {"amount": 0.0051, "currency": "USD"},
          "cost_breakdown": {
            "carrier_fee": {"amount": 0.00305, "currency": "USD"},
            "rate": {"amount": 0.00205, "currency": "USD"}
          },
          "direction": "inbound",
          "encoding": "GSM-7",
          "errors": [],
          "from": {
            "carrier": "T-MOBILE USA, INC.",
            "line_type": "Wireless",
            "phone_number": "+18665550001"
          },
          "id": "7ee4241c-f127-47e5-9c34-3aac291f8058",
          "media": [
            {
              "url": "https://media.telnyx.example/7ee4241c.jpg",
              "content_type": "image/jpeg",
              "sha256": null,
              "size": 2048
            }
          ],
          "messaging_profile_id": "0f512bda-ae1e-4597-8e11-e5f5686b97d3",
          "organization_id": "b448f9cc-a842-4784-98e9-03c1a5872950",
          "parts": 1,
          "received_at": "2019-01-23T18:10:02.574Z",
          "record_type": "message",
          "sent_at": null,
          "subject": "From Telnyx!",
          "tags": ["Greetings"],
          "tcr_campaign_billable": true,
          "tcr_campaign_id": "TCPA3X7",
          "tcr_campaign_registered": "REGISTERED",
          "text": "Hello, World!",
          "to": [
            {
              "carrier": "TELNYX LLC",
              "line_type": "VoIP",
              "phone_number": "+18445550001",
              "status": "delivered"
            }
          ],
          "type": "SMS",
          "valid_until": null,
          "webhook_failover_url": "https://backup.example.com/hooks",
          "webhook_url": "https://www.example.com/hooks"
        },
        "record_type": "event"
      }
    }"#;

    /// The delivery-update example of Telnyx's API reference
    /// (<https://developers.telnyx.com/api-reference/callbacks/delivery-update>, a
    /// `message.sent` with `to[0].status` `queued`), without its `cost_breakdown`; the
    /// finalized variants change only `event_type`, `to[0].status` and `errors`, which the
    /// error-code reference says `message.finalized` carries (40001 "Not routable" is its
    /// first entry, with the title and description of the v1 error table).
    fn delivery_update(event_type: &str, status: &str, errors: &str) -> String {
        format!(
            r#"{{
          "data": {{
            "record_type": "event",
            "id": "86f58db9-0fe3-4adc-9d1f-46e66e6e9323",
            "event_type": "{event_type}",
            "occurred_at": "2019-01-23T18:10:02.574Z",
            "payload": {{
              "record_type": "message",
              "direction": "outbound",
              "id": "40385f64-5717-4562-b3fc-2c963f66afa6",
              "type": "MMS",
              "messaging_profile_id": "4000eba1-a0c0-4563-9925-b25e842a7cb6",
              "organization_id": "b448f9cc-a842-4784-98e9-03c1a5872950",
              "from": {{
                "phone_number": "+18445550001",
                "carrier": "TELNYX LLC",
                "line_type": "VoIP"
              }},
              "to": [
                {{
                  "phone_number": "+18665550001",
                  "status": "{status}",
                  "carrier": "T-MOBILE USA, INC.",
                  "line_type": "Wireless"
                }}
              ],
              "cc": [],
              "text": "Hello, World!",
              "subject": "From Telnyx!",
              "media": [
                {{
                  "url": "https://pbs.twimg.com/profile_images/1142168442042118144/AW3F4fFD_400x400.png",
                  "content_type": null,
                  "sha256": null,
                  "size": null
                }}
              ],
              "webhook_url": "https://www.example.com/hooks",
              "webhook_failover_url": "https://backup.example.com/hooks",
              "encoding": "GSM-7",
              "parts": 1,
              "tags": ["Greetings"],
              "cost": {{ "amount": 0.0051, "currency": "USD" }},
              "tcr_campaign_id": "TCPA3X7",
              "tcr_campaign_billable": true,
              "tcr_campaign_registered": "REGISTERED",
              "received_at": "2019-01-23T18:10:02.574Z",
              "sent_at": null,
              "completed_at": null,
              "valid_until": null,
              "errors": {errors}
            }}
          }},
          "meta": {{ "attempt": 1, "delivered_to": "https://www.example.com/hooks" }}
        }}"#
        )
    }

    fn parse(body: &str) -> Result<Vec<Event>, HookError> {
        let (_, pk) = keypair();
        let p = provider(&pk);
        let h = HeaderMap::new();
        p.parse(Hook::Inbound, &request(&h, body.as_bytes(), NOW))
    }

    #[test]
    fn parses_documented_message_received() {
        let events = parse(RECEIVED).expect("parse");
        assert_eq!(
            events,
            vec![Event::Inbound(InboundText {
                message_id: "7ee4241c-f127-47e5-9c34-3aac291f8058".into(),
                from: "+18665550001".into(),
                to: "+18445550001".into(),
                text: "Hello, World!".into(),
                media: vec![MediaRef {
                    url: "https://media.telnyx.example/7ee4241c.jpg".into(),
                    content_type: Some("image/jpeg".into()),
                }],
                part: None,
            })]
        );
    }

    #[test]
    fn parses_documented_delivery_updates() {
        let sent = parse(&delivery_update("message.sent", "queued", "[]")).expect("parse");
        assert_eq!(
            sent,
            vec![Event::Status(StatusReport {
                message_id: "40385f64-5717-4562-b3fc-2c963f66afa6".into(),
                from: Some("+18445550001".into()),
                delivery: Delivery::Pending,
            })]
        );
        let delivered =
            parse(&delivery_update("message.finalized", "delivered", "[]")).expect("parse");
        assert_eq!(
            delivered,
            vec![Event::Status(StatusReport {
                message_id: "40385f64-5717-4562-b3fc-2c963f66afa6".into(),
                from: Some("+18445550001".into()),
                delivery: Delivery::Delivered,
            })]
        );
        let failed = parse(&delivery_update(
            "message.finalized",
            "delivery_failed",
            r#"[{"code": "40001", "title": "Not routable",
                 "detail": "The destination number is either a landline or a non-routable wireless number."}]"#,
        ))
        .expect("parse");
        assert_eq!(
            failed,
            vec![Event::Status(StatusReport {
                message_id: "40385f64-5717-4562-b3fc-2c963f66afa6".into(),
                from: Some("+18445550001".into()),
                delivery: Delivery::Failed(
                    "Not routable: The destination number is either a landline or a \
                     non-routable wireless number"
                        .into()
                ),
            })]
        );
        let unconfirmed = parse(&delivery_update(
            "message.finalized",
            "delivery_unconfirmed",
            "[]",
        ))
        .expect("parse");
        assert!(matches!(
            &unconfirmed[..],
            [Event::Status(StatusReport { delivery: Delivery::Failed(why), .. })]
                if why == "delivery unconfirmed"
        ));
    }

    #[test]
    fn unknown_events_are_ignored_and_garbage_is_refused() {
        assert_eq!(
            parse(r#"{"data":{"event_type":"call.initiated","payload":{}}}"#),
            Ok(Vec::new())
        );
        assert_eq!(
            parse(r#"{"data":{"event_type":"message.weird","payload":{"id":"x"}}}"#),
            Ok(Vec::new())
        );
        assert!(matches!(parse("not json"), Err(HookError::BadRequest(_))));
        assert!(matches!(parse("{}"), Err(HookError::BadRequest(_))));
    }

    #[test]
    fn api_errors_map_to_kinds() {
        use reqwest::StatusCode;
        let stop = br#"{"errors":[{"code":"40300","title":"Blocked due to STOP message",
            "detail":"Messages cannot be sent from '+1' to '+2' due to an existing block rule."}]}"#;
        let e = api_error(StatusCode::BAD_REQUEST, stop);
        assert_eq!(e.kind, ErrorKind::NotAcceptable);
        assert_eq!(e.text, "recipient opted out (STOP)");
        // Even if Telnyx answered 403 for it.
        assert_eq!(
            api_error(StatusCode::FORBIDDEN, stop).kind,
            ErrorKind::NotAcceptable
        );
        let bad_to = br#"{"errors":[{"code":"40310","title":"Invalid 'to' address",
            "detail":"The 'to' address should be a single valid number."}]}"#;
        let e = api_error(StatusCode::BAD_REQUEST, bad_to);
        assert_eq!(e.kind, ErrorKind::NotAcceptable);
        assert_eq!(
            e.text,
            "telnyx: Invalid 'to' address: The 'to' address should be a single valid number"
        );
        assert_eq!(
            api_error(StatusCode::UNAUTHORIZED, b"").kind,
            ErrorKind::NotAuthorized
        );
        assert_eq!(
            api_error(StatusCode::TOO_MANY_REQUESTS, b"").kind,
            ErrorKind::Transient
        );
        assert_eq!(
            api_error(StatusCode::BAD_GATEWAY, b"<html>").kind,
            ErrorKind::Transient
        );
        let other = br#"{"errors":[{"code":"10015","title":"Bad Request","detail":"Nope."}]}"#;
        let e = api_error(StatusCode::UNPROCESSABLE_ENTITY, other);
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert_eq!(e.text, "telnyx: Bad Request: Nope");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("ab-C_1.~"), "ab-C_1.~");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
