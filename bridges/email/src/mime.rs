//! Received mail → what the bridge needs: `parse` turns raw RFC 5322 bytes into a [`Mail`]
//! (sender, subject, threading ids, readable text, attachments, list/auto-reply flags),
//! refusing oversized mail and MIME bombs before the expensive work.
//!
//! Order of the checks: the size; then a cheap line scan of the raw bytes that follows the
//! MIME structure (boundaries, `multipart/*` and inline `message/rfc822` levels) and stops
//! at the first part past [`Limits::max_parts`] or level past [`Limits::max_depth`], without
//! building anything; then `mail_parser` for the real parse; then the same limits again on
//! the parsed tree (which also sees base64-encoded `message/rfc822` parts, opened by
//! `mail_parser` at most three levels down); then the decoded attachment bytes against
//! [`Limits::max_bytes`]. Nothing here panics on any input (the parser call is also fenced
//! with `catch_unwind`, so a bug in it becomes [`MimeError::Unreadable`]).
//!
//! Depth counts MIME levels: a single-part mail has depth 1, the parts of a top-level
//! `multipart/*` depth 2, and an attached message's own top part one more than the
//! `message/rfc822` part holding it. Parts count every part at every level, containers
//! included.

use std::panic::{AssertUnwindSafe, catch_unwind};

use mail_parser::{
    Addr, Address, Encoding, Header, HeaderValue, Message, MessageParser, MimeHeaders, PartType,
};

use crate::html::html_to_text;

/// Longest attachment file name kept, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Longest `Content-Type` / `Content-Transfer-Encoding` value the pre-scan keeps.
const MAX_SCANNED_HEADER: usize = 8 * 1024;

/// What a mail may be: [`parse`] refuses anything past these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Raw size, and also the total of decoded attachment bytes.
    pub max_bytes: usize,
    /// MIME nesting depth (see the module doc).
    pub max_depth: usize,
    /// MIME parts in all, at every level.
    pub max_parts: usize,
}

impl Default for Limits {
    /// 25 MiB, 16 levels, 256 parts.
    fn default() -> Self {
        Limits {
            max_bytes: 25 * 1024 * 1024,
            max_depth: 16,
            max_parts: 256,
        }
    }
}

/// An address with its display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// `local@domain`, no angle brackets, no whitespace.
    pub address: String,
    /// The display name, decoded, on one line; `None` when absent or empty.
    pub name: Option<String>,
}

/// A file carried by a mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// A safe file name (see [`sanitize_file_name`]); made up when the mail gives none.
    pub name: String,
    /// `type/subtype`, lower case, without parameters.
    pub content_type: String,
    /// The decoded content. For a `text/*` attachment this is the text converted to UTF-8;
    /// for an attached message, its raw bytes.
    pub data: Vec<u8>,
}

/// A received mail, as the bridge sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mail {
    /// The first mailbox of `From`, else of `Sender`, else the `Return-Path` address.
    pub from: Option<Mailbox>,
    /// Decoded (RFC 2047), on one line, trimmed; `None` when empty.
    pub subject: Option<String>,
    /// Without angle brackets.
    pub message_id: Option<String>,
    /// Without angle brackets.
    pub in_reply_to: Vec<String>,
    /// Without angle brackets, oldest first (the header's order).
    pub references: Vec<String>,
    /// The readable text: the `text/plain` body parts, else the `text/html` ones through
    /// [`html_to_text`]; inline text parts joined by a blank line. Lines end with `\n`; no
    /// other control character but `\t`.
    pub text: String,
    /// Every non-text part, and the text parts that are not the body (attached files,
    /// `text/*` subtypes other than plain and html, attached messages).
    pub attachments: Vec<Attachment>,
    /// Mailing-list mail: `List-Id`, `List-Post` or `List-Unsubscribe`, or
    /// `Precedence: list`/`bulk`/`junk`.
    pub list: bool,
    /// Sent by a machine: `Auto-Submitted` other than `no`, `X-Autoreply`, `X-Autorespond`,
    /// or `Precedence: auto_reply`.
    pub auto_submitted: bool,
    /// The `Date` header, in milliseconds since the Unix epoch, when valid.
    pub date_ms: Option<i64>,
}

