//! Twilio, over its REST API `2010-04-01` (Programmable Messaging): sends texts and MMS with
//! `POST /2010-04-01/Accounts/{sid}/Messages.json`, checks the credentials by listing one
//! message, verifies webhooks by their `X-Twilio-Signature` (HMAC-SHA1 with the auth token
//! over the URL and the sorted POST parameters), reads inbound texts and status callbacks
//! out of them, answers them with an empty TwiML `<Response/>`, and fetches inbound media
//! with the account's credentials (never sent to another origin).
//!
//! References: <https://www.twilio.com/docs/usage/webhooks/webhooks-security>,
//! <https://www.twilio.com/docs/messaging/api/message-resource>,
//! <https://www.twilio.com/docs/messaging/guides/webhook-request>,
//! <https://www.twilio.com/docs/api/errors>.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_bridge_api::{BridgeError, ErrorKind};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;

use super::{
    Accepted, Ack, Context, Delivery, Event, Hook, HookError, InboundText, Kind, Media, MediaRef,
    OutText, Provider, ProviderConfig, Request, StatusReport, form_pairs, need, read_limited, same,
    status_kind, unreachable,
};

const DEFAULT_API_BASE: &str = "https://api.twilio.com";

const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The empty TwiML document Twilio expects in answer to a messaging webhook: nothing to do.
const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

/// Twilio attaches at most 10 media items to one message.
const MAX_MEDIA: usize = 10;

/// How many redirects a media download may follow.
const MAX_REDIRECTS: usize = 5;

/// How much of an API answer is read (message resources and errors are a few KiB).
const MAX_ANSWER: usize = 256 * 1024;

/// Twilio error codes `send` gives a meaning of its own, with that meaning.
const SEND_CODES: &[(i64, &str)] = &[
    (21610, "recipient opted out (STOP)"),
    (21614, "number is not mobile"),
    (21211, "not a valid phone number for twilio"),
    (
        21408,
        "sending to this country or region is not enabled on the twilio account",
    ),
    (
        21612,
        "this number cannot be reached from the gateway's number",
    ),
];

/// What common delivery error codes of status callbacks mean.
const DELIVERY_CODES: &[(&str, &str)] = &[
    ("30003", "unreachable handset"),
    ("30004", "message blocked"),
    ("30005", "unknown destination"),
    ("30006", "landline or unreachable carrier"),
    ("30007", "filtered by the carrier"),
    ("30008", "unknown error"),
    ("21610", "recipient opted out (STOP)"),
];

type HmacSha1 = Hmac<Sha1>;

pub struct Twilio {
    name: String,
    account_sid: String,
    auth_token: String,
    /// Without a trailing slash.
    api_base: String,
    /// The origin of `api_base`: the only one that gets the credentials.
    api_origin: Origin,
    /// Where Twilio posts delivery reports (`StatusCallback`).
    status_url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Twilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twilio")
            .field("name", &self.name)
            .field("account_sid", &self.account_sid)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl Twilio {
    pub fn new(cfg: &ProviderConfig, ctx: &Context) -> Result<Self, String> {
        let account_sid = need(&cfg.account_sid, "account_sid")?.to_owned();
        // It goes into the URL path: letters and digits only (Twilio's are `AC` + 32 hex).
        if !account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("account_sid must be letters and digits (AC…)".into());
        }
        let auth_token = need(&cfg.auth_token, "auth_token")?.to_owned();
        let api_base = cfg
            .api_base
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_API_BASE)
            .trim_end_matches('/')
            .to_owned();
        let parsed = reqwest::Url::parse(&api_base)
            .map_err(|e| format!("api_base is not a usable URL: {e}"))?;
        let api_origin = Origin::of(&parsed).ok_or("api_base must be an http or https URL")?;
        Ok(Twilio {
            name: cfg.name.clone(),
            account_sid,
            auth_token,
            api_base,
            api_origin,
            status_url: ctx.hook_url(&cfg.name, Hook::Status),
            http: ctx.http.clone(),
        })
    }

    fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.api_base, self.account_sid
        )
    }

    /// The `X-Twilio-Signature` Twilio computes for `url` and these POST parameters.
    fn signature(&self, url: &str, params: &[(String, String)]) -> Option<String> {
        signature(&self.auth_token, url, params)
    }
}

#[async_trait]
impl Provider for Twilio {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> Kind {
        Kind::Twilio
    }

