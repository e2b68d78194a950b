//! Raw mail bytes → `mime::parse` with the default limits, then the text of what parsed
//! through `html::html_to_text` again (it must take any text, not only HTML), checking the
//! promises `Mail` makes: no control characters in text or subject, safe attachment names,
//! bare message ids, and the limits kept.
//!
//! Run: see `../README.md` (seed inputs: `bridges/email/tests/fixtures/mail`).

#![no_main]

use ferry_email::html::html_to_text;
use ferry_email::mime::{Limits, MAX_NAME_CHARS, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(mail) = parse(data, &limits) else {
        return;
    };
    let again = html_to_text(&mail.text);
    assert!(!again.chars().any(|c| c.is_control() && c != '\n'));
    assert!(
        !mail
            .text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    );
    if let Some(subject) = &mail.subject {
        assert!(!subject.is_empty() && !subject.chars().any(char::is_control));
    }
    if let Some(from) = &mail.from {
        assert!(!from.address.is_empty() && !from.address.contains(char::is_whitespace));
    }
    for id in mail
        .references
        .iter()
        .chain(&mail.in_reply_to)
        .chain(&mail.message_id)
    {
        assert!(!id.is_empty() && !id.contains(['<', '>']));
    }
    let mut total = 0usize;
    for a in &mail.attachments {
        assert!(!a.name.is_empty() && a.name.chars().count() <= MAX_NAME_CHARS);
        assert!(!a.name.contains(['/', '\\']) && !a.name.chars().any(char::is_control));
        total += a.data.len();
    }
    assert!(total <= limits.max_bytes);
});
