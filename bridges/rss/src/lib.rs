//! The RSS bridge: feeds as contacts. It reads feed addresses and gives each feed its
//! readable JID slug (SPEC §3), needs no registration, and follows feeds through the
//! [`engine`], which fetches each feed once for all its subscribers ([`fetch`], SSRF-safe
//! and bounded), reads it ([`parse`], [`html`]), schedules it politely ([`schedule`]) and
//! finds the feed of a site ([`discover`]). OPML comes in and goes out through [`opml`].

#![forbid(unsafe_code)]

pub mod discover;
pub mod engine;
pub mod fetch;
pub mod html;
pub mod opml;
pub mod parse;
pub mod schedule;

use std::sync::Arc;

use async_trait::async_trait;
use ferry_bridge_api::{
    AccountId, Bridge, BridgeError, BridgeKind, ContactState, Credentials, ErrorKind, EventSink,
    Follow, Form, FormValues, Hub, ImportSource, Outbound, ParsedAddress, RemoteId, SendReceipt,
    Session, Shutdown, Subscriptions,
};

use crate::engine::{Engine, FeedStore, Settings};
use crate::fetch::{FetchOutcome, Validators};

/// A feed address, split just enough to build its slug.
#[derive(Debug, PartialEq, Eq)]
pub struct FeedUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Lowercased host (IPv6 without brackets).
    pub host: String,
    /// The explicit port, when it is not the scheme's default.
    pub port: Option<u16>,
    /// Path and query, `/` at least.
    pub rest: String,
}

impl FeedUrl {
    /// Reads an http(s) URL; a bare host (`xkcd.com`) means `https://xkcd.com/`.
    pub fn parse(raw: &str) -> Result<FeedUrl, BridgeError> {
        let raw = raw.trim();
        let bad = || BridgeError::malformed(format!("not a feed address: {raw}"));
        if raw.is_empty()
            || raw.len() > 2048
            || raw.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        let (scheme, after) = match raw.split_once("://") {
            Some((s, a)) => (s.to_ascii_lowercase(), a),
            None => ("https".to_owned(), raw),
        };
        if scheme != "http" && scheme != "https" {
            return Err(BridgeError::new(
                ErrorKind::NotAcceptable,
                format!("only http and https feeds are supported, not {scheme}"),
            ));
        }
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let rest = rest.split('#').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(BridgeError::new(
                ErrorKind::NotAcceptable,
                "feed addresses with credentials are not supported",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p.parse::<u16>().map_err(|_| bad())?),
                None if tail.is_empty() => None,
                None => return Err(bad()),
            };
            (h.to_ascii_lowercase(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_ascii_lowercase(),
                    Some(p.parse::<u16>().map_err(|_| bad())?),
                ),
                None => (authority.to_ascii_lowercase(), None),
            }
        };
        let host = host.trim_end_matches('.').to_owned();
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':');
        if !valid_host {
            return Err(bad());
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = port.filter(|p| *p != default_port);
        let rest = if rest.is_empty() {
            "/".to_owned()
        } else {
            rest.to_owned()
        };
        Ok(FeedUrl {
            scheme,
            host,
            port,
            rest,
        })
    }

    /// The canonical URL, used as the feed's remote id.
    pub fn canonical(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{}://{host}:{p}{}", self.scheme, self.rest),
            None => format!("{}://{host}{}", self.scheme, self.rest),
        }
    }

    /// The readable slug: lowercased host, `-PORT` for a non-default port (SPEC §3).
    pub fn slug(&self) -> String {
        let host = self.host.replace(':', "-");
        match self.port {
            Some(p) => format!("{host}-{p}"),
            None => host,
        }
    }
}

/// Reads an address as a user typed it.
pub fn parse_address(raw: &str) -> Result<ParsedAddress, BridgeError> {
    let url = FeedUrl::parse(raw)?;
    Ok(ParsedAddress {
        id: RemoteId(url.canonical()),
        localpart: url.slug(),
        display: raw.trim().to_owned(),
    })
}

