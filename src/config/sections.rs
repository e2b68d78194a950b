//! The tables of SPEC §2, one reader each: their keys, defaults and checks, and the
//! checks that span tables (at least one bridge, distinct component domains).
//!
//! Every reader reads all of its keys before giving up, so that one call reports every
//! problem of its table; it returns `None` when any of them was unusable.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::names::{normalize_allowed, normalize_bare_jid, normalize_domain, normalize_host};
use super::reader::{Ctx, Field, Table};
use super::{
    ComponentConfig, Config, DatabaseConfig, Delivery, EmailConfig, HttpConfig, LogConfig,
    ProviderKind, RssConfig, SecretsConfig, SmsConfig, SmsNumber, SmsProvider, TlsMode, XmppConfig,
    is_loopback_host,
};

/// Byte sizes are at most this (so that they fit an `i64` column, too).
const MAX_BYTES: u64 = i64::MAX as u64;

pub(super) fn build(root: &toml::Table, ctx: &mut Ctx) -> Option<Config> {
    let empty = toml::Table::new();
    let mut top = Table::new("", root);
    let has_bridge = top.has("email") || top.has("sms") || top.has("rss");

    let xmpp = defaulted(ctx, &mut top, "xmpp", &empty).and_then(|t| read_xmpp(ctx, t));
    let database = defaulted(ctx, &mut top, "database", &empty).and_then(|t| read_database(ctx, t));
    let http = top.table(ctx, "http");
    let http = optional(ctx, http, read_http);
    let secrets = defaulted(ctx, &mut top, "secrets", &empty).and_then(|t| read_secrets(ctx, t));
    let email = top.table(ctx, "email");
    let email = optional(ctx, email, read_email);
    let sms = top.table(ctx, "sms");
    let sms = optional(ctx, sms, read_sms);
    let rss = top.table(ctx, "rss");
    let rss = optional(ctx, rss, read_rss);
    let log = defaulted(ctx, &mut top, "log", &empty).and_then(|t| read_log(ctx, t));
    top.finish(ctx);

    if !has_bridge {
        ctx.problem(
            "config",
            "no bridge configured: add [email], [sms] or [rss]",
        );
    }
    if root.contains_key("sms") && !root.contains_key("http") {
        ctx.problem(
            "http",
            "the SMS bridge needs [http] (listen, public_url): providers deliver texts and reports to its webhooks",
        );
    }

    Some(Config {
        base_dir: ctx.base_dir.to_path_buf(),
        xmpp: xmpp?,
        database: database?,
        http: http?,
        secrets: secrets?,
        email: email?,
        sms: sms?,
        rss: rss?,
        log: log?,
    })
}

/// Runs `f`, so that `?` can assemble a struct from optional parts inside an expression.
fn all<T>(f: impl FnOnce() -> Option<T>) -> Option<T> {
    f()
}

/// A table whose keys all have defaults: absent reads as empty.
fn defaulted<'t>(
    ctx: &mut Ctx,
    top: &mut Table<'t>,
    name: &'static str,
    empty: &'t toml::Table,
) -> Option<Table<'t>> {
    let field = top.table(ctx, name);
    let key = field.key.clone();
    field.or(Table::new(key, empty))
}

/// A table whose absence means "off": `Some(None)` when absent, `None` when bad.
fn optional<'t, T>(
    ctx: &mut Ctx,
    field: Field<Table<'t>>,
    read: impl FnOnce(&mut Ctx, Table<'t>) -> Option<T>,
) -> Option<Option<T>> {
    match field.optional()? {
        None => Some(None),
        Some(table) => read(ctx, table).map(Some),
    }
}

