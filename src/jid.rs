//! JIDs: parsing and normalising through the `jid` crate, and XEP-0106 escaping of
//! localparts so that foreign ids with `@`, spaces or slashes can live in a JID.

use std::sync::Arc;

pub use jid::Jid;

/// The ten characters XEP-0106 escapes, with their escape codes.
const ESCAPES: [(char, &str); 10] = [
    (' ', "20"),
    ('"', "22"),
    ('&', "26"),
    ('\'', "27"),
    ('/', "2f"),
    (':', "3a"),
    ('<', "3c"),
    ('>', "3e"),
    ('@', "40"),
    ('\\', "5c"),
];

fn code_at(s: &str) -> Option<char> {
    let hex = s.get(..2)?;
    ESCAPES
        .iter()
        .find(|(_, code)| code.eq_ignore_ascii_case(hex))
        .map(|(c, _)| *c)
}

/// Escapes a string for use as a JID localpart (XEP-0106 §4.2). A backslash is escaped only
/// where it would otherwise start an escape sequence.
pub fn escape_node(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for (i, c) in s.char_indices() {
        if c == '\\' {
            if code_at(&s[i + 1..]).is_some() {
                out.push_str("\\5c");
            } else {
                out.push('\\');
            }
            continue;
        }
        match ESCAPES.iter().find(|(e, _)| *e == c) {
            Some((_, code)) => {
                out.push('\\');
                out.push_str(code);
            }
            None => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_node`]: every `\XX` that is one of the ten codes becomes its character.
pub fn unescape_node(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match code_at(after) {
            Some(c) => {
                out.push(c);
                rest = &after[2..];
            }
            None => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// How many parsed JIDs each thread remembers. A gateway sees the same few JIDs over and
/// over (its users' resources, its contacts), and normalising one (stringprep, IDNA) costs
/// far more than copying it.
const PARSED_CACHE: usize = 256;

thread_local! {
    /// Recently parsed JIDs by their text as received; emptied when full.
    /// (foldhash: a few hundred entries at most, so a hasher built against flooding buys
    /// nothing here and costs a SipHash of every JID twice per stanza.)
    static PARSED: std::cell::RefCell<
        std::collections::HashMap<Box<str>, Arc<Jid>, foldhash::fast::RandomState>,
    > = std::cell::RefCell::new(std::collections::HashMap::with_capacity_and_hasher(
        PARSED_CACHE,
        foldhash::fast::RandomState::default(),
    ));
}

/// Parses and normalises a JID from a stanza attribute.
pub fn parse(s: &str) -> Option<Jid> {
    parse_shared(s).map(Arc::unwrap_or_clone)
}

/// [`parse`], sharing the remembered JID instead of copying it (a stanza's `from` and
/// `to`: the same few JIDs over and over).
pub fn parse_shared(s: &str) -> Option<Arc<Jid>> {
    if let Some(j) = PARSED.with(|c| c.borrow().get(s).cloned()) {
        return Some(j);
    }
    let j = Arc::new(Jid::new(s).ok()?);
    PARSED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= PARSED_CACHE {
            c.clear();
        }
        c.insert(s.into(), Arc::clone(&j));
    });
    Some(j)
}

/// The bare form (`node@domain` or `domain`) of a JID, as text: its normalised text up to
/// the resource (neither a localpart nor a domain may hold a `/`).
pub fn bare(j: &Jid) -> String {
    bare_str(j).to_owned()
}

/// [`bare`] without a copy.
pub fn bare_str(j: &Jid) -> &str {
    // The resource is the tail after the first `/`: cutting it off by its length needs
    // no search.
    let s = j.as_str();
    match j.resource() {
        Some(r) => s
            .get(..s.len().saturating_sub(r.as_str().len() + 1))
            .unwrap_or(s),
        None => s,
    }
}

/// The localpart of a JID as text, if any.
pub fn node(j: &Jid) -> Option<&str> {
    j.node().map(|n| n.as_str())
}

/// The domain of a JID as text.
pub fn domain(j: &Jid) -> &str {
    j.domain().as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_str_cuts_the_resource_at_its_first_slash() {
        for (full, bare) in [
            ("juliet@example.com/balcony", "juliet@example.com"),
            ("juliet@example.com/a/b@c", "juliet@example.com"),
            ("juliet@example.com", "juliet@example.com"),
            ("example.com/res", "example.com"),
            ("example.com", "example.com"),
        ] {
            let j = Jid::new(full).expect("valid JID");
            assert_eq!(bare_str(&j), bare, "{full}");
        }
    }

    #[test]
    fn xep0106_examples_round_trip() {
        // Examples from XEP-0106 §5.
        for (raw, escaped) in [
            ("space cadet", "space\\20cadet"),
            ("call me \"ishmael\"", "call\\20me\\20\\22ishmael\\22"),
            ("at&t guy", "at\\26t\\20guy"),
            ("d'artagnan", "d\\27artagnan"),
            ("/.fanboy", "\\2f.fanboy"),
            ("::foo::", "\\3a\\3afoo\\3a\\3a"),
            ("<foo>", "\\3cfoo\\3e"),
            ("user@host", "user\\40host"),
            ("c:\\net", "c\\3a\\net"),
            ("c:\\\\net", "c\\3a\\\\net"),
            ("c:\\cool stuff", "c\\3a\\cool\\20stuff"),
            ("c:\\5commas", "c\\3a\\5c5commas"),
        ] {
            assert_eq!(escape_node(raw), escaped, "escape {raw}");
            assert_eq!(unescape_node(escaped), raw, "unescape {escaped}");
        }
    }

    #[test]
    fn email_localpart() {
        assert_eq!(
            escape_node("bob.smith@example.com"),
            "bob.smith\\40example.com"
        );
        let j = parse("bob.smith\\40example.com@email.example.org/res").expect("valid");
        assert_eq!(node(&j), Some("bob.smith\\40example.com"));
        assert_eq!(
            unescape_node(node(&j).unwrap_or("")),
            "bob.smith@example.com"
        );
        assert_eq!(bare(&j), "bob.smith\\40example.com@email.example.org");
    }

    #[test]
    fn parsing_again_gives_the_same_jid() {
        for raw in [
            "Alice@Example.ORG/Phone",
            "example.org",
            "a@b/c/d@e",
            "straße@例え.jp/x",
        ] {
            let first = parse(raw);
            let again = parse(raw);
            assert_eq!(first, again, "{raw}");
            assert_eq!(
                first.as_ref().map(|j| j.as_str()),
                Jid::new(raw).ok().as_ref().map(|j| j.as_str())
            );
        }
        let j = parse("Alice@Example.ORG/Phone/2").expect("valid");
        assert_eq!(bare(&j), j.to_bare().as_str());
        let j = parse("example.org/res").expect("valid");
        assert_eq!(bare(&j), "example.org");
        assert!(parse("a@b/").is_none());
        assert!(parse("a@b/").is_none(), "a refused JID is refused again");
    }

    #[test]
    fn invalid_jids_are_refused() {
        assert!(parse("").is_none());
        assert!(parse("a@").is_none());
        assert!(parse("@b").is_none());
        assert!(parse("a@b/").is_none());
    }
}
