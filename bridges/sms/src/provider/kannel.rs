//! Kannel: texts go out through smsbox's `sendsms` CGI (with a `dlr-url` back to ferry's
//! status hook), come in through an `sms-service` whose `get-url`/`post-url` points at
//! ferry's inbound hook. Both hooks carry the shared `inbound_token` as `?token=`; that is
//! all the authentication Kannel offers. Kannel carries no media.
//!
//! What 1.4.5 was seen to do (see `tests/kannel.rs` and `config/kannel.example.conf`):
//! - `sendsms` answers `202 0: Accepted for delivery` or `202 3: Queued for later
//!   delivery`; `403 Authorization failed for sendsms` for wrong credentials; `400 Missing
//!   receiver number, rejected` when `to` is missing (what `check` relies on).
//! - A `dlr-url` is itself a pattern: `%d` becomes the report type, `%%` a literal `%`, and
//!   any other `%x` may be an escape code, so the fixed part of ours has its `%` doubled.
//! - An inbound UCS-2 text reaches `%a`/`%b` (and a `post-url` body) as raw UTF-16BE bytes;
//!   `%C` (`charset`) / `%c` (`coding`) or the `Content-Type` charset say so.

use async_trait::async_trait;
use axum::http::HeaderMap;
use ferry_bridge_api::{BridgeError, ErrorKind};

use crate::segments::is_gsm7;

use super::{
    Accepted, Context, Delivery, Event, Hook, HookError, InboundText, Kind, Media, MediaRef,
    OutText, Provider, ProviderConfig, Request, StatusReport, need, same, status_kind, unreachable,
};

/// Kannel's delivery report types (`%d`), as bits of `dlr-mask`.
const DLR_DELIVERED: u32 = 1;
const DLR_UNDELIVERED: u32 = 2;
const DLR_BUFFERED: u32 = 4;
const DLR_SMSC_SUCCESS: u32 = 8;
const DLR_SMSC_FAIL: u32 = 16;
/// Every report: delivered, undelivered, buffered, accepted and rejected by the SMSC.
const DLR_MASK: u32 =
    DLR_DELIVERED | DLR_UNDELIVERED | DLR_BUFFERED | DLR_SMSC_SUCCESS | DLR_SMSC_FAIL;

/// How much of Kannel's answer goes into an error text.
const MAX_REASON: usize = 200;

pub struct Kannel {
    name: String,
    sendsms_url: reqwest::Url,
    username: String,
    password: String,
    inbound_token: String,
    /// `{public_url}/sms/{name}/status`, where the `dlr-url` points.
    status_hook: String,
    http: reqwest::Client,
}

impl Kannel {
    pub fn new(cfg: &ProviderConfig, ctx: &Context) -> Result<Self, String> {
        let url = need(&cfg.sendsms_url, "sendsms_url")?;
        let sendsms_url = reqwest::Url::parse(url)
            .map_err(|e| format!("sendsms_url {url:?} is not a URL: {e}"))?;
        if !matches!(sendsms_url.scheme(), "http" | "https") {
            return Err(format!("sendsms_url {url:?} is not an http(s) URL"));
        }
        Ok(Kannel {
            name: cfg.name.clone(),
            sendsms_url,
            username: need(&cfg.username, "username")?.to_owned(),
            password: need(&cfg.password, "password")?.to_owned(),
            inbound_token: need(&cfg.inbound_token, "inbound_token")?.to_owned(),
            status_hook: ctx.hook_url(&cfg.name, Hook::Status),
            http: ctx.http.clone(),
        })
    }

