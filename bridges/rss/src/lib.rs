//! The RSS bridge: feeds as contacts. This first part reads feed addresses and gives each
//! feed its readable JID slug (SPEC §3); it needs no registration. Fetching, scheduling
//! and delivering entries come with the RSS issue.

#![forbid(unsafe_code)]

use std::sync::Arc;

use async_trait::async_trait;
use ferry_bridge_api::{
    AccountId, Bridge, BridgeError, BridgeKind, Credentials, ErrorKind, EventSink, Form,
    FormValues, Outbound, ParsedAddress, RemoteId, SendReceipt, Session, Shutdown,
};

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

/// The RSS bridge.
pub struct RssBridge;

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
        let url = FeedUrl::parse(raw)?;
        Ok(ParsedAddress {
            id: RemoteId(url.canonical()),
            localpart: url.slug(),
            display: raw.trim().to_owned(),
        })
    }

    fn parse_localpart(&self, localpart: &str) -> Option<ParsedAddress> {
        // An unknown slug that is a bare host is resolved by autodiscovery on its site.
        if localpart.contains('/') || !localpart.contains('.') {
            return None;
        }
        self.parse_address(&format!("https://{localpart}/")).ok()
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
        let p = RssBridge.parse_localpart("example.com").expect("host");
        assert_eq!(p.id.as_str(), "https://example.com/");
        assert!(RssBridge.parse_localpart("nodots").is_none());
    }
}