fn read_xmpp(ctx: &mut Ctx, mut t: Table) -> Option<XmppConfig> {
    let host = t
        .word(ctx, "host")
        .validate(ctx, |h| normalize_host(&h))
        .or("127.0.0.1".to_owned());
    let port = t.int(ctx, "port", 1u16, u16::MAX).or(5347);
    let allowed = t.strings(ctx, "allowed", normalize_allowed).or(Vec::new());
    let admins = t.strings(ctx, "admins", normalize_bare_jid).or(Vec::new());
    t.finish(ctx);
    Some(XmppConfig {
        host: host?,
        port: port?,
        allowed: allowed?,
        admins: admins?,
    })
}

fn read_database(ctx: &mut Ctx, mut t: Table) -> Option<DatabaseConfig> {
    let base_dir = ctx.base_dir;
    let url = t
        .word(ctx, "url")
        .with_default("sqlite://ferry.db".to_owned())
        .validate(ctx, |url| resolve_database_url(&url, base_dir))
        .required(ctx);
    t.finish(ctx);
    Some(DatabaseConfig { url: url? })
}

/// Makes a relative SQLite path absolute (against `base_dir`); keeps PostgreSQL URLs and
/// in-memory SQLite as they are.
pub(super) fn resolve_database_url(url: &str, base_dir: &Path) -> Result<String, String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(url.to_owned());
    }
    let rest = if lower.starts_with("sqlite://") {
        &url["sqlite://".len()..]
    } else if lower.starts_with("sqlite:") {
        &url["sqlite:".len()..]
    } else {
        return Err(format!(
            "unsupported database url {url:?}: expected \"sqlite://PATH\" or \"postgres://…\""
        ));
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    if path == ":memory:" {
        return Ok(url.to_owned());
    }
    if path.is_empty() {
        return if query.contains("mode=memory") {
            Ok(url.to_owned())
        } else {
            Err(format!(
                "database url {url:?} has no file path (e.g. \"sqlite://ferry.db\")"
            ))
        };
    }
    if path.starts_with('/') {
        return Ok(format!("sqlite://{path}{query}"));
    }
    let Some(dir) = base_dir.to_str() else {
        return Err(format!(
            "the config folder {} is not valid utf-8; use an absolute sqlite path",
            base_dir.display()
        ));
    };
    let dir = dir
        .trim_end_matches('/')
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    let mut path = path;
    while let Some(rest) = path.strip_prefix("./") {
        path = rest;
    }
    Ok(format!("sqlite://{dir}/{path}{query}"))
}

fn read_http(ctx: &mut Ctx, mut t: Table) -> Option<HttpConfig> {
    let listen = t
        .word(ctx, "listen")
        .validate(ctx, |s| listen_addr(&s))
        .required(ctx);
    let public_url = t
        .word(ctx, "public_url")
        .validate(ctx, |s| base_url(&s))
        .optional();
    t.finish(ctx);
    Some(HttpConfig {
        listen: listen?,
        public_url: public_url?,
    })
}

/// An `[http] listen` address: `ip:port`, or `host:port` for a name the system resolves
/// (such as `localhost:8080`; its first address is taken).
fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad =
        || format!("invalid address {s:?}: expected ip:port or host:port, e.g. \"127.0.0.1:8080\"");
    if !s
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        return Err(bad());
    }
    std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .next()
        .ok_or_else(bad)
}

/// Checks an `http://` / `https://` URL with a host.
fn http_url(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return Err(format!(
            "invalid url {s:?}: must start with http:// or https://"
        ));
    };
    if s.chars().any(char::is_whitespace) {
        return Err(format!("invalid url {s:?}: contains spaces"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("invalid url {s:?}: missing host"));
    }
    Ok(s.to_owned())
}