    fn supports_media(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), BridgeError> {
        let url = format!("{}?PageSize=1", self.messages_url());
        let resp = self
            .http
            .get(url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .send()
            .await
            .map_err(|e| unreachable("twilio", &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_answer(resp).await;
        Err(check_error(status.as_u16(), &body, &self.auth_token))
    }

    async fn send(&self, text: &OutText) -> Result<Accepted, BridgeError> {
        let mut form: Vec<(&str, &str)> = vec![("To", &text.to), ("From", &text.from)];
        // An MMS may carry no text; Twilio wants Body or MediaUrl.
        if !text.body.is_empty() || text.media.is_empty() {
            form.push(("Body", &text.body));
        }
        for link in &text.media {
            form.push(("MediaUrl", link));
        }
        form.push(("StatusCallback", &self.status_url));
        let resp = self
            .http
            .post(self.messages_url())
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable("twilio", &e))?;
        let status = resp.status();
        let body = read_answer(resp).await;
        if !status.is_success() {
            return Err(send_error(status.as_u16(), &body, &self.auth_token));
        }
        let sid = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("sid").and_then(Value::as_str).map(str::to_owned))
            .filter(|s| !s.is_empty());
        Ok(match sid {
            Some(message_id) => Accepted {
                message_id,
                reports: true,
            },
            None => {
                // Taken, but no id to match reports against: say so rather than resend.
                tracing::warn!(provider = %self.name, %status, "twilio accepted a text without a message sid");
                Accepted {
                    message_id: String::new(),
                    reports: false,
                }
            }
        })
    }

    fn verify(&self, _hook: Hook, req: &Request<'_>) -> Result<(), HookError> {
        let given = req
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| HookError::Forbidden("missing X-Twilio-Signature".into()))?;
        let params = signed_params(req)
            .ok_or_else(|| HookError::Forbidden(format!("unexpected method {}", req.method)))?;
        // Twilio may or may not have written the default port into the URL it signed.
        for url in port_variants(req.url) {
            if let Some(expected) = self.signature(&url, &params)
                && same(expected.as_bytes(), given.as_bytes())
            {
                return Ok(());
            }
        }
        Err(HookError::Forbidden(
            "X-Twilio-Signature does not match".into(),
        ))
    }

    fn parse(&self, hook: Hook, req: &Request<'_>) -> Result<Vec<Event>, HookError> {
        let params = request_params(req)?;
        let event = match hook {
            Hook::Inbound => Event::Inbound(parse_inbound(&params)?),
            Hook::Status => Event::Status(parse_status(&params)?),
        };
        Ok(vec![event])
    }

    fn ack(&self, _hook: Hook) -> Ack {
        Ack {
            status: axum::http::StatusCode::OK,
            content_type: "text/xml",
            body: EMPTY_TWIML,
        }
    }

    async fn fetch_media(&self, media: &MediaRef, max_bytes: usize) -> Result<Media, BridgeError> {
        let mut url = reqwest::Url::parse(&media.url)
            .map_err(|_| BridgeError::permanent("twilio: unusable media link"))?;
        let mut hops = 0;
        let resp = loop {
            let origin = Origin::of(&url)
                .ok_or_else(|| BridgeError::permanent("twilio: unusable media link"))?;
            let mut request = self.http.get(url.clone());
            // The credentials go to Twilio's API only. Should the client follow redirects
            // itself, reqwest drops `Authorization` when host, port or scheme change.
            if origin == self.api_origin {
                request = request.basic_auth(&self.account_sid, Some(&self.auth_token));
            }
            let resp = request
                .send()
                .await
                .map_err(|e| unreachable("twilio", &e))?;
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok());
            match location {
                Some(location) if resp.status().is_redirection() => {
                    hops += 1;
                    if hops > MAX_REDIRECTS {
                        return Err(BridgeError::permanent("twilio: too many media redirects"));
                    }
                    url = url
                        .join(location)
                        .map_err(|_| BridgeError::permanent("twilio: unusable media redirect"))?;
                }
                _ => break resp,
            }
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(BridgeError::new(
                status_kind(status),
                format!("twilio: media download failed (http {})", status.as_u16()),
            ));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .or_else(|| media.content_type.clone())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let bytes = read_limited(resp, max_bytes).await?;
        Ok(Media {
            bytes,
            content_type,
        })
    }
}

/// Scheme, host and port of a URL: who may see the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &reqwest::Url) -> Option<Origin> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        Some(Origin {
            scheme: scheme.to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }
}

/// base64(HMAC-SHA1(token, url + key1 + value1 + key2 + value2 …)), the parameters sorted
/// by key, then by value (repeated keys).
fn signature(token: &str, url: &str, params: &[(String, String)]) -> Option<String> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = HmacSha1::new_from_slice(token.as_bytes()).ok()?;
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    Some(B64.encode(mac.finalize().into_bytes()))
}

/// The parameters the signature covers: a POST's form body; none for a GET (its query is
/// part of the URL). `None` for other methods.
fn signed_params(req: &Request<'_>) -> Option<Vec<(String, String)>> {
    if req.method.eq_ignore_ascii_case("POST") {
        Some(form_pairs(req.body))
    } else if req.method.eq_ignore_ascii_case("GET") {
        Some(Vec::new())
    } else {
        None
    }
}

