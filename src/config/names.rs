//! Names in the config: DNS names (component domains, hosts), bare JIDs (`admins`,
//! number owners) and the `[xmpp] allowed` patterns, with their validation and matching.

use std::net::{IpAddr, Ipv6Addr};

/// Checks an ASCII DNS name (`email.example.org`, `localhost`) and lowercases it.
pub(super) fn normalize_domain(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    dns_name_error(&lower).map_or(Ok(lower), |why| Err(format!("invalid domain {s:?}: {why}")))
}

fn dns_name_error(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("empty");
    }
    if !s.is_ascii() {
        return Some("use the ascii (punycode, xn--…) form");
    }
    if s.len() > 253 {
        return Some("longer than 253 characters");
    }
    if s.ends_with('.') {
        return Some("must not end with a dot");
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Some("empty label");
        }
        if label.len() > 63 {
            return Some("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Some("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a label must not start or end with '-'");
        }
    }
    None
}

/// A host to connect to: a DNS name or an IP address (IPv6 with or without brackets).
pub(super) fn normalize_host(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if inner.parse::<Ipv6Addr>().is_ok() {
        return Ok(inner.to_ascii_lowercase());
    }
    let lower = s.to_ascii_lowercase();
    match dns_name_error(&lower) {
        None => Ok(lower),
        Some(why) => Err(format!("invalid host {s:?}: {why}")),
    }
}

/// Whether `host` is `localhost` or a loopback IP address (`127.0.0.0/8`, `::1`).
pub fn is_loopback_host(host: &str) -> bool {
    let inner = host
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(host);
    inner.eq_ignore_ascii_case("localhost")
        || inner.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks a bare JID (`user@domain`) and lowercases it.
pub(super) fn normalize_bare_jid(s: &str) -> Result<String, String> {
    let Some((local, domain)) = s.split_once('@') else {
        return Err(format!("invalid bare jid {s:?}: expected user@domain"));
    };
    if s.contains('/') {
        return Err(format!(
            "invalid bare jid {s:?}: a resource (/…) is not allowed"
        ));
    }
    if local.is_empty() {
        return Err(format!("invalid bare jid {s:?}: empty user part"));
    }
    if local.len() > 1023 {
        return Err(format!("invalid bare jid {s:?}: user part too long"));
    }
    if let Some(c) = local
        .chars()
        .find(|c| "\"&'/:<>@".contains(*c) || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "invalid bare jid {s:?}: {c:?} is not allowed in the user part"
        ));
    }
    if domain.is_empty() {
        return Err(format!("invalid bare jid {s:?}: empty domain"));
    }
    let domain = domain.to_ascii_lowercase();
    if let Some(why) = dns_name_error(&domain) {
        return Err(format!("invalid bare jid {s:?}: domain {why}"));
    }
    Ok(format!("{}@{domain}", local.to_lowercase()))
}

/// Checks one `[xmpp] allowed` entry and lowercases it: `*`, `*.domain`, `domain` or a
/// bare JID.
pub(super) fn normalize_allowed(s: &str) -> Result<String, String> {
    if s == "*" {
        return Ok("*".to_owned());
    }
    if let Some(rest) = s.strip_prefix("*.") {
        let lower = rest.to_ascii_lowercase();
        return match dns_name_error(&lower) {
            None => Ok(format!("*.{lower}")),
            Some(why) => Err(format!("invalid pattern {s:?}: {why}")),
        };
    }
    if s.contains('*') {
        return Err(format!(
            "invalid pattern {s:?}: '*' is allowed only alone (\"*\") or as a leading \"*.\""
        ));
    }
    if s.contains('/') {
        return Err(format!(
            "invalid pattern {s:?}: use a bare jid or a domain, not a full jid"
        ));
    }
    if s.contains('@') {
        return normalize_bare_jid(s);
    }
    normalize_domain(s)
}

