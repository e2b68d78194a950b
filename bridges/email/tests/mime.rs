//! `ferry_email::mime::parse` over real mail (the fixtures in `tests/fixtures/mail`, and the
//! whole corpus in `../shared/corpus/mail` when that is beside the repository), HTML-only
//! bodies, attachment bytes, MIME bombs refused fast, the limits at their edges, threading
//! ids, list and auto-reply flags, and arbitrary or mutated input never panicking.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use ferry_email::compose::{Draft, compose};
use ferry_email::mime::{
    Attachment, Limits, MAX_NAME_CHARS, Mail, Mailbox, MimeError, parse, thread_root,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Helpers

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// `parse` fences the MIME parser with `catch_unwind`; this hook makes any panic behind
/// that fence visible to the test that caused it (counted per thread, then reported as
/// usual). One kind is let through: mail-parser's own `debug_assert!(false, ..)`s on
/// inconsistent nesting, which exist only in debug builds (release builds skip them) and
/// which `parse` turns into `MimeError::Unreadable`.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or_default();
            let in_mail_parser = info
                .location()
                .is_some_and(|l| l.file().contains("mail-parser"));
            let debug_only = cfg!(debug_assertions)
                && in_mail_parser
                && MAIL_PARSER_DEBUG_ASSERTS.contains(&message);
            if !debug_only {
                PANICS.with(|p| p.set(p.get() + 1));
                previous(info);
            }
        }));
    });
}

/// The messages of mail-parser 0.11's `debug_assert!(false, ..)`s (src/parsers/message.rs).
const MAIL_PARSER_DEBUG_ASSERTS: [&str; 4] = [
    "Invalid part ID, could not find message.",
    "Failed to restore parent message. Aborting.",
    "Invalid part ID, could not find multipart.",
    "This should not have happened.",
];

fn panics() -> usize {
    count_panics();
    PANICS.with(Cell::get)
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mail")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn parse_fixture(name: &str) -> Mail {
    parse(&fixture(name), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
}

/// Every file parses, or is refused with an error that says why; nothing panics; what comes
/// out keeps the promises `Mail` makes.
fn check_all(files: &[PathBuf]) -> (usize, usize) {
    let before = panics();
    let (mut ok, mut refused) = (0, 0);
    for path in files {
        let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match parse(&raw, &Limits::default()) {
            Ok(mail) => {
                ok += 1;
                check_invariants(&mail, path);
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty(), "{}", path.display());
            }
        }
    }
    assert_eq!(panics(), before, "a parse panicked");
    (ok, refused)
}

fn check_invariants(mail: &Mail, what: &Path) {
    let what = what.display();
    assert!(
        !mail
            .text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "{what}: control character in text"
    );
    if let Some(subject) = &mail.subject {
        assert!(!subject.is_empty() && subject.trim() == subject, "{what}");
        assert!(!subject.chars().any(char::is_control), "{what}");
    }
    if let Some(from) = &mail.from {
        assert!(!from.address.is_empty(), "{what}");
        assert!(
            !from
                .address
                .chars()
                .any(|c| c.is_whitespace() || c == '<' || c == '>')
        );
    }
    for id in mail
        .references
        .iter()
        .chain(&mail.in_reply_to)
        .chain(&mail.message_id)
    {
        assert!(
            !id.is_empty() && !id.contains(['<', '>', ' ']),
            "{what}: id {id:?}"
        );
    }
    for a in &mail.attachments {
        assert!(!a.name.is_empty(), "{what}");
        assert!(
            a.name.chars().count() <= MAX_NAME_CHARS,
            "{what}: {:?}",
            a.name
        );
        assert!(!a.name.contains(['/', '\\']), "{what}: {:?}", a.name);
        assert!(
            !a.name.chars().any(char::is_control),
            "{what}: {:?}",
            a.name
        );
        assert!(a.content_type.contains('/'), "{what}: {:?}", a.content_type);
    }
}