/// The webhook's parameters: a POST's form body, a GET's query.
fn request_params(req: &Request<'_>) -> Result<Vec<(String, String)>, HookError> {
    if req.method.eq_ignore_ascii_case("POST") {
        Ok(form_pairs(req.body))
    } else if req.method.eq_ignore_ascii_case("GET") {
        Ok(form_pairs(req.query.as_bytes()))
    } else {
        Err(HookError::BadRequest(format!(
            "unexpected method {}",
            req.method
        )))
    }
}

/// `url` as given, and with the scheme's default port added (when it has none) or removed
/// (when it has it), the two spellings Twilio's own validators accept.
fn port_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_at = authority.rfind('@').map_or(0, |i| i + 1);
    let (userinfo, host_port) = authority.split_at(host_at);
    let colon = host_port
        .rfind(':')
        .filter(|&i| host_port.rfind(']').is_none_or(|j| i > j));
    match colon {
        Some(i) if &host_port[i + 1..] == default => {
            out.push(format!("{scheme}://{userinfo}{}{tail}", &host_port[..i]));
        }
        Some(_) => {}
        None => out.push(format!("{scheme}://{userinfo}{host_port}:{default}{tail}")),
    }
    out
}

/// The first value of `key`.
fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The first non-empty value of `key`.
fn non_empty<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    param(params, key).map(str::trim).filter(|v| !v.is_empty())
}

fn required<'a>(params: &'a [(String, String)], key: &str) -> Result<&'a str, HookError> {
    non_empty(params, key).ok_or_else(|| HookError::BadRequest(format!("missing {key}")))
}

/// `MessageSid`, or the older `SmsSid` / `SmsMessageSid`.
fn message_sid(params: &[(String, String)]) -> Result<&str, HookError> {
    non_empty(params, "MessageSid")
        .or_else(|| non_empty(params, "SmsSid"))
        .or_else(|| non_empty(params, "SmsMessageSid"))
        .ok_or_else(|| HookError::BadRequest("missing MessageSid".into()))
}

fn parse_inbound(params: &[(String, String)]) -> Result<InboundText, HookError> {
    let message_id = message_sid(params)?.to_owned();
    let from = required(params, "From")?.to_owned();
    let to = required(params, "To")?.to_owned();
    let text = param(params, "Body").unwrap_or_default().to_owned();
    let count = match non_empty(params, "NumMedia") {
        None => 0,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| HookError::BadRequest("NumMedia is not a number".into()))?,
    };
    let media = (0..count.min(MAX_MEDIA))
        .filter_map(|i| {
            let url = non_empty(params, &format!("MediaUrl{i}"))?;
            Some(MediaRef {
                url: url.to_owned(),
                content_type: non_empty(params, &format!("MediaContentType{i}")).map(str::to_owned),
            })
        })
        .collect();
    Ok(InboundText {
        message_id,
        from,
        to,
        text,
        media,
        part: None,
    })
}

fn parse_status(params: &[(String, String)]) -> Result<StatusReport, HookError> {
    let message_id = message_sid(params)?.to_owned();
    let status = non_empty(params, "MessageStatus")
        .or_else(|| non_empty(params, "SmsStatus"))
        .ok_or_else(|| HookError::BadRequest("missing MessageStatus".into()))?;
    let delivery = delivery(
        status,
        non_empty(params, "ErrorCode"),
        non_empty(params, "ErrorMessage"),
    );
    Ok(StatusReport {
        message_id,
        from: non_empty(params, "From").map(str::to_owned),
        delivery,
    })
}

/// What a `MessageStatus` means for the user. `read` (WhatsApp) comes after delivery;
/// `canceled` (a scheduled message) will not arrive either.
fn delivery(status: &str, code: Option<&str>, message: Option<&str>) -> Delivery {
    let status = status.to_ascii_lowercase();
    match status.as_str() {
        "delivered" | "read" => Delivery::Delivered,
        "undelivered" | "failed" | "canceled" => {
            let meaning = code.and_then(|c| {
                DELIVERY_CODES
                    .iter()
                    .find(|(k, _)| *k == c)
                    .map(|(_, m)| (*m).to_owned())
                    .or_else(|| message.map(tidy))
            });
            Delivery::Failed(match (code, meaning) {
                (Some(c), Some(m)) => format!("twilio: {status} (error {c}: {m})"),
                (Some(c), None) => format!("twilio: {status} (error {c})"),
                (None, _) => format!("twilio: {status}"),
            })
        }
        _ => Delivery::Pending,
    }
}

/// Reads an API answer, at most [`MAX_ANSWER`] bytes of it (the rest is dropped).
async fn read_answer(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ANSWER - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ANSWER {
            break;
        }
    }
    out
}