    /// The `dlr-url` for `text`: ferry's status hook with the token, ferry's reference and
    /// the sending number, and Kannel's `%d` (the report type) to be filled in.
    fn dlr_url(&self, text: &OutText) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", &self.inbound_token)
            .append_pair("ref", &text.reference)
            .append_pair("from", &text.from)
            .finish();
        // Kannel expands `%x` escapes in a dlr-url; `%%` is how a literal `%` survives.
        let fixed = format!("{}?{query}", self.status_hook).replace('%', "%%");
        format!("{fixed}&type=%d")
    }

    /// The sendsms URL with the credentials and `extra` pairs.
    fn sendsms(&self, extra: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.sendsms_url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("username", &self.username);
            q.append_pair("password", &self.password);
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Calls sendsms; `(status, first part of the answer)`.
    async fn call(&self, url: reqwest::Url) -> Result<(reqwest::StatusCode, String), BridgeError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unreachable("kannel", &e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| unreachable("kannel", &e))?;
        Ok((status, reason(&body)))
    }
}

#[async_trait]
impl Provider for Kannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> Kind {
        Kind::Kannel
    }

    fn supports_media(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), BridgeError> {
        // Without `to` Kannel checks the credentials first, then complains about the
        // missing receiver: that complaint means they were right, and nothing is sent.
        let (status, said) = self.call(self.sendsms(&[])).await?;
        if refused_credentials(status, &said) {
            return Err(BridgeError::new(
                ErrorKind::NotAuthorized,
                format!("kannel refused the sendsms credentials: {said}"),
            ));
        }
        if status.is_success()
            || (status.is_client_error() && said.to_ascii_lowercase().contains("receiver"))
        {
            return Ok(());
        }
        Err(refusal(status, &said))
    }

    async fn send(&self, text: &OutText) -> Result<Accepted, BridgeError> {
        let dlr_url = self.dlr_url(text);
        let mask = DLR_MASK.to_string();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("from", &text.from),
            ("to", &text.to),
            ("text", &text.body),
            ("charset", "UTF-8"),
        ];
        if !is_gsm7(&text.body) {
            pairs.push(("coding", "2"));
        }
        pairs.push(("dlr-mask", &mask));
        pairs.push(("dlr-url", &dlr_url));
        let (status, said) = self.call(self.sendsms(&pairs)).await?;
        if status.is_success() {
            // "0: Accepted for delivery" or "3: Queued for later delivery": either way
            // Kannel has it, and reports name ferry's reference.
            return Ok(Accepted {
                message_id: text.reference.clone(),
                reports: true,
            });
        }
        if refused_credentials(status, &said) {
            return Err(BridgeError::new(
                ErrorKind::NotAuthorized,
                format!("kannel refused the sendsms credentials: {said}"),
            ));
        }
        Err(refusal(status, &said))
    }

    fn verify(&self, _hook: Hook, req: &Request<'_>) -> Result<(), HookError> {
        let pairs = raw_pairs(req.query);
        let token =
            first(&pairs, "token").ok_or_else(|| HookError::Forbidden("no token".into()))?;
        if same(token, self.inbound_token.as_bytes()) {
            Ok(())
        } else {
            Err(HookError::Forbidden("wrong token".into()))
        }
    }

    fn parse(&self, hook: Hook, req: &Request<'_>) -> Result<Vec<Event>, HookError> {
        let mut pairs = raw_pairs(req.query);
        // A form-encoded POST (a relay or script in front of Kannel) carries its fields in
        // the body; the query's come first and win. The token is only ever read from the
        // query (`verify`).
        if is_form(req.headers) {
            pairs.extend(raw_pairs(&String::from_utf8_lossy(req.body)));
        }
        match hook {
            Hook::Inbound => parse_inbound(&pairs, req).map(|t| vec![Event::Inbound(t)]),
            Hook::Status => parse_status(&pairs),
        }
    }

    async fn fetch_media(&self, _media: &MediaRef, _max: usize) -> Result<Media, BridgeError> {
        Err(BridgeError::permanent("kannel carries no media"))
    }
}

/// Whether Kannel's answer says the sendsms credentials are wrong.
fn refused_credentials(status: reqwest::StatusCode, said: &str) -> bool {
    let lower = said.to_ascii_lowercase();
    lower.contains("authorization failed")
        || (status_kind(status) == ErrorKind::NotAuthorized && !lower.contains("not routable"))
}

