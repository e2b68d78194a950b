//! Email addresses as contact ids: reading what a user typed or a JID localpart (already
//! XEP-0106-unescaped by the core, or spelled with the `%` alias) into one canonical,
//! lowercased id, while keeping the original spelling for outgoing mail.

use ferry_bridge_api::{BridgeError, ParsedAddress, RemoteId};

/// The longest address SMTP allows (RFC 5321 §4.5.3.1.3 path limit less the brackets).
const MAX_ADDRESS: usize = 254;
const MAX_LOCAL: usize = 64;

/// A checked address: `local@domain`, with the domain lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// As the user spelled it (SPEC §3: the original spelling is kept for outgoing mail).
    pub spelled: String,
    /// Lowercased: the contact id.
    pub canonical: String,
}

impl Address {
    /// Reads `raw` (surrounding space and angle brackets allowed; `local%domain` accepted
    /// when there is no `@`).
    pub fn parse(raw: &str) -> Result<Address, BridgeError> {
        let s = raw.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(s)
            .trim();
        let s = s.strip_prefix("mailto:").unwrap_or(s);
        let (local, domain) = match s.rsplit_once('@') {
            Some(pair) => pair,
            None => s
                .rsplit_once('%')
                .ok_or_else(|| BridgeError::malformed(format!("{s:?} is not an email address")))?,
        };
        check_local(local)?;
        check_domain(domain)?;
        let spelled = format!("{local}@{}", domain.trim_end_matches('.'));
        if spelled.len() > MAX_ADDRESS {
            return Err(BridgeError::malformed("the address is too long"));
        }
        Ok(Address {
            canonical: spelled.to_lowercase(),
            spelled,
        })
    }

    pub fn domain(&self) -> &str {
        self.canonical
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or_default()
    }

    /// What the core needs: id, localpart (the canonical address) and display spelling.
    pub fn to_parsed(&self) -> ParsedAddress {
        ParsedAddress {
            id: RemoteId(self.canonical.clone()),
            localpart: self.canonical.clone(),
            display: self.spelled.clone(),
        }
    }
}

fn check_local(local: &str) -> Result<(), BridgeError> {
    if local.is_empty() || local.len() > MAX_LOCAL {
        return Err(BridgeError::malformed(
            "the part before @ must have 1 to 64 characters",
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(BridgeError::malformed(format!(
            "{local:?} is not a valid mailbox name (dots)"
        )));
    }
    // RFC 5322 dot-atom text, plus UTF-8 (RFC 6531).
    let ok = local.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || "!#$&'*+-/=?^_`{|}~.".contains(c)
            || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
    });
    if !ok {
        return Err(BridgeError::malformed(format!(
            "{local:?} is not a valid mailbox name"
        )));
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<String, BridgeError> {
    let d = domain.trim_end_matches('.').to_lowercase();
    let bad = || BridgeError::malformed(format!("{domain:?} is not a valid mail domain"));
    if d.is_empty() || d.len() > 253 || !d.contains('.') {
        return Err(bad());
    }
    for label in d.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| {
                c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())
            });
        if !ok {
            return Err(bad());
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_is_lowercase_and_spelling_is_kept() {
        let a = Address::parse("Bob.Smith@Example.com").expect("valid");
        assert_eq!(a.canonical, "bob.smith@example.com");
        assert_eq!(a.spelled, "Bob.Smith@Example.com");
        let p = a.to_parsed();
        assert_eq!(p.localpart, "bob.smith@example.com");
        assert_eq!(p.display, "Bob.Smith@Example.com");
    }

    #[test]
    fn percent_alias_and_brackets() {
        assert_eq!(
            Address::parse("bob.smith%example.com")
                .expect("alias")
                .canonical,
            "bob.smith@example.com"
        );
        assert_eq!(
            Address::parse(" <a+tag@x.org> ")
                .expect("brackets")
                .canonical,
            "a+tag@x.org"
        );
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "nobody",
            "@example.com",
            "a@",
            "a@localhost",
            "a b@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a@exa mple.com",
            "a@-x.com",
            "a\r\nBcc: x@y.z@example.com",
            "a<b@example.com",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Address::parse(&long).is_err());
    }
}