/// Why a mail was refused.
#[derive(Debug, thiserror::Error)]
pub enum MimeError {
    #[error("mail too large: {size} bytes, at most {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("MIME structure nested deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("more than {max} MIME parts")]
    TooManyParts { max: usize },
    #[error("unreadable mail: {0}")]
    Unreadable(String),
}

/// Parses a received mail, within `limits` (see the module doc for the order of checks).
pub fn parse(raw: &[u8], limits: &Limits) -> Result<Mail, MimeError> {
    if raw.len() > limits.max_bytes {
        return Err(MimeError::TooLarge {
            size: raw.len(),
            max: limits.max_bytes,
        });
    }
    prescan(raw, limits)?;
    match catch_unwind(AssertUnwindSafe(|| parse_checked(raw, limits))) {
        Ok(result) => result,
        Err(_) => Err(MimeError::Unreadable("the MIME parser failed".into())),
    }
}

/// The id that names a mail's thread: the first `References` entry, else the first
/// `In-Reply-To`, else the mail's own `Message-ID`.
pub fn thread_root(mail: &Mail) -> Option<&str> {
    mail.references
        .first()
        .or(mail.in_reply_to.first())
        .or(mail.message_id.as_ref())
        .map(String::as_str)
}

/// A file name safe to show and to save: no path separators (`/`, `\`, `:` become `_`), no
/// control or bidirectional-override characters, whitespace collapsed, no leading dots,
/// at most [`MAX_NAME_CHARS`] characters (the extension kept when shortened). May be empty.
pub fn sanitize_file_name(name: &str) -> String {
    let mut cleaned = String::with_capacity(name.len().min(4 * MAX_NAME_CHARS));
    let mut space = false;
    for c in name.chars() {
        let c = match c {
            '/' | '\\' | ':' => '_',
            c if c.is_control() || c.is_whitespace() => ' ',
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' => continue,
            '\u{feff}' => continue,
            c => c,
        };
        if c == ' ' {
            space = !cleaned.is_empty();
            continue;
        }
        if space {
            cleaned.push(' ');
            space = false;
        }
        cleaned.push(c);
        if cleaned.len() > 16 * MAX_NAME_CHARS {
            break;
        }
    }
    let cleaned = cleaned
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    if cleaned.chars().count() <= MAX_NAME_CHARS {
        return cleaned.to_owned();
    }
    let (stem, ext) = match cleaned.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.chars().count() <= 16 => (stem, ext),
        _ => (cleaned, ""),
    };
    let keep = if ext.is_empty() {
        MAX_NAME_CHARS
    } else {
        MAX_NAME_CHARS - 1 - ext.chars().count()
    };
    let mut out: String = stem.chars().take(keep).collect();
    let kept = out.trim_end_matches(['.', ' ']).len();
    out.truncate(kept);
    if !ext.is_empty() {
        out.push('.');
        out.push_str(ext);
    }
    out
}

/// The name given to the `index`th (1-based) attachment when the mail names none.
pub fn fallback_file_name(index: usize, content_type: &str) -> String {
    format!("attachment-{index}.{}", extension_for(content_type))
}

fn extension_for(content_type: &str) -> &'static str {
    match content_type.to_ascii_lowercase().as_str() {
        "text/plain" => "txt",
        "text/html" => "html",
        "text/csv" => "csv",
        "text/calendar" => "ics",
        "text/vcard" | "text/x-vcard" => "vcf",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/svg+xml" => "svg",
        "image/heic" => "heic",
        "audio/mpeg" => "mp3",
        "audio/ogg" => "ogg",
        "video/mp4" => "mp4",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "application/json" => "json",
        "application/pgp-signature" => "asc",
        "application/pkcs7-signature" | "application/x-pkcs7-signature" => "p7s",
        "message/rfc822" | "message/global" => "eml",
        "message/delivery-status" | "message/global-delivery-status" => "txt",
        _ => "bin",
    }
}

