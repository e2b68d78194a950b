//! Stanzas as the router sees them: a closed enum of message, presence and IQ with their
//! addressing parsed once, the RFC 6120 stanza error conditions, and builders for replies.
//!
//! A stanza keeps its whole [`Element`] so payloads the core does not model pass through
//! untouched; the fields here are what every decision needs.

pub mod form;

use std::sync::Arc;

use crate::jid::{self, Jid};
use crate::xml::{Element, NS_COMPONENT, NS_STANZA_ERRORS, Str};

/// Namespaces the core speaks.
pub mod ns {
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    pub const REGISTER: &str = "jabber:iq:register";
    pub const GATEWAY: &str = "jabber:iq:gateway";
    pub const COMMANDS: &str = "http://jabber.org/protocol/commands";
    pub const PING: &str = "urn:xmpp:ping";
    pub const VERSION: &str = "jabber:iq:version";
    pub const VCARD: &str = "vcard-temp";
    pub const DATA: &str = "jabber:x:data";
    pub const RECEIPTS: &str = "urn:xmpp:receipts";
    pub const NICK: &str = "http://jabber.org/protocol/nick";
    pub const OOB: &str = "jabber:x:oob";
    pub const DELAY: &str = "urn:xmpp:delay";
    pub const REPLY: &str = "urn:xmpp:reply:0";
    pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
}

/// Which of the three stanza kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

/// A parsed stanza: kind, addressing and type, plus the element itself.
#[derive(Clone, Debug)]
pub struct Stanza {
    pub kind: Kind,
    pub from: Arc<Jid>,
    pub to: Arc<Jid>,
    /// The `type` attribute; the RFC 6120 default where absent (`normal` for messages,
    /// `available` for presence).
    pub typ: Str,
    pub id: Option<String>,
    pub el: Element,
}

/// Why an element is not a stanza the router can act on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StanzaError {
    #[error("not a stanza: <{0}>")]
    NotAStanza(String),
    #[error("missing or invalid 'from'")]
    BadFrom,
    #[error("missing or invalid 'to'")]
    BadTo,
}

impl Stanza {
    /// Classifies a top-level element read from the component stream.
    pub fn from_element(el: Element) -> Result<Stanza, StanzaError> {
        let kind = match (el.name.as_str(), el.ns.as_str()) {
            ("message", NS_COMPONENT) => Kind::Message,
            ("presence", NS_COMPONENT) => Kind::Presence,
            ("iq", NS_COMPONENT) => Kind::Iq,
            _ => return Err(StanzaError::NotAStanza(el.name.to_string())),
        };
        let from = el
            .attr("from")
            .and_then(jid::parse_shared)
            .ok_or(StanzaError::BadFrom)?;
        let to = el
            .attr("to")
            .and_then(jid::parse_shared)
            .ok_or(StanzaError::BadTo)?;
        let typ = Str::new(el.attr("type").unwrap_or(match kind {
            Kind::Message => "normal",
            Kind::Presence => "available",
            Kind::Iq => "",
        }));
        let id = el.attr("id").map(str::to_owned);
        Ok(Stanza {
            kind,
            from,
            to,
            typ,
            id,
            el,
        })
    }

    pub fn is_error(&self) -> bool {
        self.typ == "error"
    }

    /// True for an IQ that expects an answer.
    pub fn is_request(&self) -> bool {
        self.kind == Kind::Iq && (self.typ == "get" || self.typ == "set")
    }

    /// The first child element of an IQ (its payload).
    pub fn payload(&self) -> Option<&Element> {
        self.el.elements().next()
    }

    /// An IQ result with an optional payload, from whom the request was addressed to.
    pub fn iq_result(&self, payload: Option<Element>) -> Element {
        let mut e = Element::new("iq", NS_COMPONENT)
            .with_attr("type", "result")
            .with_attr("from", self.to.as_str())
            .with_attr("to", self.from.as_str())
            .with_opt_attr("id", self.id.as_deref());
        if let Some(p) = payload {
            e.push(p);
        }
        e
    }

    /// An error reply; `None` when this stanza is itself an error (never answer an error
    /// with an error) or an IQ result.
    pub fn error_reply(&self, condition: Condition, text: Option<&str>) -> Option<Element> {
        if self.is_error() || (self.kind == Kind::Iq && !self.is_request()) {
            return None;
        }
        let name = match self.kind {
            Kind::Message => "message",
            Kind::Presence => "presence",
            Kind::Iq => "iq",
        };
        let mut reply = Element::new(name, NS_COMPONENT)
            .with_attr("type", "error")
            .with_attr("from", self.to.as_str())
            .with_attr("to", self.from.as_str())
            .with_opt_attr("id", self.id.as_deref());
        // Echo the request payload of an IQ, as RFC 6120 §8.3.1 allows, so clients can match it.
        if self.kind == Kind::Iq
            && let Some(p) = self.payload()
        {
            reply.push(p.clone());
        }
        reply.push(error_element(condition, text));
        Some(reply)
    }
}

