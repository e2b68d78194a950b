//! Vonage (Nexmo), over its SMS API: sends texts with `POST /sms/json`, checks the
//! credentials with `/account/get-balance`, verifies signed webhooks, and reads inbound texts
//! (with the `concat-*` parts of long ones) and delivery receipts from a query string, a form
//! body or a JSON body. It carries no media.
//!
//! Webhooks come signed one of two ways, both with the account's signature secret:
//! - the SMS API's `sig` parameter over the sorted parameters, by MD5 hash or
//!   HMAC-MD5/SHA-1/SHA-256/SHA-512, with a `timestamp` at most 300 s from now;
//! - when the account sends inbound SMS to the Messages API instead, a JWT in
//!   `Authorization: Bearer`, HS256 (no other algorithm is taken, `none` least of all),
//!   whose `payload_hash` claim is the SHA-256 of the body. Its `iat` may be at most 300 s
//!   ahead of our clock and at most 24 h old: Vonage retries a webhook for a day and does
//!   not say whether a retry is signed anew, so a shorter window could turn an outage of
//!   ferry into lost texts; a token bound to its body can only repeat that body, which the
//!   de-duplication of texts (kept 7 days) and of reports drops. A token without a
//!   `payload_hash` binds nothing and lives 300 s.
//!
//! A request with a bearer token is judged by the token alone. The Messages API's JSON
//! (`message_uuid`, `from`, `to`, `text`, `channel`) is read as well as the SMS API's
//! parameters; messages of channels other than `sms` are acknowledged and ignored.
//!
//! References: <https://developer.vonage.com/en/messaging/sms/guides/inbound-sms>,
//! <https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts>,
//! <https://developer.vonage.com/en/getting-started/concepts/signing-messages>,
//! <https://developer.vonage.com/en/messages/concepts/signed-webhooks> (the JWT and its
//! claims), <https://developer.vonage.com/en/messages/concepts/messages-status-callbacks>,
//! <https://developer.vonage.com/en/api-errors/sms> (send status codes) and
//! <https://api.support.vonage.com/hc/en-us/articles/204014733> (receipt `err-code`s).

use crate::segments::is_gsm7;
use std::collections::BTreeMap;

use async_trait::async_trait;
use axum::http::{HeaderMap, header::AUTHORIZATION};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ferry_bridge_api::{BridgeError, ErrorKind};
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use serde_json::{Map, Value};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::{
    Accepted, Context, Delivery, Event, Hook, HookError, InboundText, Kind, Media, MediaRef,
    OutText, Part, Provider, ProviderConfig, Request, StatusReport, form_pairs, need, same,
    status_kind, unreachable,
};

const DEFAULT_API_BASE: &str = "https://rest.nexmo.com";

/// How far a webhook's `timestamp` may be from now, either way, in seconds.
const TOLERANCE_SECS: u64 = 300;

/// How far ahead of our clock a JWT's `iat` may be, in seconds.
const JWT_AHEAD_SECS: i64 = 300;

/// How old a JWT bound to the body by its `payload_hash` may be, in seconds (see the module
/// documentation for why a day).
const JWT_MAX_AGE_SECS: i64 = 24 * 3600;

/// How old a JWT without a `payload_hash` may be, in seconds.
const JWT_UNBOUND_MAX_AGE_SECS: i64 = 300;

pub struct Vonage {
    name: String,
    api_base: String,
    api_key: String,
    api_secret: String,
    signature_secret: String,
    ctx: Context,
}

impl Vonage {
    pub fn new(cfg: &ProviderConfig, ctx: &Context) -> Result<Self, String> {
        let api_key = need(&cfg.api_key, "api_key")?.to_owned();
        let api_secret = need(&cfg.api_secret, "api_secret")?.to_owned();
        let signature_secret = need(&cfg.signature_secret, "signature_secret")?.to_owned();
        let api_base = cfg
            .api_base
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_API_BASE)
            .trim_end_matches('/')
            .to_owned();
        Ok(Vonage {
            name: cfg.name.clone(),
            api_base,
            api_key,
            api_secret,
            signature_secret,
            ctx: ctx.clone(),
        })
    }
}

#[async_trait]
impl Provider for Vonage {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> Kind {
        Kind::Vonage
    }

    fn supports_media(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), BridgeError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("api_key", &self.api_key)
            .append_pair("api_secret", &self.api_secret)
            .finish();
        let resp = self
            .ctx
            .http
            .get(format!("{}/account/get-balance?{query}", self.api_base))
            .send()
            .await
            .map_err(|e| unreachable("vonage", &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        Err(http_error(status))
    }

    async fn send(&self, text: &OutText) -> Result<Accepted, BridgeError> {
        let mut form: Vec<(&str, String)> = vec![
            ("api_key", self.api_key.clone()),
            ("api_secret", self.api_secret.clone()),
            ("from", number(&text.from)),
            ("to", number(&text.to)),
            ("text", text.body.clone()),
            ("callback", self.ctx.hook_url(&self.name, Hook::Status)),
        ];
        if !is_gsm7(&text.body) {
            form.push(("type", "unicode".to_owned()));
        }
        if !text.reference.is_empty() {
            form.push(("client-ref", text.reference.clone()));
        }
        let resp = self
            .ctx
            .http
            .post(format!("{}/sms/json", self.api_base))
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable("vonage", &e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(http_error(status));
        }
        let bytes = resp.bytes().await.map_err(|e| unreachable("vonage", &e))?;
        send_result(&bytes)
    }

    fn verify(&self, _hook: Hook, req: &Request<'_>) -> Result<(), HookError> {
        if let Some(token) = bearer(req.headers) {
            return verify_jwt(token, self.signature_secret.as_bytes(), req.body, req.now);
        }
        let mut params = params(req)?;
        let sig = params
            .remove("sig")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| HookError::Forbidden("missing sig".into()))?;
        let ts: i64 = params
            .get("timestamp")
            .ok_or_else(|| HookError::Forbidden("missing timestamp".into()))?
            .trim()
            .parse()
            .map_err(|_| HookError::Forbidden("bad timestamp".into()))?;
        if req.now.abs_diff(ts) > TOLERANCE_SECS {
            return Err(HookError::Forbidden(
                "timestamp outside the 300 s window".into(),
            ));
        }
        if signature_matches(&params, self.signature_secret.as_bytes(), &sig) {
            Ok(())
        } else {
            Err(HookError::Forbidden("bad signature".into()))
        }
    }

    fn parse(&self, hook: Hook, req: &Request<'_>) -> Result<Vec<Event>, HookError> {
        if let Some(m) = messages_body(req)? {
            return parse_messages(&m);
        }
        let params = params(req)?;
        // Receipts carry `status`/`err-code` and no `type`; inbound texts always a `type`.
        // The keys decide, so a receipt sent to the inbound URL (an account-wide receipt
        // webhook) is still read as one; the hook only breaks a tie.
        let is_receipt = params.contains_key("err-code")
            || (params.contains_key("status") && !params.contains_key("type"))
            || (hook == Hook::Status && !params.contains_key("type"));
        if is_receipt {
            parse_receipt(&params).map(|r| vec![Event::Status(r)])
        } else {
            parse_inbound(&params).map(|t| t.map(Event::Inbound).into_iter().collect())
        }
    }