/// A sendsms answer that is neither success nor a credentials problem.
fn refusal(status: reqwest::StatusCode, said: &str) -> BridgeError {
    let said = if said.is_empty() {
        "no reason given"
    } else {
        said
    };
    match status_kind(status) {
        ErrorKind::Transient => {
            BridgeError::transient(format!("kannel: {said} (http {})", status.as_u16()))
        }
        // A 403 that is not about credentials ("Not routable. Do not try again.").
        _ => BridgeError::permanent(format!("kannel: {said}")),
    }
}

/// The first line of Kannel's answer, trimmed and cut to [`MAX_REASON`] characters.
fn reason(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(MAX_REASON).collect()
}

fn parse_inbound(pairs: &[(String, Vec<u8>)], req: &Request<'_>) -> Result<InboundText, HookError> {
    let id = text_param(pairs, "id")
        .ok_or_else(|| HookError::BadRequest("no id (put id=%I in the sms-service url)".into()))?;
    let from = text_param(pairs, "from")
        .or_else(|| header(req.headers, "x-kannel-from"))
        .ok_or_else(|| HookError::BadRequest("no sender (from=%p)".into()))?;
    let to = text_param(pairs, "to")
        .or_else(|| header(req.headers, "x-kannel-to"))
        .ok_or_else(|| HookError::BadRequest("no receiver (to=%P)".into()))?;
    let query_charset = first(pairs, "charset")
        .and_then(|c| charset_named(&String::from_utf8_lossy(c)))
        .or_else(|| {
            first(pairs, "coding").and_then(|c| charset_of_coding(&String::from_utf8_lossy(c)))
        });
    let text = if let Some(raw) = first(pairs, "text") {
        decode(raw, query_charset)
    } else if is_form(req.headers) {
        // The body was fields, none of them the text: an empty text.
        String::new()
    } else {
        let charset = content_type_charset(req.headers)
            .or_else(|| header(req.headers, "x-kannel-coding").and_then(|c| charset_of_coding(&c)))
            .or(query_charset);
        decode(req.body, charset)
    };
    Ok(InboundText {
        message_id: id,
        from,
        to,
        text,
        media: Vec::new(),
        // Kannel reassembles concatenated texts itself.
        part: None,
    })
}

fn parse_status(pairs: &[(String, Vec<u8>)]) -> Result<Vec<Event>, HookError> {
    let reference = text_param(pairs, "ref")
        .ok_or_else(|| HookError::BadRequest("no ref in the delivery report".into()))?;
    let kind = text_param(pairs, "type")
        .ok_or_else(|| HookError::BadRequest("no type in the delivery report".into()))?;
    let kind: u32 = kind.trim().parse().map_err(|_| {
        HookError::BadRequest(format!("delivery report type {kind:?} is not a number"))
    })?;
    let delivery = match kind {
        DLR_DELIVERED => Delivery::Delivered,
        DLR_UNDELIVERED => Delivery::Failed("kannel: not delivered to the phone".into()),
        DLR_SMSC_FAIL => Delivery::Failed("kannel: the SMSC rejected the text".into()),
        DLR_BUFFERED | DLR_SMSC_SUCCESS => Delivery::Pending,
        _ => return Ok(Vec::new()),
    };
    Ok(vec![Event::Status(StatusReport {
        message_id: reference,
        from: text_param(pairs, "from"),
        delivery,
    })])
}

