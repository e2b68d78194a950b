//! Outgoing mail → bytes: `compose` builds a [`Draft`] into an RFC 5322 message with
//! lettre's builder (a UTF-8 `text/plain` body; `multipart/mixed` when there are
//! attachments), safe against header injection; `subject_from_body` makes a subject for a
//! chat message that has none.
//!
//! Before anything reaches a header, every value (subject, display names, file names) goes
//! through [`sanitize_header`] (control characters, CR, LF and NUL included, become spaces;
//! whitespace runs collapse; trimmed), addresses must parse as addresses and have no
//! whitespace, and message ids must pass [`is_valid_message_id`], else the draft is refused
//! with a [`ComposeError`]. lettre then encodes (RFC 2047 / RFC 2231) what is not ASCII.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::header::ContentType;
use lettre::message::{Attachment as LettreAttachment, MultiPart, SinglePart};

use crate::mime::{Attachment, Mailbox, fallback_file_name, sanitize_file_name};

/// Subjects made by [`subject_from_body`] are at most this many characters, plus `…`.
pub const SUBJECT_CHARS: usize = 60;

/// The latest `Date` lettre can write (9999-12-31T23:59:59.999Z), in ms since the epoch.
const MAX_DATE_MS: i64 = 253_402_300_799_999;

/// A mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub from: Mailbox,
    pub to: Mailbox,
    pub subject: String,
    /// Plain text; line ends may be `\n`, `\r\n` or `\r`.
    pub body: String,
    /// Without angle brackets, e.g. `ferry.42.abc@example.org`.
    pub message_id: String,
    /// Without angle brackets.
    pub in_reply_to: Option<String>,
    /// Without angle brackets, oldest first. Every entry must pass [`is_valid_message_id`]
    /// (filter ids taken from received mail with it first).
    pub references: Vec<String>,
    /// Milliseconds since the Unix epoch; from 1970 to 9999.
    pub date_ms: i64,
    pub attachments: Vec<Attachment>,
}

/// Why a draft was refused.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("invalid mail address {0:?}")]
    Address(String),
    #[error("invalid message id {0:?}")]
    MessageId(String),
    #[error("date out of range: {0} ms since the epoch")]
    Date(i64),
    #[error("could not build the mail: {0}")]
    Build(String),
}

/// Builds the mail as bytes, ready for SMTP `DATA` (CRLF line ends).
///
/// The headers are exactly `From`, `To`, `Subject`, `Message-ID`, `Date`, `MIME-Version`,
/// `Content-Type`, `Content-Transfer-Encoding` (single part only), and `In-Reply-To` /
/// `References` when given.
pub fn compose(d: &Draft) -> Result<Vec<u8>, ComposeError> {
    let message_id = checked_id(&d.message_id)?;
    let mut builder = lettre::Message::builder()
        .from(mailbox(&d.from)?)
        .to(mailbox(&d.to)?)
        .subject(sanitize_header(&d.subject))
        .message_id(Some(format!("<{message_id}>")))
        .date(date(d.date_ms)?);
    if let Some(id) = &d.in_reply_to {
        builder = builder.in_reply_to(format!("<{}>", checked_id(id)?));
    }
    if !d.references.is_empty() {
        let refs = d
            .references
            .iter()
            .map(|id| checked_id(id).map(|id| format!("<{id}>")))
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.references(refs.join(" "));
    }

    let text = SinglePart::plain(normalize_body(&d.body));
    let message = if d.attachments.is_empty() {
        builder.singlepart(text)
    } else {
        let mut parts = MultiPart::mixed().singlepart(text);
        for (index, attachment) in d.attachments.iter().enumerate() {
            let essence = essence(&attachment.content_type);
            let mut name = sanitize_header(&sanitize_file_name(&attachment.name));
            if name.is_empty() {
                name = fallback_file_name(index + 1, &essence);
            }
            parts = parts.singlepart(
                LettreAttachment::new(name).body(attachment.data.clone(), content_type(&essence)),
            );
        }
        builder.multipart(parts)
    }
    .map_err(|e| ComposeError::Build(e.to_string()))?;
    Ok(message.formatted())
}

