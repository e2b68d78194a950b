//! One interface over the SMS providers ferry speaks: send a text, check the credentials,
//! verify a webhook against its raw request, read inbound texts and delivery reports out
//! of it, and give the HTTP answer the provider expects. Each provider lives in its own
//! module; [`build`] picks one from its configuration.

pub mod kannel;
pub mod telnyx;
pub mod twilio;
pub mod vonage;

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use ferry_bridge_api::BridgeError;

/// Which HTTP API a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Twilio,
    Telnyx,
    Vonage,
    Kannel,
}

/// One `[[sms.provider]]`, as the core read it. Only the keys of its kind are set; secrets
/// are already resolved (`env:`/`file:`). `api_base` `None` means the public endpoint.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: Kind,
    pub api_base: Option<String>,
    // twilio
    pub account_sid: Option<String>,
    pub auth_token: Option<String>,
    // telnyx
    pub api_key: Option<String>,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: Option<String>,
    pub messaging_profile_id: Option<String>,
    // vonage (api_key above too)
    pub api_secret: Option<String>,
    pub signature_secret: Option<String>,
    // kannel
    pub sendsms_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub inbound_token: Option<String>,
}

/// What every provider needs from the gateway around it.
#[derive(Clone, Debug)]
pub struct Context {
    /// `[http] public_url` without a trailing slash (it may carry a path prefix): how the
    /// provider reaches ferry. Webhook URLs are `{public_url}/sms/{name}/inbound|status`.
    pub public_url: String,
    /// The HTTP client for calls to the provider (timeouts set).
    pub http: reqwest::Client,
}

impl Context {
    /// `{public_url}/sms/{provider}/{hook}` — where the provider's webhook of that kind goes.
    pub fn hook_url(&self, provider: &str, hook: Hook) -> String {
        format!("{}/sms/{provider}/{}", self.public_url, hook.as_str())
    }
}

/// A text to hand to the provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutText {
    /// The gateway's number (E.164, `+…`) it goes out from.
    pub from: String,
    /// The recipient: E.164 (`+…`) or a short code (digits only).
    pub to: String,
    pub body: String,
    /// Media links to send as MMS where the provider can.
    pub media: Vec<String>,
    /// ferry's own reference for this text (unique, `[A-Za-z0-9-]`), for providers whose
    /// delivery reports can carry it (Kannel's `dlr-url`).
    pub reference: String,
}

/// The provider took a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The id later delivery reports name ([`StatusReport::message_id`]).
    pub message_id: String,
    /// True when a delivery report will follow; false when acceptance is all we learn.
    pub reports: bool,
}

/// Which webhook a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Inbound,
    Status,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Inbound => "inbound",
            Hook::Status => "status",
        }
    }
}

/// A webhook request as it arrived, before anything was parsed.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The URL the provider called, as it sees it: `{public_url}/sms/{name}/{hook}`
    /// followed by `?query` when there is one. This is what Twilio signs.
    pub url: &'a str,
    /// The raw query string (without `?`), possibly empty.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The raw body.
    pub body: &'a [u8],
    /// Now, in unix seconds (for signature windows).
    pub now: i64,
}

impl Request<'_> {
    /// The `Content-Type` media type, lowercased, without parameters.
    pub fn content_type(&self) -> String {
        self.headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// Why a webhook was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The signature (or token) is missing, wrong, or outside its time window: 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Signed correctly but not something we can read: 400.
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// A media item of an inbound MMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRef {
    pub url: String,
    pub content_type: Option<String>,
}

/// A part of a long inbound text that arrives in pieces (Vonage `concat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The reference shared by all parts of one text.
    pub reference: String,
    /// 1-based.
    pub index: u32,
    pub total: u32,
}

/// An inbound text (or one part of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundText {
    /// The provider's id for this text (for a part: this part's id).
    pub message_id: String,
    /// The sender as the provider wrote it (E.164 with or without `+`, or a short code).
    pub from: String,
    /// The gateway number it was sent to, as the provider wrote it.
    pub to: String,
    pub text: String,
    pub media: Vec<MediaRef>,
    pub part: Option<Part>,
}

/// What a delivery report says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// On the handset.
    Delivered,
    /// Will not arrive; the provider's reason.
    Failed(String),
    /// Accepted, queued, sent to the carrier… nothing to tell the user yet.
    Pending,
}