// ---------------------------------------------------------------------------------------
// Pre-scan: the MIME structure from the raw lines, counting only.

enum Frame {
    /// A `multipart/*` whose delimiter lines are `--boundary`.
    Multipart { boundary: Vec<u8>, digest: bool },
    /// An inline `message/rfc822` (or `message/global`): a whole message follows.
    Message,
}

#[derive(Default)]
struct ScannedHeaders {
    content_type: Option<Vec<u8>>,
    transfer_encoding: Option<Vec<u8>>,
    /// Which of the two the last header line was (continuation lines go there).
    current: Current,
}

#[derive(Default, PartialEq)]
enum Current {
    #[default]
    Other,
    ContentType,
    TransferEncoding,
}

impl ScannedHeaders {
    fn feed(&mut self, line: &[u8]) {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            let target = match self.current {
                Current::ContentType => self.content_type.as_mut(),
                Current::TransferEncoding => self.transfer_encoding.as_mut(),
                Current::Other => None,
            };
            if let Some(value) = target
                && value.len() + line.len() <= MAX_SCANNED_HEADER
            {
                value.extend_from_slice(line);
            }
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            self.current = Current::Other;
            return;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..][..(line.len() - colon - 1).min(MAX_SCANNED_HEADER)].to_vec();
        if name.eq_ignore_ascii_case(b"content-type") {
            self.content_type = Some(value);
            self.current = Current::ContentType;
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            self.transfer_encoding = Some(value);
            self.current = Current::TransferEncoding;
        } else {
            self.current = Current::Other;
        }
    }

    /// What the part these headers open turns out to be.
    fn frame(&self, parent_is_digest: bool) -> Option<Frame> {
        let encoded = self.transfer_encoding.as_deref().is_some_and(|cte| {
            let cte = cte.trim_ascii();
            cte.eq_ignore_ascii_case(b"base64") || cte.eq_ignore_ascii_case(b"quoted-printable")
        });
        let Some(ct) = self.content_type.as_deref() else {
            return (parent_is_digest && !encoded).then_some(Frame::Message);
        };
        let (mime_type, params) = match ct.iter().position(|&b| b == b';') {
            Some(semi) => (&ct[..semi], &ct[semi + 1..]),
            None => (ct, &b""[..]),
        };
        let mime_type = mime_type.trim_ascii().to_ascii_lowercase();
        if let Some(subtype) = mime_type.strip_prefix(b"multipart/") {
            let boundary = boundary_param(params)?;
            return Some(Frame::Multipart {
                boundary,
                digest: subtype == b"digest",
            });
        }
        let message = mime_type == b"message/rfc822" || mime_type == b"message/global";
        (message && !encoded).then_some(Frame::Message)
    }
}

/// The `boundary` parameter of a `Content-Type` value's parameter list, if non-empty.
fn boundary_param(params: &[u8]) -> Option<Vec<u8>> {
    let mut rest = params;
    while !rest.is_empty() {
        let eq = rest.iter().position(|&b| b == b'=')?;
        let name = rest[..eq].trim_ascii();
        // The name may follow a `;` (or stray text) on the same stretch.
        let name = name
            .rsplit(|&b| b == b';')
            .next()
            .unwrap_or(name)
            .trim_ascii();
        let value = rest[eq + 1..].trim_ascii_start();
        let (value, after) = if value.first() == Some(&b'"') {
            let mut out = Vec::new();
            let mut i = 1;
            while i < value.len() && value[i] != b'"' {
                if value[i] == b'\\' && i + 1 < value.len() {
                    i += 1;
                }
                out.push(value[i]);
                i += 1;
            }
            (out, &value[(i + 1).min(value.len())..])
        } else {
            let end = value
                .iter()
                .position(|&b| b == b';' || b.is_ascii_whitespace())
                .unwrap_or(value.len());
            (value[..end].to_vec(), &value[end..])
        };
        if name.eq_ignore_ascii_case(b"boundary") {
            return (!value.is_empty()).then_some(value);
        }
        rest = after;
    }
    None
}

