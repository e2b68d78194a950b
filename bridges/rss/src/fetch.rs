//! Fetching feeds over HTTP(S), safely: this module owns the SSRF guard (no connection to
//! loopback, private, link-local … addresses unless allowed), conditional GET with the
//! server's own validators, manual redirect following with a re-check on every hop, the
//! body size limit (counted after decompression), the total time limit, and the per-host
//! concurrency limit.
//!
//! The address check happens where it cannot be raced: IP-literal hosts are checked before
//! any request, and host names are checked on the addresses the resolver hands to the
//! connector (a custom [`reqwest::dns::Resolve`]), so a name that resolves to `127.0.0.1`
//! is refused before a socket is opened, whatever it resolved to a moment earlier.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, LOCATION, RETRY_AFTER,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;
use url::{Host, Url};

/// The `Accept` header sent for feeds.
pub const FEED_ACCEPT: &str = "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5";

/// How many per-host limiters are kept before idle ones are dropped.
const HOST_MAP_SOFT_CAP: usize = 256;

/// What a [`Fetcher`] may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Allow every address, private ones included (`[rss] allow_private_addresses`):
    /// only for tests and intranets.
    pub allow_private: bool,
    /// Largest body accepted, counted after decompression.
    pub max_bytes: u64,
    /// Total time for one fetch: connecting, every redirect and the whole body. Waiting for
    /// the first per-host slot is not counted.
    pub timeout: Duration,
    /// How many redirects are followed; one more is [`FetchError::TooManyRedirects`].
    pub max_redirects: u8,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// How many fetches may run at once against one host (at least 1).
    pub per_host: usize,
    /// Hosts that may be fetched even when they are (or resolve to) private addresses, while
    /// every other host stays guarded — for tests and intranets; empty by default.
    ///
    /// Each entry is an exact host (`intranet.example`, `127.0.0.1`, `[::1]`) or an exact
    /// `host:port` (`127.0.0.1:8080`); matching ignores ASCII case and nothing else (no
    /// wildcards, no subdomains). A redirect from an allowed host to one that is not allowed
    /// is checked like any other hop.
    pub allow_hosts: Vec<String>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allow_private: false,
            max_bytes: 15 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            max_redirects: 5,
            user_agent: format!("ferry/{} (+feeds)", env!("CARGO_PKG_VERSION")),
            per_host: 2,
            allow_hosts: Vec::new(),
        }
    }
}

/// A response's cache validators, kept byte for byte as the server sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    /// The `ETag` header, quotes and `W/` included.
    pub etag: Option<String>,
    /// The `Last-Modified` header, as sent (not reformatted).
    pub last_modified: Option<String>,
}

impl Validators {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// What a successful fetch brought back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A 2xx answer and its whole (decompressed) body.
    Fetched {
        body: Vec<u8>,
        /// The URL after redirects.
        final_url: String,
        /// The validators to send next time.
        validators: Validators,
        /// From `Cache-Control` (`s-maxage` / `max-age`).
        max_age: Option<Duration>,
        /// The `Content-Type` header, as sent.
        content_type: Option<String>,
    },
    /// 304: the feed has not changed since the validators were issued. Only returned when
    /// validators were sent; a 304 to an unconditional request is a [`FetchError::Status`].
    NotModified { max_age: Option<Duration> },
}

/// Why a fetch failed. Messages are lowercase and carry no secrets (URLs are not included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The address is in a forbidden range or the URL is not one ferry fetches
    /// (`refused: 127.0.0.1 is a loopback address`).
    Refused(String),
    /// The final answer was not 2xx (nor 304 to a conditional request). `retry_after` is read
    /// from `Retry-After` on 429 and 503.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// The body (after decompression) is larger than `limit` bytes.
    TooLarge { limit: u64 },
    /// The whole fetch took longer than the policy's `timeout`.
    Timeout,
    /// More redirects than the policy's `max_redirects`.
    TooManyRedirects,
    /// Autodiscovery found no feed on the site (see [`crate::discover::discover`]).
    NotFound,
    /// Anything else on the way: DNS, connection, TLS, a broken body.
    Network(String),
}