/// A subject for a message that has none: its first non-empty line, shortened to about
/// [`SUBJECT_CHARS`] characters on a word boundary with `…`; `(no subject)` when empty.
pub fn subject_from_body(body: &str) -> String {
    let Some(line) = body
        .split(['\n', '\r'])
        .map(sanitize_header)
        .find(|l| !l.is_empty())
    else {
        return "(no subject)".to_owned();
    };
    if line.chars().count() <= SUBJECT_CHARS {
        return line;
    }
    let cut = line
        .char_indices()
        .nth(SUBJECT_CHARS)
        .map_or(line.len(), |(i, _)| i);
    let head = &line[..cut];
    let on_boundary = line[cut..].starts_with(' ');
    let head = if on_boundary {
        head
    } else {
        match head.rfind(' ') {
            Some(space) if head[..space].chars().count() >= SUBJECT_CHARS / 2 => &head[..space],
            _ => head,
        }
    };
    format!("{}…", head.trim_end())
}

/// A header value on one line: every control character (CR, LF, NUL, tab, DEL, C1) and every
/// whitespace run becomes one space, and the ends are trimmed. An `=?` (which would start an
/// RFC 2047 encoded word, decoded by the receiver into other text) gets an invisible U+200B
/// between its two characters, which also makes lettre send that word encoded, as typed.
/// Idempotent.
pub fn sanitize_header(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split(|c: char| c.is_control() || c.is_whitespace()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.contains("=?") {
        out = out.replace("=?", "=\u{200b}?");
    }
    out
}

/// Whether `id` (without brackets) looks like a message id: `left@right`, both sides
/// non-empty, printable ASCII atom characters and dots only (no space, bracket, quote).
pub fn is_valid_message_id(id: &str) -> bool {
    let atom = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
    };
    id.len() <= 900
        && id
            .split_once('@')
            .is_some_and(|(left, right)| atom(left) && atom(right))
}

fn checked_id(id: &str) -> Result<&str, ComposeError> {
    if is_valid_message_id(id) {
        Ok(id)
    } else {
        Err(ComposeError::MessageId(id.to_owned()))
    }
}

fn mailbox(m: &Mailbox) -> Result<lettre::message::Mailbox, ComposeError> {
    let bad = || ComposeError::Address(m.address.clone());
    if m.address.is_empty()
        || m.address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    let address: lettre::Address = m.address.parse().map_err(|_| bad())?;
    let name = m
        .name
        .as_deref()
        .map(sanitize_header)
        .filter(|n| !n.is_empty());
    Ok(lettre::message::Mailbox::new(name, address))
}

fn date(ms: i64) -> Result<SystemTime, ComposeError> {
    if !(0..=MAX_DATE_MS).contains(&ms) {
        return Err(ComposeError::Date(ms));
    }
    let ms = u64::try_from(ms).map_err(|_| ComposeError::Date(ms))?;
    Ok(UNIX_EPOCH + Duration::from_millis(ms))
}

