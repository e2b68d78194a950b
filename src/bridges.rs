//! Which bridge implementations run for the configured bridge tables: the one place that
//! maps a config table to a bridge crate under `bridges/`.

use std::sync::Arc;

use ferry_bridge_api::BridgeError;
use ferry_rss::RssBridge;
use ferry_rss::engine::Settings;
use ferry_rss::fetch::FetchPolicy;
use ferry_rss::schedule::Intervals;

use crate::app::BridgeSpec;
use crate::config::{Config, Delivery, RssConfig};
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

/// The bridges to run for `cfg`, with their component domains and secrets.
pub fn from_config(cfg: &Config, store: &Store) -> Result<Vec<BridgeSpec>, BridgeError> {
    let mut specs = Vec::new();
    for (name, component) in cfg.components() {
        let bridge: Arc<dyn ferry_bridge_api::Bridge> = match (name, &cfg.rss) {
            ("rss", Some(r)) => Arc::new(rss(r, store)?),
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