impl FetchError {
    /// How long the server asked us to wait (`Retry-After` on 429/503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether ferry refused to fetch (as opposed to the fetch failing).
    pub fn is_refusal(&self) -> bool {
        matches!(self, FetchError::Refused(_))
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Refused(why) => write!(f, "refused: {why}"),
            FetchError::Status {
                code,
                retry_after: Some(after),
            } => write!(f, "http status {code} (retry after {}s)", after.as_secs()),
            FetchError::Status { code, .. } => write!(f, "http status {code}"),
            FetchError::TooLarge { limit } => write!(f, "feed larger than {limit} bytes"),
            FetchError::Timeout => f.write_str("timed out"),
            FetchError::TooManyRedirects => f.write_str("too many redirects"),
            FetchError::NotFound => f.write_str("no feed found on this site"),
            FetchError::Network(why) => write!(f, "network error: {why}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Fetches feeds under one [`FetchPolicy`]. Cloning is cheap and clones share the
/// connection pool and the per-host limits.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    policy: FetchPolicy,
    /// For every host not in `allow_hosts`: its resolver refuses forbidden addresses unless
    /// `allow_private`.
    guarded: reqwest::Client,
    /// For hosts in `allow_hosts` (when not `allow_private`): its resolver allows everything.
    /// A separate client, so its pooled connections never serve another host.
    trusted: Option<reqwest::Client>,
    /// `allow_hosts`, lowercased and trimmed.
    allow: Vec<String>,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// Builds the HTTP clients. Fails only if the TLS backend cannot be set up.
    pub fn new(policy: FetchPolicy) -> Result<Fetcher, FetchError> {
        let guarded = build_client(&policy, policy.allow_private)?;
        let trusted = if !policy.allow_private && !policy.allow_hosts.is_empty() {
            Some(build_client(&policy, true)?)
        } else {
            None
        };
        let allow = policy
            .allow_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Ok(Fetcher {
            inner: Arc::new(Inner {
                policy,
                guarded,
                trusted,
                allow,
                hosts: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The policy this fetcher was built with.
    pub fn policy(&self) -> &FetchPolicy {
        &self.inner.policy
    }

    /// GETs `url`, sending `validators` as `If-None-Match` / `If-Modified-Since`, following
    /// redirects (each hop re-checked), within the policy's limits.
    pub async fn fetch(
        &self,
        url: &str,
        validators: &Validators,
    ) -> Result<FetchOutcome, FetchError> {
        let url = parse_target(url)?;
        // Refuse an IP literal before even queueing for its host.
        self.client_for(&url)?;
        let permit = self.acquire(&url).await?;
        let timeout = self.inner.policy.timeout;
        match tokio::time::timeout(timeout, self.run(url, validators, permit)).await {
            Ok(result) => result,
            Err(_) => {
                debug!(?timeout, "feed fetch timed out");
                Err(FetchError::Timeout)
            }
        }
    }

    async fn run(
        &self,
        mut url: Url,
        validators: &Validators,
        mut permit: OwnedSemaphorePermit,
    ) -> Result<FetchOutcome, FetchError> {
        let policy = &self.inner.policy;
        let mut redirects: u8 = 0;
        loop {
            let client = self.client_for(&url)?;
            let mut request = client.get(url.clone()).header(ACCEPT, FEED_ACCEPT);
            let conditional = redirects == 0 && !validators.is_empty();
            if redirects == 0 {
                request = request.headers(conditional_headers(validators));
            }
            debug!(url = %redacted(&url), hop = redirects, "fetching feed");
            let mut response = request.send().await.map_err(map_reqwest_error)?;
            let status = response.status().as_u16();
            let headers = response.headers();

            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let Some(next) = headers
                    .get(LOCATION)
                    // Raw UTF-8 in a Location is common; joining percent-encodes it.
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .and_then(|loc| url.join(loc.trim()).ok())
                else {
                    debug!(status, "redirect without a usable location");
                    return Err(FetchError::Status {
                        code: status,
                        retry_after: None,
                    });
                };
                if redirects >= policy.max_redirects {
                    return Err(FetchError::TooManyRedirects);
                }
                redirects += 1;
                check_scheme(&next)?;
                // Checks an IP-literal target before queueing for its host.
                self.client_for(&next)?;
                drop(response);
                if host_key(&next) != host_key(&url) {
                    drop(permit);
                    permit = self.acquire(&next).await?;
                }
                debug!(from = %redacted(&url), to = %redacted(&next), status, "following redirect");
                url = next;
                continue;
            }

            let max_age = max_age_of(headers);
            if status == 304 && conditional {
                debug!(url = %redacted(&url), "feed not modified");
                return Ok(FetchOutcome::NotModified { max_age });
            }
            if !(200..300).contains(&status) {
                let retry_after = if matches!(status, 429 | 503) {
                    headers
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()))
                } else {
                    None
                };
                debug!(url = %redacted(&url), status, ?retry_after, "feed fetch failed");
                return Err(FetchError::Status {
                    code: status,
                    retry_after,
                });
            }

            let validators = Validators {
                etag: header_string(headers, ETAG),
                last_modified: header_string(headers, LAST_MODIFIED),
            };
            let content_type = header_string(headers, CONTENT_TYPE);
            let limit = policy.max_bytes;
            if let Some(length) = response.content_length()
                && length > limit
            {
                debug!(length, limit, "feed refused by content-length");
                return Err(FetchError::TooLarge { limit });
            }
            let initial = response
                .content_length()
                .unwrap_or(0)
                .min(limit)
                .min(1 << 20);
            let mut body = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
            while let Some(chunk) = response.chunk().await.map_err(map_reqwest_error)? {
                if (body.len() as u64).saturating_add(chunk.len() as u64) > limit {
                    debug!(limit, "feed body over the limit");
                    return Err(FetchError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            drop(permit);
            debug!(url = %redacted(&url), status, bytes = body.len(), "feed fetched");
            return Ok(FetchOutcome::Fetched {
                body,
                final_url: url.to_string(),
                validators,
                max_age,
                content_type,
            });
        }
    }

    /// Picks the client for `url`, refusing a forbidden IP literal. Host names are checked by
    /// the guarded client's resolver.
    fn client_for(&self, url: &Url) -> Result<&reqwest::Client, FetchError> {
        let inner = &self.inner;
        if inner.policy.allow_private {
            return Ok(&inner.guarded);
        }
        if let Some(trusted) = &inner.trusted
            && self.host_allowed(url)
        {
            return Ok(trusted);
        }
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => name.parse::<IpAddr>().ok(),
            None => return Err(FetchError::Refused("the url has no host".into())),
        };
        if let Some(ip) = ip
            && let Some(why) = forbidden_reason(ip)
        {
            debug!(%ip, why, "feed address refused");
            return Err(FetchError::Refused(format!("{ip} is {why}")));
        }
        Ok(&inner.guarded)
    }

    fn host_allowed(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}"));
        self.inner
            .allow
            .iter()
            .any(|entry| *entry == host || with_port.as_deref() == Some(entry.as_str()))
    }

    /// Waits for a slot for `url`'s host.
    async fn acquire(&self, url: &Url) -> Result<OwnedSemaphorePermit, FetchError> {
        let semaphore = {
            let mut hosts = self
                .inner
                .hosts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let key = host_key(url);
            if !hosts.contains_key(&key) && hosts.len() >= HOST_MAP_SOFT_CAP {
                // Only this map holds an idle limiter: nobody holds or awaits a permit.
                hosts.retain(|_, s| Arc::strong_count(s) > 1);
            }
            hosts
                .entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(self.inner.policy.per_host.max(1))))
                .clone()
        };
        semaphore
            .acquire_owned()
            .await
            .map_err(|_| FetchError::Network("host limiter closed".into()))
    }

    /// How many per-host limiters are currently kept (for tests and metrics).
    pub fn tracked_hosts(&self) -> usize {
        self.inner
            .hosts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

fn build_client(policy: &FetchPolicy, allow_private: bool) -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .referer(false)
        .user_agent(policy.user_agent.clone())
        .pool_max_idle_per_host(policy.per_host.max(1))
        .connect_timeout(policy.timeout)
        .dns_resolver(GuardedResolver { allow_private })
        .build()
        .map_err(|e| FetchError::Network(describe(&e)))
}

fn parse_target(raw: &str) -> Result<Url, FetchError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| FetchError::Refused(format!("not a valid url ({e})")))?;
    check_scheme(&url)?;
    Ok(url)
}

fn check_scheme(url: &Url) -> Result<(), FetchError> {
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(()),
        "http" | "https" => Err(FetchError::Refused("the url has no host".into())),
        other => Err(FetchError::Refused(format!(
            "{other} urls are not fetched (http and https only)"
        ))),
    }
}

/// The per-host limiter key: the lowercased host, without port.
fn host_key(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_ascii_lowercase()
}

/// A URL safe to log: no user info, no query, no fragment.
fn redacted(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

fn conditional_headers(validators: &Validators) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let pairs = [
        (IF_NONE_MATCH, validators.etag.as_deref()),
        (IF_MODIFIED_SINCE, validators.last_modified.as_deref()),
    ];
    for (name, value) in pairs {
        let Some(value) = value else { continue };
        match HeaderValue::from_str(value) {
            Ok(value) => {
                headers.insert(name, value);
            }
            Err(_) => debug!(header = %name, "validator not sendable as a header; skipped"),
        }
    }
    headers
}

fn header_string(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn max_age_of(headers: &HeaderMap) -> Option<Duration> {
    let joined = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if joined.is_empty() {
        None
    } else {
        parse_max_age(&joined)
    }
}

/// Reads a `Cache-Control` value: `s-maxage` wins over `max-age` (one fetch serves every
/// subscriber, like a shared cache); `no-store` or `no-cache` anywhere means `None`, as does
/// the absence of both ages. Directive names ignore case; quoted values are accepted.
pub fn parse_max_age(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    let mut s_maxage = None;
    for directive in cache_control.split(',') {
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "no-store" | "no-cache" => return None,
            "max-age" => max_age = max_age.or(value.and_then(parse_seconds)),
            "s-maxage" => s_maxage = s_maxage.or(value.and_then(parse_seconds)),
            _ => {}
        }
    }
    s_maxage.or(max_age).map(Duration::from_secs)
}

/// Non-negative decimal seconds; too many digits saturate.
fn parse_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().unwrap_or(u64::MAX))
}

