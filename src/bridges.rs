//! Which bridge implementations run for the configured bridge tables: the one place that
//! maps a config table to a bridge crate under `bridges/`.

use std::sync::Arc;

use ferry_bridge_api::BridgeError;
use ferry_rss::RssBridge;
use ferry_rss::engine::Settings;
use ferry_rss::fetch::FetchPolicy;
use ferry_rss::schedule::Intervals;

use ferry_sms::SmsBridge;
use ferry_sms::provider::{Kind, ProviderConfig};

use ferry_email::EmailBridge;
use ferry_email::net::Tls;

use crate::app::BridgeSpec;
use crate::config::{Config, Delivery, EmailConfig, ProviderKind, RssConfig, SmsConfig, TlsMode};
use crate::store::Store;

/// The RSS bridge for `[rss]`, keeping its feeds in `store`.
pub fn rss(rss: &RssConfig, store: &Store) -> Result<RssBridge, BridgeError> {
    let settings = Settings {
        intervals: Intervals {
            default: rss.default_interval,
            min: rss.min_interval,
        },
        initial_entries: rss.initial_entries as usize,
        headline: rss.delivery == Delivery::Headline,
        fetch: FetchPolicy {
            allow_private: rss.allow_private_addresses,
            max_bytes: rss.max_feed_bytes,
            ..FetchPolicy::default()
        },
        concurrency: 64,
    };
    RssBridge::new(settings, Arc::new(store.clone()))
}

/// The SMS bridge for `[sms]`, keeping its state in `store`. Providers reach its webhooks
/// at `[http] public_url` (or, without one, at `http://{listen}`).
pub fn sms(cfg: &Config, sms: &SmsConfig, store: &Store) -> Result<SmsBridge, BridgeError> {
    let public_url = match &cfg.http {
        Some(h) => h
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", h.listen)),
        None => {
            return Err(BridgeError::permanent(
                "the SMS bridge needs [http] (listen, public_url) for its webhooks",
            ));
        }
    };
    let settings = ferry_sms::Settings {
        default_region: sms.default_region.clone(),
        quota_per_day: sms.quota_per_day,
        numbers: sms
            .numbers
            .iter()
            .map(|n| ferry_sms::NumberEntry {
                number: n.number.clone(),
                provider: n.provider.clone(),
                owner: n.owner.clone(),
            })
            .collect(),
        public_url,
        max_media_bytes: 25 * 1024 * 1024,
    };
    let secret = |s: &Option<crate::config::Secret>| s.as_ref().map(|s| s.expose().to_owned());
    let providers: Vec<ProviderConfig> = sms
        .providers
        .iter()
        .map(|p| ProviderConfig {
            name: p.name.clone(),
            kind: match p.kind {
                ProviderKind::Twilio => Kind::Twilio,
                ProviderKind::Telnyx => Kind::Telnyx,
                ProviderKind::Vonage => Kind::Vonage,
                ProviderKind::Kannel => Kind::Kannel,
            },
            api_base: p.api_base.clone(),
            account_sid: p.account_sid.clone(),
            auth_token: secret(&p.auth_token),
            api_key: secret(&p.api_key),
            public_key: p.public_key.clone(),
            messaging_profile_id: p.messaging_profile_id.clone(),
            api_secret: secret(&p.api_secret),
            signature_secret: secret(&p.signature_secret),
            sendsms_url: p.sendsms_url.clone(),
            username: p.username.clone(),
            password: secret(&p.password),
            inbound_token: secret(&p.inbound_token),
        })
        .collect();
    SmsBridge::new(settings, &providers, Arc::new(store.clone()))
}

/// The email bridge for `[email]`. Attachments are served under `[http] public_url` (or,
/// without one, `http://{listen}`); without `[http]` they are named but not linked.
pub fn email(cfg: &Config, email: &EmailConfig, store: &Store) -> EmailBridge {
    let tls = |t: TlsMode| match t {
        TlsMode::Implicit => Tls::Implicit,
        TlsMode::StartTls => Tls::StartTls,
        TlsMode::None => Tls::None,
    };
    let public_url = cfg.http.as_ref().map(|h| {
        h.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", h.listen))
            .trim_end_matches('/')
            .to_owned()
    });
    // Links are fetched from private addresses only on a gateway whose own mail servers
    // are on loopback (a test or development setup).
    let local = |h: &Option<String>| h.as_deref().is_some_and(ferry_email::net::is_loopback);
    let settings = ferry_email::Settings {
        imap: ferry_email::ServerDefaults {
            host: email.imap_host.clone(),
            port: email.imap_port,
            tls: tls(email.imap_tls),
        },
        smtp: ferry_email::ServerDefaults {
            host: email.smtp_host.clone(),
            port: email.smtp_port,
            tls: tls(email.smtp_tls),
        },
        mailbox: email.mailbox.clone(),
        max_message_bytes: usize::try_from(email.max_message_bytes).unwrap_or(usize::MAX),
        public_url,
        allow_private_links: local(&email.imap_host) && local(&email.smtp_host),
        timing: ferry_email::Timing::default(),
    };
    EmailBridge::new(settings, Arc::new(store.clone()))
}

/// The bridges to run for `cfg`, with their component domains and secrets.
pub fn from_config(cfg: &Config, store: &Store) -> Result<Vec<BridgeSpec>, BridgeError> {
    let mut specs = Vec::new();
    for (name, component) in cfg.components() {
        let bridge: Arc<dyn ferry_bridge_api::Bridge> = match (name, &cfg.rss, &cfg.sms) {
            ("email", _, _) if cfg.email.is_some() => match &cfg.email {
                Some(e) => Arc::new(email(cfg, e, store)),
                None => continue,
            },
            ("rss", Some(r), _) => Arc::new(rss(r, store)?),
            ("sms", _, Some(s)) => Arc::new(sms(cfg, s, store)?),
            _ => {
                tracing::warn!(
                    domain = %component.domain,
                    "the {name} bridge is not part of this build yet; its table is ignored"
                );
                continue;
            }
        };
        specs.push(BridgeSpec {
            domain: component.domain.clone(),
            secret: component.secret.expose().to_owned(),
            bridge,
        });
    }
    Ok(specs)
}
