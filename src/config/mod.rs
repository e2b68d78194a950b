//! ferry's configuration (SPEC §2): the typed, fully validated [`Config`] and how it is
//! loaded from TOML.
//!
//! Loading never stops at the first mistake: [`Config::load`] returns either a value that
//! the rest of ferry can use without further checks, or [`ConfigErrors`] listing every
//! problem with the dotted key it concerns (`email.imap_tls`, `sms.provider[0].auth_token`),
//! which is what `ferry check` prints.
//!
//! Submodules: `reader` walks the TOML tree and resolves `env:` / `file:` values,
//! `sections` turns each table into its struct, `duration` parses `"1h30m"`, `names`
//! validates DNS names, bare JIDs and the `[xmpp] allowed` patterns.

mod duration;
mod names;
mod reader;
mod sections;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::parse_duration;
pub use names::is_loopback_host;

/// The whole configuration, validated; relative paths already resolved against
/// [`Config::base_dir`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The absolute folder of the config file; relative paths in it are relative to this.
    pub base_dir: PathBuf,
    pub xmpp: XmppConfig,
    pub database: DatabaseConfig,
    /// `None`: no `[http]` table, so no HTTP server.
    pub http: Option<HttpConfig>,
    pub secrets: SecretsConfig,
    pub email: Option<EmailConfig>,
    pub sms: Option<SmsConfig>,
    pub rss: Option<RssConfig>,
    pub log: LogConfig,
}

/// `[xmpp]`: where the XMPP server's component listener is, and who may use ferry.
#[derive(Debug, Clone)]
pub struct XmppConfig {
    pub host: String,
    pub port: u16,
    /// Lowercased patterns: `user@domain`, `domain`, `*.domain` or `*`.
    pub allowed: Vec<String>,
    /// Lowercased bare JIDs.
    pub admins: Vec<String>,
}

/// `[database]`.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `sqlite://` + an absolute (percent-encoded) path, `sqlite::memory:`, or a
    /// `postgres://` / `postgresql://` URL exactly as configured.
    pub url: String,
}

/// `[http]`: present means ferry serves webhooks, media, health and metrics.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// `http(s)://host[:port][/prefix]`, without a trailing slash.
    pub public_url: Option<String>,
}

/// `[secrets]`.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    /// Absolute path of the 32-byte key that encrypts stored credentials.
    pub key_file: PathBuf,
}

/// A password, token or key: printed as `[redacted]` by both `Debug` and `Display`, so
/// that it never reaches a log by accident. Use [`Secret::expose`] where the value is
/// really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The `domain` and `secret` every bridge table carries: its XEP-0114 identity.
#[derive(Debug, Clone)]
pub struct ComponentConfig {
    /// Lowercased DNS name, distinct across bridges.
    pub domain: String,
    pub secret: Secret,
}

/// How a mail connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Implicit,
    /// Plain connection upgraded with STARTTLS.
    StartTls,
    /// No TLS at all (only accepted for loopback hosts).
    None,
}

impl TlsMode {
    /// `"implicit"`, `"starttls"` or `"none"`, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "implicit" => Some(Self::Implicit),
            "starttls" => Some(Self::StartTls),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Implicit => "implicit",
            Self::StartTls => "starttls",
            Self::None => "none",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[email]`: the defaults offered in the registration form, and limits.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub component: ComponentConfig,
    pub imap_host: Option<String>,
    pub imap_port: u16,
    pub imap_tls: TlsMode,
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_tls: TlsMode,
    pub mailbox: String,
    pub max_message_bytes: u64,
}

/// `[sms]` with its `[[sms.provider]]` and `[[sms.number]]` entries.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    pub component: ComponentConfig,
    /// ISO 3166 alpha-2, uppercase.
    pub default_region: String,
    /// Texts per user per rolling 24 hours; 0 = unlimited.
    pub quota_per_day: u32,
    /// At least one; names are unique.
    pub providers: Vec<SmsProvider>,
    /// At least one; numbers are unique and each names a provider.
    pub numbers: Vec<SmsNumber>,
}

impl SmsConfig {
    pub fn provider(&self, name: &str) -> Option<&SmsProvider> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// Which HTTP API an SMS provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Twilio,
    Telnyx,
    Vonage,
    Kannel,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [Self::Twilio, Self::Telnyx, Self::Vonage, Self::Kannel];

    /// `"twilio"`, `"telnyx"`, `"vonage"` or `"kannel"`, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::Telnyx => "telnyx",
            Self::Vonage => "vonage",
            Self::Kannel => "kannel",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[sms.provider]]`. The loader guarantees that the keys of its `kind` are present
/// (`api_base` is always optional: `None` means the provider's public endpoint) and that
/// keys of other kinds are absent:
///
/// - twilio: `account_sid`, `auth_token`
/// - telnyx: `api_key`, `public_key` (base64 of 32 bytes), `messaging_profile_id`
/// - vonage: `api_key`, `api_secret`, `signature_secret`
/// - kannel: `sendsms_url`, `username`, `password`, `inbound_token` (no `api_base`)
#[derive(Debug, Clone)]
pub struct SmsProvider {
    /// `[a-z0-9_-]+`, unique; the `{provider}` of `/sms/{provider}/…`.
    pub name: String,
    pub kind: ProviderKind,
    /// `http(s)://…` without a trailing slash.
    pub api_base: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<Secret>,
    pub api_key: Option<Secret>,
    pub public_key: Option<String>,
    pub messaging_profile_id: Option<String>,
    pub api_secret: Option<Secret>,
    pub signature_secret: Option<Secret>,
    pub sendsms_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub inbound_token: Option<Secret>,
}

/// One `[[sms.number]]`: a number the gateway owns.
#[derive(Debug, Clone)]
pub struct SmsNumber {
    /// E.164: `+` and 7–15 digits.
    pub number: String,
    /// The name of an [`SmsProvider`].
    pub provider: String,
    /// Lowercased bare JID; `None`: any allowed user may claim it.
    pub owner: Option<String>,
}

/// The default message type of feed entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    Chat,
    Headline,
}

