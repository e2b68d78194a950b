//! HTTP on `[http] listen`: `/healthz`, `/metrics`, `/media/{token}/{name}` (attachments kept
//! by bridges), and the bridges' own routes (webhooks) merged at the root.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
struct AppState {
    gateways: Vec<Arc<Gateway>>,
    metrics: Metrics,
    store: Store,
}

/// The whole HTTP surface.
pub fn router(
    gateways: Vec<Arc<Gateway>>,
    metrics: Metrics,
    store: Store,
    bridge_routes: Vec<Router>,
    public_url: Option<&str>,
) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/media/{token}/{name}", get(media))
        .with_state(AppState {
            gateways,
            metrics,
            store,
        });
    for b in bridge_routes {
        r = r.merge(b);
    }
    // A `public_url` with a path (`https://example.org/ferry`) is served there as well as
    // at the root: behind a proxy that passes the path on, and behind one that strips it.
    match public_url.and_then(url_path) {
        Some(prefix) => r.clone().nest(prefix, r),
        None => r,
    }
}

/// The path of a `public_url` without its trailing slash, if it has one beyond `/`.
fn url_path(public_url: &str) -> Option<&str> {
    let after_scheme = public_url
        .split_once("://")
        .map_or(public_url, |(_, rest)| rest);
    let path = &after_scheme[after_scheme.find('/')?..];
    let path = path.trim_end_matches('/');
    (!path.is_empty()).then_some(path)
}

/// 200 when every bridge's component link is up and no bridge reports a gateway-wide
/// problem (an SMS provider that did not answer); 503 with the reasons otherwise.
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
        .chain(s.gateways.iter().flat_map(|g| g.bridge.health()))
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

/// An attachment kept by a bridge (MMS media, mail attachments): the token is unguessable
/// (192 random bits) and the name must match the one it was kept under.
async fn media(
    State(s): State<AppState>,
    Path((token, name)): Path<(String, String)>,
) -> axum::response::Response {
    if token.len() != 48 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match s.store.media(&token).await {
        Ok(Some(m)) if m.name == name => {
            let safe_type = if m
                .content_type
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ')
            {
                m.content_type
            } else {
                "application/octet-stream".to_owned()
            };
            (
                [
                    (header::CONTENT_TYPE, safe_type),
                    (header::CACHE_CONTROL, "private, max-age=86400".to_owned()),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; sandbox".to_owned(),
                    ),
                ],
                m.data,
            )
                .into_response()
        }
        Ok(_) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!("media: {e}");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