/// An `http(s)://` URL that paths are appended to: no query or fragment, trailing slashes
/// removed.
fn base_url(s: &str) -> Result<String, String> {
    let url = http_url(s)?;
    if url.contains(['?', '#']) {
        return Err(format!(
            "invalid url {s:?}: must not have a query (?…) or fragment (#…)"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn read_secrets(ctx: &mut Ctx, mut t: Table) -> Option<SecretsConfig> {
    let base_dir = ctx.base_dir;
    let key_file = t.word(ctx, "key_file").or("ferry.key".to_owned());
    t.finish(ctx);
    Some(SecretsConfig {
        key_file: base_dir.join(key_file?),
    })
}

/// The `domain` and `secret` of a bridge table.
fn read_component(ctx: &mut Ctx, t: &mut Table) -> Option<ComponentConfig> {
    let domain = t
        .word(ctx, "domain")
        .validate(ctx, |d| normalize_domain(&d));
    let key = domain.key.clone();
    let domain = domain.required(ctx);
    if let Some(domain) = &domain {
        let earlier = ctx
            .component_domains
            .iter()
            .find(|(_, d)| d == domain)
            .map(|(table, _)| table.clone());
        match earlier {
            Some(table) => ctx.problem(
                key,
                format!("{domain:?} is already the domain of [{table}]; each bridge needs its own"),
            ),
            None => ctx
                .component_domains
                .push((t.path().to_owned(), domain.clone())),
        }
    }
    let secret = t.secret(ctx, "secret").required(ctx);
    Some(ComponentConfig {
        domain: domain?,
        secret: secret?,
    })
}

fn tls_mode(ctx: &mut Ctx, t: &mut Table, name: &'static str) -> Field<TlsMode> {
    t.word(ctx, name).validate(ctx, |s| {
        TlsMode::parse(&s).ok_or_else(|| {
            format!("invalid tls mode {s:?}: expected \"implicit\", \"starttls\" or \"none\"")
        })
    })
}

/// `none` is only for a host on this machine.
fn check_plaintext(
    ctx: &mut Ctx,
    tls_key: &str,
    tls: Option<TlsMode>,
    host_name: &str,
    host: &Option<Option<String>>,
) {
    if tls != Some(TlsMode::None) {
        return;
    }
    match host {
        Some(Some(h)) if is_loopback_host(h) => {}
        None => {} // the host is wrong already
        _ => ctx.problem(
            tls_key,
            format!("\"none\" is only allowed when {host_name} is localhost or a loopback address"),
        ),
    }
}

fn read_email(ctx: &mut Ctx, mut t: Table) -> Option<EmailConfig> {
    let component = read_component(ctx, &mut t);
    let imap_host = t
        .word(ctx, "imap_host")
        .validate(ctx, |h| normalize_host(&h))
        .optional();
    let imap_port = t.int(ctx, "imap_port", 1u16, u16::MAX).or(993);
    let imap_tls_key = t.key("imap_tls");
    let imap_tls = tls_mode(ctx, &mut t, "imap_tls").or(TlsMode::Implicit);
    let smtp_host = t
        .word(ctx, "smtp_host")
        .validate(ctx, |h| normalize_host(&h))
        .optional();
    let smtp_port = t.int(ctx, "smtp_port", 1u16, u16::MAX).or(587);
    let smtp_tls_key = t.key("smtp_tls");
    let smtp_tls = tls_mode(ctx, &mut t, "smtp_tls").or(TlsMode::StartTls);
    let mailbox = t.word(ctx, "mailbox").or("INBOX".to_owned());
    let max_message_bytes = t
        .int(ctx, "max_message_bytes", 1u64, MAX_BYTES)
        .or(26_214_400);
    t.finish(ctx);
    check_plaintext(ctx, &imap_tls_key, imap_tls, "imap_host", &imap_host);
    check_plaintext(ctx, &smtp_tls_key, smtp_tls, "smtp_host", &smtp_host);
    Some(EmailConfig {
        component: component?,
        imap_host: imap_host?,
        imap_port: imap_port?,
        imap_tls: imap_tls?,
        smtp_host: smtp_host?,
        smtp_port: smtp_port?,
        smtp_tls: smtp_tls?,
        mailbox: mailbox?,
        max_message_bytes: max_message_bytes?,
    })
}

fn read_sms(ctx: &mut Ctx, mut t: Table) -> Option<SmsConfig> {
    let component = read_component(ctx, &mut t);
    let default_region = t
        .word(ctx, "default_region")
        .validate(ctx, |r| {
            if r.len() == 2 && r.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(r.to_ascii_uppercase())
            } else {
                Err(format!(
                    "invalid region {r:?}: expected a two-letter country code such as \"US\""
                ))
            }
        })
        .or("US".to_owned());
    let quota_per_day = t.int(ctx, "quota_per_day", 0u32, u32::MAX).or(200);
    let provider_tables = t.tables(ctx, "provider");
    let number_tables = t.tables(ctx, "number");
    t.finish(ctx);

    let provider_key = provider_tables.key.clone();
    let provider_tables = provider_tables.optional().map(Option::unwrap_or_default);
    if provider_tables.as_ref().is_some_and(Vec::is_empty) {
        ctx.problem(provider_key, "at least one [[sms.provider]] is required");
    }
    let mut providers = Some(Vec::new());
    // (name, where it was defined); `complete` is false when some name was unusable.
    let mut names: Vec<(String, String)> = Vec::new();
    let mut names_complete = provider_tables.is_some();
    for pt in provider_tables.unwrap_or_default() {
        let path = pt.path().to_owned();
        let (name, provider) = read_provider(ctx, pt);
        match name {
            Some(name) => {
                if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                    ctx.problem(
                        format!("{path}.name"),
                        format!("duplicate provider name {name:?} (also in {first})"),
                    );
                }
                names.push((name, path));
            }
            None => names_complete = false,
        }
        match (provider, providers.as_mut()) {
            (Some(p), Some(list)) => list.push(p),
            _ => providers = None,
        }
    }

    let number_key = number_tables.key.clone();
    let number_tables = number_tables.optional().map(Option::unwrap_or_default);
    if number_tables.as_ref().is_some_and(Vec::is_empty) {
        ctx.problem(number_key, "at least one [[sms.number]] is required");
    }
    let mut numbers = Some(Vec::new());
    let mut seen_numbers: Vec<(String, String)> = Vec::new();
    for nt in number_tables.unwrap_or_default() {
        let path = nt.path().to_owned();
        let (value, number) = read_number(ctx, nt, names_complete.then_some(names.as_slice()));
        if let Some(value) = value {
            if let Some((_, first)) = seen_numbers.iter().find(|(x, _)| *x == value) {
                ctx.problem(
                    format!("{path}.number"),
                    format!("duplicate number {value:?} (also in {first})"),
                );
            }
            seen_numbers.push((value, path));
        }
        match (number, numbers.as_mut()) {
            (Some(n), Some(list)) => list.push(n),
            _ => numbers = None,
        }
    }

    Some(SmsConfig {
        component: component?,
        default_region: default_region?,
        quota_per_day: quota_per_day?,
        providers: providers?,
        numbers: numbers?,
    })
}

/// The keys each provider kind requires; `api_base` is optional for all but Kannel,
/// which has `sendsms_url` instead.
fn kind_keys(kind: ProviderKind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        ProviderKind::Twilio => (&["account_sid", "auth_token"], &["api_base"]),
        ProviderKind::Telnyx => (
            &["api_key", "public_key", "messaging_profile_id"],
            &["api_base"],
        ),
        ProviderKind::Vonage => (
            &["api_key", "api_secret", "signature_secret"],
            &["api_base"],
        ),
        ProviderKind::Kannel => (
            &["sendsms_url", "username", "password", "inbound_token"],
            &[],
        ),
    }
}

/// One `[[sms.provider]]`: its name (if usable, for the checks of `[[sms.number]]`) and
/// the provider (if everything is usable).
fn read_provider(ctx: &mut Ctx, mut t: Table) -> (Option<String>, Option<SmsProvider>) {
    let name = t
        .word(ctx, "name")
        .validate(ctx, |n| {
            if n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                Ok(n)
            } else {
                Err(format!(
                    "invalid provider name {n:?}: use lowercase letters, digits, '_' and '-'"
                ))
            }
        })
        .required(ctx);
    let kind = t
        .word(ctx, "kind")
        .validate(ctx, |k| {
            ProviderKind::parse(&k).ok_or_else(|| {
                format!(
                    "unknown provider kind {k:?}: expected \"twilio\", \"telnyx\", \"vonage\" or \"kannel\""
                )
            })
        })
        .required(ctx);
    let api_base = t.word(ctx, "api_base").validate(ctx, |u| base_url(&u));
    let account_sid = t.word(ctx, "account_sid");
    let auth_token = t.secret(ctx, "auth_token");
    let api_key = t.secret(ctx, "api_key");
    let public_key = t
        .word(ctx, "public_key")
        .validate(ctx, |k| match base64_decode(&k) {
            Some(bytes) if bytes.len() == 32 => Ok(k),
            Some(bytes) => Err(format!(
                "expected a base64 ed25519 public key (32 bytes), found {} bytes",
                bytes.len()
            )),
            None => Err("expected a base64 ed25519 public key, found invalid base64".to_owned()),
        });
    let messaging_profile_id = t.word(ctx, "messaging_profile_id");
    let api_secret = t.secret(ctx, "api_secret");
    let signature_secret = t.secret(ctx, "signature_secret");
    let sendsms_url = t.word(ctx, "sendsms_url").validate(ctx, |u| http_url(&u));
    let username = t.word(ctx, "username");
    let password = t.secret(ctx, "password");
    let inbound_token = t.secret(ctx, "inbound_token");
    let path = t.path().to_owned();
    t.finish(ctx);

    if let Some(kind) = kind {
        let present = [
            ("api_base", !api_base.is_absent()),
            ("account_sid", !account_sid.is_absent()),
            ("auth_token", !auth_token.is_absent()),
            ("api_key", !api_key.is_absent()),
            ("public_key", !public_key.is_absent()),
            ("messaging_profile_id", !messaging_profile_id.is_absent()),
            ("api_secret", !api_secret.is_absent()),
            ("signature_secret", !signature_secret.is_absent()),
            ("sendsms_url", !sendsms_url.is_absent()),
            ("username", !username.is_absent()),
            ("password", !password.is_absent()),
            ("inbound_token", !inbound_token.is_absent()),
        ];
        let (required, optional) = kind_keys(kind);
        for (key, is_present) in present {
            let wanted = required.contains(&key);
            if is_present && !wanted && !optional.contains(&key) {
                // Whatever else was wrong with its value no longer matters.
                let full = format!("{path}.{key}");
                ctx.problems.retain(|p| p.key != full);
                ctx.problem(
                    format!("{path}.{key}"),
                    format!("not a key of kind {:?}", kind.as_str()),
                );
            } else if !is_present && wanted {
                ctx.problem(
                    format!("{path}.{key}"),
                    format!("missing required key for kind {:?}", kind.as_str()),
                );
            }
        }
    }

    let provider = all(|| {
        Some(SmsProvider {
            name: name.clone()?,
            kind: kind?,
            api_base: api_base.optional()?,
            account_sid: account_sid.optional()?,
            auth_token: auth_token.optional()?,
            api_key: api_key.optional()?,
            public_key: public_key.optional()?,
            messaging_profile_id: messaging_profile_id.optional()?,
            api_secret: api_secret.optional()?,
            signature_secret: signature_secret.optional()?,
            sendsms_url: sendsms_url.optional()?,
            username: username.optional()?,
            password: password.optional()?,
            inbound_token: inbound_token.optional()?,
        })
    });
    (name, provider)
}