/// Reads a `Retry-After` value — delta-seconds or an HTTP-date — as a wait from `now`.
/// A date in the past means zero; anything unreadable, `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(secs) = parse_seconds(value) {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether ferry refuses to connect to `ip` (unless private addresses are allowed).
pub fn is_forbidden(ip: IpAddr) -> bool {
    forbidden_reason(ip).is_some()
}

/// Why `ip` is forbidden, as the end of "`ip` is …", or `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, _, _) => "a \"this network\" address",
        (10, _, _) => "a private address",
        (100, 64..=127, _) => "a shared (carrier-grade nat) address",
        (127, _, _) => "a loopback address",
        (169, 254, _) => "a link-local address",
        (172, 16..=31, _) => "a private address",
        (192, 0, 0) => "an ietf protocol address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (192, 88, 99) => "a 6to4 relay address",
        (192, 168, _) => "a private address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => "the broadcast address",
        (240..=255, _, _) => "a reserved address",
        _ => return None,
    };
    Some(reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // ::ffff:0:0/96, IPv4-mapped: always refused (a v6 socket would reach the v4 host).
    if seg[..5] == [0; 5] && seg[5] == 0xffff {
        let v4 = embedded_v4(seg[6], seg[7]);
        return Some(v4_reason(v4).unwrap_or("an ipv4-mapped address"));
    }
    // ::/96, IPv4-compatible (deprecated).
    if seg[..6] == [0; 6] {
        let v4 = embedded_v4(seg[6], seg[7]);
        return Some(v4_reason(v4).unwrap_or("an ipv4-compatible address"));
    }
    // 64:ff9b::/96, well-known NAT64 prefix: as good as the embedded address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_reason(embedded_v4(seg[6], seg[7]));
    }
    // 2002::/16, 6to4: as good as the embedded address.
    if seg[0] == 0x2002 {
        return v4_reason(embedded_v4(seg[1], seg[2]));
    }
    let reason = match seg[0] {
        0x0064 if seg[1] == 0xff9b && seg[2] == 1 => "a local nat64 address",
        0x0100 if seg[1..4] == [0, 0, 0] => "a discard-only address",
        0x2001 if seg[1] == 0x0db8 => "a documentation address",
        0x2001 if seg[1] < 0x0200 => "an ietf protocol address",
        0x3fff if seg[1] < 0x1000 => "a documentation address",
        s if s & 0xfe00 == 0xfc00 => "a unique-local address",
        s if s & 0xffc0 == 0xfe80 => "a link-local address",
        s if s & 0xffc0 == 0xfec0 => "a site-local address",
        s if s & 0xff00 == 0xff00 => "a multicast address",
        // Global unicast is 2000::/3; the rest is unassigned or special.
        s if s & 0xe000 != 0x2000 => "a reserved address",
        _ => return None,
    };
    Some(reason)
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Resolves host names with the system resolver; unless private addresses are allowed,
/// forbidden addresses are dropped, and a name with nothing left is refused.
struct GuardedResolver {
    allow_private: bool,
}

