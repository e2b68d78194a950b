//! `ferry_email::compose` against header injection: property tests feed arbitrary strings
//! (CR, LF, NUL, other controls, non-ASCII) into every header value and check that compose
//! never panics, that the header section holds exactly the expected header names (read both
//! line by line and by mail-parser), that the decoded Subject and display names equal the
//! sanitized input, and that the body and attachments round-trip.

use std::collections::BTreeSet;

use ferry_email::compose::{
    ComposeError, Draft, compose, is_valid_message_id, sanitize_header, subject_from_body,
};
use ferry_email::mime::{Attachment, Limits, Mailbox, parse};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use proptest::prelude::*;

/// Text with everything an attacker would try: CR, LF, NUL, tabs, other controls, header
/// look-alikes, quotes and brackets, encoded-word look-alikes, and non-ASCII.
fn nasty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\r\n".to_owned()),
        Just("\r".to_owned()),
        Just("\n".to_owned()),
        Just("\0".to_owned()),
        Just("\t".to_owned()),
        Just("\u{85}\u{2028}\u{7f}\u{1b}".to_owned()),
        Just("\r\nBcc: eve@evil.example\r\n".to_owned()),
        Just("\nContent-Type: text/html\n\n<b>".to_owned()),
        Just("=?utf-8?B?QmNjOiBldmU=?=".to_owned()),
        Just("\"<>,;:\\@()[]".to_owned()),
        Just("  ".to_owned()),
        "[a-zA-Z0-9 .]{0,12}",
        "\\PC{0,8}",
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

/// An id part: mostly valid atoms, sometimes nasty.
fn id_part() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9.$_-]{1,16}",
        1 => nasty(),
    ]
}

fn message_id() -> impl Strategy<Value = String> {
    (id_part(), id_part()).prop_map(|(l, r)| format!("{l}@{r}"))
}

fn draft() -> impl Strategy<Value = Draft> {
    (
        (nasty(), nasty(), nasty(), nasty()),
        (message_id(), proptest::option::of(message_id())),
        proptest::collection::vec(message_id(), 0..4),
        proptest::collection::vec(
            (nasty(), proptest::collection::vec(any::<u8>(), 0..300)),
            0..3,
        ),
        0i64..=253_402_300_799_999,
    )
        .prop_map(
            |((from_name, to_name, subject, body), (id, reply), refs, files, date_ms)| Draft {
                from: Mailbox {
                    address: "alice@example.org".into(),
                    name: Some(from_name),
                },
                to: Mailbox {
                    address: "bob@example.net".into(),
                    name: Some(to_name),
                },
                subject,
                body,
                message_id: id,
                in_reply_to: reply,
                references: refs,
                date_ms,
                attachments: files
                    .into_iter()
                    .map(|(name, data)| Attachment {
                        name,
                        content_type: "application/octet-stream".into(),
                        data,
                    })
                    .collect(),
            },
        )
}

fn expected_headers(d: &Draft) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = [
        "date",
        "from",
        "to",
        "subject",
        "message-id",
        "mime-version",
        "content-type",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if d.attachments.is_empty() {
        names.insert("content-transfer-encoding".into());
    }
    if d.in_reply_to.is_some() {
        names.insert("in-reply-to".into());
    }
    if !d.references.is_empty() {
        names.insert("references".into());
    }
    names
}