/// Follows the MIME structure line by line and refuses a mail past the limits as soon as
/// that shows. Linear in the input (times at most `max_depth` boundary comparisons for a
/// line starting with `--`); allocates only the stack of open levels.
/// The lines of `raw` split at LF (memchr: the pre-scan must be cheap).
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', raw);
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match ends.next() {
            Some(end) => {
                let line = &raw[start..end];
                start = end + 1;
                Some(line)
            }
            None => {
                done = true;
                Some(&raw[start..])
            }
        }
    })
}

fn prescan(raw: &[u8], limits: &Limits) -> Result<(), MimeError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut parts = 0usize;
    let mut headers = Some(open_part(&mut parts, &stack, limits)?);
    for line in lines(raw) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(scanned) = headers.as_mut() {
            if !line.is_empty() {
                scanned.feed(line);
                continue;
            }
            let parent_is_digest =
                matches!(stack.last(), Some(Frame::Multipart { digest: true, .. }));
            match headers.take().and_then(|h| h.frame(parent_is_digest)) {
                Some(frame @ Frame::Multipart { .. }) => stack.push(frame),
                Some(Frame::Message) => {
                    stack.push(Frame::Message);
                    headers = Some(open_part(&mut parts, &stack, limits)?);
                }
                None => {}
            }
            continue;
        }
        let Some(rest) = line.strip_prefix(b"--") else {
            continue;
        };
        let found = stack.iter().rposition(|frame| match frame {
            Frame::Multipart { boundary, .. } => rest.starts_with(boundary),
            Frame::Message => false,
        });
        let Some(index) = found else { continue };
        let boundary_len = match &stack[index] {
            Frame::Multipart { boundary, .. } => boundary.len(),
            Frame::Message => 0,
        };
        stack.truncate(index + 1);
        if rest[boundary_len..].starts_with(b"--") {
            stack.truncate(index);
        } else {
            headers = Some(open_part(&mut parts, &stack, limits)?);
        }
    }
    Ok(())
}

fn open_part(
    parts: &mut usize,
    stack: &[Frame],
    limits: &Limits,
) -> Result<ScannedHeaders, MimeError> {
    *parts += 1;
    if *parts > limits.max_parts {
        return Err(MimeError::TooManyParts {
            max: limits.max_parts,
        });
    }
    if stack.len() + 1 > limits.max_depth {
        return Err(MimeError::TooDeep {
            max: limits.max_depth,
        });
    }
    Ok(ScannedHeaders::default())
}

// ---------------------------------------------------------------------------------------
// The real parse, then what the bridge keeps of it.

fn parse_checked(raw: &[u8], limits: &Limits) -> Result<Mail, MimeError> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| MimeError::Unreadable("no header found".into()))?;
    check_tree(&message, limits)?;
    extract(&message, limits)
}

