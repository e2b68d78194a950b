//! Which bridge implementations run for the configured bridge tables: the one place that
//! maps a config table to a bridge crate under `bridges/`.

use std::sync::Arc;

use crate::app::BridgeSpec;
use crate::config::Config;

/// The bridges to run for `cfg`, with their component domains and secrets.
pub fn from_config(cfg: &Config) -> Vec<BridgeSpec> {
    let mut specs = Vec::new();
    for (name, component) in cfg.components() {
        let bridge: Arc<dyn ferry_bridge_api::Bridge> = match name {
            "rss" => Arc::new(ferry_rss::RssBridge),
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
    specs
}