/// The pairs of a query string, values percent-decoded to raw bytes: a UCS-2 text arrives
/// as UTF-16BE, which a UTF-8 decoder would mangle.
fn raw_pairs(query: &str) -> Vec<(String, Vec<u8>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = String::from_utf8_lossy(&percent_decode(k.as_bytes())).into_owned();
            (k, percent_decode(v.as_bytes()))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a `%` not
/// followed by two hex digits stays as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = s.get(i + 1).and_then(|c| (*c as char).to_digit(16));
                let lo = s.get(i + 2).and_then(|c| (*c as char).to_digit(16));
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The first value of `key`, raw.
fn first<'a>(pairs: &'a [(String, Vec<u8>)], key: &str) -> Option<&'a [u8]> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// The first value of `key` as text, when present and not empty.
fn text_param(pairs: &[(String, Vec<u8>)], key: &str) -> Option<String> {
    first(pairs, key)
        .map(|v| String::from_utf8_lossy(v).trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The character sets Kannel hands texts over in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Charset {
    Utf8,
    Utf16Be,
    Latin1,
}

/// A charset name as Kannel writes it (`%C`, `Content-Type`), quotes allowed.
fn charset_named(name: &str) -> Option<Charset> {
    let name = name.trim().trim_matches('"').trim().to_ascii_lowercase();
    match name.as_str() {
        "utf-8" | "utf8" => Some(Charset::Utf8),
        "utf-16be" | "utf16-be" | "utf-16" | "ucs-2" | "ucs2" | "iso-10646-ucs-2" => {
            Some(Charset::Utf16Be)
        }
        "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" => Some(Charset::Latin1),
        _ => None,
    }
}

/// Kannel's `%c` / `X-Kannel-Coding`: 0 7-bit (handed over as UTF-8), 2 UCS-2.
fn charset_of_coding(coding: &str) -> Option<Charset> {
    match coding.trim() {
        "0" => Some(Charset::Utf8),
        "2" => Some(Charset::Utf16Be),
        _ => None,
    }
}

/// Whether the body is `application/x-www-form-urlencoded` fields rather than the text.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn content_type_charset(headers: &HeaderMap) -> Option<Charset> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())?;
    ct.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("charset") {
            charset_named(v)
        } else {
            None
        }
    })
}

