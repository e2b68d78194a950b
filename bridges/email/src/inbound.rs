//! A parsed mail as the chat message the core delivers: the text with list and
//! auto-reply marks, attachment links, the sender as contact with their name, the thread
//! (the mail thread's root Message-ID) and the ids it answers, newest first.

use ferry_bridge_api::{InboundMessage, RemoteId};

use crate::address::Address;
use crate::mime::{self, Mail};

/// Builds the message for `mail`. `published` holds, per attachment in order, its link
/// or why there is none; `oversize` is (size, limit) when only the header was read.
/// `fallback_id` names the mail when it has no Message-ID.
pub fn to_message(
    mail: Mail,
    fallback_id: String,
    published: &[Result<String, String>],
    oversize: Option<(u32, usize)>,
) -> InboundMessage {
    let from = mail
        .from
        .as_ref()
        .and_then(|f| Address::parse(&f.address).ok());
    let mut body = String::new();
    if mail.list {
        body.push_str("[mailing list] ");
    }
    if mail.auto_submitted {
        body.push_str("[automatic message] ");
    }
    body.push_str(mail.text.trim_end());
    if let Some((size, limit)) = oversize {
        body.push_str(&format!(
            "\n\n[this mail is {} KiB, over the {} KiB limit: read it in your mail client]",
            size / 1024,
            limit / 1024
        ));
    }
    let mut links = Vec::new();
    for (a, link) in mail.attachments.iter().zip(published) {
        match link {
            Ok(url) => {
                body.push_str(&format!(
                    "\n\n[attachment {} ({} KiB)] {url}",
                    a.name,
                    a.data.len().div_ceil(1024)
                ));
                links.push(url.clone());
            }
            Err(why) => body.push_str(&format!("\n\n[attachment {} not available: {why}]", a.name)),
        }
    }
    let body = body.trim().to_owned();
    let remote_message_id = mail.message_id.clone().unwrap_or(fallback_id);
    let thread = mime::thread_root(&mail)
        .map(str::to_owned)
        .or_else(|| Some(remote_message_id.clone()));
    let mut references: Vec<String> = mail.in_reply_to.clone();
    for r in mail.references.iter().rev() {
        if !references.contains(r) {
            references.push(r.clone());
        }
    }
    InboundMessage {
        from: from.map(|a| RemoteId(a.canonical)),
        remote_message_id,
        body: if body.is_empty() {
            "(empty mail)".into()
        } else {
            body
        },
        subject: mail.subject.clone(),
        thread,
        nick: mail.from.and_then(|f| f.name),
        links,
        headline: false,
        references,
        checkpoint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::{Limits, parse};

    fn mail(raw: &str) -> Mail {
        parse(raw.as_bytes(), &Limits::default()).expect("parses")
    }

    #[test]
    fn list_and_auto_mail_are_marked_and_threads_follow_references() {
        let m = mail(
            "From: List <list@example.org>\r\nSubject: Digest\r\nList-Id: <l.example.org>\r\nMessage-ID: <c@x>\r\nIn-Reply-To: <b@x>\r\nReferences: <a@x> <b@x>\r\n\r\nhello\r\n",
        );
        let msg = to_message(m, "imap:1:1".into(), &[], None);
        assert_eq!(msg.body, "[mailing list] hello");
        assert_eq!(msg.thread.as_deref(), Some("a@x"));
        assert_eq!(msg.references, vec!["b@x".to_owned(), "a@x".to_owned()]);
        assert_eq!(msg.remote_message_id, "c@x");
        assert_eq!(msg.from, Some(RemoteId("list@example.org".into())));
        assert_eq!(msg.nick.as_deref(), Some("List"));

        let m = mail("From: a@example.org\r\nAuto-Submitted: auto-replied\r\n\r\naway\r\n");
        let msg = to_message(m, "imap:1:2".into(), &[], Some((30_000_000, 26_214_400)));
        assert!(
            msg.body.starts_with("[automatic message] away"),
            "{}",
            msg.body
        );
        assert!(
            msg.body.contains("over the 25600 KiB limit"),
            "{}",
            msg.body
        );
        // No Message-ID: the IMAP id names it and starts its own thread.
        assert_eq!(msg.remote_message_id, "imap:1:2");
        assert_eq!(msg.thread.as_deref(), Some("imap:1:2"));
    }
}
