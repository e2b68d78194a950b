//! XMPP → bridge: decides what an incoming stanza means, without doing any I/O.
//!
//! [`route`] looks only at the stanza and the access rules and returns a [`Route`]; the
//! gateway then carries it out (answers, stores, forwards). Keeping the decision pure makes
//! it cheap (it runs for every stanza) and testable with literal XML.

use crate::jid;
use crate::stanza::{Condition, Kind, Stanza, ns};

/// Who may use the gateway.
pub trait Access {
    fn is_allowed(&self, bare_jid: &str) -> bool;
    fn is_admin(&self, bare_jid: &str) -> bool;
}

/// What to do with a stanza.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Nothing to do (errors, results, presence of strangers, chat states).
    Ignore,
    /// Answer with this error condition.
    Reject(Condition),
    /// An IQ for the gateway domain itself.
    DomainIq,
    /// A message to the bare gateway domain (chat commands).
    DomainMessage,
    /// A presence for the gateway domain.
    DomainPresence,
    /// An IQ for a contact; carries the localpart as it appears in the JID.
    ContactIq(String),
    /// A message for a contact: goes to the outbox.
    ContactMessage(String),
    /// A presence for a contact.
    ContactPresence(String),
}

/// IQs that answer anyone, allowed or not (SPEC §4): disco#info, version, ping, and the
/// commands list (which is empty for strangers).
fn open_to_anyone(st: &Stanza) -> bool {
    if st.kind != Kind::Iq || st.typ != "get" {
        return false;
    }
    match st.payload() {
        Some(p) => {
            p.ns == ns::DISCO_INFO
                || p.ns == ns::VERSION
                || p.ns == ns::PING
                || (p.ns == ns::DISCO_ITEMS && p.attr("node") == Some(ns::COMMANDS))
        }
        None => false,
    }
}

/// Decides what `st`, addressed to this gateway's `domain`, means.
pub fn route(st: &Stanza, domain: &str, access: &dyn Access) -> Route {
    if st.is_error() {
        return Route::Ignore;
    }
    if st.kind == Kind::Iq && !st.is_request() {
        // Results of our own IQs (keepalive pings): nothing to do.
        return Route::Ignore;
    }
    if jid::domain(&st.to) != domain {
        return match st.kind {
            Kind::Presence => Route::Ignore,
            _ => Route::Reject(Condition::ItemNotFound),
        };
    }
    let from_bare = jid::bare_str(&st.from);
    let allowed = access.is_allowed(from_bare) || access.is_admin(from_bare)
        // Our own keepalive pings come from the domain itself.
        || from_bare == domain;
    if !allowed && !open_to_anyone(st) {
        return match st.kind {
            Kind::Presence => Route::Ignore,
            _ => Route::Reject(Condition::Forbidden),
        };
    }
    match (jid::node(&st.to), st.kind) {
        (None, Kind::Iq) => Route::DomainIq,
        (None, Kind::Message) => {
            if st.to.resource().is_some() {
                Route::Reject(Condition::ServiceUnavailable)
            } else {
                Route::DomainMessage
            }
        }
        (None, Kind::Presence) => Route::DomainPresence,
        (Some(local), Kind::Iq) => Route::ContactIq(local.to_owned()),
        (Some(local), Kind::Message) => match st.typ.as_str() {
            "chat" | "normal" => Route::ContactMessage(local.to_owned()),
            // groupchat and headline make no sense towards a mail or SMS contact.
            _ => Route::Reject(Condition::NotAcceptable),
        },
        (Some(local), Kind::Presence) => Route::ContactPresence(local.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{NS_COMPONENT, parse_element};

    struct Only(&'static str);
    impl Access for Only {
        fn is_allowed(&self, bare: &str) -> bool {
            bare.ends_with(self.0)
        }
        fn is_admin(&self, _: &str) -> bool {
            false
        }
    }

    fn r(xml: &str) -> Route {
        let st =
            Stanza::from_element(parse_element(xml, NS_COMPONENT).expect("xml")).expect("stanza");
        route(&st, "gw.example", &Only("@example"))
    }

    #[test]
    fn routes_by_address_and_kind() {
        assert_eq!(
            r(
                "<iq type='get' id='1' from='a@example/r' to='gw.example'><query xmlns='jabber:iq:register'/></iq>"
            ),
            Route::DomainIq
        );
        assert_eq!(
            r(
                "<message type='chat' from='a@example/r' to='bob\\40x.org@gw.example'><body>hi</body></message>"
            ),
            Route::ContactMessage("bob\\40x.org".into())
        );
        assert_eq!(
            r("<message from='a@example/r' to='gw.example'><body>help</body></message>"),
            Route::DomainMessage
        );
        assert_eq!(
            r("<presence type='subscribe' from='a@example/r' to='x@gw.example'/>"),
            Route::ContactPresence("x".into())
        );
    }

    #[test]
    fn strangers_get_forbidden_except_for_public_queries() {
        assert_eq!(
            r("<message from='z@elsewhere/r' to='x@gw.example'><body>hi</body></message>"),
            Route::Reject(Condition::Forbidden)
        );
        assert_eq!(
            r(
                "<iq type='set' id='1' from='z@elsewhere/r' to='gw.example'><query xmlns='jabber:iq:register'/></iq>"
            ),
            Route::Reject(Condition::Forbidden)
        );
        assert_eq!(
            r("<presence type='subscribe' from='z@elsewhere/r' to='gw.example'/>"),
            Route::Ignore
        );
        for q in [
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
            "<query xmlns='jabber:iq:version'/>",
            "<ping xmlns='urn:xmpp:ping'/>",
            "<query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/>",
        ] {
            assert_eq!(
                r(&format!(
                    "<iq type='get' id='1' from='z@elsewhere/r' to='gw.example'>{q}</iq>"
                )),
                Route::DomainIq,
                "{q}"
            );
        }
    }

    #[test]
    fn errors_and_results_are_never_answered() {
        assert_eq!(
            r("<message type='error' from='z@elsewhere/r' to='x@gw.example'/>"),
            Route::Ignore
        );
        assert_eq!(
            r("<iq type='result' id='1' from='a@example/r' to='gw.example'/>"),
            Route::Ignore
        );
    }

    #[test]
    fn groupchat_to_a_contact_is_not_acceptable() {
        assert_eq!(
            r(
                "<message type='groupchat' from='a@example/r' to='x@gw.example'><body>x</body></message>"
            ),
            Route::Reject(Condition::NotAcceptable)
        );
    }
}