/// Lowercases a JID and drops its resource, if any.
pub(super) fn bare_lower(jid: &str) -> std::borrow::Cow<'_, str> {
    // Byte searches: `str`'s pattern machinery costs more than the whole check on JIDs
    // this short, and it runs for every stanza. `/` is ASCII, so the cut is on a char
    // boundary.
    let bare = match jid.bytes().position(|b| b == b'/') {
        Some(i) => &jid[..i],
        None => jid,
    };
    // JIDs from the server are normalised already: most need no copy.
    if bare
        .bytes()
        .any(|b| !b.is_ascii() || b.is_ascii_uppercase())
    {
        std::borrow::Cow::Owned(bare.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(bare)
    }
}

/// Whether a normalized `allowed` pattern matches a lowercased bare JID.
pub(super) fn allowed_matches(pattern: &str, jid: &str) -> bool {
    let domain = match jid.bytes().rposition(|b| b == b'@') {
        Some(i) => &jid[i + 1..],
        None => jid,
    };
    if pattern == "*" {
        return true;
    }
    if let Some(parent) = pattern.strip_prefix("*.") {
        return domain == parent
            || domain
                .strip_suffix(parent)
                .is_some_and(|head| head.ends_with('.'));
    }
    if pattern.as_bytes().contains(&b'@') {
        return jid == pattern;
    }
    domain == pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(
            normalize_domain("Email.Example.ORG").as_deref(),
            Ok("email.example.org")
        );
        assert!(normalize_domain("localhost").is_ok());
        for bad in [
            "",
            "a..b",
            "-a.org",
            "a-.org",
            "a_b.org",
            "a.org.",
            "a b.org",
            "bücher.de",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_domain(&"a".repeat(64)).is_err());
    }

    #[test]
    fn bare_jids() {
        assert_eq!(
            normalize_bare_jid("Alice@Example.org").as_deref(),
            Ok("alice@example.org")
        );
        for bad in [
            "a@",
            "@example.org",
            "alice",
            "alice@example.org/res",
            "a b@example.org",
            "a@b@c",
            "a:b@example.org",
        ] {
            assert!(normalize_bare_jid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patterns_validate() {
        for good in ["*", "*.example.org", "example.org", "bob@example.org"] {
            assert!(normalize_allowed(good).is_ok(), "{good:?}");
        }
        for bad in [
            "*foo",
            "foo*",
            "*.",
            "*.*.example.org",
            "a@",
            "a@b/c",
            "",
            "ex ample.org",
        ] {
            assert!(normalize_allowed(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            normalize_allowed("*.Example.Org").as_deref(),
            Ok("*.example.org")
        );
    }

    #[test]
    fn patterns_match() {
        assert!(allowed_matches("*", "anyone@anywhere.net"));
        assert!(allowed_matches("example.org", "a@example.org"));
        assert!(!allowed_matches("example.org", "a@sub.example.org"));
        assert!(!allowed_matches("example.org", "a@badexample.org"));
        assert!(allowed_matches("*.example.org", "a@example.org"));
        assert!(allowed_matches("*.example.org", "a@x.y.example.org"));
        assert!(!allowed_matches("*.example.org", "a@badexample.org"));
        assert!(allowed_matches("bob@example.org", "bob@example.org"));
        assert!(!allowed_matches("bob@example.org", "rob@example.org"));
        assert_eq!(bare_lower("Bob@Example.org/Phone"), "bob@example.org");
    }

    #[test]
    fn hosts() {
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("LOCALHOST"));
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("127.5.0.1"));
        assert!(is_loopback_host("::1"));
        assert!(is_loopback_host("[::1]"));
        assert!(!is_loopback_host("mail.example.org"));
        assert!(!is_loopback_host("10.0.0.1"));
        assert_eq!(normalize_host("[::1]").as_deref(), Ok("::1"));
        assert_eq!(normalize_host("10.0.0.1").as_deref(), Ok("10.0.0.1"));
        assert!(normalize_host("mail example").is_err());
    }
}