/// A mail whose multiparts nest `levels` deep around one text part.
fn nested_multipart(levels: usize) -> Vec<u8> {
    let mut s = String::from("From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\n");
    for i in 0..levels {
        s.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    s.push_str("Content-Type: text/plain\r\n\r\nbottom\r\n");
    for i in (0..levels).rev() {
        s.push_str(&format!("--b{i}--\r\n"));
    }
    s.into_bytes()
}

/// A `multipart/mixed` mail with `n` text parts (`n + 1` parts in all).
fn many_parts(n: usize) -> Vec<u8> {
    let mut s = String::from(
        "From: a@example.org\r\nSubject: many\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"sep\"\r\n\r\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "--sep\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
        ));
    }
    s.push_str("--sep--\r\n");
    s.into_bytes()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * k)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn assert_quick(start: Instant) {
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
}

// ---------------------------------------------------------------------------------------
// Real mail

#[test]
fn every_fixture_parses() {
    let files = eml_files(&fixtures_dir());
    assert_eq!(
        files.len(),
        10,
        "tests/fixtures/mail should hold the 10 fixtures"
    );
    let (ok, refused) = check_all(&files);
    assert_eq!((ok, refused), (10, 0));
}

/// The whole corpus, when the shared folder is beside the repository (it is on the
/// project's machines and in CI); the fixtures above run everywhere.
#[test]
fn whole_corpus_parses_or_is_refused_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/mail");
    if !dir.is_dir() {
        eprintln!("skipped: no corpus at {}", dir.display());
        return;
    }
    let files = eml_files(&dir);
    assert!(files.len() >= 80, "corpus has only {} mails", files.len());
    let (ok, refused) = check_all(&files);
    assert_eq!(ok + refused, files.len());
    assert!(
        ok >= files.len() - 2,
        "{refused} of {} refused",
        files.len()
    );
}

#[test]
fn pdf_attachment() {
    let mail = parse_fixture("mikel-attachment_emails__attachment_pdf.eml");
    assert_eq!(
        mail.subject.as_deref(),
        Some("Another PDF with 🎉 Unicode chars in it 🍿")
    );
    assert_eq!(
        mail.from,
        Some(Mailbox {
            address: "xxxx@xxxx.com".into(),
            name: Some("Test Tester".into()),
        })
    );
    assert!(mail.text.starts_with("Just attaching another PDF, here,"));
    assert_eq!(mail.attachments.len(), 1);
    let pdf = &mail.attachments[0];
    assert_eq!(pdf.name, "broken.pdf");
    assert_eq!(pdf.content_type, "application/pdf");
    assert!(pdf.data.starts_with(b"%PDF-1.4"), "{:?}", &pdf.data[..8]);
    assert_eq!(pdf.data.len(), 1026);
}

#[test]
fn forwarded_message_is_one_attachment() {
    let mail = parse_fixture("mikel-attachment_emails__attachment_message_rfc822.eml");
    assert_eq!(mail.text, "This is the first part.");
    assert_eq!(mail.attachments.len(), 1);
    let eml = &mail.attachments[0];
    assert_eq!(eml.name, "ForwardedMessage.eml");
    assert_eq!(eml.content_type, "message/rfc822");
    // The attachment is the forwarded message itself, which parses on its own.
    let inner = parse(&eml.data, &Limits::default()).expect("inner message");
    assert!(inner.from.is_some());
    assert!(
        !eml.data
            .windows(23)
            .any(|w| w == b"This is the first part.")
    );
}