    async fn fetch_media(&self, _media: &MediaRef, _max: usize) -> Result<Media, BridgeError> {
        Err(BridgeError::permanent("vonage sms carries no media"))
    }
}

/// A number as the SMS API wants it: digits only, no `+` (short codes pass unchanged).
fn number(n: &str) -> String {
    n.trim().trim_start_matches('+').to_owned()
}

/// An HTTP-level refusal from the SMS API (it answers 200 even for most errors).
fn http_error(status: reqwest::StatusCode) -> BridgeError {
    let kind = status_kind(status);
    let text = match kind {
        ErrorKind::NotAuthorized => "vonage: credentials refused".to_owned(),
        _ => format!("vonage: request refused (http {})", status.as_u16()),
    };
    BridgeError::new(kind, text)
}

/// Reads `{"message-count": "N", "messages": [{"status", "message-id", "error-text"}]}`:
/// accepted when every part has status `0`, else the first failing part's status.
fn send_result(body: &[u8]) -> Result<Accepted, BridgeError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| BridgeError::permanent("vonage: unreadable answer to a send"))?;
    let parts = v
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| BridgeError::permanent("vonage: answer to a send without messages"))?;
    if let Some(failed) = parts.iter().find(|p| scalar(p.get("status")) != "0") {
        let code = scalar(failed.get("status"));
        let detail = scalar(failed.get("error-text"));
        return Err(send_error(&code, detail.trim_end_matches('.')));
    }
    let id = parts
        .first()
        .map(|p| scalar(p.get("message-id")))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| BridgeError::permanent("vonage: answer to a send without an id"))?;
    Ok(Accepted {
        message_id: id,
        reports: true,
    })
}

/// Maps a non-zero SMS API status to an error kind and a text.
fn send_error(code: &str, detail: &str) -> BridgeError {
    use ErrorKind::*;
    let (kind, what) = match code {
        "1" => (Transient, "throttled"),
        "2" => (Permanent, "missing parameters"),
        "3" => (Permanent, "invalid parameters"),
        "4" => (NotAuthorized, "invalid credentials"),
        "5" => (Transient, "internal error"),
        "6" => (NotAcceptable, "number not routable"),
        "7" => (NotAcceptable, "number barred"),
        "8" => (NotAuthorized, "account suspended"),
        "9" => (ResourceConstraint, "out of credit"),
        "10" => (Transient, "too many connections"),
        "11" => (NotAuthorized, "account not enabled for the sms api"),
        "12" => (ResourceConstraint, "message too long"),
        "14" => (NotAuthorized, "invalid signature"),
        "15" => (Permanent, "sender address not allowed"),
        "29" => (NotAcceptable, "destination not on the trial whitelist"),
        _ => (Permanent, ""),
    };
    let text = match (what.is_empty(), detail.is_empty()) {
        (false, false) => format!("vonage: {what}: {detail}"),
        (false, true) => format!("vonage: {what}"),
        (true, false) => format!("vonage: {detail}"),
        (true, true) => format!("vonage: error {code}"),
    };
    BridgeError::new(kind, text)
}

/// A JSON string, number or boolean as text.
fn scalar(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// The webhook's parameters: the query for a `GET` (or a `POST` without a body), else
/// the JSON or form body. Later duplicates win.
fn params(req: &Request<'_>) -> Result<BTreeMap<String, String>, HookError> {
    if req.method.eq_ignore_ascii_case("GET") || req.body.is_empty() {
        return Ok(form_pairs(req.query.as_bytes()).into_iter().collect());
    }
    if json_body(req) {
        let v: Value = serde_json::from_slice(req.body)
            .map_err(|_| HookError::BadRequest("body is not json".into()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| HookError::BadRequest("body is not a json object".into()))?;
        return Ok(obj
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), scalar(Some(v))))
            .collect());
    }
    Ok(form_pairs(req.body).into_iter().collect())
}

/// Whether the request carries its parameters as a JSON body.
fn json_body(req: &Request<'_>) -> bool {
    if req.method.eq_ignore_ascii_case("GET") || req.body.is_empty() {
        return false;
    }
    let ct = req.content_type();
    ct == "application/json"
        || ct.ends_with("+json")
        || (ct.is_empty() && req.body.first() == Some(&b'{'))
}

/// The token of the first `Authorization: Bearer …` header, if there is one (possibly
/// empty: a bearer without a token is a bad token, not a request without one).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(AUTHORIZATION).iter().find_map(|v| {
        let v = v.to_str().ok()?.trim();
        let (scheme, token) = v.split_once(char::is_whitespace).unwrap_or((v, ""));
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    })
}

/// A base64url (unpadded) JSON object: a JWT's header or claims.
fn jwt_part(part: &str, what: &str) -> Result<Map<String, Value>, HookError> {
    let bad = || HookError::Forbidden(format!("malformed token {what}"));
    let bytes = B64URL.decode(part).map_err(|_| bad())?;
    match serde_json::from_slice(&bytes).map_err(|_| bad())? {
        Value::Object(m) => Ok(m),
        _ => Err(bad()),
    }
}

/// Verifies a Messages API webhook's JWT: HS256 over `header.claims` with `secret`, then
/// `payload_hash` against `body`, then `iat` against `now` (unix seconds).
fn verify_jwt(token: &str, secret: &[u8], body: &[u8], now: i64) -> Result<(), HookError> {
    let forbidden = |why: &str| HookError::Forbidden(why.to_owned());
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(forbidden("malformed token"));
    };
    let head = jwt_part(header, "header")?;
    match head.get("alg").and_then(Value::as_str) {
        Some("HS256") => {}
        Some(alg) => {
            return Err(HookError::Forbidden(format!(
                "token algorithm {alg:?} refused"
            )));
        }
        None => return Err(forbidden("token without an algorithm")),
    }
    // Extensions the token says must be understood: ferry understands none.
    if head.contains_key("crit") {
        return Err(forbidden("token with critical extensions"));
    }
    let sig = B64URL
        .decode(sig)
        .map_err(|_| forbidden("malformed token signature"))?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .map_err(|_| forbidden("unusable signature secret"))?;
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(claims.as_bytes());
    // Constant time, and the whole 32-byte tag or nothing.
    mac.verify_slice(&sig)
        .map_err(|_| forbidden("bad token signature"))?;

    let claims = jwt_part(claims, "claims")?;
    let iat = claims
        .get("iat")
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .ok_or_else(|| forbidden("token without iat"))?;
    let max_age = match claims.get("payload_hash") {
        None => JWT_UNBOUND_MAX_AGE_SECS,
        Some(hash) => {
            let hash = hash
                .as_str()
                .ok_or_else(|| forbidden("malformed payload_hash"))?;
            if !payload_hash_matches(hash, body) {
                return Err(forbidden("payload_hash does not match the body"));
            }
            JWT_MAX_AGE_SECS
        }
    };
    if iat.saturating_sub(now) > JWT_AHEAD_SECS {
        return Err(forbidden("token issued in the future"));
    }
    if now.saturating_sub(iat) > max_age {
        return Err(forbidden("token too old"));
    }
    Ok(())
}