/// RFC 6120 §8.3.3 stanza error conditions ferry uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    RecipientUnavailable,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    UndefinedCondition,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Conflict => "conflict",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::Forbidden => "forbidden",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::JidMalformed => "jid-malformed",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
            Condition::NotAuthorized => "not-authorized",
            Condition::RecipientUnavailable => "recipient-unavailable",
            Condition::RegistrationRequired => "registration-required",
            Condition::RemoteServerNotFound => "remote-server-not-found",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::UndefinedCondition => "undefined-condition",
        }
    }

    /// The error `type` RFC 6120 §8.3.3 gives for the condition. Every condition is named,
    /// so a new one has to be given its type.
    pub fn error_type(self) -> &'static str {
        match self {
            Condition::BadRequest | Condition::JidMalformed | Condition::NotAcceptable => "modify",
            Condition::Forbidden | Condition::NotAuthorized | Condition::RegistrationRequired => {
                "auth"
            }
            // RFC 6120 §8.3.3.5 gives `cancel`; ferry answers `internal-server-error` only
            // when its store fails, which is transient (the database is busy, restarting,
            // or out of connections), so `wait` tells the client that trying again later
            // may work.
            Condition::InternalServerError
            | Condition::RecipientUnavailable
            | Condition::RemoteServerTimeout
            | Condition::ResourceConstraint => "wait",
            Condition::Conflict
            | Condition::FeatureNotImplemented
            | Condition::ItemNotFound
            | Condition::NotAllowed
            | Condition::RemoteServerNotFound
            | Condition::ServiceUnavailable
            | Condition::UndefinedCondition => "cancel",
        }
    }
}

/// Maps a bridge's error to the XMPP condition a user should see.
pub fn condition_for(kind: ferry_bridge_api::ErrorKind) -> Condition {
    use ferry_bridge_api::ErrorKind as K;
    match kind {
        K::Transient => Condition::RemoteServerTimeout,
        K::Malformed => Condition::JidMalformed,
        K::NotAcceptable => Condition::NotAcceptable,
        K::RecipientUnavailable => Condition::RecipientUnavailable,
        K::NotAuthorized => Condition::NotAuthorized,
        K::ResourceConstraint => Condition::ResourceConstraint,
        K::Forbidden => Condition::Forbidden,
        K::Permanent => Condition::UndefinedCondition,
    }
}

/// `<error type='…'><condition/><text>…</text></error>`.
pub fn error_element(condition: Condition, text: Option<&str>) -> Element {
    let mut e = Element::new("error", NS_COMPONENT)
        .with_attr("type", condition.error_type())
        .with_child(Element::new(condition.as_str(), NS_STANZA_ERRORS));
    if let Some(t) = text {
        e.push(Element::text_child("text", NS_STANZA_ERRORS, t).with_attr("xml:lang", "en"));
    }
    e
}

/// A `<message>` from `from` to `to` of the given type with a body.
pub fn message(from: &str, to: &str, typ: &str, body: &str) -> Element {
    Element::new("message", NS_COMPONENT)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("type", typ)
        .with_child(Element::text_child("body", NS_COMPONENT, body))
}

/// A `<presence>` from `from` to `to`; `typ` None means available.
pub fn presence(from: &str, to: &str, typ: Option<&str>) -> Element {
    Element::new("presence", NS_COMPONENT)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_opt_attr("type", typ)
}