/// One `[[sms.number]]`: its number (if usable, for the duplicate check) and the entry
/// (if everything is usable). `providers` is `None` when some provider name was unusable (then
/// `provider` is not checked, to avoid a second report of the same mistake).
fn read_number(
    ctx: &mut Ctx,
    mut t: Table,
    providers: Option<&[(String, String)]>,
) -> (Option<String>, Option<SmsNumber>) {
    let number = t
        .word(ctx, "number")
        .validate(ctx, |n| e164(&n))
        .required(ctx);
    let provider = t
        .word(ctx, "provider")
        .validate(ctx, |p| match providers {
            Some(names) if !names.iter().any(|(n, _)| *n == p) => {
                Err(format!("no [[sms.provider]] is named {p:?}"))
            }
            _ => Ok(p),
        })
        .required(ctx);
    let owner = t
        .word(ctx, "owner")
        .validate(ctx, |o| normalize_bare_jid(&o))
        .optional();
    t.finish(ctx);
    let entry = all(|| {
        Some(SmsNumber {
            number: number.clone()?,
            provider: provider?,
            owner: owner?,
        })
    });
    (number, entry)
}

/// `+` and 7 to 15 digits, the first not 0.
fn e164(s: &str) -> Result<String, String> {
    let ok = s.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    });
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid number {s:?}: expected e.164, '+' and 7 to 15 digits, e.g. \"+12015550100\""
        ))
    }
}

