//! Counters and gauges rendered as Prometheus text for `/metrics`.
//!
//! Hand-written rather than `metrics-exporter-prometheus` because that exporter needs a
//! process-global recorder, and ferry's tests run several gateways in one process; here each
//! [`App`](crate::app) owns its registry. Labels are static strings, so counting allocates
//! nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A metric's identity: its name and up to three label pairs.
type Key = (&'static str, [(&'static str, &'static str); 3]);

#[derive(Default)]
struct Inner {
    counters: BTreeMap<Key, Counter>,
    gauges: BTreeMap<Key, i64>,
}

/// Bridges count their outcomes here (feed fetches).
impl ferry_bridge_api::Counters for Metrics {
    fn count(&self, metric: &'static str, outcome: &'static str) {
        match metric {
            "ferry_feed_fetches_total" => self.feed_fetch(outcome),
            "ferry_sms_webhooks_total" => self.add(
                (
                    "ferry_sms_webhooks_total",
                    [("outcome", outcome), NONE, NONE],
                ),
                1,
            ),
            other => tracing::debug!("a bridge counted an unknown metric {other}"),
        }
    }

    fn message(
        &self,
        bridge: ferry_bridge_api::BridgeKind,
        direction: &'static str,
        outcome: &'static str,
    ) {
        Metrics::message(self, bridge.as_str(), direction, outcome);
    }
}

/// One counter, held by whoever counts often (the link's reader counts every stanza) so
/// that counting is one atomic add, without the registry's lock.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The registry; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

const NONE: (&str, &str) = ("", "");

const HELP: &[(&str, &str, &str)] = &[
    (
        "ferry_component_connected",
        "gauge",
        "1 while the bridge's XEP-0114 link is up",
    ),
    (
        "ferry_stanzas_total",
        "counter",
        "stanzas read from and written to the XMPP server",
    ),
    (
        "ferry_messages_total",
        "counter",
        "messages bridged, by direction and outcome",
    ),
    (
        "ferry_outbox_depth",
        "gauge",
        "outbound messages waiting to be delivered",
    ),
    (
        "ferry_feed_fetches_total",
        "counter",
        "feed fetches by outcome",
    ),
    (
        "ferry_sms_webhooks_total",
        "counter",
        "SMS provider webhooks by outcome (ok, duplicate, forbidden, bad_request, error)",
    ),
    (
        "ferry_reconnects_total",
        "counter",
        "component link reconnection attempts",
    ),
    ("ferry_sessions", "gauge", "running user sessions"),
];

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn add(&self, key: Key, n: u64) {
        self.handle(key).add(n);
    }

    /// The counter of `key`, registered (at 0) if it was not.
    fn handle(&self, key: Key) -> Counter {
        self.with(|i| i.counters.entry(key).or_default().clone())
    }

    fn set(&self, key: Key, v: i64) {
        self.with(|i| {
            i.gauges.insert(key, v);
        });
    }

    /// The counter of stanzas of one bridge and direction, to count with directly.
    pub fn stanza_counter(&self, bridge: &'static str, direction: &'static str) -> Counter {
        self.handle((
            "ferry_stanzas_total",
            [("bridge", bridge), ("direction", direction), NONE],
        ))
    }

    pub fn message(&self, bridge: &'static str, direction: &'static str, outcome: &'static str) {
        self.messages(bridge, direction, outcome, 1);
    }

    /// Counts `n` messages at once (see [`Metrics::message`]).
    pub fn messages(
        &self,
        bridge: &'static str,
        direction: &'static str,
        outcome: &'static str,
        n: u64,
    ) {
        self.add(
            (
                "ferry_messages_total",
                [
                    ("bridge", bridge),
                    ("direction", direction),
                    ("outcome", outcome),
                ],
            ),
            n,
        );
    }

    pub fn feed_fetch(&self, outcome: &'static str) {
        self.add(
            (
                "ferry_feed_fetches_total",
                [("outcome", outcome), NONE, NONE],
            ),
            1,
        );
    }

    pub fn reconnect(&self, bridge: &'static str) {
        self.add(
            ("ferry_reconnects_total", [("bridge", bridge), NONE, NONE]),
            1,
        );
    }

    pub fn set_connected(&self, bridge: &'static str, up: bool) {
        self.set(
            (
                "ferry_component_connected",
                [("bridge", bridge), NONE, NONE],
            ),
            i64::from(up),
        );
    }

    pub fn set_outbox_depth(&self, bridge: &'static str, depth: i64) {
        self.set(
            ("ferry_outbox_depth", [("bridge", bridge), NONE, NONE]),
            depth,
        );
    }

    pub fn set_sessions(&self, bridge: &'static str, n: i64) {
        self.set(("ferry_sessions", [("bridge", bridge), NONE, NONE]), n);
    }

    /// A counter's current value (tests, `stats`).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.with(|i| {
            i.counters
                .iter()
                .filter(|((n, ls), _)| {
                    *n == name && labels.iter().all(|l| ls.iter().any(|x| x == l))
                })
                .map(|(_, v)| v.get())
                .sum()
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let (counters, gauges) = self.with(|i| (i.counters.clone(), i.gauges.clone()));
        let mut out = String::new();
        for (name, typ, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {typ}");
            let rows: Vec<(String, String)> = if *typ == "counter" {
                counters
                    .iter()
                    .filter(|((n, _), _)| n == name)
                    .map(|((_, ls), v)| (labels(ls), v.get().to_string()))
                    .collect()
            } else {
                gauges
                    .iter()
                    .filter(|((n, _), _)| n == name)
                    .map(|((_, ls), v)| (labels(ls), v.to_string()))
                    .collect()
            };
            for (ls, v) in rows {
                let _ = writeln!(out, "{name}{ls} {v}");
            }
        }
        out
    }
}

fn labels(ls: &[(&str, &str); 3]) -> String {
    let parts: Vec<String> = ls
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        let rss_in = m.stanza_counter("rss", "in");
        rss_in.add(1);
        rss_in.add(1);
        m.message("email", "out", "ok");
        m.set_connected("sms", true);
        let text = m.render();
        assert!(
            text.contains("ferry_stanzas_total{bridge=\"rss\",direction=\"in\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "ferry_messages_total{bridge=\"email\",direction=\"out\",outcome=\"ok\"} 1"
            )
        );
        assert!(text.contains("ferry_component_connected{bridge=\"sms\"} 1"));
        assert!(text.contains("# TYPE ferry_outbox_depth gauge"));
        assert_eq!(m.counter("ferry_stanzas_total", &[("bridge", "rss")]), 2);
    }
}