/// The resolver's refusal, found again in the error chain by [`map_reqwest_error`].
#[derive(Debug)]
struct RefusedAddress(String);

impl fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusedAddress {}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(resolve_guarded(
            name.as_str().to_owned(),
            self.allow_private,
        ))
    }
}

async fn resolve_guarded(
    host: String,
    allow_private: bool,
) -> Result<Addrs, Box<dyn std::error::Error + Send + Sync>> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    if allow_private {
        return Ok(Box::new(resolved.into_iter()));
    }
    let mut refused = None;
    let mut kept = Vec::with_capacity(resolved.len());
    for addr in resolved {
        match forbidden_reason(addr.ip()) {
            Some(why) => {
                refused.get_or_insert((addr.ip(), why));
            }
            None => kept.push(addr),
        }
    }
    if kept.is_empty() {
        let message = match refused {
            Some((ip, why)) => format!("{host} resolves to {ip}, {why}"),
            None => format!("{host} resolves to no address"),
        };
        debug!(%host, "feed host refused at resolution");
        return Err(RefusedAddress(message).into());
    }
    Ok(Box::new(kept.into_iter()))
}

fn map_reqwest_error(error: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RefusedAddress>() {
            return FetchError::Refused(refused.0.clone());
        }
        source = e.source();
    }
    if error.is_timeout() {
        return FetchError::Timeout;
    }
    FetchError::Network(describe(&error.without_url()))
}

/// An error and its causes, joined with `: `, repeated messages once.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