#[test]
fn html_only_mail_becomes_text_with_links() {
    let mail = parse_fixture("mikel-error_emails__content_transfer_encoding_text-html.eml");
    assert!(
        mail.text.starts_with("Hello,\n\nYou have qualified"),
        "{}",
        mail.text
    );
    assert!(
        mail.text
            .contains("Approval Form <http://www.lenxzc.com/index2.php?refid=malx>"),
        "{}",
        mail.text
    );
    assert!(
        !mail.text.contains('<') || !mail.text.contains("<br"),
        "{}",
        mail.text
    );
    assert!(mail.attachments.is_empty());

    let raw = b"From: News <news@example.org>\r\nSubject: Weekly\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/html; charset=utf-8\r\n\r\n\
        <html><head><title>x</title><style>p{}</style></head><body>\
        <h1>Hello &amp; welcome</h1><p>Read <a href=\"https://example.org/a\">the post</a> \
        or <a href=\"mailto:ed@example.org\">write</a>.</p>\
        <ul><li>one</li><li>two</li></ul><script>alert(1)</script></body></html>\r\n";
    let mail = parse(raw, &Limits::default()).expect("parse");
    assert_eq!(
        mail.text,
        "Hello & welcome\n\nRead the post <https://example.org/a> or write <ed@example.org>.\
         \n\n- one\n- two"
    );
}

#[test]
fn alternative_prefers_plain_text() {
    let mail = parse_fixture("mikel-error_emails__cant_parse_from.eml");
    assert_eq!(
        mail.text,
        "From one solid piece of aluminum comes a MacBook Pro that's thin and light, \
         beautifully streamlined, and durable."
    );
    assert_eq!(
        mail.from.map(|f| f.address).as_deref(),
        Some("News@InsideApple.Apple.com")
    );

    let mail = parse_fixture("mikel-mime_emails__email_with_similar_boundaries.eml");
    assert_eq!(mail.text, "Test");
    let names: Vec<_> = mail.attachments.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["LOGO.png"]);
}

#[test]
fn non_utf8_charsets_are_decoded() {
    let mail = parse_fixture("mikel-multi_charset__japanese_iso_2022.eml");
    assert_eq!(mail.subject.as_deref(), Some("まみむめも"));
    assert_eq!(mail.text, "すみません。");

    let mail = parse_fixture("mikel-plain_emails__raw_email.eml");
    assert_eq!(mail.subject.as_deref(), Some("NOTE: 한국말로 하는 것"));
    assert!(
        mail.text.starts_with("대부분의 마찬가지로"),
        "{}",
        mail.text
    );

    let mail = parse_fixture("mikel-multi_charset__japanese_attachment.eml");
    assert_eq!(mail.attachments.len(), 1);
    assert_eq!(mail.attachments[0].name, "てすと.txt");
    assert_eq!(mail.attachments[0].content_type, "text/plain");
}

#[test]
fn reply_ids_and_thread_root() {
    let mail = parse_fixture("mikel-plain_emails__raw_email_reply.eml");
    assert_eq!(mail.message_id.as_deref(), Some("473FFE27.20003@xxx.org"));
    assert_eq!(mail.in_reply_to, ["348F04F142D69C21-291E56D292BC@xxxx.net"]);
    assert_eq!(
        mail.references,
        [
            "473FF3B8.9020707@xxx.org",
            "348F04F142D69C21-291E56D292BC@xxxx.net"
        ]
    );
    assert_eq!(thread_root(&mail), Some("473FF3B8.9020707@xxx.org"));
    assert_eq!(mail.date_ms, Some(1_195_376_167_000));
    assert!(!mail.list && !mail.auto_submitted);
}

#[test]
fn bounce_is_auto_submitted() {
    let mail = parse_fixture("mikel-multipart_report_emails__multi_address_bounce1.eml");
    assert!(mail.auto_submitted);
    assert!(mail.text.starts_with("This is the mail system at host"));
    let types: Vec<_> = mail
        .attachments
        .iter()
        .map(|a| a.content_type.as_str())
        .collect();
    assert_eq!(types, ["message/delivery-status", "message/rfc822"]);
    let names: Vec<_> = mail.attachments.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["attachment-1.txt", "attachment-2.eml"]);
}

