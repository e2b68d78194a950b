//! The composition root: opens the store, starts one link, router, outbox worker, relay and
//! the sessions per bridge, serves HTTP, and shuts everything down in order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_bridge_api::{Bridge, BridgeKind};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::component::{self, LinkConfig, LinkError};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::store::{Cipher, Store, StoreError};

/// A bridge to run and the component it runs as.
pub struct BridgeSpec {
    pub domain: String,
    pub secret: String,
    pub bridge: Arc<dyn Bridge>,
}

/// Why ferry could not start or had to stop. The messages leave out their sources, which
/// `{:#}` prints after them (once).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("database")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("http: cannot listen on {addr}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl AppError {
    /// Exit status per SPEC §1: 2 for failures that retrying will not fix.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Link(LinkError::Fatal(_)) => 2,
            AppError::Http { .. } => 2,
            AppError::Store(_) => 2,
        }
    }
}

/// Opens the store named by the config and applies migrations.
pub async fn open_store(cfg: &Config) -> Result<Store, StoreError> {
    let cipher = Cipher::load_or_create(&cfg.secrets.key_file)?;
    let store = Store::open(&cfg.database.url, cipher).await?;
    store.migrate().await?;
    Ok(store)
}

/// A started ferry.
pub struct Running {
    pub gateways: Vec<Arc<Gateway>>,
    pub store: Store,
    pub metrics: Metrics,
    /// Where `[http]` listens, when configured (the real port if it was 0).
    pub http_addr: Option<SocketAddr>,
    shutdown: Arc<watch::Sender<bool>>,
    /// Closes the component streams; set only once the outbox workers have finished.
    close_links: watch::Sender<bool>,
    links: JoinSet<Result<(), LinkError>>,
    /// The outbox workers, which finish their in-flight sends after shutdown.
    outboxes: JoinSet<()>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Asks everything to stop.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A handle that stops everything when set to true (signal handlers).
    pub fn stopper(&self) -> Arc<watch::Sender<bool>> {
        Arc::clone(&self.shutdown)
    }

    /// Waits until shutdown was asked for and everything stopped, or a link failed for good.
    ///
    /// The order keeps every message: the outbox workers finish their in-flight sends
    /// while the streams are still open, so their receipts and errors go out; then the
    /// streams close, and what the server still delivers meanwhile is stored by the
    /// routers (and sent on the next start); then everything else stops.
    pub async fn wait(mut self) -> Result<(), AppError> {
        let mut result = Ok(());
        let mut stop = self.shutdown.subscribe();
        // A link ends before its stream is closed only when it failed for good.
        tokio::select! {
            _ = stop.wait_for(|v| *v) => {}
            Some(r) = self.links.join_next() => {
                if let Ok(Err(e)) = r {
                    result = Err(AppError::Link(e));
                }
            }
        }
        self.shutdown.send_replace(true);
        let within = std::time::Duration::from_secs(30);
        let sends = async { while self.outboxes.join_next().await.is_some() {} };
        if tokio::time::timeout(within, sends).await.is_err() {
            tracing::warn!("some sends did not finish within 30s; they are sent again at start");
        }
        self.close_links.send_replace(true);
        while let Some(r) = self.links.join_next().await {
            if let Ok(Err(e)) = r
                && result.is_ok()
            {
                result = Err(AppError::Link(e));
            }
        }
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(within, drain).await.is_err() {
            tracing::warn!("some tasks did not stop within 30s");
        }
        self.store.close().await;
        result
    }

    pub fn gateway(&self, kind: BridgeKind) -> Option<&Arc<Gateway>> {
        self.gateways.iter().find(|g| g.kind == kind)
    }
}