/// Standard or URL-safe base64, padding optional. `None` if it is not base64.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    // A single leftover character (6 bits) cannot end valid base64.
    if bits == 6 {
        return None;
    }
    Some(out)
}

fn read_rss(ctx: &mut Ctx, mut t: Table) -> Option<RssConfig> {
    let component = read_component(ctx, &mut t);
    let at_least_1s = |d: Duration| {
        if d >= Duration::from_secs(1) {
            Ok(d)
        } else {
            Err("must be at least 1s".to_owned())
        }
    };
    let default_interval = t
        .duration(ctx, "default_interval")
        .validate(ctx, at_least_1s)
        .or(Duration::from_secs(60 * 60));
    let min_interval_key = t.key("min_interval");
    // Left out, the floor is 5 minutes, or the default interval when that is shorter (a
    // test bed that polls every second should not have to lower both).
    let min_interval = t
        .duration(ctx, "min_interval")
        .validate(ctx, at_least_1s)
        .optional()
        .map(|given| {
            given.unwrap_or_else(|| {
                default_interval.map_or(Duration::from_secs(5 * 60), |d| {
                    d.min(Duration::from_secs(5 * 60))
                })
            })
        });
    let initial_entries = t.int(ctx, "initial_entries", 0u32, u32::MAX).or(3);
    let delivery = t
        .word(ctx, "delivery")
        .validate(ctx, |d| {
            Delivery::parse(&d)
                .ok_or_else(|| format!("invalid delivery {d:?}: expected \"chat\" or \"headline\""))
        })
        .or(Delivery::Chat);
    let allow_private_addresses = t.bool(ctx, "allow_private_addresses").or(false);
    let max_feed_bytes = t.int(ctx, "max_feed_bytes", 1u64, MAX_BYTES).or(15_728_640);
    t.finish(ctx);
    if let (Some(min), Some(default)) = (min_interval, default_interval)
        && min > default
    {
        ctx.problem(min_interval_key, "must not be longer than default_interval");
    }
    Some(RssConfig {
        component: component?,
        default_interval: default_interval?,
        min_interval: min_interval?,
        initial_entries: initial_entries?,
        delivery: delivery?,
        allow_private_addresses: allow_private_addresses?,
        max_feed_bytes: max_feed_bytes?,
    })
}