/// Twilio's error `{code, message, more_info, status}`, or Prism's / another proxy's
/// `application/problem+json` `{title, detail, validation: [{message}]}`.
struct ApiError {
    code: Option<i64>,
    reason: Option<String>,
}

impl ApiError {
    fn read(body: &[u8], token: &str) -> ApiError {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return ApiError {
                code: None,
                reason: None,
            };
        };
        let code = match v.get("code") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let text = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let reason = if let Some(message) = text("message") {
            Some(message.to_owned())
        } else if let Some(title) = text("title") {
            let details: Vec<&str> = v
                .get("validation")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|x| x.get("message").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            Some(if !details.is_empty() {
                format!("{title}: {}", details.join("; "))
            } else if let Some(detail) = text("detail") {
                format!("{title}: {detail}")
            } else {
                title.to_owned()
            })
        } else {
            None
        };
        ApiError {
            code,
            reason: reason.map(|r| tidy(&r.replace(token, "…"))),
        }
    }

    /// `twilio: {reason} (code {code})`, or what there is of it.
    fn describe(&self, status: u16) -> String {
        match (&self.reason, self.code) {
            (Some(r), Some(c)) => format!("twilio: {r} (code {c})"),
            (Some(r), None) => format!("twilio: {r} (http {status})"),
            (None, Some(c)) => format!("twilio: error {c} (http {status})"),
            (None, None) => format!("twilio: http {status}"),
        }
    }
}

/// Maps a refused send to an error kind and a text the user may see.
fn send_error(status: u16, body: &[u8], token: &str) -> BridgeError {
    let err = ApiError::read(body, token);
    let kind = status_kind(reqwest_status(status));
    if kind == ErrorKind::Transient {
        return BridgeError::transient(err.describe(status));
    }
    if let Some(&(_, meaning)) = err
        .code
        .and_then(|c| SEND_CODES.iter().find(|(k, _)| *k == c))
    {
        return BridgeError::new(ErrorKind::NotAcceptable, meaning);
    }
    if kind == ErrorKind::NotAuthorized {
        return BridgeError::new(ErrorKind::NotAuthorized, "twilio refused the credentials");
    }
    BridgeError::new(kind, err.describe(status))
}

/// Maps a failed credentials check.
fn check_error(status: u16, body: &[u8], token: &str) -> BridgeError {
    let kind = status_kind(reqwest_status(status));
    if kind == ErrorKind::NotAuthorized {
        return BridgeError::new(ErrorKind::NotAuthorized, "twilio refused the credentials");
    }
    BridgeError::new(kind, ApiError::read(body, token).describe(status))
}

fn reqwest_status(status: u16) -> reqwest::StatusCode {
    reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR)
}