/// Whether `hash` (hex, any case) is the SHA-256 of the body as it came or, for JSON sent
/// with whitespace between its tokens, of the body without that whitespace (how Vonage's
/// own examples hash it: the JSON serialised compactly).
fn payload_hash_matches(hash: &str, body: &[u8]) -> bool {
    let hash = hash.trim().to_ascii_lowercase();
    let raw = hex::encode(Sha256::digest(body));
    if same(raw.as_bytes(), hash.as_bytes()) {
        return true;
    }
    let compact = compact_json(body);
    compact.len() != body.len()
        && same(
            hex::encode(Sha256::digest(&compact)).as_bytes(),
            hash.as_bytes(),
        )
}

/// `body` without the whitespace JSON allows between tokens (none inside strings is
/// touched). Meant for JSON; other bytes pass through but for their whitespace.
fn compact_json(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

/// The body of a Messages API webhook: a JSON object naming a `message_uuid`. `None` for
/// anything else (the SMS API's parameters).
fn messages_body(req: &Request<'_>) -> Result<Option<Map<String, Value>>, HookError> {
    if !json_body(req) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(req.body)
        .map_err(|_| HookError::BadRequest("body is not json".into()))?;
    Ok(match v {
        Value::Object(m) if m.contains_key("message_uuid") => Some(m),
        _ => None,
    })
}

/// A Messages API inbound message (`{"channel": "sms", "message_uuid", "from", "to",
/// "text", "message_type": "text"}`) or status (`{"message_uuid", "from", "status",
/// "error"}`); other channels and message types are for nobody here.
fn parse_messages(m: &Map<String, Value>) -> Result<Vec<Event>, HookError> {
    let field = |key: &str| scalar(m.get(key));
    let channel = field("channel");
    if channel != "sms" {
        tracing::info!(
            channel,
            "vonage: a Messages API webhook not for SMS ignored"
        );
        return Ok(Vec::new());
    }
    let message_id = field("message_uuid");
    if message_id.is_empty() {
        return Err(HookError::BadRequest("missing message_uuid".into()));
    }
    if m.contains_key("status") {
        let status = field("status").trim().to_ascii_lowercase();
        let delivery = match status.as_str() {
            "delivered" => Delivery::Delivered,
            "rejected" | "undeliverable" => {
                let error = m.get("error");
                let why = ["detail", "title", "reason"]
                    .iter()
                    .map(|k| scalar(error.and_then(|e| e.get(*k))))
                    .find(|w| !w.is_empty());
                Delivery::Failed(match why {
                    Some(why) => format!("{status}: {}", why.trim_end_matches('.')),
                    None => status.clone(),
                })
            }
            _ => Delivery::Pending,
        };
        return Ok(vec![Event::Status(StatusReport {
            message_id,
            // The text went out from the gateway's number.
            from: Some(field("from")).filter(|f| !f.is_empty()),
            delivery,
        })]);
    }
    let kind = field("message_type");
    if !kind.is_empty() && kind != "text" {
        tracing::info!(kind, "vonage: an SMS that is not text ignored");
        return Ok(Vec::new());
    }
    let from = field("from");
    if from.is_empty() {
        return Err(HookError::BadRequest("missing from".into()));
    }
    Ok(vec![Event::Inbound(InboundText {
        message_id,
        from,
        to: field("to"),
        text: field("text"),
        media: Vec::new(),
        part: None,
    })])
}

/// The string Vonage signs: `&key=value` for every parameter but `sig`, sorted by key, with
/// `&` and `=` in values replaced by `_`.
fn signing_string(params: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if k == "sig" {
            continue;
        }
        out.push('&');
        out.push_str(k);
        out.push('=');
        out.extend(
            v.chars()
                .map(|c| if c == '&' || c == '=' { '_' } else { c }),
        );
    }
    out
}

fn hmac_hex<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Option<String> {
    let mut mac = <M as Mac>::new_from_slice(key).ok()?;
    mac.update(data);
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Whether `sig` (hex, any case) is the signature of `params` by any method Vonage offers:
/// MD5 hash (the string, then the secret), or HMAC-MD5/SHA-1/SHA-256/SHA-512 keyed by the
/// secret. The length of `sig` tells the digest apart; a 32-digit one may be either MD5.
fn signature_matches(params: &BTreeMap<String, String>, secret: &[u8], sig: &str) -> bool {
    let sig = sig.trim().to_ascii_lowercase();
    let data = signing_string(params);
    let data = data.as_bytes();
    let candidates: Vec<Option<String>> = match sig.len() {
        32 => {
            let mut h = Md5::new();
            h.update(data);
            h.update(secret);
            vec![
                Some(hex::encode(h.finalize())),
                hmac_hex::<Hmac<Md5>>(secret, data),
            ]
        }
        40 => vec![hmac_hex::<Hmac<Sha1>>(secret, data)],
        64 => vec![hmac_hex::<Hmac<Sha256>>(secret, data)],
        128 => vec![hmac_hex::<Hmac<Sha512>>(secret, data)],
        _ => Vec::new(),
    };
    // Compare against every candidate, not stopping at the first match.
    candidates
        .iter()
        .flatten()
        .fold(false, |ok, c| same(c.as_bytes(), sig.as_bytes()) | ok)
}

fn required<'a>(params: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, HookError> {
    params
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| HookError::BadRequest(format!("missing {key}")))
}

/// An inbound text (or one part of it); `None` for binary messages, which ferry does not
/// read.
fn parse_inbound(params: &BTreeMap<String, String>) -> Result<Option<InboundText>, HookError> {
    let message_id = required(params, "messageId")?;
    let from = required(params, "msisdn")?;
    if params.get("type").map(String::as_str) == Some("binary") {
        return Ok(None);
    }
    let part = if params.get("concat").map(String::as_str) == Some("true") {
        let reference = required(params, "concat-ref")?;
        let number = |key: &str| -> Result<u32, HookError> {
            required(params, key)?
                .trim()
                .parse()
                .map_err(|_| HookError::BadRequest(format!("bad {key}")))
        };
        let index = number("concat-part")?;
        let total = number("concat-total")?;
        if index == 0 || index > total {
            return Err(HookError::BadRequest("concat-part out of range".into()));
        }
        Some(Part {
            reference: reference.to_owned(),
            index,
            total,
        })
    } else {
        None
    };
    Ok(Some(InboundText {
        message_id: message_id.to_owned(),
        from: from.to_owned(),
        to: params.get("to").cloned().unwrap_or_default(),
        text: params.get("text").cloned().unwrap_or_default(),
        media: Vec::new(),
        part,
    }))
}