/// Decodes a text in `charset`; without one, bytes with NULs in them are taken for UCS-2
/// (no real text has a NUL) and anything else for UTF-8.
fn decode(raw: &[u8], charset: Option<Charset>) -> String {
    let charset = charset.unwrap_or(if raw.len().is_multiple_of(2) && raw.contains(&0) {
        Charset::Utf16Be
    } else {
        Charset::Utf8
    });
    match charset {
        Charset::Utf8 => String::from_utf8_lossy(raw).into_owned(),
        Charset::Latin1 => raw.iter().map(|&b| char::from(b)).collect(),
        Charset::Utf16Be => {
            let units = raw.chunks(2).map(|c| match c {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                _ => 0xFFFD,
            });
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header::CONTENT_TYPE};

    fn kannel() -> Kannel {
        let cfg = ProviderConfig {
            name: "kannel".into(),
            kind: Kind::Kannel,
            api_base: None,
            account_sid: None,
            auth_token: None,
            api_key: None,
            public_key: None,
            messaging_profile_id: None,
            api_secret: None,
            signature_secret: None,
            sendsms_url: Some("http://127.0.0.1:13013/cgi-bin/sendsms".into()),
            username: Some("ferry".into()),
            password: Some("pw".into()),
            inbound_token: Some("s3cret".into()),
        };
        let ctx = Context {
            public_url: "https://gw.example.org/ferry".into(),
            http: reqwest::Client::new(),
        };
        Kannel::new(&cfg, &ctx).expect("config")
    }

    fn request<'a>(
        method: &'a str,
        query: &'a str,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Request<'a> {
        Request {
            method,
            url: "https://gw.example.org/ferry/sms/kannel/inbound",
            query,
            headers,
            body,
            now: 0,
        }
    }

    fn inbound(k: &Kannel, req: &Request<'_>) -> InboundText {
        k.verify(Hook::Inbound, req).expect("verified");
        match k.parse(Hook::Inbound, req).expect("parsed").as_slice() {
            [Event::Inbound(t)] => t.clone(),
            other => panic!("expected one inbound text, got {other:?}"),
        }
    }

    fn status(k: &Kannel, query: &str) -> Vec<Event> {
        let headers = HeaderMap::new();
        let req = request("GET", query, &headers, b"");
        k.verify(Hook::Status, &req).expect("verified");
        k.parse(Hook::Status, &req).expect("parsed")
    }

    #[test]
    fn needs_every_key() {
        let k = kannel();
        assert_eq!(k.name(), "kannel");
        let mut cfg = ProviderConfig {
            name: "k".into(),
            kind: Kind::Kannel,
            api_base: None,
            account_sid: None,
            auth_token: None,
            api_key: None,
            public_key: None,
            messaging_profile_id: None,
            api_secret: None,
            signature_secret: None,
            sendsms_url: Some("http://127.0.0.1:13013/cgi-bin/sendsms".into()),
            username: Some("u".into()),
            password: Some("p".into()),
            inbound_token: None,
        };
        let ctx = Context {
            public_url: "https://gw".into(),
            http: reqwest::Client::new(),
        };
        assert_eq!(
            Kannel::new(&cfg, &ctx).err().as_deref(),
            Some("missing inbound_token")
        );
        cfg.inbound_token = Some("t".into());
        cfg.sendsms_url = Some("not a url".into());
        assert!(Kannel::new(&cfg, &ctx).is_err());
    }

    #[test]
    fn get_inbound_with_a_word_squeezed_text() {
        let k = kannel();
        let headers = HeaderMap::new();
        let req = request(
            "GET",
            "token=s3cret&from=%2B4915112345678&to=%2B12015550100&id=d97b53c9-70ad-4877-9699-773a3e1a6da5&text=Hello+there+%26+more",
            &headers,
            b"",
        );
        let t = inbound(&k, &req);
        assert_eq!(t.from, "+4915112345678");
        assert_eq!(t.to, "+12015550100");
        assert_eq!(t.message_id, "d97b53c9-70ad-4877-9699-773a3e1a6da5");
        assert_eq!(t.text, "Hello there & more");
        assert!(t.media.is_empty() && t.part.is_none());
    }

    #[test]
    fn get_inbound_ucs2_by_charset_by_coding_and_by_guess() {
        let k = kannel();
        let headers = HeaderMap::new();
        let text = "%00G%00r%00%FC%00%DF%00e%00+%D8%3D%DCK";
        for extra in ["&charset=UTF-16BE", "&coding=2", ""] {
            let query = format!("token=s3cret&from=1&to=2&id=x&text={text}{extra}");
            let t = inbound(&k, &request("GET", &query, &headers, b""));
            assert_eq!(t.text, "Grüße 👋", "with {extra:?}");
        }
        let query =
            "token=s3cret&from=1&to=2&id=x&text=Gr%C3%BC%C3%9Fe++ok%0Anext&charset=UTF-8&coding=0";
        assert_eq!(
            inbound(&k, &request("GET", query, &headers, b"")).text,
            "Grüße  ok\nnext"
        );
    }

    #[test]
    fn a_form_encoded_post_gives_its_text_field_not_the_whole_body() {
        let k = kannel();
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let body = b"from=%2B4915112345678&to=%2B12015550100&id=f1&text=Gr%C3%BC%C3%9Fe+ok";
        let t = inbound(&k, &request("POST", "token=s3cret", &headers, body));
        assert_eq!(t.text, "Grüße ok");
        assert_eq!(t.from, "+4915112345678");
        assert_eq!(t.message_id, "f1");
        // The query's fields win over the body's.
        let t = inbound(
            &k,
            &request("POST", "token=s3cret&id=from-query", &headers, body),
        );
        assert_eq!(t.message_id, "from-query");
        // A token in the body is not a token.
        let req = request(
            "POST",
            "",
            &headers,
            b"token=s3cret&from=1&to=2&id=3&text=x",
        );
        assert!(k.verify(Hook::Inbound, &req).is_err());
    }

    #[test]
    fn post_inbound_takes_the_body_in_its_charset() {
        let k = kannel();
        let query = "token=s3cret&from=%2B4915112345678&to=%2B12015550100&id=c81bcf8c";
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=\"UTF-16BE\""),
        );
        let body = b"\x00G\x00r\x00\xfc\x00\xdf\x00e\x00 \xd8=\xdcK";
        let t = inbound(&k, &request("POST", query, &headers, body));
        assert_eq!(t.text, "Grüße 👋");
        assert_eq!(t.message_id, "c81bcf8c");

        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=\"UTF-8\""),
        );
        let t = inbound(
            &k,
            &request("POST", query, &headers, "Grüße  ok".as_bytes()),
        );
        assert_eq!(t.text, "Grüße  ok");

        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=ISO-8859-1"),
        );
        let t = inbound(&k, &request("POST", query, &headers, b"Gr\xfc\xdfe"));
        assert_eq!(t.text, "Grüße");

        // No charset anywhere: UTF-8.
        let plain = HeaderMap::new();
        let t = inbound(&k, &request("POST", query, &plain, "Grüße".as_bytes()));
        assert_eq!(t.text, "Grüße");

        // The X-Kannel headers stand in for a missing charset, sender and receiver.
        let mut kh = HeaderMap::new();
        kh.insert("x-kannel-coding", HeaderValue::from_static("2"));
        kh.insert("x-kannel-from", HeaderValue::from_static("+4915112345678"));
        kh.insert("x-kannel-to", HeaderValue::from_static("+12015550100"));
        let t = inbound(
            &k,
            &request("POST", "token=s3cret&id=y", &kh, b"\x00h\x00i"),
        );
        assert_eq!(
            (t.text.as_str(), t.from.as_str(), t.to.as_str()),
            ("hi", "+4915112345678", "+12015550100")
        );
    }

    #[test]
    fn inbound_without_id_or_sender_is_a_bad_request() {
        let k = kannel();
        let headers = HeaderMap::new();
        for query in [
            "token=s3cret&from=1&to=2&text=hi",
            "token=s3cret&from=1&to=2&id=&text=hi",
            "token=s3cret&to=2&id=x&text=hi",
            "token=s3cret&from=1&id=x&text=hi",
        ] {
            let req = request("GET", query, &headers, b"");
            assert!(k.verify(Hook::Inbound, &req).is_ok());
            assert!(
                matches!(k.parse(Hook::Inbound, &req), Err(HookError::BadRequest(_))),
                "{query}"
            );
        }
    }

    #[test]
    fn wrong_or_missing_token_is_forbidden_on_both_hooks() {
        let k = kannel();
        let headers = HeaderMap::new();
        for hook in [Hook::Inbound, Hook::Status] {
            for query in [
                "from=1&to=2&id=x&text=hi",
                "token=&from=1&to=2&id=x",
                "token=s3cre&from=1&to=2&id=x",
                "token=s3cret2&ref=r&type=1",
                "toke=s3cret&ref=r&type=1",
                "token=S3CRET&ref=r&type=1",
            ] {
                let req = request("GET", query, &headers, b"");
                assert!(
                    matches!(k.verify(hook, &req), Err(HookError::Forbidden(_))),
                    "{hook:?} {query}"
                );
            }
            let ok = request("GET", "ref=r&type=1&token=s3cret", &headers, b"");
            assert!(k.verify(hook, &ok).is_ok());
            // Percent-encoding does not hide the token.
            let enc = request("GET", "token=%73%33cret&ref=r&type=1", &headers, b"");
            assert!(k.verify(hook, &enc).is_ok());
        }
    }

    #[test]
    fn delivery_report_types() {
        let k = kannel();
        let report = |delivery| {
            vec![Event::Status(StatusReport {
                message_id: "ref-1".into(),
                from: Some("+12015550100".into()),
                delivery,
            })]
        };
        let q = |t: &str| format!("token=s3cret&ref=ref-1&from=%2B12015550100&type={t}");
        assert_eq!(status(&k, &q("1")), report(Delivery::Delivered));
        assert_eq!(
            status(&k, &q("2")),
            report(Delivery::Failed(
                "kannel: not delivered to the phone".into()
            ))
        );
        assert_eq!(
            status(&k, &q("16")),
            report(Delivery::Failed(
                "kannel: the SMSC rejected the text".into()
            ))
        );
        assert_eq!(status(&k, &q("4")), report(Delivery::Pending));
        assert_eq!(status(&k, &q("8")), report(Delivery::Pending));
        assert_eq!(status(&k, &q("32")), Vec::new());

        // Without `from` the report still counts.
        match status(&k, "token=s3cret&ref=ref-1&type=1").as_slice() {
            [Event::Status(r)] => assert_eq!(r.from, None),
            other => panic!("{other:?}"),
        }

        let headers = HeaderMap::new();
        for query in [
            "token=s3cret&type=1",
            "token=s3cret&ref=r",
            "token=s3cret&ref=r&type=x",
        ] {
            let req = request("GET", query, &headers, b"");
            assert!(
                matches!(k.parse(Hook::Status, &req), Err(HookError::BadRequest(_))),
                "{query}"
            );
        }
    }

    #[test]
    fn dlr_url_escapes_its_percents_for_kannel() {
        let k = kannel();
        let text = OutText {
            from: "+12015550100".into(),
            to: "+4915112345678".into(),
            body: "hi".into(),
            media: Vec::new(),
            reference: "ref-1".into(),
        };
        assert_eq!(
            k.dlr_url(&text),
            "https://gw.example.org/ferry/sms/kannel/status?token=s3cret&ref=ref-1&from=%%2B12015550100&type=%d"
        );
        // What Kannel makes of it (its `%%` → `%`, `%d` → the type) reads back as sent.
        let filled = k.dlr_url(&text).replace("%d", "1").replace("%%", "%");
        let query = filled.split_once('?').map(|(_, q)| q).unwrap_or("");
        let pairs = raw_pairs(query);
        assert_eq!(first(&pairs, "from"), Some(&b"+12015550100"[..]));
        assert_eq!(first(&pairs, "type"), Some(&b"1"[..]));
    }

    #[test]
    fn sendsms_url_carries_everything_encoded() {
        let k = kannel();
        let url = k.sendsms(&[("to", "+4915112345678"), ("text", "a b&c")]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:13013/cgi-bin/sendsms?username=ferry&password=pw&to=%2B4915112345678&text=a+b%26c"
        );
    }

    #[test]
    fn gsm7_alphabet() {
        assert!(is_gsm7("Hello wörld! Grüße, {Δ} €5 @home\n"));
        assert!(!is_gsm7("Grüße 👋"));
        assert!(!is_gsm7("Привет"));
        assert!(!is_gsm7("naïve")); // ï is not in GSM 03.38
    }

    #[test]
    fn percent_decoding_keeps_stray_percents() {
        assert_eq!(percent_decode(b"a%2Bb+c%zz%4"), b"a+b c%zz%4");
        assert_eq!(decode(b"\x00h\x00", Some(Charset::Utf16Be)), "h\u{FFFD}");
    }

    #[test]
    fn answers_and_errors() {
        let k = kannel();
        assert_eq!(k.ack(Hook::Inbound), super::super::Ack::EMPTY);
        assert_eq!(k.ack(Hook::Status), super::super::Ack::EMPTY);
        assert!(!k.supports_media());
        let forbidden = reqwest::StatusCode::FORBIDDEN;
        assert!(refused_credentials(
            forbidden,
            "Authorization failed for sendsms"
        ));
        assert!(!refused_credentials(
            forbidden,
            "Not routable. Do not try again."
        ));
        assert_eq!(
            refusal(forbidden, "Not routable. Do not try again.").kind,
            ErrorKind::Permanent
        );
        assert_eq!(
            refusal(reqwest::StatusCode::SERVICE_UNAVAILABLE, "Sending failed.").kind,
            ErrorKind::Transient
        );
        let bad = refusal(
            reqwest::StatusCode::BAD_REQUEST,
            "Missing receiver number, rejected",
        );
        assert_eq!(bad.kind, ErrorKind::Permanent);
        assert_eq!(bad.text, "kannel: Missing receiver number, rejected");
        assert_eq!(
            reason(b"\n 0: Accepted for delivery \nmore"),
            "0: Accepted for delivery"
        );
    }
}