/// Depth and part count of the parsed tree, walked without recursion and stopped as soon as
/// a limit is passed. Parts count both as reached from the top and as listed by each
/// (nested) message, whichever is more.
fn check_tree(message: &Message<'_>, limits: &Limits) -> Result<(), MimeError> {
    let (mut reached, mut listed) = (0usize, 0usize);
    let mut todo: Vec<(&Message<'_>, usize, usize)> = vec![(message, 0, 1)];
    while let Some((msg, id, depth)) = todo.pop() {
        if depth > limits.max_depth {
            return Err(MimeError::TooDeep {
                max: limits.max_depth,
            });
        }
        reached += 1;
        if id == 0 {
            listed = listed.saturating_add(msg.parts.len());
        }
        if reached.max(listed) > limits.max_parts {
            return Err(MimeError::TooManyParts {
                max: limits.max_parts,
            });
        }
        let Some(part) = msg.parts.get(id) else {
            continue;
        };
        match &part.body {
            PartType::Multipart(children) => {
                // Children come after their parent; anything else would be a loop.
                for &child in children {
                    let child = child as usize;
                    if child > id {
                        todo.push((msg, child, depth + 1));
                    }
                }
            }
            PartType::Message(inner) => todo.push((inner, 0, depth + 1)),
            _ => {}
        }
    }
    Ok(())
}

fn extract(message: &Message<'_>, limits: &Limits) -> Result<Mail, MimeError> {
    let headers: &[Header<'_>] = message.parts.first().map_or(&[], |p| p.headers.as_slice());
    let mut mail = Mail {
        from: from(headers),
        subject: header(headers, "Subject")
            .and_then(text_value)
            .map(|s| one_line(&s))
            .filter(|s| !s.is_empty()),
        message_id: header(headers, "Message-ID")
            .map(ids)
            .and_then(|ids| ids.into_iter().next()),
        in_reply_to: header(headers, "In-Reply-To").map(ids).unwrap_or_default(),
        references: header(headers, "References").map(ids).unwrap_or_default(),
        date_ms: header(headers, "Date")
            .and_then(HeaderValue::as_datetime)
            .filter(|d| d.is_valid())
            .and_then(|d| d.to_timestamp().checked_mul(1000)),
        ..Mail::default()
    };

    let precedence = header(headers, "Precedence")
        .and_then(text_value)
        .map(|p| first_token(&p))
        .unwrap_or_default();
    mail.list = ["List-Id", "List-Post", "List-Unsubscribe"]
        .iter()
        .any(|name| header(headers, name).is_some())
        || matches!(precedence.as_str(), "list" | "bulk" | "junk");
    mail.auto_submitted = header(headers, "Auto-Submitted")
        .is_some_and(|v| text_value(v).is_none_or(|v| first_token(&v) != "no"))
        || header(headers, "X-Autoreply").is_some()
        || header(headers, "X-Autorespond").is_some()
        || precedence == "auto_reply";

    mail.text = body_text(message, &message.text_body);
    if mail.text.is_empty() {
        mail.text = body_text(message, &message.html_body);
    }

    let mut total = 0usize;
    for (index, &id) in message.attachments.iter().enumerate() {
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        let declared = part
            .content_type()
            .and_then(|ct| clean_content_type(ct.ctype(), ct.subtype()));
        if let (Some(declared), PartType::Text(text)) = (&declared, &part.body)
            && declared.starts_with("multipart/")
        {
            // A multipart whose boundary never shows: its content is text, not a file.
            if mail.text.is_empty() {
                mail.text = clean_text(text).trim().to_owned();
            }
            continue;
        }
        let (default_type, data): (&str, &[u8]) = match &part.body {
            PartType::Text(text) => ("text/plain", text.as_bytes()),
            PartType::Html(html) => ("text/html", html.as_bytes()),
            PartType::Binary(data) | PartType::InlineBinary(data) => {
                ("application/octet-stream", data.as_ref())
            }
            PartType::Message(inner) => {
                let data = if part.encoding == Encoding::None {
                    message
                        .raw_message()
                        .get(part.raw_body_offset() as usize..part.raw_end_offset() as usize)
                        .unwrap_or_default()
                } else {
                    inner.raw_message()
                };
                ("message/rfc822", data)
            }
            PartType::Multipart(_) => continue,
        };
        total = total.saturating_add(data.len());
        if total > limits.max_bytes {
            return Err(MimeError::TooLarge {
                size: total,
                max: limits.max_bytes,
            });
        }
        let content_type = declared.unwrap_or_else(|| default_type.to_owned());
        let given_name = part
            .attachment_name()
            .map(sanitize_file_name)
            .filter(|n| !n.is_empty());
        if data.is_empty() && given_name.is_none() {
            continue;
        }
        let name = given_name.unwrap_or_else(|| fallback_file_name(index + 1, &content_type));
        mail.attachments.push(Attachment {
            name,
            content_type,
            data: data.to_vec(),
        });
    }
    Ok(mail)
}

/// The first header of that name (case-insensitive), from the top of the header section.
fn header<'a, 'x>(headers: &'a [Header<'x>], name: &str) -> Option<&'a HeaderValue<'x>> {
    headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(Header::value)
}

fn text_value(value: &HeaderValue<'_>) -> Option<String> {
    match value {
        HeaderValue::Text(text) => Some(text.to_string()),
        HeaderValue::TextList(list) => Some(list.join(" ")),
        _ => None,
    }
}

/// A header value's first word, lower case (`"Bulk (comment)"` → `"bulk"`).
fn first_token(value: &str) -> String {
    value
        .split(|c: char| c == ';' || c == '(' || c.is_whitespace())
        .find(|t| !t.is_empty())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// One line of text: controls and whitespace runs become one space; trimmed.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Message ids from an id-list header, brackets and whitespace removed, empty ones dropped.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    let raw: Vec<&str> = match value {
        HeaderValue::Text(text) => vec![text.as_ref()],
        HeaderValue::TextList(list) => list.iter().map(AsRef::as_ref).collect(),
        _ => Vec::new(),
    };
    raw.into_iter()
        .flat_map(|s| s.split(|c: char| c.is_whitespace() || c == ','))
        .map(|s| {
            s.chars()
                .filter(|&c| !c.is_control() && c != '<' && c != '>')
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn from(headers: &[Header<'_>]) -> Option<Mailbox> {
    let mailbox_in = |name: &str| {
        header(headers, name)
            .and_then(HeaderValue::as_address)
            .and_then(first_mailbox)
    };
    mailbox_in("From")
        .or_else(|| mailbox_in("Sender"))
        .or_else(|| {
            let value = header(headers, "Return-Path")?;
            let text = match value {
                HeaderValue::Address(address) => return first_mailbox(address),
                other => text_value(other)?,
            };
            let address = clean_address(&text);
            (!address.is_empty()).then_some(Mailbox {
                address,
                name: None,
            })
        })
}

fn first_mailbox(address: &Address<'_>) -> Option<Mailbox> {
    address.iter().find_map(|addr: &Addr<'_>| {
        let address = clean_address(addr.address.as_deref()?);
        if address.is_empty() {
            return None;
        }
        let name = addr
            .name
            .as_deref()
            .map(one_line)
            .filter(|n| !n.is_empty() && *n != address);
        Some(Mailbox { address, name })
    })
}

/// An address without brackets or controls; of several words, the first with an `@` (else
/// the first).
fn clean_address(s: &str) -> String {
    let mut words = s
        .split(|c: char| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        .filter(|w| !w.is_empty());
    let first = words.clone().next().unwrap_or_default();
    words.find(|w| w.contains('@')).unwrap_or(first).to_owned()
}

/// `type/subtype` in lower case when both are plain tokens.
fn clean_content_type(ctype: &str, subtype: Option<&str>) -> Option<String> {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let subtype = subtype?;
    (token(ctype) && token(subtype)).then(|| format!("{ctype}/{subtype}").to_ascii_lowercase())
}

/// The text of the listed body parts (`text/plain` as is, `text/html` converted), joined by
/// a blank line, with `\n` line ends and no control character but `\t`.
fn body_text(message: &Message<'_>, ids: &[u32]) -> String {
    let mut out = String::new();
    for &id in ids {
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        let text = match &part.body {
            PartType::Text(text) => clean_text(text),
            PartType::Html(html) => html_to_text(html),
            _ => continue,
        };
        let text = text.trim_end().trim_start_matches('\n');
        if text.trim().is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(text);
    }
    out
}

/// Line ends to `\n`, trailing whitespace off each line, controls other than `\t` dropped.
fn clean_text(text: &str) -> String {
    // One pass: CRLF and lone CR become LF, control characters (but tab) go, and each
    // line loses its trailing whitespace.
    let mut out = String::with_capacity(text.len());
    let mut line_start = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.truncate(line_start + out[line_start..].trim_end().len());
                out.push('\n');
                line_start = out.len();
            }
            c if c == '\t' || !c.is_control() => out.push(c),
            _ => {}
        }
    }
    out.truncate(line_start + out[line_start..].trim_end().len());
    out
}