/// A provider's reason made fit for the user: one line, no trailing period, lowercase
/// start (unless it is an acronym), bounded length.
fn tidy(reason: &str) -> String {
    let one_line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut s = one_line.trim().trim_end_matches('.').trim_end().to_owned();
    let mut chars = s.chars();
    if let Some(first) = chars.next()
        && first.is_uppercase()
        && !chars.clone().next().is_some_and(char::is_uppercase)
    {
        let lowered: String = first.to_lowercase().chain(chars).collect();
        s = lowered;
    }
    if s.chars().count() > 300 {
        s = s.chars().take(300).collect::<String>() + "…";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    /// The example of Twilio's security documentation, as twilio-python's
    /// `tests/unit/test_request_validator.py` (and twilio-php's `docs/usage/validation.rst`)
    /// carry it.
    const DOC_TOKEN: &str = "12345";
    const DOC_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const DOC_SIGNATURE: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    fn doc_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn doc_body() -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(doc_params())
            .finish()
    }

    fn provider(token: &str) -> Twilio {
        let cfg = ProviderConfig {
            name: "tw".into(),
            kind: Kind::Twilio,
            api_base: None,
            account_sid: Some("AC0123456789abcdef0123456789abcdef".into()),
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
        };
        let ctx = Context {
            public_url: "https://gw.example.org".into(),
            http: reqwest::Client::new(),
        };
        Twilio::new(&cfg, &ctx).expect("valid config")
    }

    fn headers(signature: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        if let Some(s) = signature {
            h.insert(SIGNATURE_HEADER, HeaderValue::from_str(s).expect("header"));
        }
        h
    }

    fn post<'a>(url: &'a str, headers: &'a HeaderMap, body: &'a [u8]) -> Request<'a> {
        Request {
            method: "POST",
            url,
            query: url.split_once('?').map_or("", |(_, q)| q),
            headers,
            body,
            now: 1_700_000_000,
        }
    }

    #[test]
    fn documented_signature() {
        assert_eq!(
            signature(DOC_TOKEN, DOC_URL, &doc_params()).as_deref(),
            Some(DOC_SIGNATURE)
        );
        let tw = provider(DOC_TOKEN);
        let h = headers(Some(DOC_SIGNATURE));
        let body = doc_body();
        assert_eq!(
            tw.verify(Hook::Inbound, &post(DOC_URL, &h, body.as_bytes())),
            Ok(())
        );
        // The same example with the caller +12349013030, as a third-party implementation
        // citing <https://www.twilio.com/docs/usage/security#validating-requests> gives it
        // (gist ryanwinchester/ab49855e9acb7352507b8fa92ffe69d0).
        let params: Vec<(String, String)> = doc_params()
            .into_iter()
            .map(|(k, v)| (k, v.replace("+14158675309", "+12349013030")))
            .collect();
        assert_eq!(
            signature(DOC_TOKEN, DOC_URL, &params).as_deref(),
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        );
    }

    #[test]
    fn documented_signature_with_repeated_keys() {
        // twilio-python: test_compute_signature_duplicate_multi_dict / _query_dict.
        let body = b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234";
        assert_eq!(
            signature(DOC_TOKEN, DOC_URL, &form_pairs(body)).as_deref(),
            Some("IK+Dwps556ElfBT0I3Rgjkr1wJU=")
        );
        let tw = provider(DOC_TOKEN);
        let h = headers(Some("IK+Dwps556ElfBT0I3Rgjkr1wJU="));
        assert_eq!(tw.verify(Hook::Status, &post(DOC_URL, &h, body)), Ok(()));
    }

    #[test]
    fn documented_url_only_signature() {
        // twilio-python: test_validation_of_body_succeeds. A JSON request is signed over
        // its URL (which carries bodySHA256) alone, as a GET is.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2\
                   &bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        assert_eq!(
            signature(DOC_TOKEN, url, &[]).as_deref(),
            Some("a9nBmqA0ju/hNViExpshrM61xv4=")
        );
        let tw = provider(DOC_TOKEN);
        let h = headers(Some("a9nBmqA0ju/hNViExpshrM61xv4="));
        let get = Request {
            method: "GET",
            url,
            query: url.split_once('?').map_or("", |(_, q)| q),
            headers: &h,
            body: b"",
            now: 0,
        };
        assert_eq!(tw.verify(Hook::Status, &get), Ok(()));
        // The same signature does not cover a POST body.
        assert!(matches!(
            tw.verify(Hook::Status, &post(url, &h, b"From=%2B1")),
            Err(HookError::Forbidden(_))
        ));
    }

    #[test]
    fn documented_signatures_with_default_ports() {
        // twilio-python: test_validation_adds_port_on_https / _on_http (signed with the
        // default port written out) and test_validation_removes_port_on_http (port 1234).
        let tw = provider(DOC_TOKEN);
        let body = doc_body();
        let cases = [
            (DOC_URL.to_owned(), "kvajT1Ptam85bY51eRf/AJRuM3w="),
            (
                DOC_URL.replace("https", "http"),
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            ),
            (
                DOC_URL
                    .replace("https", "http")
                    .replace(".com", ".com:1234"),
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            ),
            // Signed without the port, called with it.
            (DOC_URL.replace(".com", ".com:443"), DOC_SIGNATURE),
        ];
        for (url, sig) in cases {
            let h = headers(Some(sig));
            assert_eq!(
                tw.verify(Hook::Inbound, &post(&url, &h, body.as_bytes())),
                Ok(()),
                "{url}"
            );
        }
        // A port other than the default is not dropped.
        let h = headers(Some(DOC_SIGNATURE));
        let url = DOC_URL.replace(".com", ".com:1234");
        assert!(
            tw.verify(Hook::Inbound, &post(&url, &h, body.as_bytes()))
                .is_err()
        );
    }

    #[test]
    fn port_spellings() {
        assert_eq!(
            port_variants("https://a.example/x?y=1"),
            ["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
        );
        assert_eq!(
            port_variants("http://u:p@a.example:80"),
            ["http://u:p@a.example:80", "http://u:p@a.example"]
        );
        assert_eq!(
            port_variants("https://[::1]:8443/x"),
            ["https://[::1]:8443/x"]
        );
        assert_eq!(
            port_variants("https://[::1]/x"),
            ["https://[::1]/x", "https://[::1]:443/x"]
        );
        assert_eq!(port_variants("nonsense"), ["nonsense"]);
    }

    #[test]
    fn mutated_parameter_is_forbidden() {
        let tw = provider(DOC_TOKEN);
        let h = headers(Some(DOC_SIGNATURE));
        let body = doc_body().replace("1234", "1235");
        assert!(matches!(
            tw.verify(Hook::Inbound, &post(DOC_URL, &h, body.as_bytes())),
            Err(HookError::Forbidden(_))
        ));
        // An added parameter.
        let body = format!("{}&Body=hi", doc_body());
        assert!(matches!(
            tw.verify(Hook::Inbound, &post(DOC_URL, &h, body.as_bytes())),
            Err(HookError::Forbidden(_))
        ));
    }

    #[test]
    fn missing_or_wrong_signature_is_forbidden() {
        let tw = provider(DOC_TOKEN);
        let body = doc_body();
        for sig in [
            None,
            Some(""),
            Some("not base64!"),
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8"),
        ] {
            let h = headers(sig);
            assert!(
                matches!(
                    tw.verify(Hook::Inbound, &post(DOC_URL, &h, body.as_bytes())),
                    Err(HookError::Forbidden(_))
                ),
                "{sig:?}"
            );
        }
        // The right signature under another token.
        let other = provider("54321");
        let h = headers(Some(DOC_SIGNATURE));
        assert!(
            other
                .verify(Hook::Inbound, &post(DOC_URL, &h, body.as_bytes()))
                .is_err()
        );
        // Another method.
        let put = Request {
            method: "PUT",
            ..post(DOC_URL, &h, body.as_bytes())
        };
        assert!(matches!(
            tw.verify(Hook::Inbound, &put),
            Err(HookError::Forbidden(_))
        ));
    }

    #[test]
    fn changed_url_is_forbidden() {
        let tw = provider(DOC_TOKEN);
        let h = headers(Some(DOC_SIGNATURE));
        let body = doc_body();
        for url in [
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            "https://mycompany.com/myapp.php?foo=1",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "https://evil.example/myapp.php?foo=1&bar=2",
            "https://mycompany.com/myapp.php?bar=2&foo=1",
        ] {
            assert!(
                matches!(
                    tw.verify(Hook::Inbound, &post(url, &h, body.as_bytes())),
                    Err(HookError::Forbidden(_))
                ),
                "{url}"
            );
        }
    }

    /// An inbound MMS as Twilio posts it (field set of its messaging webhook).
    const INBOUND_MMS: &str = "ToCountry=US&MediaContentType1=image%2Fpng&ToState=CA\
        &SmsMessageSid=MM0123456789abcdef0123456789abcdef&NumMedia=2&ToCity=SAN+FRANCISCO\
        &FromZip=94105&SmsSid=MM0123456789abcdef0123456789abcdef&FromState=CA\
        &SmsStatus=received&FromCity=SAN+FRANCISCO&Body=Look+at+these+%F0%9F%90%B1+%26+more\
        &FromCountry=US&To=%2B14155550100&MessagingServiceSid=MG0123456789abcdef0123456789abcdef\
        &ToZip=94105&NumSegments=1&ReferralNumMedia=0\
        &MessageSid=MM0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef\
        &From=%2B14155550199\
        &MediaUrl0=https%3A%2F%2Fapi.twilio.com%2F2010-04-01%2FAccounts%2FAC0123456789abcdef0123456789abcdef%2FMessages%2FMM0123456789abcdef0123456789abcdef%2FMedia%2FME00000000000000000000000000000000\
        &MediaContentType0=image%2Fjpeg\
        &MediaUrl1=https%3A%2F%2Fapi.twilio.com%2F2010-04-01%2FAccounts%2FAC0123456789abcdef0123456789abcdef%2FMessages%2FMM0123456789abcdef0123456789abcdef%2FMedia%2FME11111111111111111111111111111111\
        &ApiVersion=2010-04-01";

    #[test]
    fn inbound_mms_is_read_and_verified() {
        let tw = provider("0123456789abcdef0123456789abcdef");
        let url = "https://gw.example.org/sms/tw/inbound";
        let sig = signature(
            "0123456789abcdef0123456789abcdef",
            url,
            &form_pairs(INBOUND_MMS.as_bytes()),
        )
        .expect("signature");
        let h = headers(Some(&sig));
        let req = post(url, &h, INBOUND_MMS.as_bytes());
        assert_eq!(tw.verify(Hook::Inbound, &req), Ok(()));
        let events = tw.parse(Hook::Inbound, &req).expect("parse");
        let media = |n: &str| {
            format!(
                "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef\
                 /Messages/MM0123456789abcdef0123456789abcdef/Media/ME{}",
                n.repeat(32)
            )
        };
        assert_eq!(
            events,
            vec![Event::Inbound(InboundText {
                message_id: "MM0123456789abcdef0123456789abcdef".into(),
                from: "+14155550199".into(),
                to: "+14155550100".into(),
                text: "Look at these 🐱 & more".into(),
                media: vec![
                    MediaRef {
                        url: media("0"),
                        content_type: Some("image/jpeg".into()),
                    },
                    MediaRef {
                        url: media("1"),
                        content_type: Some("image/png".into()),
                    },
                ],
                part: None,
            })]
        );
    }

    #[test]
    fn inbound_needs_sid_from_and_to() {
        let tw = provider("t");
        let h = headers(None);
        for body in [
            "From=%2B1&To=%2B2&Body=x",
            "MessageSid=SM1&To=%2B2&Body=x",
            "MessageSid=SM1&From=%2B1&Body=x",
            "MessageSid=SM1&From=%2B1&To=%2B2&NumMedia=many",
        ] {
            let req = post("https://gw.example.org/sms/tw/inbound", &h, body.as_bytes());
            assert!(
                matches!(tw.parse(Hook::Inbound, &req), Err(HookError::BadRequest(_))),
                "{body}"
            );
        }
        // SmsSid is enough, and a text without Body is empty.
        let req = post(
            "https://gw.example.org/sms/tw/inbound",
            &h,
            b"SmsSid=SM1&From=%2B1&To=%2B2",
        );
        let Ok(events) = tw.parse(Hook::Inbound, &req) else {
            panic!("SmsSid not read");
        };
        assert!(
            matches!(&events[..], [Event::Inbound(t)] if t.message_id == "SM1" && t.text.is_empty())
        );
    }

    #[test]
    fn inbound_by_get_reads_the_query() {
        let tw = provider("t");
        let h = headers(None);
        let url = "https://gw.example.org/sms/tw/inbound?MessageSid=SM9&From=%2B1&To=%2B2&Body=hey";
        let req = Request {
            method: "GET",
            body: b"",
            ..post(url, &h, b"")
        };
        let events = tw.parse(Hook::Inbound, &req).expect("parse");
        assert!(matches!(&events[..], [Event::Inbound(t)] if t.text == "hey" && t.from == "+1"));
    }

    fn status_of(body: &str) -> Result<Vec<Event>, HookError> {
        let tw = provider("t");
        let h = headers(None);
        tw.parse(
            Hook::Status,
            &post("https://gw.example.org/sms/tw/status", &h, body.as_bytes()),
        )
    }

    fn report(sid: &str, delivery: Delivery) -> Vec<Event> {
        vec![Event::Status(StatusReport {
            message_id: sid.into(),
            from: Some("+14155550100".into()),
            delivery,
        })]
    }

    #[test]
    fn status_mapping() {
        let base = "MessageSid=SM1&AccountSid=AC1&From=%2B14155550100&To=%2B14155550199\
                    &ApiVersion=2010-04-01";
        let cases = [
            (
                "&MessageStatus=delivered&SmsStatus=delivered",
                Delivery::Delivered,
            ),
            ("&MessageStatus=queued", Delivery::Pending),
            ("&MessageStatus=sent", Delivery::Pending),
            ("&MessageStatus=accepted", Delivery::Pending),
            (
                "&MessageStatus=undelivered&ErrorCode=30003",
                Delivery::Failed("twilio: undelivered (error 30003: unreachable handset)".into()),
            ),
            (
                "&MessageStatus=undelivered&ErrorCode=30004",
                Delivery::Failed("twilio: undelivered (error 30004: message blocked)".into()),
            ),
            (
                "&MessageStatus=failed&ErrorCode=30005",
                Delivery::Failed("twilio: failed (error 30005: unknown destination)".into()),
            ),
            (
                "&MessageStatus=undelivered&ErrorCode=30006",
                Delivery::Failed(
                    "twilio: undelivered (error 30006: landline or unreachable carrier)".into(),
                ),
            ),
            (
                "&MessageStatus=undelivered&ErrorCode=30007",
                Delivery::Failed(
                    "twilio: undelivered (error 30007: filtered by the carrier)".into(),
                ),
            ),
            (
                "&MessageStatus=failed&ErrorCode=30999&ErrorMessage=Something+odd.",
                Delivery::Failed("twilio: failed (error 30999: something odd)".into()),
            ),
            (
                "&MessageStatus=failed&ErrorCode=30998",
                Delivery::Failed("twilio: failed (error 30998)".into()),
            ),
            (
                "&MessageStatus=failed",
                Delivery::Failed("twilio: failed".into()),
            ),
        ];
        for (extra, delivery) in cases {
            assert_eq!(
                status_of(&format!("{base}{extra}")),
                Ok(report("SM1", delivery)),
                "{extra}"
            );
        }
        assert!(matches!(
            status_of("AccountSid=AC1&MessageStatus=sent"),
            Err(HookError::BadRequest(_))
        ));
        assert!(matches!(
            status_of("MessageSid=SM1&From=%2B1"),
            Err(HookError::BadRequest(_))
        ));
    }

    #[test]
    fn ack_is_empty_twiml() {
        let tw = provider("t");
        for hook in [Hook::Inbound, Hook::Status] {
            let ack = tw.ack(hook);
            assert_eq!(ack.status, axum::http::StatusCode::OK);
            assert_eq!(ack.content_type, "text/xml");
            assert_eq!(
                ack.body,
                r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
            );
        }
        assert!(tw.supports_media());
    }

    #[test]
    fn send_errors() {
        let token = "tok3n";
        let body = |code: i64, msg: &str| {
            serde_json::json!({
                "code": code,
                "message": msg,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": 400,
            })
            .to_string()
        };
        let e = send_error(
            400,
            body(21610, "Attempt to send to unsubscribed recipient").as_bytes(),
            token,
        );
        assert_eq!(
            (e.kind, e.text.as_str()),
            (ErrorKind::NotAcceptable, "recipient opted out (STOP)")
        );
        let e = send_error(
            400,
            body(21614, "'To' number is not a valid mobile number").as_bytes(),
            token,
        );
        assert_eq!(
            (e.kind, e.text.as_str()),
            (ErrorKind::NotAcceptable, "number is not mobile")
        );
        for code in [21211, 21408, 21612] {
            assert_eq!(
                send_error(400, body(code, "x").as_bytes(), token).kind,
                ErrorKind::NotAcceptable
            );
        }
        let e = send_error(400, body(21606, "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination.").as_bytes(), token);
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert_eq!(
            e.text,
            "twilio: the 'From' phone number provided is not a valid message-capable Twilio \
             phone number for this destination (code 21606)"
        );
        let e = send_error(401, body(20003, "Authenticate").as_bytes(), token);
        assert_eq!(
            (e.kind, e.text.as_str()),
            (ErrorKind::NotAuthorized, "twilio refused the credentials")
        );
        assert_eq!(send_error(403, b"", token).kind, ErrorKind::NotAuthorized);
        let e = send_error(429, body(20429, "Too Many Requests").as_bytes(), token);
        assert_eq!(
            (e.kind, e.text.as_str()),
            (
                ErrorKind::Transient,
                "twilio: too Many Requests (code 20429)"
            )
        );
        assert_eq!(send_error(503, b"<html>", token).kind, ErrorKind::Transient);
        assert_eq!(send_error(500, b"", token).text, "twilio: http 500");
        // The token never shows.
        let e = send_error(400, body(21999, "bad token tok3n given").as_bytes(), token);
        assert!(!e.text.contains(token), "{}", e.text);
        // Prism's problem+json.
        let prism = serde_json::json!({
            "type": "https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY",
            "title": "Invalid request",
            "status": 422,
            "detail": "Your request is not valid",
            "validation": [{"message": "Request body must have required property 'To'"}],
        });
        let e = send_error(422, prism.to_string().as_bytes(), token);
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert_eq!(
            e.text,
            "twilio: invalid request: Request body must have required property 'To' (http 422)"
        );
    }

    #[test]
    fn tidy_reasons() {
        assert_eq!(tidy("The thing failed."), "the thing failed");
        assert_eq!(tidy("SMS failed\n"), "SMS failed");
        assert_eq!(tidy("É bad"), "é bad");
        assert_eq!(tidy(&"x".repeat(400)).chars().count(), 301);
    }

    #[test]
    fn config() {
        let mut cfg = ProviderConfig {
            name: "tw".into(),
            kind: Kind::Twilio,
            api_base: Some("http://127.0.0.1:9/".into()),
            account_sid: Some("AC1".into()),
            auth_token: Some("t".into()),
            api_key: None,
            public_key: None,
            messaging_profile_id: None,
            api_secret: None,
            signature_secret: None,
            sendsms_url: None,
            username: None,
            password: None,
            inbound_token: None,
        };
        let ctx = Context {
            public_url: "https://gw.example.org/x".into(),
            http: reqwest::Client::new(),
        };
        let tw = Twilio::new(&cfg, &ctx).expect("config");
        assert_eq!(tw.api_base, "http://127.0.0.1:9");
        assert_eq!(tw.status_url, "https://gw.example.org/x/sms/tw/status");
        assert!(!format!("{tw:?}").contains("auth_token"));
        cfg.api_base = None;
        assert_eq!(
            Twilio::new(&cfg, &ctx).expect("config").api_base,
            DEFAULT_API_BASE
        );
        cfg.account_sid = Some("AC1/../x".into());
        assert!(Twilio::new(&cfg, &ctx).is_err());
        cfg.account_sid = None;
        assert_eq!(
            Twilio::new(&cfg, &ctx).err().as_deref(),
            Some("missing account_sid")
        );
        cfg.account_sid = Some("AC1".into());
        cfg.auth_token = Some(String::new());
        assert_eq!(
            Twilio::new(&cfg, &ctx).err().as_deref(),
            Some("missing auth_token")
        );
    }
}