/// An attachment's `type/subtype`, lower case, when made of plain tokens (parameters
/// dropped), else `application/octet-stream`.
fn essence(value: &str) -> String {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let valid = essence
        .split_once('/')
        .is_some_and(|(t, s)| token(t) && token(s));
    if valid {
        essence.to_ascii_lowercase()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// The `Content-Type` for an essence from [`essence`] (`; charset=utf-8` added for text).
fn content_type(essence: &str) -> ContentType {
    let parsed = if essence.starts_with("text/") {
        ContentType::parse(&format!("{essence}; charset=utf-8"))
    } else {
        ContentType::parse(essence)
    };
    parsed
        .or_else(|_| ContentType::parse("application/octet-stream"))
        .unwrap_or(ContentType::TEXT_PLAIN)
}

/// The body with `\n` line ends and no control character but `\n` and `\t`.
fn normalize_body(body: &str) -> String {
    body.replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft {
            from: Mailbox {
                address: "alice@example.org".into(),
                name: Some("Alice".into()),
            },
            to: Mailbox {
                address: "bob@example.net".into(),
                name: None,
            },
            subject: "Hello".into(),
            body: "Hi Bob,\nhow are you?\n".into(),
            message_id: "ferry.42.abc@example.org".into(),
            in_reply_to: None,
            references: Vec::new(),
            date_ms: 1_700_000_000_000,
            attachments: Vec::new(),
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn plain_mail() {
        let out = text(&compose(&draft()).expect("compose"));
        assert!(out.contains("From: Alice <alice@example.org>\r\n"), "{out}");
        assert!(out.contains("To: bob@example.net\r\n"), "{out}");
        assert!(out.contains("Subject: Hello\r\n"), "{out}");
        assert!(
            out.contains("Message-ID: <ferry.42.abc@example.org>\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{out}"
        );
        assert!(!out.contains("In-Reply-To"));
        assert!(out.contains("\r\n\r\nHi Bob,\r\nhow are you?\r\n"), "{out}");
    }

    #[test]
    fn threading_headers() {
        let mut d = draft();
        d.in_reply_to = Some("b@x".into());
        d.references = vec!["a@x".into(), "b@x".into()];
        let out = text(&compose(&d).expect("compose"));
        assert!(out.contains("In-Reply-To: <b@x>\r\n"), "{out}");
        assert!(out.contains("References: <a@x> <b@x>\r\n"), "{out}");
    }

    #[test]
    fn injection_is_neutralized() {
        let mut d = draft();
        d.subject = "Hi\r\nBcc: eve@evil.example\r\n\r\nbody".into();
        d.from.name = Some("Alice\nX-Evil: 1".into());
        let out = text(&compose(&d).expect("compose"));
        let head = out.split("\r\n\r\n").next().unwrap_or_default();
        assert!(!head.contains("\r\nBcc:"), "{head}");
        assert!(!head.contains("\r\nX-Evil:"), "{head}");
        assert!(
            head.contains("Subject: Hi Bcc: eve@evil.example body\r\n"),
            "{head}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let mut d = draft();
        d.message_id = "no-at-sign".into();
        assert!(matches!(compose(&d), Err(ComposeError::MessageId(_))));
        let mut d = draft();
        d.references = vec!["a@b>\r\nBcc: x@y".into()];
        assert!(matches!(compose(&d), Err(ComposeError::MessageId(_))));
        let mut d = draft();
        d.in_reply_to = Some("<a@b>".into());
        assert!(matches!(compose(&d), Err(ComposeError::MessageId(_))));
        let mut d = draft();
        d.to.address = "bob@example.net\r\nBcc: eve@evil.example".into();
        assert!(matches!(compose(&d), Err(ComposeError::Address(_))));
        let mut d = draft();
        d.from.address = "not an address".into();
        assert!(matches!(compose(&d), Err(ComposeError::Address(_))));
        let mut d = draft();
        d.date_ms = -1;
        assert!(matches!(compose(&d), Err(ComposeError::Date(_))));
        d.date_ms = i64::MAX;
        assert!(matches!(compose(&d), Err(ComposeError::Date(_))));
        d.date_ms = MAX_DATE_MS;
        assert!(compose(&d).is_ok());
    }

    #[test]
    fn attachments_make_multipart_mixed() {
        let mut d = draft();
        d.attachments = vec![
            Attachment {
                name: "../../etc/passwd".into(),
                content_type: "application/pdf".into(),
                data: vec![0, 1, 2, 255],
            },
            Attachment {
                name: String::new(),
                content_type: "image/png; name=\"x\"\r\nBcc: e@x".into(),
                data: b"png".to_vec(),
            },
        ];
        let out = text(&compose(&d).expect("compose"));
        assert!(out.contains("Content-Type: multipart/mixed;"), "{out}");
        assert!(out.contains("filename=\"_.._etc_passwd\""), "{out}");
        assert!(out.contains("Content-Type: application/pdf\r\n"), "{out}");
        // Parameters of a given type are dropped; a made-up name follows the type.
        assert!(out.contains("Content-Type: image/png\r\n"), "{out}");
        assert!(out.contains("filename=\"attachment-2.png\""), "{out}");
        assert!(!out.contains("\r\nBcc:"), "{out}");
    }

    #[test]
    fn subjects_from_bodies() {
        assert_eq!(subject_from_body(""), "(no subject)");
        assert_eq!(subject_from_body(" \n\t\r\n"), "(no subject)");
        assert_eq!(
            subject_from_body("\n\n  Lunch today?  \nsecond line"),
            "Lunch today?"
        );
        let long = "The quick brown fox jumps over the lazy dog and keeps running far away";
        let s = subject_from_body(long);
        assert_eq!(s, "The quick brown fox jumps over the lazy dog and keeps…");
        let s = subject_from_body(&"x".repeat(100));
        assert_eq!(s, format!("{}…", "x".repeat(60)));
        let s = subject_from_body(&"é".repeat(70));
        assert_eq!(s.chars().count(), 61);
        assert_eq!(subject_from_body("a\u{0}b"), "a b");
        assert_eq!(subject_from_body("=?utf-8?q?x?="), "=\u{200b}?utf-8?q?x?=");
    }

    #[test]
    fn message_ids() {
        assert!(is_valid_message_id("ferry.42.abc@example.org"));
        assert!(is_valid_message_id(
            "86a2019dbec6$caa86cc0$390b0485@auracom.net"
        ));
        for bad in [
            "", "@", "a@", "@b", "a b@c", "<a@b>", "a@b@c", "a\r@b", "é@b", "a\"@b",
        ] {
            assert!(!is_valid_message_id(bad), "{bad:?}");
        }
    }
}