/// Reads an unknown JID localpart: a bare host (`example.com`, `127.0.0.1-8080`) names
/// that site, whose feed autodiscovery finds when someone subscribes.
pub fn parse_localpart(localpart: &str) -> Option<ParsedAddress> {
    if localpart.contains('/') || !localpart.contains('.') {
        return None;
    }
    // `host-PORT` is how a slug spells a port.
    let candidate = match localpart.rsplit_once('-') {
        Some((host, port))
            if !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && host.contains('.') =>
        {
            format!("{host}:{port}")
        }
        _ => localpart.to_owned(),
    };
    // A site on a port other than 443 is most likely plain http (intranets, tests).
    let scheme = if candidate.contains(':') {
        "http"
    } else {
        "https"
    };
    parse_address(&format!("{scheme}://{candidate}/")).ok()
}

/// The RSS bridge.
pub struct RssBridge {
    engine: Arc<Engine>,
}

impl RssBridge {
    /// A bridge whose engine keeps its feeds in `store`.
    pub fn new(settings: Settings, store: Arc<dyn FeedStore>) -> Result<RssBridge, BridgeError> {
        Ok(RssBridge {
            engine: Arc::new(Engine::new(settings, store)?),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

#[async_trait]
impl Bridge for RssBridge {
    fn kind(&self) -> BridgeKind {
        BridgeKind::Rss
    }

    fn display_name(&self) -> String {
        "ferry feeds".to_owned()
    }

    fn gateway_prompt(&self) -> (String, String) {
        (
            "Enter the address of an RSS, Atom or JSON feed (or of a site that has one)."
                .to_owned(),
            "Feed URL".to_owned(),
        )
    }

    fn requires_registration(&self) -> bool {
        false
    }

    fn registration_form(&self, _user: &str) -> Form {
        Form {
            title: "Feeds".to_owned(),
            instructions: "No account is needed to follow feeds; registering just adds the gateway to your contacts.".to_owned(),
            fields: Vec::new(),
        }
    }

    async fn register(
        &self,
        _user: &str,
        _values: &FormValues,
    ) -> Result<Credentials, BridgeError> {
        Ok(Credentials::new())
    }

    fn parse_address(&self, raw: &str) -> Result<ParsedAddress, BridgeError> {
        parse_address(raw)
    }

    fn parse_localpart(&self, localpart: &str) -> Option<ParsedAddress> {
        parse_localpart(localpart)
    }

    fn localparts_are_derived(&self) -> bool {
        false
    }

    async fn login(
        &self,
        _account: AccountId,
        _user: &str,
        _credentials: Credentials,
    ) -> Result<Arc<dyn Session>, BridgeError> {
        Ok(Arc::new(RssSession))
    }

    fn subscriptions(&self) -> Option<Arc<dyn Subscriptions>> {
        Some(Arc::new(Follows(Arc::clone(&self.engine))))
    }

    async fn serve(&self, hub: Hub) {
        Arc::clone(&self.engine).serve(hub).await;
    }
}

/// The bridge's followable contacts: its feeds.
struct Follows(Arc<Engine>);

/// At most this many feeds come from one import.
const MAX_IMPORT: usize = 10_000;

#[async_trait]
impl Subscriptions for Follows {
    async fn follow(&self, account: AccountId, contact: &RemoteId) -> Result<(), BridgeError> {
        self.0.follow(account, contact.as_str()).await
    }

    async fn unfollow(&self, account: AccountId, contact: &RemoteId) -> Result<bool, BridgeError> {
        self.0.store().unsubscribe(account, contact.as_str()).await
    }

    async fn following(&self, account: AccountId) -> Result<Vec<Follow>, BridgeError> {
        let feeds = self.0.store().subscriptions(account).await?;
        Ok(feeds
            .into_iter()
            .map(|rec| Follow {
                contact: RemoteId(rec.feed.clone()),
                name: rec.title.clone(),
                address: rec.fetch_url.clone().unwrap_or_else(|| rec.feed.clone()),
                state: engine::state_of(&rec),
            })
            .collect())
    }

    async fn contact_state(&self, contact: &RemoteId) -> Option<ContactState> {
        self.0.state_of(contact.as_str()).await
    }

    async fn read_import(&self, source: ImportSource) -> Result<Vec<String>, BridgeError> {
        let bytes = match source {
            ImportSource::Bytes(b) => b,
            ImportSource::Url(url) => {
                let got = self
                    .0
                    .source()
                    .fetch(&url, &Validators::default())
                    .await
                    .map_err(|e| {
                        BridgeError::new(
                            ErrorKind::NotAcceptable,
                            format!("cannot fetch {url}: {e}"),
                        )
                    })?;
                match got {
                    FetchOutcome::Fetched { body, .. } => body,
                    FetchOutcome::NotModified { .. } => {
                        return Err(BridgeError::new(
                            ErrorKind::NotAcceptable,
                            format!("cannot fetch {url}: unexpected 304"),
                        ));
                    }
                }
            }
        };
        let outlines = opml::parse(&bytes).map_err(|e| {
            BridgeError::new(ErrorKind::NotAcceptable, format!("not an OPML file: {e}"))
        })?;
        Ok(outlines
            .into_iter()
            .take(MAX_IMPORT)
            .map(|o| o.url)
            .collect())
    }

    async fn export(&self, account: AccountId) -> Result<String, BridgeError> {
        let feeds = self.0.store().subscriptions(account).await?;
        let outlines: Vec<opml::Outline> = feeds
            .into_iter()
            .map(|rec| opml::Outline {
                url: rec.fetch_url.unwrap_or(rec.feed),
                title: rec.title,
            })
            .collect();
        Ok(opml::write("ferry feeds", &outlines))
    }

    /// `delivery` (the user's default), `quiet` (their quiet hours, UTC), and one
    /// `delivery FEED` for each feed with a delivery of its own.
    async fn settings(
        &self,
        account: AccountId,
    ) -> Result<Vec<(String, String, Vec<String>)>, BridgeError> {
        let kind = |headline: bool| if headline { "headline" } else { "chat" }.to_owned();
        let choices = || vec!["chat".to_owned(), "headline".to_owned()];
        let store = self.0.store();
        let quiet = match store.quiet(account).await? {
            Some(q) => format!("{q} UTC"),
            None => "off".to_owned(),
        };
        let mut out = vec![
            (
                "delivery".to_owned(),
                kind(self.0.default_delivery(account).await?),
                choices(),
            ),
            (
                "quiet".to_owned(),
                quiet,
                vec!["HH:MM-HH:MM in UTC".to_owned(), "off".to_owned()],
            ),
        ];
        for (feed, headline) in store.feed_deliveries(account).await? {
            let mut allowed = choices();
            allowed.push("default".to_owned());
            out.push((format!("delivery {feed}"), kind(headline), allowed));
        }
        Ok(out)
    }

    /// `delivery chat|headline`: the user's default; `delivery FEED chat|headline|default`
    /// (the name carries the feed's address): that feed's own delivery, or back to the
    /// default; `quiet HH:MM-HH:MM|off`: quiet hours, in UTC. Names and words in any case,
    /// as the config's `delivery` is read.
    async fn set_setting(
        &self,
        account: AccountId,
        name: &str,
        value: &str,
    ) -> Result<(), BridgeError> {
        let refuse = |text: String| Err(BridgeError::new(ErrorKind::NotAcceptable, text));
        let (key, feed) = match name.trim().split_once(char::is_whitespace) {
            Some((k, f)) => (k.to_ascii_lowercase(), Some(f.trim())),
            None => (name.trim().to_ascii_lowercase(), None),
        };
        let choice = value.trim().to_ascii_lowercase();
        match (key.as_str(), feed) {
            ("delivery", None) => match choice.as_str() {
                "chat" => self.0.store().set_delivery(account, false).await,
                "headline" => self.0.store().set_delivery(account, true).await,
                _ => refuse(format!("delivery is chat or headline, not {value}")),
            },
            ("delivery", Some(feed)) => {
                let choice = match choice.as_str() {
                    "chat" => Some(false),
                    "headline" => Some(true),
                    "default" => None,
                    _ => {
                        return refuse(format!(
                            "a feed's delivery is chat, headline or default, not {value}"
                        ));
                    }
                };
                if self.0.set_feed_delivery(account, feed, choice).await? {
                    Ok(())
                } else {
                    refuse(format!("you do not follow {feed}"))
                }
            }
            ("quiet", None) => {
                let quiet = match choice.as_str() {
                    "off" => None,
                    _ => Some(
                        engine::QuietHours::parse(value)
                            .map_err(|e| BridgeError::new(ErrorKind::NotAcceptable, e))?,
                    ),
                };
                self.0.set_quiet(account, quiet).await
            }
            ("quiet", Some(_)) => refuse(
                "quiet hours are for all your feeds: settings quiet HH:MM-HH:MM (UTC) or off"
                    .to_owned(),
            ),
            _ => refuse(format!("unknown setting {name}; settings: delivery, quiet")),
        }
    }
}

/// A user's feed session: feeds only talk, so there is nothing to send.
struct RssSession;

#[async_trait]
impl Session for RssSession {
    async fn run(&self, _events: EventSink, mut shutdown: Shutdown) -> Result<(), BridgeError> {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn send(&self, _to: &RemoteId, _msg: &Outbound) -> Result<SendReceipt, BridgeError> {
        Err(BridgeError::new(
            ErrorKind::NotAcceptable,
            "feeds cannot receive messages",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_spec() {
        let u = FeedUrl::parse("https://xkcd.com/atom.xml").expect("url");
        assert_eq!(u.slug(), "xkcd.com");
        assert_eq!(u.canonical(), "https://xkcd.com/atom.xml");
        let u = FeedUrl::parse("http://127.0.0.1:8080/feed?x=1#frag").expect("url");
        assert_eq!(u.slug(), "127.0.0.1-8080");
        assert_eq!(u.canonical(), "http://127.0.0.1:8080/feed?x=1");
        let u = FeedUrl::parse("HTTPS://Example.COM:443").expect("url");
        assert_eq!(
            (u.slug(), u.canonical()),
            ("example.com".into(), "https://example.com/".into())
        );
        let u = FeedUrl::parse("http://[::1]:8080/f").expect("url");
        assert_eq!(u.slug(), "--1-8080");
    }

    #[test]
    fn refuses_what_is_not_a_feed_address() {
        for bad in [
            "",
            "ftp://x.org/f",
            "http://",
            "http://a b/",
            "http://x.org:99999/",
            "http://u:p@x.org/",
        ] {
            assert!(FeedUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            FeedUrl::parse("ftp://x.org/").map_err(|e| e.kind).err(),
            Some(ErrorKind::NotAcceptable)
        );
    }

    #[test]
    fn bare_host_localpart_means_its_site() {
        let p = parse_localpart("example.com").expect("host");
        assert_eq!(p.id.as_str(), "https://example.com/");
        assert_eq!(p.localpart, "example.com");
        let p = parse_localpart("127.0.0.1-8080").expect("host and port");
        assert_eq!(p.id.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(p.localpart, "127.0.0.1-8080");
        let p = parse_localpart("my-site.org").expect("a dash is not a port");
        assert_eq!(p.id.as_str(), "https://my-site.org/");
        assert!(parse_localpart("nodots").is_none());
    }
}