impl Delivery {
    /// `"chat"` or `"headline"`, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "chat" => Some(Self::Chat),
            "headline" => Some(Self::Headline),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Headline => "headline",
        }
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[rss]`.
#[derive(Debug, Clone)]
pub struct RssConfig {
    pub component: ComponentConfig,
    pub default_interval: Duration,
    /// At least 1 s, at most `default_interval`.
    pub min_interval: Duration,
    pub initial_entries: u32,
    pub delivery: Delivery,
    pub allow_private_addresses: bool,
    pub max_feed_bytes: u64,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A level (`trace` … `error`, `off`) or an env-filter directive string
    /// (`"info,ferry=debug"`); `RUST_LOG` overrides it.
    pub level: String,
}

/// One thing wrong with a config: the dotted key it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `email.imap_tls`, `sms.provider[0].auth_token`, `xmpp.allowed[2]`, or `config`
    /// for the file as a whole.
    pub key: String,
    /// Lowercase, no trailing period.
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in a config (never empty when returned by the loader). `Display`
/// prints one `key: message` per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

impl ConfigErrors {
    /// Whether some problem concerns exactly `key`.
    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|p| p.key == key)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates the config file at `path`, reading `env:` values from the
    /// process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::load`], with `env` answering `env:NAME` lookups.
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![Problem::new(
                "config",
                format!("cannot read {}: {}", path.display(), reader::io_message(&e)),
            )])
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base_dir = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Self::from_str_with_env(&text, &base_dir, env)
    }

    /// Validates config `text` as if it were a file in `base_dir`, reading `env:` values
    /// from the process environment.
    pub fn from_str_at(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Self::from_str_with_env(text, base_dir, &|name| std::env::var(name).ok())
    }

    /// Validates config `text` as if it were a file in `base_dir`, with `env` answering
    /// `env:NAME` lookups.
    pub fn from_str_with_env(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let table = reader::parse_toml(text).map_err(|p| ConfigErrors(vec![p]))?;
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        let mut ctx = reader::Ctx::new(&base_dir, env);
        let config = sections::build(&table, &mut ctx);
        match config {
            Some(config) if ctx.problems.is_empty() => Ok(config),
            _ => {
                let mut problems = ctx.problems;
                if problems.is_empty() {
                    // Cannot happen: a section only fails after reporting why.
                    problems.push(Problem::new("config", "invalid configuration"));
                }
                Err(ConfigErrors(problems))
            }
        }
    }

    /// The configured bridges with their component identity: `"email"`, `"sms"`, `"rss"`
    /// in that order.
    pub fn components(&self) -> Vec<(&'static str, &ComponentConfig)> {
        let mut out = Vec::new();
        if let Some(email) = &self.email {
            out.push(("email", &email.component));
        }
        if let Some(sms) = &self.sms {
            out.push(("sms", &sms.component));
        }
        if let Some(rss) = &self.rss {
            out.push(("rss", &rss.component));
        }
        out
    }
}

impl XmppConfig {
    /// Whether `bare_jid` may use the gateway (admins always may). Case-insensitive; a
    /// resource, if any, is ignored.
    pub fn is_allowed(&self, bare_jid: &str) -> bool {
        let jid = names::bare_lower(bare_jid);
        self.admins.iter().any(|a| *a == jid)
            || self
                .allowed
                .iter()
                .any(|pattern| names::allowed_matches(pattern, &jid))
    }

    /// Whether `bare_jid` is one of `admins`. Case-insensitive; a resource is ignored.
    pub fn is_admin(&self, bare_jid: &str) -> bool {
        let jid = names::bare_lower(bare_jid);
        self.admins.iter().any(|a| *a == jid)
    }
}

impl DatabaseConfig {
    pub fn is_postgres(&self) -> bool {
        let url = self.url.to_ascii_lowercase();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.to_ascii_lowercase().starts_with("sqlite:")
    }
}