/// A delivery report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// The id [`Accepted::message_id`] gave (for Kannel: ferry's reference).
    pub message_id: String,
    /// The gateway number the text went out from, as the provider wrote it, when the
    /// report says.
    pub from: Option<String>,
    pub delivery: Delivery,
}

/// What a verified webhook carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Inbound(InboundText),
    Status(StatusReport),
}

/// The HTTP answer a provider expects to a webhook it delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: &'static str,
}

impl Ack {
    /// 200 with an empty body.
    pub const EMPTY: Ack = Ack {
        status: StatusCode::OK,
        content_type: "text/plain",
        body: "",
    };
}

/// A fetched media item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// One SMS provider.
#[async_trait]
pub trait Provider: Send + Sync {
    /// `[[sms.provider]] name`: the webhook path segment.
    fn name(&self) -> &str;

    fn kind(&self) -> Kind;

    /// Whether the provider carries media (MMS); when not, links go in the text.
    fn supports_media(&self) -> bool;

    /// Checks the credentials with a harmless call. `NotAuthorized` when refused,
    /// `Transient` when the provider cannot be reached.
    async fn check(&self) -> Result<(), BridgeError>;

    /// Hands one text to the provider. Errors: `Transient` for 5xx, 429 and connection
    /// failures; `NotAcceptable` / `RecipientUnavailable` / `NotAuthorized` / `Permanent`
    /// with the provider's reason otherwise.
    async fn send(&self, text: &OutText) -> Result<Accepted, BridgeError>;

    /// Verifies the request's signature (or token) against the raw request. Nothing of the
    /// request may be trusted before this returns `Ok`.
    fn verify(&self, hook: Hook, req: &Request<'_>) -> Result<(), HookError>;

    /// Reads a verified request. An empty list is fine (an event ferry does not use).
    fn parse(&self, hook: Hook, req: &Request<'_>) -> Result<Vec<Event>, HookError>;

    /// The answer the provider expects once ferry has taken the webhook.
    fn ack(&self, hook: Hook) -> Ack {
        let _ = hook;
        Ack::EMPTY
    }

    /// Fetches an inbound media item, with the provider's credentials where it needs them.
    async fn fetch_media(&self, media: &MediaRef, max_bytes: usize) -> Result<Media, BridgeError>;
}

/// Builds the provider for `cfg`. Fails when a key its kind needs is missing or unusable.
pub fn build(cfg: &ProviderConfig, ctx: &Context) -> Result<Arc<dyn Provider>, String> {
    Ok(match cfg.kind {
        Kind::Twilio => Arc::new(twilio::Twilio::new(cfg, ctx)?),
        Kind::Telnyx => Arc::new(telnyx::Telnyx::new(cfg, ctx)?),
        Kind::Vonage => Arc::new(vonage::Vonage::new(cfg, ctx)?),
        Kind::Kannel => Arc::new(kannel::Kannel::new(cfg, ctx)?),
    })
}

/// The value of `key` in a config, or an error naming it.
pub(crate) fn need<'a>(v: &'a Option<String>, key: &str) -> Result<&'a str, String> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("missing {key}"))
}

/// Maps an HTTP status from a provider's API to an error kind: 401/403 → not authorized,
/// 429 and 5xx → transient, other 4xx → permanent.
pub(crate) fn status_kind(status: reqwest::StatusCode) -> ferry_bridge_api::ErrorKind {
    use ferry_bridge_api::ErrorKind;
    match status.as_u16() {
        401 | 403 => ErrorKind::NotAuthorized,
        408 | 429 => ErrorKind::Transient,
        s if s >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// A failed call to the provider (no answer): transient, without leaking the URL's secrets.
pub(crate) fn unreachable(provider: &str, e: &reqwest::Error) -> BridgeError {
    let why = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    BridgeError::transient(format!("{provider}: {why}"))
}

/// Reads a body up to `max` bytes; `ResourceConstraint` beyond.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BridgeError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BridgeError::transient(format!("media download failed: {}", short(&e))))?
    {
        if out.len() + chunk.len() > max {
            return Err(BridgeError::new(
                ferry_bridge_api::ErrorKind::ResourceConstraint,
                format!("media larger than {max} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn short(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else {
        "connection lost"
    }
}

/// Constant-time equality of two byte strings.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `application/x-www-form-urlencoded` pairs of a query or body, decoded.
pub(crate) fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