// ---------------------------------------------------------------------------------------
// Threading, flags, headers

#[test]
fn thread_root_falls_back() {
    let mut mail = Mail {
        message_id: Some("own@x".into()),
        ..Mail::default()
    };
    assert_eq!(thread_root(&mail), Some("own@x"));
    mail.in_reply_to = vec!["parent@x".into(), "other@x".into()];
    assert_eq!(thread_root(&mail), Some("parent@x"));
    mail.references = vec!["root@x".into(), "parent@x".into()];
    assert_eq!(thread_root(&mail), Some("root@x"));
    assert_eq!(thread_root(&Mail::default()), None);
}

fn with_headers(headers: &str) -> Mail {
    let raw = format!("{headers}\r\n\r\nbody\r\n");
    parse(raw.as_bytes(), &Limits::default()).expect("parse")
}

#[test]
fn ids_lose_their_brackets() {
    let mail = with_headers(
        "From: a@x\r\nMessage-ID: <m1@x>\r\nIn-Reply-To: <p1@x> <p2@x>\r\n\
         References: <r1@x>\r\n <r2@x>\r\n\t<r3@x>",
    );
    assert_eq!(mail.message_id.as_deref(), Some("m1@x"));
    assert_eq!(mail.in_reply_to, ["p1@x", "p2@x"]);
    assert_eq!(mail.references, ["r1@x", "r2@x", "r3@x"]);
}

#[test]
fn list_and_auto_reply_flags() {
    for h in [
        "List-Id: <dev.lists.example.org>",
        "List-Post: <mailto:dev@lists.example.org>",
        "List-Unsubscribe: <https://example.org/u>",
        "Precedence: bulk",
        "Precedence: list",
        "Precedence: JUNK",
    ] {
        let mail = with_headers(&format!("From: a@x\r\n{h}"));
        assert!(mail.list, "{h}");
        assert!(!mail.auto_submitted, "{h}");
    }
    for h in [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated (vacation)",
        "X-Autoreply: yes",
        "X-Autorespond: vacation",
        "Precedence: auto_reply",
    ] {
        let mail = with_headers(&format!("From: a@x\r\n{h}"));
        assert!(mail.auto_submitted, "{h}");
    }
    for h in [
        "Auto-Submitted: no",
        "Auto-Submitted: No (human)",
        "Precedence: first-class",
    ] {
        let mail = with_headers(&format!("From: a@x\r\n{h}"));
        assert!(!mail.auto_submitted && !mail.list, "{h}");
    }
}

#[test]
fn sender_fallbacks_and_subject() {
    let mail = with_headers("Sender: Bot <bot@x.org>\r\nSubject:   =?UTF-8?Q?caf=C3=A9?=  ");
    assert_eq!(
        mail.from,
        Some(Mailbox {
            address: "bot@x.org".into(),
            name: Some("Bot".into()),
        })
    );
    assert_eq!(mail.subject.as_deref(), Some("café"));
    let mail = with_headers("Return-Path: <bounce@x.org>\r\nSubject:    ");
    assert_eq!(
        mail.from.map(|f| f.address).as_deref(),
        Some("bounce@x.org")
    );
    assert_eq!(mail.subject, None);
    let mail = with_headers("Return-Path: <>\r\nDate: Mon, 30 Jun 3609 15:33:50 +0600");
    assert_eq!(mail.from, None);
    assert_eq!(mail.date_ms, None);
}