/// The header names of the top header section, read line by line (continuation lines
/// start with a space or tab); every line must be a header or a continuation.
fn header_names(raw: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(raw).map_err(|e| e.to_string())?;
    let (head, _) = text.split_once("\r\n\r\n").ok_or("no end of headers")?;
    let mut names = Vec::new();
    for line in head.split("\r\n") {
        if line.contains(['\r', '\n', '\0']) {
            return Err(format!("bare CR/LF/NUL in {line:?}"));
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let (name, _) = line
            .split_once(':')
            .ok_or(format!("not a header: {line:?}"))?;
        names.push(name.to_ascii_lowercase());
    }
    Ok(names)
}

fn expected_body(body: &str) -> String {
    body.replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn compose_is_injection_safe(d in draft()) {
        let ids_ok = is_valid_message_id(&d.message_id)
            && d.in_reply_to.as_deref().is_none_or(is_valid_message_id)
            && d.references.iter().all(|r| is_valid_message_id(r));
        let raw = match compose(&d) {
            Ok(raw) => raw,
            Err(ComposeError::MessageId(_)) => {
                prop_assert!(!ids_ok);
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        };
        prop_assert!(ids_ok);

        // Exactly the expected headers, each once, read line by line...
        let names = header_names(&raw).map_err(TestCaseError::fail)?;
        let expected = expected_headers(&d);
        prop_assert_eq!(names.len(), expected.len(), "{:?}", names);
        prop_assert_eq!(names.iter().cloned().collect::<BTreeSet<_>>(), expected.clone());

        // ...and by mail-parser.
        let msg = MessageParser::default().parse(&raw).ok_or_else(|| TestCaseError::fail("mail-parser: no message"))?;
        let parsed: BTreeSet<String> = msg.parts[0]
            .headers
            .iter()
            .map(|h| h.name().to_ascii_lowercase())
            .collect();
        prop_assert_eq!(parsed, expected);

        // The decoded values are the sanitized input.
        prop_assert_eq!(msg.subject().unwrap_or(""), sanitize_header(&d.subject));
        let from = msg.from().and_then(|a| a.first()).ok_or_else(|| TestCaseError::fail("no From"))?;
        prop_assert_eq!(from.address.as_deref(), Some("alice@example.org"));
        let from_name = d.from.name.as_deref().map(sanitize_header).filter(|n| !n.is_empty());
        prop_assert_eq!(from.name.as_deref(), from_name.as_deref());
        let to = msg.to().and_then(|a| a.first()).ok_or_else(|| TestCaseError::fail("no To"))?;
        let to_name = d.to.name.as_deref().map(sanitize_header).filter(|n| !n.is_empty());
        prop_assert_eq!(to.name.as_deref(), to_name.as_deref());
        prop_assert_eq!(msg.message_id(), Some(d.message_id.as_str()));

        // The body round-trips (line ends as CRLF on the wire, one CRLF closing the part).
        let body = msg.body_text(0).ok_or_else(|| TestCaseError::fail("no body"))?.replace("\r\n", "\n");
        let sent = expected_body(&d.body);
        prop_assert!(
            body == sent || body.strip_suffix('\n') == Some(sent.as_str()),
            "body {:?} != {:?}", body, sent
        );

        // Attachments: bytes exact, names sanitized, through mail-parser and through mime::parse.
        let files: Vec<_> = msg.attachments().collect();
        prop_assert_eq!(files.len(), d.attachments.len());
        for (sent, got) in d.attachments.iter().zip(&files) {
            let data = match &got.body {
                PartType::Binary(b) | PartType::InlineBinary(b) => b.to_vec(),
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            prop_assert_eq!(&data, &sent.data);
            let name = got.attachment_name().unwrap_or_default();
            prop_assert!(!name.contains(['/', '\\', '\r', '\n', '\0']), "{:?}", name);
        }
        let mail = parse(&raw, &Limits::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(mail.attachments.len(), d.attachments.len());
        for (sent, got) in d.attachments.iter().zip(&mail.attachments) {
            prop_assert_eq!(&got.data, &sent.data);
        }
    }

    #[test]
    fn nasty_addresses_are_refused_not_injected(local in nasty(), domain in nasty()) {
        let d = Draft {
            from: Mailbox { address: "alice@example.org".into(), name: None },
            to: Mailbox { address: format!("{local}@{domain}"), name: None },
            subject: "s".into(),
            body: "b".into(),
            message_id: "a@b".into(),
            in_reply_to: None,
            references: Vec::new(),
            date_ms: 0,
            attachments: Vec::new(),
        };
        match compose(&d) {
            Ok(raw) => {
                let names = header_names(&raw).map_err(TestCaseError::fail)?;
                prop_assert_eq!(names.len(), expected_headers(&d).len(), "{:?}", names);
            }
            Err(ComposeError::Address(_)) => {}
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        }
    }

    #[test]
    fn subject_from_body_is_one_short_line(body in nasty()) {
        let s = subject_from_body(&body);
        prop_assert!(!s.is_empty());
        prop_assert!(s.chars().count() <= 61, "{:?}", s);
        prop_assert!(!s.chars().any(char::is_control), "{:?}", s);
        prop_assert_eq!(s.trim(), s.as_str());
    }
}