/// A delivery receipt. Its `to` is the gateway number the text went out from.
fn parse_receipt(params: &BTreeMap<String, String>) -> Result<StatusReport, HookError> {
    let message_id = required(params, "messageId")?;
    let status = params
        .get("status")
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let delivery = match status.as_str() {
        "delivered" => Delivery::Delivered,
        "failed" | "rejected" | "expired" => {
            let code = params.get("err-code").map(|c| c.trim()).unwrap_or("");
            Delivery::Failed(match receipt_error(code) {
                Some(why) => format!("{status}: {why}"),
                None if code.is_empty() || code == "0" => status.clone(),
                None => format!("{status}: error {code}"),
            })
        }
        _ => Delivery::Pending,
    };
    Ok(StatusReport {
        message_id: message_id.to_owned(),
        from: params.get("to").filter(|t| !t.is_empty()).cloned(),
        delivery,
    })
}

/// What a receipt's `err-code` means (Vonage's "SMS Delivery Error Codes").
fn receipt_error(code: &str) -> Option<&'static str> {
    Some(match code {
        "1" => "unknown",
        "2" => "absent subscriber (temporary)",
        "3" => "absent subscriber (permanent)",
        "4" => "call barred by user",
        "5" => "portability error",
        "6" => "anti-spam rejection",
        "7" => "handset busy",
        "8" => "network error",
        "9" => "recipient opted out",
        "10" => "illegal message",
        "11" => "unroutable",
        "12" => "destination unreachable",
        "13" => "subscriber age restriction",
        "14" => "number blocked by carrier",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};

    fn cfg() -> ProviderConfig {
        ProviderConfig {
            name: "vg".into(),
            kind: Kind::Vonage,
            api_base: None,
            account_sid: None,
            auth_token: None,
            api_key: Some("abcd1234".into()),
            public_key: None,
            messaging_profile_id: None,
            api_secret: Some("apisecret".into()),
            signature_secret: Some("secret".into()),
            sendsms_url: None,
            username: None,
            password: None,
            inbound_token: None,
        }
    }

    fn provider(signature_secret: &str) -> Vonage {
        let ctx = Context {
            public_url: "https://gw.example.org".into(),
            http: reqwest::Client::new(),
        };
        let cfg = ProviderConfig {
            signature_secret: Some(signature_secret.into()),
            ..cfg()
        };
        Vonage::new(&cfg, &ctx).expect("provider")
    }

    fn get<'a>(headers: &'a HeaderMap, query: &'a str, now: i64) -> Request<'a> {
        Request {
            method: "GET",
            url: "https://gw.example.org/sms/vg/inbound",
            query,
            headers,
            body: b"",
            now,
        }
    }

    fn post<'a>(headers: &'a HeaderMap, body: &'a [u8], now: i64) -> Request<'a> {
        Request {
            method: "POST",
            url: "https://gw.example.org/sms/vg/inbound",
            query: "",
            headers,
            body,
            now,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn missing_keys_are_refused() {
        let ctx = Context {
            public_url: "https://gw.example.org".into(),
            http: reqwest::Client::new(),
        };
        for strip in 0..3 {
            let mut c = cfg();
            match strip {
                0 => c.api_key = None,
                1 => c.api_secret = None,
                _ => c.signature_secret = Some(String::new()),
            }
            assert!(Vonage::new(&c, &ctx).is_err());
        }
    }

    /// Vectors from Vonage's SDKs: the `md5hash` one is in vonage-ruby-sdk
    /// `test/nexmo/signature_test.rb` and nexmo-python `tests/test_client.py`
    /// (`{"a": "1", "b": "2", "timestamp": "1461605396"}`, secret `secret`); the HMAC ones
    /// in vonage-python-sdk `http_client/tests/test_auth.py` (secret `signature_secret`).
    #[test]
    fn sdk_signature_vectors() {
        let p = map(&[("a", "1"), ("b", "2"), ("timestamp", "1461605396")]);
        assert!(signature_matches(
            &p,
            b"secret",
            "6af838ef94998832dbfc29020b564830"
        ));
        let p = map(&[
            ("param1", "value1"),
            ("param2", "value2"),
            ("timestamp", "1234567890"),
        ]);
        // HMAC-MD5 (the Python SDK's default method).
        assert!(signature_matches(
            &p,
            b"signature_secret",
            "724c2bf6ca423c36e20631b11d1c5753"
        ));
        // HMAC-SHA256, upper case as the Ruby SDK sends it.
        assert!(signature_matches(
            &p,
            b"signature_secret",
            "280C4320703DBC98BFA22DB676655ED2ACFBFE8792B062FF7622E67F1183C287"
        ));
        // `&` and `=` in values become `_`.
        let p = map(&[
            ("param1", "value&1"),
            ("param2", "value=2"),
            ("timestamp", "1234567890"),
        ]);
        assert!(signature_matches(
            &p,
            b"signature_secret",
            "2bbf0abafb2c55e5af6231513896a2ac"
        ));
        let p = map(&[
            ("param", "value"),
            ("timestamp", "1234567890"),
            ("sig", "655a4d0b7f064dff438defc52b012cf5"),
        ]);
        assert!(signature_matches(
            &p,
            b"signature_secret",
            "655a4d0b7f064dff438defc52b012cf5"
        ));
        assert!(!signature_matches(
            &p,
            b"signature_secret",
            "invalid_signature"
        ));
        assert!(!signature_matches(
            &p,
            b"other",
            "655a4d0b7f064dff438defc52b012cf5"
        ));
    }

    /// HMAC-SHA1 and HMAC-SHA512 over the string of the `md5hash` vector, computed with
    /// Python's `hmac` module as vonage-python-sdk's `Auth.sign_params` does.
    #[test]
    fn sha1_and_sha512_hmacs() {
        let p = map(&[("a", "1"), ("b", "2"), ("timestamp", "1461605396")]);
        assert!(signature_matches(
            &p,
            b"secret",
            "3e19a4e6880fdc2c1426bfd0587c98b9532f0210"
        ));
        assert!(signature_matches(
            &p,
            b"secret",
            "812a18f76680fa0fe1b8bd9ee1625466ceb1bd96242e4d050d2cfd9a7b40166c\
             63ed26ec9702168781b6edcf1633db8ff95af9341701004eec3fcf9550572ee8"
        ));
    }

    #[test]
    fn verify_accepts_signed_query_form_and_json() {
        let p = provider("secret");
        let h = HeaderMap::new();
        let q = "a=1&b=2&timestamp=1461605396&sig=6af838ef94998832dbfc29020b564830";
        assert_eq!(p.verify(Hook::Inbound, &get(&h, q, 1_461_605_400)), Ok(()));

        let mut form = HeaderMap::new();
        form.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert_eq!(
            p.verify(Hook::Inbound, &post(&form, q.as_bytes(), 1_461_605_100)),
            Ok(())
        );

        let mut json = HeaderMap::new();
        json.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body =
            br#"{"a":"1","b":2,"timestamp":"1461605396","sig":"6af838ef94998832dbfc29020b564830"}"#;
        assert_eq!(
            p.verify(Hook::Inbound, &post(&json, body, 1_461_605_396)),
            Ok(())
        );
    }

    #[test]
    fn verify_refuses_tampering_staleness_and_missing_sig() {
        let p = provider("secret");
        let h = HeaderMap::new();
        let now = 1_461_605_396;
        let tampered = "a=1&b=3&timestamp=1461605396&sig=6af838ef94998832dbfc29020b564830";
        assert!(matches!(
            p.verify(Hook::Inbound, &get(&h, tampered, now)),
            Err(HookError::Forbidden(_))
        ));
        let added = "a=1&b=2&c=3&timestamp=1461605396&sig=6af838ef94998832dbfc29020b564830";
        assert!(matches!(
            p.verify(Hook::Inbound, &get(&h, added, now)),
            Err(HookError::Forbidden(_))
        ));
        let good = "a=1&b=2&timestamp=1461605396&sig=6af838ef94998832dbfc29020b564830";
        assert!(matches!(
            p.verify(Hook::Inbound, &get(&h, good, now + 301)),
            Err(HookError::Forbidden(_))
        ));
        assert!(matches!(
            p.verify(Hook::Inbound, &get(&h, good, now - 301)),
            Err(HookError::Forbidden(_))
        ));
        assert!(matches!(
            p.verify(Hook::Inbound, &get(&h, "a=1&b=2&timestamp=1461605396", now)),
            Err(HookError::Forbidden(_))
        ));
        assert!(matches!(
            p.verify(
                Hook::Inbound,
                &get(&h, "a=1&b=2&sig=6af838ef94998832dbfc29020b564830", now)
            ),
            Err(HookError::Forbidden(_))
        ));
        assert!(matches!(
            provider("other").verify(Hook::Inbound, &get(&h, good, now)),
            Err(HookError::Forbidden(_))
        ));
    }

    #[test]
    fn parses_concatenated_inbound_parts() {
        let p = provider("secret");
        let h = HeaderMap::new();
        let mut texts = Vec::new();
        for (i, chunk) in ["Hello, this is ", "a long text in ", "three parts"]
            .iter()
            .enumerate()
        {
            let q = format!(
                "msisdn=447700900001&to=447700900000&messageId=0A00000012345{i}&text={}\
                 &type=text&keyword=HELLO&message-timestamp=2020-01-01+12%3A00%3A00\
                 &concat=true&concat-ref=1&concat-total=3&concat-part={}",
                chunk.replace(' ', "+").replace(',', "%2C"),
                i + 1
            );
            let events = p.parse(Hook::Inbound, &get(&h, &q, 0)).expect("parse");
            let [Event::Inbound(t)] = &events[..] else {
                panic!("not one inbound text: {events:?}");
            };
            texts.push(t.clone());
        }
        assert_eq!(
            texts[1],
            InboundText {
                message_id: "0A000000123451".into(),
                from: "447700900001".into(),
                to: "447700900000".into(),
                text: "a long text in ".into(),
                media: Vec::new(),
                part: Some(Part {
                    reference: "1".into(),
                    index: 2,
                    total: 3,
                }),
            }
        );
        let joined: String = texts.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(joined, "Hello, this is a long text in three parts");
        assert!(
            texts
                .iter()
                .all(|t| t.part.as_ref().map(|p| p.total) == Some(3))
        );
    }

    #[test]
    fn parses_json_inbound_without_concat() {
        let p = provider("secret");
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // The fields Vonage's inbound SMS guide lists, as a JSON POST delivers them.
        let body = br#"{
          "api-key": "abcd1234",
          "msisdn": "447700900001",
          "to": "447700900000",
          "messageId": "0A0000000123ABCD1",
          "text": "Hello world",
          "type": "text",
          "keyword": "HELLO",
          "message-timestamp": "2020-01-01 12:00:00 +0000",
          "timestamp": "1578787200",
          "nonce": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
        }"#;
        let events = p.parse(Hook::Inbound, &post(&h, body, 0)).expect("parse");
        assert_eq!(
            events,
            vec![Event::Inbound(InboundText {
                message_id: "0A0000000123ABCD1".into(),
                from: "447700900001".into(),
                to: "447700900000".into(),
                text: "Hello world".into(),
                media: Vec::new(),
                part: None,
            })]
        );
    }

    #[test]
    fn parses_delivery_receipts() {
        let p = provider("secret");
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // The example receipt of Vonage's opt-out guide ("messaging-opted-out-numbers"),
        // with a `client-ref` as the delivery-receipt guide lists it.
        let failed = br#"{
           "msisdn": "447700900000",
           "to": "AcmeInc",
           "network-code": "12345",
           "messageId": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
           "price": "0.00000000",
           "status": "failed",
           "scts": "2001011400",
           "err-code": "9",
           "api-key": "abcd1234",
           "client-ref": "ferry-1",
           "message-timestamp": "2020-01-01 12:00:00"
        }"#;
        let events = p.parse(Hook::Status, &post(&h, failed, 0)).expect("parse");
        assert_eq!(
            events,
            vec![Event::Status(StatusReport {
                message_id: "aaaaaaaa-bbbb-cccc-dddd-0123456789ab".into(),
                from: Some("AcmeInc".into()),
                delivery: Delivery::Failed("failed: recipient opted out".into()),
            })]
        );
        let q = "msisdn=447700900000&to=447700900001&network-code=23410\
                 &messageId=0B00000053FFB40F&price=0.03330000&status=delivered\
                 &scts=2001011400&err-code=0&message-timestamp=2020-01-01+12%3A00%3A00";
        let events = p.parse(Hook::Status, &get(&h, q, 0)).expect("parse");
        assert_eq!(
            events,
            vec![Event::Status(StatusReport {
                message_id: "0B00000053FFB40F".into(),
                from: Some("447700900001".into()),
                delivery: Delivery::Delivered,
            })]
        );
        // A receipt at the inbound URL is still a receipt; buffered is not final.
        let q = "msisdn=1&to=2&messageId=X&status=buffered&err-code=0";
        let events = p.parse(Hook::Inbound, &get(&h, q, 0)).expect("parse");
        assert!(matches!(
            &events[..],
            [Event::Status(StatusReport {
                delivery: Delivery::Pending,
                ..
            })]
        ));
        let q = "msisdn=1&to=2&messageId=X&status=expired&err-code=77";
        let events = p.parse(Hook::Status, &get(&h, q, 0)).expect("parse");
        assert!(matches!(
            &events[..],
            [Event::Status(StatusReport { delivery: Delivery::Failed(w), .. })]
                if w == "expired: error 77"
        ));
    }

    #[test]
    fn malformed_webhooks_are_bad_requests() {
        let p = provider("secret");
        let h = HeaderMap::new();
        assert!(matches!(
            p.parse(Hook::Inbound, &get(&h, "text=hi&type=text", 0)),
            Err(HookError::BadRequest(_))
        ));
        let q = "msisdn=1&to=2&messageId=X&type=text&text=a&concat=true&concat-ref=9\
                 &concat-total=2&concat-part=3";
        assert!(matches!(
            p.parse(Hook::Inbound, &get(&h, q, 0)),
            Err(HookError::BadRequest(_))
        ));
        let mut json = HeaderMap::new();
        json.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(matches!(
            p.parse(Hook::Inbound, &post(&json, b"[1,2]", 0)),
            Err(HookError::BadRequest(_))
        ));
        // Binary texts are signed and fine, but ferry has nothing to read in them.
        let q = "msisdn=1&to=2&messageId=X&type=binary&data=00&udh=050003";
        assert_eq!(p.parse(Hook::Inbound, &get(&h, q, 0)), Ok(Vec::new()));
    }

    #[test]
    fn send_answers_map_to_results() {
        let ok = br#"{"message-count":"2","messages":[
            {"to":"447700900000","message-id":"0A0000000123ABCD1","status":"0",
             "remaining-balance":"3.14","message-price":"0.03","network":"12345"},
            {"to":"447700900000","message-id":"0A0000000123ABCD2","status":"0"}]}"#;
        assert_eq!(
            send_result(ok),
            Ok(Accepted {
                message_id: "0A0000000123ABCD1".into(),
                reports: true,
            })
        );
        let err = |status: &str, text: &str| {
            let body = format!(
                r#"{{"message-count":"1","messages":[{{"status":"{status}","error-text":"{text}"}}]}}"#
            );
            send_result(body.as_bytes()).expect_err("an error")
        };
        assert_eq!(
            err("1", "Throughput Rate Exceeded").kind,
            ErrorKind::Transient
        );
        let e = err("4", "Bad Credentials");
        assert_eq!(e.kind, ErrorKind::NotAuthorized);
        assert_eq!(e.text, "vonage: invalid credentials: Bad Credentials");
        assert_eq!(
            err("9", "Quota Exceeded").kind,
            ErrorKind::ResourceConstraint
        );
        assert_eq!(
            err("6", "Unroutable message").kind,
            ErrorKind::NotAcceptable
        );
        assert_eq!(
            err("29", "Non White-listed Destination").kind,
            ErrorKind::NotAcceptable
        );
        let e = err("99", "");
        assert_eq!(
            (e.kind, e.text.as_str()),
            (ErrorKind::Permanent, "vonage: error 99")
        );
        // A later part failing fails the whole send.
        let partial = br#"{"message-count":"2","messages":[
            {"message-id":"A","status":"0"},{"status":"1","error-text":"Throttled"}]}"#;
        assert_eq!(
            send_result(partial).map_err(|e| e.kind),
            Err(ErrorKind::Transient)
        );
        assert!(send_result(b"<html>").is_err());
        assert!(send_result(br#"{"messages":[]}"#).is_err());
    }

    // ------------------------------------------------------------ Messages API: the JWT

    const NOW: i64 = 1_587_494_962;

    /// An inbound SMS as the Messages API posts it (compact, as Vonage sends it).
    const MESSAGES_INBOUND: &[u8] = br#"{"channel":"sms","message_uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab","to":"447700900000","from":"447700900001","timestamp":"2020-04-21T18:49:22Z","text":"Hello From Vonage!","message_type":"text","sms":{"num_messages":"1"},"usage":{"price":"0.0057","currency":"EUR"}}"#;

    fn b64url(bytes: &[u8]) -> String {
        B64URL.encode(bytes)
    }

    /// A token of `header` and `claims` (JSON text) signed with HMAC-SHA256 by `secret`.
    fn token(header: &str, claims: &str, secret: &[u8]) -> String {
        let signed = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes())
        );
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("key");
        mac.update(signed.as_bytes());
        format!("{signed}.{}", b64url(&mac.finalize().into_bytes()))
    }

    /// Claims as Vonage's signed-webhooks page shows them, bound to `body`.
    fn claims(iat: i64, body: &[u8]) -> String {
        format!(
            r#"{{"iat":{iat},"jti":"c5ba8f24-1a14-4c10-bfdf-3fbe8ce511b5","iss":"Vonage","payload_hash":"{}","api_key":"abcd1234","application_id":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}}"#,
            hex::encode(Sha256::digest(body))
        )
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    fn json_with_bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        h
    }

    fn verify_with(p: &Vonage, token: &str, body: &[u8], now: i64) -> Result<(), HookError> {
        let h = json_with_bearer(token);
        p.verify(Hook::Inbound, &post(&h, body, now))
    }

    fn refused(r: Result<(), HookError>) -> bool {
        matches!(r, Err(HookError::Forbidden(_)))
    }

    /// The HMAC is checked on the token's own text: jwt.io's example token (secret
    /// `your-256-bit-secret`), and a Vonage-shaped one made with Python's `hmac`, `hashlib`
    /// and `base64` modules, not with this module's code.
    #[test]
    fn jwt_vectors_made_elsewhere_verify() {
        let jwt_io = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
            SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        // No payload_hash: it binds no body, and lives 300 s.
        assert_eq!(
            verify_jwt(jwt_io, b"your-256-bit-secret", b"", 1_516_239_022 + 10),
            Ok(())
        );
        assert!(refused(verify_jwt(
            jwt_io,
            b"your-256-bit-secret",
            b"",
            1_516_239_022 + 301
        )));
        assert!(refused(verify_jwt(jwt_io, b"secret", b"", 1_516_239_022)));

        let vonage = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJpYXQiOjE1ODc0OTQ5NjIsImp0aSI6ImM1YmE4ZjI0LTFhMTQtNGMxMC1iZmRmLTNmYmU4Y2U1MTFiNSIs\
            ImlzcyI6IlZvbmFnZSIsInBheWxvYWRfaGFzaCI6IjBiNjkzNTE2ODFhMTQ1ZjkyM2IyZDQ5M2M0ZWY2N2Y0\
            ODdmNWFmYWFiYTAwMGVjYWI5YzFiNTFlZWEyMzliMTYiLCJhcGlfa2V5IjoiYWJjZDEyMzQiLCJhcHBsaWNh\
            dGlvbl9pZCI6ImFhYWFhYWFhLWJiYmItY2NjYy1kZGRkLTAxMjM0NTY3ODlhYiJ9.\
            _nvGVh_dyJFDWnra0GnaOvxDR_rFee_lV2AV7l_hLec";
        let p = provider("secret");
        assert_eq!(verify_with(&p, vonage, MESSAGES_INBOUND, NOW + 60), Ok(()));
        assert!(refused(verify_with(
            &provider("other"),
            vonage,
            MESSAGES_INBOUND,
            NOW
        )));
    }

    #[test]
    fn jwt_with_the_right_secret_and_body_is_accepted() {
        let p = provider("secret");
        let t = token(HS256, &claims(NOW, MESSAGES_INBOUND), b"secret");
        assert_eq!(verify_with(&p, &t, MESSAGES_INBOUND, NOW), Ok(()));
        // `bearer` in any case, as HTTP schemes are.
        let mut h = json_with_bearer(&t);
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("bearer {t}")).expect("header"),
        );
        assert_eq!(
            p.verify(Hook::Status, &post(&h, MESSAGES_INBOUND, NOW)),
            Ok(())
        );
        // A float iat (some JWT libraries write one) is read as its whole seconds.
        let c = claims(NOW, MESSAGES_INBOUND).replace(&format!("{NOW}"), &format!("{NOW}.5"));
        let t = token(HS256, &c, b"secret");
        assert_eq!(verify_with(&p, &t, MESSAGES_INBOUND, NOW), Ok(()));
    }

    #[test]
    fn jwt_with_a_wrong_secret_is_refused() {
        let p = provider("secret");
        let t = token(HS256, &claims(NOW, MESSAGES_INBOUND), b"Secret");
        assert!(refused(verify_with(&p, &t, MESSAGES_INBOUND, NOW)));
        let t = token(HS256, &claims(NOW, MESSAGES_INBOUND), b"");
        assert!(refused(verify_with(&p, &t, MESSAGES_INBOUND, NOW)));
    }

    #[test]
    fn jwt_algorithms_other_than_hs256_are_refused() {
        let p = provider("secret");
        let c = claims(NOW, MESSAGES_INBOUND);
        // `none`, unsigned as such tokens come, and signed all the same.
        let unsigned = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"JWT"}"#),
            b64url(c.as_bytes())
        );
        assert!(refused(verify_with(&p, &unsigned, MESSAGES_INBOUND, NOW)));
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"HS384"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":["HS256"]}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
        ] {
            let t = token(header, &c, b"secret");
            assert!(
                refused(verify_with(&p, &t, MESSAGES_INBOUND, NOW)),
                "{header} was accepted"
            );
        }
        // The same claims under HS256 pass: the header alone made the difference.
        let t = token(r#"{"typ":"JWT","alg":"HS256"}"#, &c, b"secret");
        assert_eq!(verify_with(&p, &t, MESSAGES_INBOUND, NOW), Ok(()));
    }

    #[test]
    fn jwt_for_another_body_is_refused() {
        let p = provider("secret");
        let t = token(HS256, &claims(NOW, MESSAGES_INBOUND), b"secret");
        let tampered = String::from_utf8(MESSAGES_INBOUND.to_vec())
            .expect("utf-8")
            .replace("Hello From Vonage!", "Hello From Mallory");
        assert!(refused(verify_with(&p, &t, tampered.as_bytes(), NOW)));
        // Whitespace inside a string is content.
        let spaced = String::from_utf8(MESSAGES_INBOUND.to_vec())
            .expect("utf-8")
            .replace("Hello From Vonage!", "Hello  From Vonage!");
        assert!(refused(verify_with(&p, &t, spaced.as_bytes(), NOW)));
        assert!(refused(verify_with(&p, &t, b"", NOW)));
        // A payload_hash that is not the body's, or not a string.
        let other = claims(NOW, b"{}");
        assert!(refused(verify_with(
            &p,
            &token(HS256, &other, b"secret"),
            MESSAGES_INBOUND,
            NOW
        )));
        let not_text = format!(r#"{{"iat":{NOW},"payload_hash":42}}"#);
        assert!(refused(verify_with(
            &p,
            &token(HS256, &not_text, b"secret"),
            MESSAGES_INBOUND,
            NOW
        )));
        // Upper-case hex is the same hash.
        let upper = claims(NOW, MESSAGES_INBOUND).replace(
            &hex::encode(Sha256::digest(MESSAGES_INBOUND)),
            &hex::encode_upper(Sha256::digest(MESSAGES_INBOUND)),
        );
        assert_eq!(
            verify_with(&p, &token(HS256, &upper, b"secret"), MESSAGES_INBOUND, NOW),
            Ok(())
        );
    }

    /// Vonage's examples hash the JSON serialised compactly; the same JSON sent with
    /// whitespace between its tokens is the same payload.
    #[test]
    fn jwt_payload_hash_of_the_compact_json_matches_spaced_json() {
        let p = provider("secret");
        let t = token(HS256, &claims(NOW, MESSAGES_INBOUND), b"secret");
        let spaced = br#"{
          "channel": "sms", "message_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
          "to": "447700900000", "from": "447700900001",
          "timestamp": "2020-04-21T18:49:22Z", "text": "Hello From Vonage!",
          "message_type": "text", "sms": { "num_messages": "1" },
          "usage": { "price": "0.0057", "currency": "EUR" }
        }"#;
        assert_eq!(compact_json(spaced), MESSAGES_INBOUND);
        assert_eq!(verify_with(&p, &t, spaced, NOW), Ok(()));
        assert_eq!(
            compact_json(br#"{ "a" : "b \" c\\", "d": [ 1, 2 ] }"#),
            br#"{"a":"b \" c\\","d":[1,2]}"#
        );
    }

    #[test]
    fn jwt_outside_its_time_window_is_refused() {
        let p = provider("secret");
        let at = |iat: i64, now: i64| {
            verify_with(
                &p,
                &token(HS256, &claims(iat, MESSAGES_INBOUND), b"secret"),
                MESSAGES_INBOUND,
                now,
            )
        };
        assert_eq!(at(NOW - 24 * 3600, NOW), Ok(()));
        assert!(refused(at(NOW - 24 * 3600 - 1, NOW)));
        assert!(refused(at(0, NOW)));
        assert_eq!(at(NOW + 300, NOW), Ok(()));
        assert!(refused(at(NOW + 301, NOW)));
        assert!(refused(at(i64::MAX, NOW)));
        assert!(refused(at(i64::MIN, NOW)));
        // Without a payload_hash the token binds no body: 300 s.
        let unbound = |iat: i64| {
            verify_with(
                &p,
                &token(HS256, &format!(r#"{{"iat":{iat}}}"#), b"secret"),
                MESSAGES_INBOUND,
                NOW,
            )
        };
        assert_eq!(unbound(NOW - 300), Ok(()));
        assert!(refused(unbound(NOW - 301)));
        // No iat, or one that is not a number.
        for c in [
            r#"{"iss":"Vonage"}"#.to_owned(),
            format!(r#"{{"iat":"{NOW}"}}"#),
            r#"{"iat":null}"#.to_owned(),
        ] {
            assert!(
                refused(verify_with(
                    &p,
                    &token(HS256, &c, b"secret"),
                    MESSAGES_INBOUND,
                    NOW
                )),
                "{c} was accepted"
            );
        }
    }

    #[test]
    fn malformed_jwts_are_refused() {
        let p = provider("secret");
        let good = token(HS256, &claims(NOW, MESSAGES_INBOUND), b"secret");
        let (signed, sig) = good.rsplit_once('.').expect("three parts");
        let (header, body) = signed.split_once('.').expect("three parts");
        let mac = |signed: &str| {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"secret").expect("key");
            m.update(signed.as_bytes());
            b64url(&m.finalize().into_bytes())
        };
        let not_object = format!("{}.{}", b64url(HS256.as_bytes()), b64url(b"[1]"));
        let not_json = format!("{}.{}", b64url(b"{alg:HS256}"), b64url(b"{}"));
        let bad = [
            String::new(),
            "garbage".to_owned(),
            format!("{header}.{body}"),
            format!("{good}.{sig}"),
            format!("{header}.{body}."),
            format!("{header}.{body}.{sig}="),
            format!("{header}.{body}.{}", &sig[..sig.len() - 2]),
            format!("{header}.{body}.{sig}AA"),
            format!(
                "{header}.{body}.{}",
                sig.replace('_', "/").replace('-', "+")
            ),
            format!("{header}=.{body}.{sig}"),
            format!("{header}.{body}!.{sig}"),
            // Correctly signed, but not JSON objects inside.
            format!("{not_object}.{}", mac(&not_object)),
            format!("{not_json}.{}", mac(&not_json)),
        ];
        for t in &bad {
            assert!(
                refused(verify_with(&p, t, MESSAGES_INBOUND, NOW)),
                "{t:?} was accepted"
            );
        }
        // `Bearer` with nothing after it is a bearer with no token, not a fallback to the
        // (good) sig.
        let q = "a=1&b=2&timestamp=1461605396&sig=6af838ef94998832dbfc29020b564830";
        for value in ["Bearer", "Bearer  ", "bearer\t"] {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_static(value));
            assert!(
                refused(p.verify(Hook::Inbound, &get(&h, q, 1_461_605_396))),
                "{value:?} fell back to the sig"
            );
        }
    }

    /// A bearer token decides alone; without one (or with another scheme) the `sig` does.
    #[test]
    fn a_bad_bearer_token_is_not_rescued_by_a_good_sig() {
        let p = provider("secret");
        let q = "a=1&b=2&timestamp=1461605396&sig=6af838ef94998832dbfc29020b564830";
        let now = 1_461_605_396;
        let wrong = token(HS256, &claims(now, b""), b"other");
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {wrong}")).expect("header"),
        );
        assert!(refused(p.verify(Hook::Inbound, &get(&h, q, now))));
        let right = token(HS256, &claims(now, b""), b"secret");
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {right}")).expect("header"),
        );
        assert_eq!(p.verify(Hook::Inbound, &get(&h, "a=1", now)), Ok(()));
        // Basic credentials are no token: the sig is checked, and must be right.
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(p.verify(Hook::Inbound, &get(&h, q, now)), Ok(()));
        assert!(refused(p.verify(Hook::Inbound, &get(&h, "a=1", now))));
    }

    // ------------------------------------------------------------ Messages API: the body

    #[test]
    fn parses_messages_api_inbound_sms() {
        let p = provider("secret");
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let events = p
            .parse(Hook::Inbound, &post(&h, MESSAGES_INBOUND, NOW))
            .expect("parse");
        assert_eq!(
            events,
            vec![Event::Inbound(InboundText {
                message_id: "aaaaaaaa-bbbb-cccc-dddd-0123456789ab".into(),
                from: "447700900001".into(),
                to: "447700900000".into(),
                text: "Hello From Vonage!".into(),
                media: Vec::new(),
                part: None,
            })]
        );
        // Without a content type, a JSON object is still read as one.
        let bare = HeaderMap::new();
        assert_eq!(
            p.parse(Hook::Inbound, &post(&bare, MESSAGES_INBOUND, NOW)),
            Ok(events)
        );
        // Other channels and message types are acknowledged and ignored.
        let whatsapp = br#"{"channel":"whatsapp","message_uuid":"u","from":"1","to":"2","message_type":"text","text":"hi"}"#;
        assert_eq!(
            p.parse(Hook::Inbound, &post(&h, whatsapp, NOW)),
            Ok(Vec::new())
        );
        let image = br#"{"channel":"sms","message_uuid":"u","from":"1","to":"2","message_type":"image","image":{"url":"x"}}"#;
        assert_eq!(
            p.parse(Hook::Inbound, &post(&h, image, NOW)),
            Ok(Vec::new())
        );
        // An SMS without its sender or id is not something to keep.
        let no_from =
            br#"{"channel":"sms","message_uuid":"u","to":"2","message_type":"text","text":"hi"}"#;
        assert!(matches!(
            p.parse(Hook::Inbound, &post(&h, no_from, NOW)),
            Err(HookError::BadRequest(_))
        ));
        let no_id = br#"{"channel":"sms","message_uuid":"","from":"1","to":"2","text":"hi"}"#;
        assert!(matches!(
            p.parse(Hook::Inbound, &post(&h, no_id, NOW)),
            Err(HookError::BadRequest(_))
        ));
    }

    #[test]
    fn parses_messages_api_status() {
        let p = provider("secret");
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let delivered = br#"{"message_uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab","to":"447700900000","from":"447700900001","timestamp":"2023-05-01T14:00:00.000Z","status":"delivered","usage":{"currency":"EUR","price":"0.0333"},"channel":"sms"}"#;
        assert_eq!(
            p.parse(Hook::Status, &post(&h, delivered, NOW)),
            Ok(vec![Event::Status(StatusReport {
                message_id: "aaaaaaaa-bbbb-cccc-dddd-0123456789ab".into(),
                from: Some("447700900001".into()),
                delivery: Delivery::Delivered,
            })])
        );
        let rejected = br#"{"message_uuid":"u","to":"447700900000","from":"447700900001","status":"rejected","channel":"sms","error":{"type":"https://developer.vonage.com/api-errors/messages#1320","title":1320,"detail":"Message failed because the number is unreachable.","instance":"bf0ca0bf"}}"#;
        assert!(matches!(
            &p.parse(Hook::Status, &post(&h, rejected, NOW)).expect("parse")[..],
            [Event::Status(StatusReport { delivery: Delivery::Failed(w), .. })]
                if w == "rejected: Message failed because the number is unreachable"
        ));
        let bare = br#"{"message_uuid":"u","from":"1","status":"undeliverable","channel":"sms"}"#;
        assert!(matches!(
            &p.parse(Hook::Status, &post(&h, bare, NOW)).expect("parse")[..],
            [Event::Status(StatusReport { delivery: Delivery::Failed(w), .. })]
                if w == "undeliverable"
        ));
        // A status arriving at the inbound URL is still a status; submitted is not final.
        let submitted = br#"{"message_uuid":"u","from":"1","status":"submitted","channel":"sms"}"#;
        assert!(matches!(
            &p.parse(Hook::Inbound, &post(&h, submitted, NOW))
                .expect("parse")[..],
            [Event::Status(StatusReport {
                delivery: Delivery::Pending,
                ..
            })]
        ));
    }

    #[test]
    fn numbers_lose_their_plus() {
        assert_eq!(number("+447700900000"), "447700900000");
        assert_eq!(number("12345"), "12345");
    }

    #[test]
    fn gsm7_detection() {
        assert!(is_gsm7(
            "Hello, world! 123 @£$¥ èéùìòÇØøÅå ΔΦΓΛΩΠΨΣΘΞ ÆæßÉ ¤¡ÄÖÑÜ§¿äöñüà"
        ));
        assert!(is_gsm7(
            "brackets [] {} \\ ~ | ^ € and\nnew lines\r\n_ # % & ' ( ) * + , - . / : ; < = > ? \""
        ));
        assert!(is_gsm7(""));
        assert!(!is_gsm7("café ☕"));
        assert!(!is_gsm7("emoji 😀"));
        assert!(!is_gsm7("ç lower-case cedilla is not in the set"));
        assert!(!is_gsm7("backtick `"));
        assert!(!is_gsm7("Привет"));
        assert!(!is_gsm7("tab\there"));
    }
}