/// Reads an XEP-0082 date-time (`2026-11-25T10:00:00Z`, fractions and offsets allowed) as
/// unix milliseconds; `None` when it is not one.
pub fn parse_stamp_ms(stamp: &str) -> Option<i64> {
    let s = stamp.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if s.len() < 19
        || s[4] != b'-'
        || s[7] != b'-'
        || s[10] != b'T'
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if s.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        let mut v = 0i64;
        for (k, b) in digits.iter().enumerate() {
            v += i64::from(b - b'0') * [100, 10, 1][k];
        }
        ms = v;
    }
    let offset_min = match s.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hh = i64::from(h1.checked_sub(b'0')?) * 10 + i64::from(h2.checked_sub(b'0')?);
            let mm = i64::from(m1.checked_sub(b'0')?) * 10 + i64::from(m2.checked_sub(b'0')?);
            if hh > 23 || mm > 59 {
                return None;
            }
            let v = hh * 60 + mm;
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_read_as_unix_milliseconds() {
        assert_eq!(super::parse_stamp_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            super::parse_stamp_ms("2026-11-25T10:00:00.250Z"),
            Some(1_795_600_800_250)
        );
        assert_eq!(
            super::parse_stamp_ms("2026-11-25T12:00:00+02:00"),
            Some(1_795_600_800_000)
        );
        for bad in [
            "",
            "2026-11-25",
            "2026-13-01T00:00:00Z",
            "2026-11-25T10:00:00",
            "x026-11-25T10:00:00Z",
            "2026-11-25T10:00:00.Z",
        ] {
            assert_eq!(super::parse_stamp_ms(bad), None, "{bad}");
        }
    }

    use super::*;
    use crate::xml::parse_element;

    fn stanza(xml: &str) -> Stanza {
        Stanza::from_element(parse_element(xml, NS_COMPONENT).expect("xml")).expect("stanza")
    }

    #[test]
    fn classifies_and_defaults_types() {
        let m = stanza("<message from='a@b/c' to='x@gw.b'><body>hi</body></message>");
        assert_eq!((m.kind, m.typ.as_str()), (Kind::Message, "normal"));
        let p = stanza("<presence from='a@b/c' to='gw.b'/>");
        assert_eq!((p.kind, p.typ.as_str()), (Kind::Presence, "available"));
        let err = Stanza::from_element(
            parse_element("<iq to='gw.b' type='get'/>", NS_COMPONENT).expect("xml"),
        );
        assert_eq!(err.err(), Some(StanzaError::BadFrom));
    }

    #[test]
    fn error_reply_swaps_addresses_and_carries_condition() {
        let iq = stanza(
            "<iq from='a@b/c' to='gw.b' type='get' id='q1'><query xmlns='urn:x:unknown'/></iq>",
        );
        let reply = iq
            .error_reply(Condition::ServiceUnavailable, None)
            .expect("reply");
        assert_eq!(
            reply.to_stanza_string(),
            "<iq type=\"error\" from=\"gw.b\" to=\"a@b/c\" id=\"q1\"><query xmlns=\"urn:x:unknown\"/><error type=\"cancel\"><service-unavailable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"
        );
    }

    #[test]
    fn never_an_error_in_reply_to_an_error_or_a_result() {
        let e = stanza("<message from='a@b/c' to='x@gw.b' type='error'/>");
        assert!(e.error_reply(Condition::Forbidden, None).is_none());
        let r = stanza("<iq from='a@b/c' to='gw.b' type='result' id='1'/>");
        assert!(r.error_reply(Condition::Forbidden, None).is_none());
    }

    #[test]
    fn error_types_follow_rfc_6120() {
        use Condition as C;
        let expected = [
            (C::BadRequest, "modify"),
            (C::Conflict, "cancel"),
            (C::FeatureNotImplemented, "cancel"),
            (C::Forbidden, "auth"),
            // RFC 6120 says `cancel`; ferry's are transient store failures (see error_type).
            (C::InternalServerError, "wait"),
            (C::ItemNotFound, "cancel"),
            (C::JidMalformed, "modify"),
            (C::NotAcceptable, "modify"),
            (C::NotAllowed, "cancel"),
            (C::NotAuthorized, "auth"),
            (C::RecipientUnavailable, "wait"),
            (C::RegistrationRequired, "auth"),
            (C::RemoteServerNotFound, "cancel"),
            (C::RemoteServerTimeout, "wait"),
            (C::ResourceConstraint, "wait"),
            (C::ServiceUnavailable, "cancel"),
            (C::UndefinedCondition, "cancel"),
        ];
        for (c, typ) in expected {
            assert_eq!(c.error_type(), typ, "{}", c.as_str());
        }
    }

    #[test]
    fn message_error_has_text() {
        let m = stanza("<message from='a@b/c' to='x@gw.b' id='m'><body>x</body></message>");
        let reply = m
            .error_reply(
                Condition::RecipientUnavailable,
                Some("mailbox does not exist"),
            )
            .expect("reply");
        let err = reply.child("error", NS_COMPONENT).expect("error");
        assert_eq!(err.attr("type"), Some("wait"));
        assert!(
            err.child("recipient-unavailable", NS_STANZA_ERRORS)
                .is_some()
        );
        assert_eq!(
            err.child_text("text", NS_STANZA_ERRORS).as_deref(),
            Some("mailbox does not exist")
        );
    }
}
