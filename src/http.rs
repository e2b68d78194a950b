//! HTTP on `[http] listen`: `/healthz`, `/metrics`, and the bridges' own routes (webhooks,
//! media) merged at the root.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::gateway::Gateway;
use crate::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    gateways: Vec<Arc<Gateway>>,
    metrics: Metrics,
}

/// The whole HTTP surface.
pub fn router(gateways: Vec<Arc<Gateway>>, metrics: Metrics, bridge_routes: Vec<Router>) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { gateways, metrics });
    for b in bridge_routes {
        r = r.merge(b);
    }
    r
}

/// 200 when every bridge's component link is up; 503 with the reasons otherwise.
async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let down: Vec<String> = s
        .gateways
        .iter()
        .filter(|g| !*g.connected.borrow())
        .map(|g| {
            format!(
                "{} component link to the XMPP server is down ({})",
                g.kind, g.domain
            )
        })
        .collect();
    if down.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, down.join("\n") + "\n")
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