fn read_log(ctx: &mut Ctx, mut t: Table) -> Option<LogConfig> {
    let level = t
        .word(ctx, "level")
        .validate(ctx, |l| log_level(&l))
        .or("info".to_owned());
    t.finish(ctx);
    Some(LogConfig { level: level? })
}

/// A plain level, or an env-filter directive string (it contains `=`).
fn log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let lower = s.to_ascii_lowercase();
    if LEVELS.contains(&lower.as_str()) {
        return Ok(lower);
    }
    if s.contains('=') {
        return tracing_subscriber::EnvFilter::builder()
            .parse(s)
            .map(|_| s.to_owned())
            .map_err(|e| format!("invalid log filter {s:?}: {e}"));
    }
    Err(format!(
        "invalid log level {s:?}: expected trace, debug, info, warn, error, off or a filter such as \"info,ferry=debug\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        let dir = Path::new("/srv/ferry");
        let ok = |url: &str| resolve_database_url(url, dir).expect(url);
        assert_eq!(ok("sqlite://ferry.db"), "sqlite:///srv/ferry/ferry.db");
        assert_eq!(ok("sqlite:ferry.db"), "sqlite:///srv/ferry/ferry.db");
        assert_eq!(ok("sqlite://./data/f.db"), "sqlite:///srv/ferry/data/f.db");
        assert_eq!(
            ok("sqlite://ferry.db?mode=rwc"),
            "sqlite:///srv/ferry/ferry.db?mode=rwc"
        );
        assert_eq!(ok("sqlite:///var/lib/f.db"), "sqlite:///var/lib/f.db");
        assert_eq!(ok("sqlite:/var/lib/f.db"), "sqlite:///var/lib/f.db");
        assert_eq!(ok("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(ok("sqlite://:memory:"), "sqlite://:memory:");
        assert_eq!(ok("sqlite://?mode=memory"), "sqlite://?mode=memory");
        assert_eq!(
            ok("postgres://u:p@db/ferry?sslmode=require"),
            "postgres://u:p@db/ferry?sslmode=require"
        );
        assert_eq!(ok("postgresql://db/ferry"), "postgresql://db/ferry");
        assert_eq!(
            resolve_database_url("sqlite://x.db", Path::new("/a b/100%?#")).as_deref(),
            Ok("sqlite:///a b/100%25%3F%23/x.db")
        );
        assert!(resolve_database_url("mysql://db/x", dir).is_err());
        assert!(resolve_database_url("sqlite://", dir).is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            base_url("https://gw.example.org/").as_deref(),
            Ok("https://gw.example.org")
        );
        assert_eq!(
            base_url("http://h:8080/p//").as_deref(),
            Ok("http://h:8080/p")
        );
        assert!(base_url("ftp://h").is_err());
        assert!(base_url("https://").is_err());
        assert!(base_url("https://h/?a=1").is_err());
        assert!(http_url("http://127.0.0.1:13013/cgi-bin/sendsms?x=1").is_ok());
    }

    #[test]
    fn numbers_and_keys() {
        assert!(e164("+12015550100").is_ok());
        assert!(e164("+1234567").is_ok());
        for bad in [
            "12015550100",
            "+123456",
            "+1234567890123456",
            "+0123456789",
            "+1 201 555",
        ] {
            assert!(e164(bad).is_err(), "{bad:?}");
        }
        assert_eq!(base64_decode("AAAA").map(|v| v.len()), Some(3));
        assert_eq!(base64_decode("AA==").map(|v| v.len()), Some(1));
        assert_eq!(base64_decode("A"), None);
        assert_eq!(base64_decode("A*"), None);
        let key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
        assert_eq!(base64_decode(key).map(|v| v.len()), Some(32));
    }

    #[test]
    fn log_levels() {
        assert_eq!(log_level("INFO").as_deref(), Ok("info"));
        assert!(log_level("info,ferry=debug").is_ok());
        assert!(log_level("ferry=trace").is_ok());
        assert!(log_level("loud").is_err());
        assert!(log_level("ferry=loud").is_err());
    }
}