#[test]
fn headerless_input_is_unreadable() {
    for raw in [&b""[..], b"\r\n\r\n", b"no header here"] {
        match parse(raw, &Limits::default()) {
            Err(MimeError::Unreadable(_)) | Ok(_) => {}
            Err(e) => panic!("{raw:?}: {e}"),
        }
    }
    assert!(matches!(
        parse(b"", &Limits::default()),
        Err(MimeError::Unreadable(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Attachments

#[test]
fn attachment_bytes_round_trip_through_compose() {
    let binary: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let draft = Draft {
        from: Mailbox {
            address: "alice@example.org".into(),
            name: Some("Alice".into()),
        },
        to: Mailbox {
            address: "bob@example.net".into(),
            name: None,
        },
        subject: "files".into(),
        body: "two files\n".into(),
        message_id: "m.1@example.org".into(),
        in_reply_to: None,
        references: Vec::new(),
        date_ms: 1_700_000_000_000,
        attachments: vec![
            Attachment {
                name: "data.bin".into(),
                content_type: "application/octet-stream".into(),
                data: binary.clone(),
            },
            Attachment {
                name: "notes été.txt".into(),
                content_type: "text/csv".into(),
                data: "a,b\r\nç,ü\r\n".as_bytes().to_vec(),
            },
            Attachment {
                name: "photo.png".into(),
                content_type: "image/png".into(),
                data: b"\x89PNG\r\n\x1a\n\0\0".to_vec(),
            },
        ],
    };
    let raw = compose(&draft).expect("compose");
    let mail = parse(&raw, &Limits::default()).expect("parse");
    assert_eq!(mail.text, "two files");
    assert_eq!(mail.attachments.len(), 3);
    for (sent, got) in draft.attachments.iter().zip(&mail.attachments) {
        assert_eq!(got.name, sent.name);
        assert_eq!(got.content_type, sent.content_type);
        assert_eq!(got.data, sent.data, "{}", sent.name);
    }
}

#[test]
fn attachment_names_are_sanitized_or_made_up() {
    let long = format!("{}.pdf", "x".repeat(300));
    let raw = format!(
        "From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=s\r\n\r\n\
         --s\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
         --s\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"../../etc/passwd\"\r\n\r\nA\r\n\
         --s\r\nContent-Type: application/pdf; name=\"{long}\"\r\n\r\nB\r\n\
         --s\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n\
         --s\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"=?UTF-8?Q?a=0D=0Ab=00c=E2=80=AEfdp.exe?=\"\r\n\r\nC\r\n\
         --s\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"..\"\r\n\r\nD\r\n\
         --s--\r\n"
    );
    let mail = parse(raw.as_bytes(), &Limits::default()).expect("parse");
    assert_eq!(mail.text, "hi");
    let names: Vec<_> = mail.attachments.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(names[0], "_.._etc_passwd");
    assert_eq!(names[1].chars().count(), MAX_NAME_CHARS);
    assert!(names[1].ends_with("xxx.pdf"));
    assert_eq!(names[2], "attachment-3.png");
    assert_eq!(names[3], "a b cfdp.exe");
    assert_eq!(names[4], "attachment-5.txt");
    assert_eq!(mail.attachments[2].data, b"\x89PNG");
}

#[test]
fn decoded_attachments_count_against_max_bytes() {
    // Latin-1 text grows when converted to UTF-8: 2,000 bytes become 4,000.
    let latin1 = vec![0xe9u8; 2000];
    let mut raw = b"From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=s\r\n\r\n\
        --s\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
        --s\r\nContent-Type: text/csv; charset=iso-8859-1\r\nContent-Disposition: attachment; filename=x.csv\r\n\r\n"
        .to_vec();
    raw.extend_from_slice(&latin1);
    raw.extend_from_slice(b"\r\n--s--\r\n");
    let limits = Limits {
        max_bytes: raw.len() + 100,
        ..Limits::default()
    };
    assert!(matches!(
        parse(&raw, &limits),
        Err(MimeError::TooLarge { .. })
    ));
    let mail = parse(&raw, &Limits::default()).expect("parse");
    assert_eq!(mail.attachments[0].data.len(), 4000);
}

// ---------------------------------------------------------------------------------------
// Limits and bombs

#[test]
fn too_large_is_refused_first() {
    let raw = many_parts(10);
    let limits = Limits {
        max_bytes: raw.len() - 1,
        ..Limits::default()
    };
    assert!(matches!(
        parse(&raw, &limits),
        Err(MimeError::TooLarge { size, max }) if size == raw.len() && max == raw.len() - 1
    ));
    let limits = Limits {
        max_bytes: raw.len(),
        ..Limits::default()
    };
    assert!(parse(&raw, &limits).is_ok());
}

#[test]
fn depth_limit_edge() {
    // 15 multiparts around a text part: depth 16, allowed; 16: refused.
    let mail = parse(&nested_multipart(15), &Limits::default()).expect("depth 16");
    assert_eq!(mail.text, "bottom");
    assert!(matches!(
        parse(&nested_multipart(16), &Limits::default()),
        Err(MimeError::TooDeep { max: 16 })
    ));
}

#[test]
fn part_limit_edge() {
    let mail = parse(&many_parts(255), &Limits::default()).expect("256 parts");
    assert!(mail.text.starts_with("part 0\n\npart 1"));
    assert!(matches!(
        parse(&many_parts(256), &Limits::default()),
        Err(MimeError::TooManyParts { max: 256 })
    ));
}

#[test]
fn ten_thousand_deep_multipart_is_refused_fast() {
    let raw = nested_multipart(10_000);
    let start = Instant::now();
    let result = parse(&raw, &Limits::default());
    assert_quick(start);
    assert!(
        matches!(result, Err(MimeError::TooDeep { max: 16 })),
        "{result:?}"
    );
}

#[test]
fn hundred_thousand_parts_are_refused_fast() {
    let raw = many_parts(100_000);
    let start = Instant::now();
    let result = parse(&raw, &Limits::default());
    assert_quick(start);
    assert!(
        matches!(result, Err(MimeError::TooManyParts { max: 256 })),
        "{result:?}"
    );
}

#[test]
fn deep_message_rfc822_nesting_is_refused_fast() {
    let mut raw = b"From: a@x\r\n".to_vec();
    for _ in 0..10_000 {
        raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\nFrom: b@x\r\n");
    }
    raw.extend_from_slice(b"\r\nbottom\r\n");
    let start = Instant::now();
    let result = parse(&raw, &Limits::default());
    assert_quick(start);
    assert!(
        matches!(result, Err(MimeError::TooDeep { .. })),
        "{result:?}"
    );
}

#[test]
fn digest_children_count_as_messages() {
    // In a multipart/digest, a part without Content-Type is a message/rfc822.
    let mut raw = String::from("From: a@x\r\n");
    for i in 0..20 {
        raw.push_str(&format!(
            "Content-Type: multipart/digest; boundary=d{i}\r\n\r\n--d{i}\r\n\r\nFrom: b@x\r\n"
        ));
    }
    raw.push_str("\r\nbottom\r\n");
    assert!(matches!(
        parse(raw.as_bytes(), &Limits::default()),
        Err(MimeError::TooDeep { .. })
    ));
}

#[test]
fn base64_hidden_bomb_is_caught_after_parsing() {
    // The pre-scan cannot see inside an encoded message/rfc822; the parsed tree is checked.
    let inner = many_parts(300);
    let raw = format!(
        "From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=s\r\n\r\n\
         --s\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
         --s\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --s--\r\n",
        base64(&inner)
    );
    assert!(matches!(
        parse(raw.as_bytes(), &Limits::default()),
        Err(MimeError::TooManyParts { max: 256 })
    ));
    // Depth too: 20 levels inside the encoded part.
    let deep = raw.replace(&base64(&inner), &base64(&nested_multipart(20)));
    assert!(matches!(
        parse(deep.as_bytes(), &Limits::default()),
        Err(MimeError::TooDeep { max: 16 })
    ));
    // The same with a small inner message is fine, and the attachment is the decoded mail.
    let inner = many_parts(2);
    let raw = raw.replace(&base64(&many_parts(300)), &base64(&inner));
    let mail = parse(raw.as_bytes(), &Limits::default()).expect("parse");
    assert_eq!(mail.attachments.len(), 1);
    assert_eq!(mail.attachments[0].data, inner);
}

#[test]
fn tight_limits_apply_to_ordinary_mail() {
    let raw = fixture("mikel-mime_emails__email_with_similar_boundaries.eml");
    let tight = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    assert!(matches!(
        parse(&raw, &tight),
        Err(MimeError::TooDeep { max: 2 })
    ));
    let tight = Limits {
        max_parts: 3,
        ..Limits::default()
    };
    assert!(matches!(
        parse(&raw, &tight),
        Err(MimeError::TooManyParts { max: 3 })
    ));
    assert!(parse(&raw, &Limits::default()).is_ok());
}

// ---------------------------------------------------------------------------------------
// Never panics

/// Found by `mimeish_text_never_panics`: a digest whose child is an empty message/rfc822
/// trips a `debug_assert!` inside mail-parser (debug builds only); `parse` still answers.
#[test]
fn mail_parser_debug_assert_is_contained() {
    let before = panics();
    let raw = "Content-Type: multipart/mixed; boundary=b\r\n\
               Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\n\
               Content-Type: message/rfc822\r\n\r\n\r\n--b--";
    match parse(raw.as_bytes(), &Limits::default()) {
        Ok(mail) => check_invariants(&mail, Path::new("digest")),
        Err(MimeError::Unreadable(_)) => {}
        Err(e) => panic!("{e}"),
    }
    assert_eq!(panics(), before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let before = panics();
        let _ = parse(&raw, &Limits::default());
        prop_assert_eq!(panics(), before);
    }

    #[test]
    fn mimeish_text_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("--b".to_owned()),
                Just("--b--".to_owned()),
                Just("--c".to_owned()),
                Just(String::new()),
                Just("Content-Type: multipart/mixed; boundary=b".to_owned()),
                Just("Content-Type: multipart/alternative; boundary=\"c\"".to_owned()),
                Just("Content-Type: multipart/digest; boundary=b".to_owned()),
                Just("Content-Type: message/rfc822".to_owned()),
                Just("Content-Type: text/html; charset=iso-2022-jp".to_owned()),
                Just("Content-Transfer-Encoding: base64".to_owned()),
                Just("Content-Transfer-Encoding: quoted-printable".to_owned()),
                Just("Content-Disposition: attachment; filename*=utf-8''%E2%80%AE".to_owned()),
                Just("From: \"=?utf-8?B?AA==?=\" <a@b>".to_owned()),
                Just(" folded".to_owned()),
                "[ -~]{0,40}",
                "\\PC{0,20}",
            ],
            0..60,
        ),
        lf in any::<bool>(),
    ) {
        let before = panics();
        let raw = lines.join(if lf { "\n" } else { "\r\n" });
        if let Ok(mail) = parse(raw.as_bytes(), &Limits::default()) {
            check_invariants(&mail, Path::new("generated"));
        }
        prop_assert_eq!(panics(), before);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..10,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..12),
    ) {
        let before = panics();
        let files = eml_files(&fixtures_dir());
        let mut raw = std::fs::read(&files[which % files.len()]).expect("fixture");
        for (at, byte, op) in edits {
            if raw.is_empty() {
                break;
            }
            let i = at.index(raw.len());
            match op {
                0 => raw[i] = byte,
                1 => raw.truncate(i),
                2 => { raw.remove(i); }
                _ => {
                    let chunk = raw[i..(i + 64).min(raw.len())].to_vec();
                    raw.splice(i..i, chunk);
                }
            }
        }
        if let Ok(mail) = parse(&raw, &Limits::default()) {
            check_invariants(&mail, Path::new("mutated"));
        }
        prop_assert_eq!(panics(), before);
    }
}