/// Starts every bridge in `bridges` against the XMPP server in `cfg`.
pub async fn start(
    cfg: &Config,
    store: Store,
    bridges: Vec<BridgeSpec>,
) -> Result<Running, AppError> {
    // SQLite serves one process: leases a killed predecessor left on outbox rows would
    // only delay its messages (PostgreSQL leases may belong to a live peer; they run out).
    if store.backend() == crate::store::Backend::Sqlite {
        match store.release_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "{n} outbox message(s) left in flight by an earlier run are sent again"
            ),
            Err(e) => tracing::warn!("cannot release earlier outbox leases: {e}"),
        }
    }
    let metrics = Metrics::default();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (close_links, close_links_rx) = watch::channel(false);
    let mut links = JoinSet::new();
    let mut outboxes = JoinSet::new();
    let mut tasks = JoinSet::new();
    let mut gateways = Vec::new();
    let mut routes = Vec::new();

    for spec in bridges {
        let kind = spec.bridge.kind();
        let (in_tx, in_rx) = mpsc::channel(1024);
        let link_cfg = LinkConfig::new(
            &cfg.xmpp.host,
            cfg.xmpp.port,
            &spec.domain,
            &spec.secret,
            kind.as_str(),
        );
        metrics.set_connected(kind.as_str(), false);
        let (link, handle) =
            component::spawn(link_cfg, in_tx, metrics.clone(), close_links_rx.clone());
        links.spawn(async move {
            match handle.await {
                Ok(r) => r,
                Err(e) => Err(LinkError::Fatal(format!("link task failed: {e}"))),
            }
        });
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let gw = Arc::new(Gateway {
            kind,
            domain: spec.domain.clone(),
            bridge: Arc::clone(&spec.bridge),
            store: store.clone(),
            out: link.outgoing.clone(),
            access: cfg.xmpp.clone(),
            metrics: metrics.clone(),
            sessions: Mutex::default(),
            outbox_wake: Notify::new(),
            outbox_handoff: Default::default(),
            events: ev_tx,
            shutdown: shutdown_rx.clone(),
            started: Instant::now(),
            connected: link.connected.clone(),
            settled: tokio::sync::watch::Sender::new(0),
            caches: Default::default(),
        });
        if let Some(r) = spec.bridge.http_routes() {
            routes.push(r);
        }
        tasks.spawn(Arc::clone(&gw).run_router(in_rx));
        outboxes.spawn(Arc::clone(&gw).run_outbox());
        tasks.spawn(Arc::clone(&gw).run_relay(ev_rx));
        let hub = ferry_bridge_api::Hub {
            events: gw.events.clone(),
            shutdown: shutdown_rx.clone(),
            counters: Arc::new(metrics.clone()),
        };
        // Each time the link comes (back) up, tell users how the gateway is doing.
        let watcher = Arc::clone(&gw);
        let mut up = link.connected.clone();
        tasks.spawn(async move {
            while up.changed().await.is_ok() {
                if *up.borrow() {
                    watcher.broadcast_presence().await;
                }
            }
        });
        // Sessions first: the relay drops events of accounts that have no session, and a
        // bridge may hand over what it kept (texts received while ferry was down) as soon
        // as it serves.
        let n = gw.start_all_sessions().await?;
        let serving = Arc::clone(&spec.bridge);
        tasks.spawn(async move { serving.serve(hub).await });
        tracing::info!(domain = %spec.domain, bridge = %kind, "gateway started with {n} registered user(s)");
        gateways.push(gw);
    }

    let http_addr = match &cfg.http {
        Some(h) => {
            let listener = tokio::net::TcpListener::bind(h.listen)
                .await
                .map_err(|source| AppError::Http {
                    addr: h.listen,
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| AppError::Http {
                addr: h.listen,
                source,
            })?;
            let router = crate::http::router(
                gateways.clone(),
                metrics.clone(),
                store.clone(),
                routes,
                h.public_url.as_deref(),
            );
            let mut stop = shutdown_rx.clone();
            tasks.spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    while !*stop.borrow() {
                        if stop.changed().await.is_err() {
                            break;
                        }
                    }
                });
                if let Err(e) = serve.await {
                    tracing::error!("http server: {e}");
                }
            });
            tracing::info!("http listening on {addr}");
            Some(addr)
        }
        None => None,
    };

    Ok(Running {
        gateways,
        store,
        metrics,
        http_addr,
        shutdown: Arc::new(shutdown_tx),
        close_links,
        links,
        outboxes,
        tasks,
    })
}
